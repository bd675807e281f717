package org.vmmkit.testbed.guest;

import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.DirtySource;

/**
 * A guest run by a Java thread instead of a vCPU, for hosts without {@code /dev/kvm}: it writes the built-in
 * workload's pages with the same values ({@link DirtyingWorkload#expectedValue}), keeps its pass counter at
 * the same guest address, so a migrated copy continues where the source paused, and — as no MMU tracks it —
 * logs every page it writes itself, after the write ({@link DirtySource}). It has no vCPUs to migrate.
 */
public final class SoftwareGuest implements MigratableVm, DirtySource {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final GuestMemory memory;
    private final DirtyingWorkload.Settings settings;
    private final Object lock = new Object();
    private final DirtyBitmap[] log;
    private volatile boolean tracking, pauseRequested, stopped;
    private boolean parked, sleeping; // guarded by lock
    private Thread thread;

    /** A guest writing {@code settings}' pages of {@code memory} (range workloads only); not running until {@link #boot()}. */
    public SoftwareGuest(GuestMemory memory, DirtyingWorkload.Settings settings) {
        if (settings.pageList() != null) throw new IllegalArgumentException("the software guest runs range workloads only");
        this.memory = memory;
        this.settings = settings;
        this.log = new DirtyBitmap[memory.regions().size()];
        for (GuestRegion r : memory.regions()) log[r.index()] = new DirtyBitmap(r.size() / PAGE);
        memory.slice(settings.start(), settings.pages() == 0 ? 8 : settings.pageAddress(settings.pages() - 1) - settings.start() + 8);
    }

    /** A fresh guest: pass counter 0. */
    public void install() {
        memory.writeLong(DirtyingWorkload.PASSES_DONE_ADDRESS, 0);
    }

    /** Starts the thread; it continues from the pass counter in guest memory. */
    public synchronized void boot() {
        if (thread != null) throw new IllegalStateException("the software guest already runs");
        thread = Thread.ofPlatform().name("software-guest").daemon().start(this::run);
    }

    private void run() {
        // Paced a millisecond at a time, as the KVM guest's throttle exit every rate/1000 pages is.
        long batch = settings.pagesPerSecond() == 0 ? 0 : Math.max(1, settings.pagesPerSecond() / 1000);
        long batchNanos = settings.pagesPerSecond() == 0 ? 0 : batch * 1_000_000_000L / settings.pagesPerSecond();
        long next = System.nanoTime();
        long pass = DirtyingWorkload.passesDone(memory);
        while (!stopped && (settings.passes() == 0 || pass < settings.passes())) {
            pass++;
            for (long i = 0; i < settings.pages() && !stopped; i++) {
                checkPause();
                long address = settings.pageAddress(i);
                memory.writeLong(address, DirtyingWorkload.expectedValue(i, pass));
                mark(address);
                if (batch > 0 && (i + 1) % batch == 0) {
                    next += batchNanos;
                    long wait = next - System.nanoTime();
                    if (wait > 0) idle(wait);
                    else if (wait < -batchNanos) next = System.nanoTime(); // held (paused, throttled, starved) over a batch: not caught up
                }
            }
            checkPause();
            memory.writeLong(DirtyingWorkload.PASSES_DONE_ADDRESS, pass);
            mark(DirtyingWorkload.PASSES_DONE_ADDRESS);
        }
    }

    /**
     * Sleeps between batches. Asleep it writes nothing, so a pause asked for meanwhile holds at once (as a
     * halted vCPU is stopped at once); it checks for the pause before its next write.
     */
    private void idle(long nanos) {
        synchronized (lock) {
            sleeping = true;
            lock.notifyAll();
        }
        LockSupport.parkNanos(nanos);
        synchronized (lock) {
            sleeping = false;
        }
    }

    private void mark(long address) {
        if (!tracking) return;
        GuestRegion r = memory.regionOf(address);
        log[r.index()].set((address - r.guestAddress()) / PAGE);
    }

    private void checkPause() {
        if (!pauseRequested) return;
        synchronized (lock) {
            parked = true;
            lock.notifyAll();
            while (pauseRequested && !stopped) {
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
            parked = false;
        }
    }

    @Override
    public Duration pause() {
        long start = System.nanoTime();
        synchronized (lock) {
            pauseRequested = true;
            while (!parked && !sleeping && thread != null && thread.isAlive()) {
                try {
                    lock.wait(10);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted while pausing the software guest");
                }
            }
        }
        return Duration.ofNanos(System.nanoTime() - start);
    }

    @Override
    public void resume() {
        synchronized (lock) {
            pauseRequested = false;
            lock.notifyAll();
        }
    }

    // ---- MigratableVm ----

    @Override
    public GuestMemory memory() {
        return memory;
    }

    @Override
    public int vcpuCount() {
        return 0;
    }

    @Override
    public byte[] saveVcpu(int index) {
        throw new IndexOutOfBoundsException("the software guest has no vCPUs");
    }

    @Override
    public void restoreVcpu(int index, byte[] state) {
        throw new IndexOutOfBoundsException("the software guest has no vCPUs");
    }

    @Override
    public void startLoaded() {
        boot();
    }

    // ---- DirtySource ----

    @Override
    public String name() {
        return "software-guest-log";
    }

    /** Starts logging writes (every region). */
    @Override
    public void start() {
        for (DirtyBitmap b : log) b.clear();
        tracking = true;
    }

    @Override
    public void sync(GuestRegion region, DirtyBitmap into) {
        if (!tracking) throw new IllegalStateException(name() + " is not started");
        DirtyBitmap mine = log[region.index()];
        for (long w = 0; w < mine.words(); w++) {
            long bits = mine.getAndClearWord(w);
            if (bits != 0) into.segment().set(ValueLayout.JAVA_LONG, w * 8, into.word(w) | bits);
        }
    }

    @Override
    public void stop() {
        tracking = false;
    }

    /** Whether it logs its writes (between {@link #start()} and {@link #stop()}). */
    public boolean logging() {
        return tracking;
    }

    /** Whether its thread was ever started ({@link #boot()}, or {@link #startLoaded()} at a destination). */
    public synchronized boolean booted() {
        return thread != null;
    }

    /**
     * Waits until the pass counter in guest memory reaches {@code passes}; false if {@code timeout} passes
     * first. The counter is guest memory, so this reads it (every millisecond), as a VMM's monitor would.
     */
    public boolean awaitPasses(long passes, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (DirtyingWorkload.passesDone(memory) < passes) {
            if (System.nanoTime() - deadline > 0) return false;
            Thread.sleep(1);
        }
        return true;
    }

    /** Stops the thread for good. */
    public void shutdown() {
        stopped = true;
        resume();
        Thread t = thread;
        if (t != null) {
            try {
                t.join(5_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
