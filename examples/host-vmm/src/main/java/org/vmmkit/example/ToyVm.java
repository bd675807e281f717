package org.vmmkit.example;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.time.Duration;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.DirtySource;

/**
 * A host VMM's own VM, as vmmkit sees it: memory the VMM mapped itself and hands over, one "vCPU" whose state
 * is the VMM's own (here four registers), a guest that runs (here a thread that writes pages the way a vCPU
 * would, each write logged in the VMM's own dirty log, which is its {@link DirtySource}), and pause, resume,
 * start. No KVM: whatever runs the guest is the VMM's business.
 */
public final class ToyVm implements MigratableVm, AutoCloseable {
    private final GuestMemory memory;
    private final WriteLog log = new WriteLog();
    private final long[] registers = new long[4];
    private final Object lock = new Object();
    private boolean running, stopping;
    private Thread cpu;

    /** A VM around {@code memory} (the VMM's own mapping, wrapped). */
    public ToyVm(GuestMemory memory) {
        this.memory = memory;
    }

    /** Starts the guest: it writes page after page, counting in its registers. */
    public void boot() {
        startLoaded();
    }

    /** The VMM's dirty log: every page the guest wrote since the last sync. */
    public DirtySource dirtyLog() {
        return log;
    }

    public long[] registers() {
        synchronized (lock) {
            return registers.clone();
        }
    }

    private void run() {
        long pages = memory.regions().get(0).size() / GuestMemory.PAGE_SIZE;
        while (true) {
            synchronized (lock) {
                while (!running && !stopping) {
                    try {
                        lock.wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                if (stopping) return;
                // One "instruction": write the next page and count. Under the lock, so a pause is exact.
                long page = registers[0] % pages;
                memory.writeLong(page * GuestMemory.PAGE_SIZE, registers[1]);
                log.mark(page);
                registers[0]++;
                registers[1] = registers[1] * 6364136223846793005L + 1442695040888963407L;
            }
        }
    }

    @Override
    public GuestMemory memory() {
        return memory;
    }

    @Override
    public int vcpuCount() {
        return 1;
    }

    @Override
    public byte[] saveVcpu(int index) {
        ByteBuffer b = ByteBuffer.allocate(8 * registers.length).order(ByteOrder.LITTLE_ENDIAN);
        synchronized (lock) {
            for (long r : registers) b.putLong(r);
        }
        return b.array();
    }

    /** The name of {@link #saveVcpu}'s format: each vCPU travels as a section of this kind. */
    @Override
    public String vcpuStateKind() {
        return "toy-vcpu";
    }

    @Override
    public void restoreVcpu(int index, byte[] state) {
        ByteBuffer b = ByteBuffer.wrap(state).order(ByteOrder.LITTLE_ENDIAN);
        if (b.remaining() != 8 * registers.length) throw new IllegalArgumentException("vCPU state of " + state.length + " bytes, not " + 8 * registers.length);
        synchronized (lock) {
            for (int i = 0; i < registers.length; i++) registers[i] = b.getLong();
        }
    }

    @Override
    public void startLoaded() {
        synchronized (lock) {
            if (cpu == null) cpu = Thread.ofPlatform().name("toy-vcpu").daemon().start(this::run);
            running = true;
            lock.notifyAll();
        }
    }

    @Override
    public Duration pause() {
        long start = System.nanoTime();
        synchronized (lock) {
            running = false; // the vCPU thread stops at its next instruction: none runs while this lock is held
        }
        return Duration.ofNanos(System.nanoTime() - start);
    }

    @Override
    public void resume() {
        startLoaded();
    }

    public boolean running() {
        synchronized (lock) {
            return running;
        }
    }

    @Override
    public void close() {
        synchronized (lock) {
            stopping = true;
            lock.notifyAll();
        }
    }

    /** The VMM's dirty log, as vmmkit's {@link DirtySource}: pages marked by the guest's writes, taken and cleared at each sync. */
    private final class WriteLog implements DirtySource {
        private DirtyBitmap pages; // guarded by lock

        void mark(long page) {
            if (pages != null) pages.set(page);
        }

        @Override
        public String name() {
            return "toy-vm-write-log";
        }

        @Override
        public void start() {
            synchronized (lock) {
                pages = new DirtyBitmap(memory.regions().get(0).size() / GuestMemory.PAGE_SIZE);
            }
        }

        @Override
        public void sync(GuestRegion region, DirtyBitmap into) {
            synchronized (lock) {
                for (long p = pages.nextSet(0); p >= 0; p = pages.nextSet(p + 1)) into.set(p);
                pages.clearRange(0, pages.pages());
            }
        }

        @Override
        public void stop() {
            synchronized (lock) {
                if (pages != null) pages.close();
                pages = null;
            }
        }
    }
}
