package org.vmmkit.dirty;

import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

/**
 * The pages vCPUs wrote, from KVM's dirty log ({@code KVM_GET_DIRTY_LOG} per memory slot, one slot per
 * guest memory region). Where {@code KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2} is offered it is enabled with
 * {@code INITIALLY_SET}: turning logging on then write-protects nothing (every page simply starts dirty,
 * which the first generation is anyway), and a sync re-protects only the pages it took, with
 * {@code KVM_CLEAR_DIRTY_LOG} in chunks of {@link #CLEAR_CHUNK_PAGES} that skip chunks with no dirty
 * page. Without the capability, {@code KVM_GET_DIRTY_LOG} gets and re-protects the whole slot at once.
 */
public final class KvmDirtyLog implements DirtySource {
    /**
     * 2^18 pages = 1 GiB per {@code KVM_CLEAR_DIRTY_LOG}. Each call write-protects its pages under KVM's
     * MMU lock, which stalls vCPU page faults: a bounded chunk bounds that stall, while a chunk this size
     * keeps the ioctl count small (16 calls for 16 GiB). It is QEMU's default too (clear-bitmap-shift 18).
     */
    public static final long CLEAR_CHUNK_PAGES = 1L << 18;

    private final Vm vm;
    private final boolean manualProtect;
    private final DirtyBitmap[] scratch;
    private boolean started;

    /** Uses manual protection when KVM offers it. */
    public KvmDirtyLog(Vm vm) {
        this(vm, true);
    }

    /** {@code useManualProtect} false forces the classic get-and-clear (for comparison and old hosts). */
    public KvmDirtyLog(Vm vm, boolean useManualProtect) {
        this.vm = vm;
        int flags = vm.kvm().checkExtension(KvmAbi.CAP_MANUAL_DIRTY_LOG_PROTECT2);
        this.manualProtect = useManualProtect && (flags & KvmAbi.DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0;
        GuestMemory memory = vm.memory();
        this.scratch = new DirtyBitmap[memory.regions().size()];
    }

    @Override
    public String name() {
        return manualProtect ? "kvm-dirty-log(manual-protect)" : "kvm-dirty-log";
    }

    public boolean manualProtect() {
        return manualProtect;
    }

    @Override
    public void start() {
        if (started) return;
        for (GuestRegion r : vm.memory().regions()) {
            if (scratch[r.index()] == null) scratch[r.index()] = new DirtyBitmap(r.size() / GuestMemory.PAGE_SIZE);
        }
        if (manualProtect) {
            int offered = vm.kvm().checkExtension(KvmAbi.CAP_MANUAL_DIRTY_LOG_PROTECT2);
            long flags = KvmAbi.DIRTY_LOG_MANUAL_PROTECT_ENABLE | (offered & KvmAbi.DIRTY_LOG_INITIALLY_SET);
            vm.enableCapability(KvmAbi.CAP_MANUAL_DIRTY_LOG_PROTECT2, flags);
        }
        vm.setDirtyLogging(true);
        started = true;
    }

    @Override
    public void sync(GuestRegion region, DirtyBitmap into) {
        if (!started) throw new IllegalStateException(name() + " is not started");
        DirtyBitmap got = scratch[region.index()];
        vm.getDirtyLog(region.index(), got.segment());
        if (manualProtect) {
            long pages = got.pages();
            for (long first = 0; first < pages; first += CLEAR_CHUNK_PAGES) {
                long n = Math.min(CLEAR_CHUNK_PAGES, pages - first);
                if (!anySet(got, first, n)) continue;
                vm.clearDirtyLog(region.index(), first, (int) n, got.segment(), first >>> 3);
            }
        }
        into.or(got);
    }

    private static boolean anySet(DirtyBitmap b, long firstPage, long pages) {
        long from = firstPage >>> 6, to = DirtyBitmap.wordsFor(firstPage + pages);
        for (long w = from; w < to; w++) if (b.word(w) != 0) return true;
        return false;
    }

    @Override
    public void stop() {
        if (!started) return;
        started = false;
        vm.setDirtyLogging(false);
    }

    /** Releases the scratch bitmaps; stops first. */
    public void close() {
        stop();
        for (int i = 0; i < scratch.length; i++) {
            if (scratch[i] != null) scratch[i].close();
            scratch[i] = null;
        }
    }
}
