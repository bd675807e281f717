package org.vmmkit.core.kvm;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.vmmkit.core.Pausable;
import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Fd;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A KVM virtual machine: its memory slots (one per guest memory region), its vCPUs and their threads,
 * and pause/resume of all of them together.
 */
public final class Vm implements Pausable, AutoCloseable {
    /** Where KVM may put the three pages it needs for the real-mode TSS: in the hole below 4 GiB. */
    private static final long TSS_ADDRESS = 0xfffb_d000L;
    /** How long {@link #pause()} waits for every vCPU to leave KVM_RUN before it reports a failure. */
    public static final Duration DEFAULT_PAUSE_TIMEOUT = Duration.ofSeconds(2);

    private final Kvm kvm;
    private final Fd fd;
    private final GuestMemory memory;
    private final List<Vcpu> vcpus = new ArrayList<>();
    private final List<VcpuRunner> runners = new ArrayList<>();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private boolean dirtyLogging;
    private volatile long lastPauseNanos = -1;

    Vm(Kvm kvm, Fd fd, GuestMemory memory) {
        this.kvm = kvm;
        this.fd = fd;
        this.memory = memory;
        fd.ioctl(KvmAbi.KVM_SET_TSS_ADDR, TSS_ADDRESS);
        registerSlots();
    }

    public GuestMemory memory() {
        return memory;
    }

    public Kvm kvm() {
        return kvm;
    }

    /** The VM fd, for the dirty-log ioctls of the dirty-tracking module. */
    public Fd fd() {
        return fd;
    }

    private void registerSlots() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment region = arena.allocate(KvmAbi.USERSPACE_MEMORY_REGION);
            for (GuestRegion r : memory.regions()) {
                region.set(JAVA_INT, KvmAbi.off(KvmAbi.USERSPACE_MEMORY_REGION, "slot"), r.index());
                region.set(JAVA_INT, KvmAbi.off(KvmAbi.USERSPACE_MEMORY_REGION, "flags"),
                        dirtyLogging ? KvmAbi.MEM_LOG_DIRTY_PAGES : 0);
                region.set(JAVA_LONG, KvmAbi.off(KvmAbi.USERSPACE_MEMORY_REGION, "guest_phys_addr"), r.guestAddress());
                region.set(JAVA_LONG, KvmAbi.off(KvmAbi.USERSPACE_MEMORY_REGION, "memory_size"), r.size());
                region.set(JAVA_LONG, KvmAbi.off(KvmAbi.USERSPACE_MEMORY_REGION, "userspace_addr"), r.host().address());
                try {
                    fd.ioctl(KvmAbi.KVM_SET_USER_MEMORY_REGION, region);
                } catch (RuntimeException e) {
                    throw new KvmException("registering memory slot " + r.index() + " for " + r + ": " + e.getMessage(), e);
                }
            }
        }
    }

    /** Turns {@code KVM_MEM_LOG_DIRTY_PAGES} on or off for every slot (the slot memory stays mapped). */
    public synchronized void setDirtyLogging(boolean on) {
        if (on == dirtyLogging) return;
        dirtyLogging = on;
        registerSlots();
    }

    public synchronized boolean dirtyLogging() {
        return dirtyLogging;
    }

    /** {@code KVM_ENABLE_CAP} on the VM with one argument. */
    public void enableCapability(int capability, long arg0) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment cap = arena.allocate(KvmAbi.ENABLE_CAP);
            cap.set(JAVA_INT, KvmAbi.off(KvmAbi.ENABLE_CAP, "cap"), capability);
            cap.set(JAVA_LONG, KvmAbi.off(KvmAbi.ENABLE_CAP, "args"), arg0);
            fd.ioctl(KvmAbi.KVM_ENABLE_CAP, cap);
        }
    }

    // One argument block for the dirty-log ioctls, reused: a sync allocates nothing.
    private final MemorySegment dirtyLogArg = Arena.ofAuto().allocate(
            Math.max(KvmAbi.DIRTY_LOG.byteSize(), KvmAbi.CLEAR_DIRTY_LOG.byteSize()), 8);

    /**
     * {@code KVM_GET_DIRTY_LOG}: the kernel writes the slot's dirty bitmap (one bit per page, 64-bit words)
     * into {@code bitmap}. Without manual protection it also clears and write-protects what it returned.
     * Allocates nothing.
     */
    public synchronized void getDirtyLog(int slot, MemorySegment bitmap) {
        dirtyLogArg.fill((byte) 0);
        dirtyLogArg.set(JAVA_INT, KvmAbi.DIRTY_LOG_SLOT, slot);
        dirtyLogArg.set(JAVA_LONG, KvmAbi.DIRTY_LOG_BITMAP, bitmap.address());
        fd.ioctl(KvmAbi.KVM_GET_DIRTY_LOG, dirtyLogArg);
    }

    /**
     * {@code KVM_CLEAR_DIRTY_LOG}: clears (and write-protects again) the pages whose bits are set in the
     * bitmap at {@code bitmap + bitmapOffset}, its bit 0 being {@code firstPage}; {@code firstPage} and
     * {@code numPages} are multiples of 64 unless the range ends at the slot's end. Allocates nothing.
     */
    public synchronized void clearDirtyLog(int slot, long firstPage, int numPages, MemorySegment bitmap, long bitmapOffset) {
        long bytes = (numPages + 63L) / 64 * 8;
        java.util.Objects.checkFromIndexSize(bitmapOffset, bytes, bitmap.byteSize());
        dirtyLogArg.fill((byte) 0);
        dirtyLogArg.set(JAVA_INT, KvmAbi.CLEAR_DIRTY_LOG_SLOT, slot);
        dirtyLogArg.set(JAVA_INT, KvmAbi.CLEAR_DIRTY_LOG_NUM_PAGES, numPages);
        dirtyLogArg.set(JAVA_LONG, KvmAbi.CLEAR_DIRTY_LOG_FIRST_PAGE, firstPage);
        dirtyLogArg.set(JAVA_LONG, KvmAbi.CLEAR_DIRTY_LOG_BITMAP, bitmap.address() + bitmapOffset);
        fd.ioctl(KvmAbi.KVM_CLEAR_DIRTY_LOG, dirtyLogArg);
    }

    /** Creates the next vCPU (ids from 0), with the host's supported CPUID. */
    public synchronized Vcpu createVcpu() {
        Vcpu vcpu = new Vcpu(kvm, fd, vcpus.size());
        vcpus.add(vcpu);
        return vcpu;
    }

    public synchronized List<Vcpu> vcpus() {
        return List.copyOf(vcpus);
    }

    /** Starts a thread per vCPU; {@code paused} starts them parked, to be released by {@link #resume()}. */
    public synchronized void start(ExitHandler handler, boolean paused) {
        if (!runners.isEmpty()) throw new IllegalStateException("VM already started");
        for (Vcpu v : vcpus) runners.add(new VcpuRunner(this, v, handler));
        for (VcpuRunner r : runners) r.start(paused);
    }

    public void start(ExitHandler handler) {
        start(handler, false);
    }

    /** Pauses with {@link #DEFAULT_PAUSE_TIMEOUT}. */
    @Override
    public Duration pause() {
        return pause(DEFAULT_PAUSE_TIMEOUT);
    }

    /**
     * Returns only when every vCPU is out of KVM_RUN and parked (or halted); returns how long that took.
     * A vCPU that does not leave KVM_RUN within {@code timeout} is an error naming it.
     */
    public synchronized Duration pause(Duration timeout) {
        long start = System.nanoTime();
        for (VcpuRunner r : runners) r.requestPause();
        long deadline = start + timeout.toNanos();
        for (int i = 0; i < runners.size(); i++) {
            if (!runners.get(i).awaitOutOfGuest(deadline)) {
                throw new KvmException("vcpu " + i + " did not leave KVM_RUN within " + timeout.toMillis() + " ms");
            }
        }
        long took = System.nanoTime() - start;
        lastPauseNanos = took;
        return Duration.ofNanos(took);
    }

    /** The latency of the last pause, in nanoseconds; -1 before the first. */
    public long lastPauseNanos() {
        return lastPauseNanos;
    }

    @Override
    public synchronized void resume() {
        for (VcpuRunner r : runners) r.resume();
    }

    /** Waits until every vCPU halted, failed or stopped; false on timeout. */
    public boolean awaitHalt(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        for (VcpuRunner r : runnersSnapshot()) {
            if (!r.awaitFinished(deadline)) return false;
        }
        return true;
    }

    /** The first vCPU error, or null. */
    public Throwable failure() {
        return failure.get();
    }

    void vcpuFailed(int id, Throwable error) {
        failure.compareAndSet(null, error);
    }

    /** How many exits vCPU {@code id} has taken. */
    public long exits(int id) {
        return runnersSnapshot().get(id).exits();
    }

    /** Port and MMIO accesses that no handler claimed. */
    public long unhandledAccesses() {
        long n = 0;
        for (VcpuRunner r : runnersSnapshot()) n += r.unhandledAccesses();
        return n;
    }

    private synchronized List<VcpuRunner> runnersSnapshot() {
        return List.copyOf(runners);
    }

    /** Stops the vCPU threads and releases the vCPUs and the VM; the guest memory stays the caller's. */
    @Override
    public synchronized void close() {
        for (VcpuRunner r : runners) r.stop();
        for (Vcpu v : vcpus) v.close();
        fd.close();
    }
}
