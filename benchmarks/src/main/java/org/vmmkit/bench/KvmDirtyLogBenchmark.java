package org.vmmkit.bench;

import java.util.List;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.KvmDirtyLog;

/**
 * One dirty-log sync (get, and with manual protect the chunked clear) of a real 4 GiB memory slot while
 * the built-in guest rewrites a fraction of it flat out, never exiting. {@code manualProtect=false} is
 * the baseline: the classic KVM_GET_DIRTY_LOG that gets and re-protects the whole slot.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 2)
public class KvmDirtyLogBenchmark {
    private static final long SLOT = 4L << 30;

    @Param({"true", "false"})
    public boolean manualProtect;

    /** Fraction of the slot the guest keeps rewriting (0 = guest not running). */
    @Param({"0", "0.01"})
    public double guestDirty;

    private Kvm kvm;
    private GuestMemory memory;
    private Vm vm;
    private KvmDirtyLog log;
    private DirtyBitmap into;
    private GuestRegion region;

    @Setup(Level.Trial)
    public void setUp() {
        if (!Kvm.available()) throw new IllegalStateException("this benchmark needs /dev/kvm: " + Kvm.unavailableReason());
        kvm = Kvm.open();
        memory = GuestMemory.create(List.of(new GuestMemory.Range(0, SLOT)));
        region = memory.regions().get(0);
        vm = kvm.createVm(memory);
        long bytes = Math.max(GuestMemory.PAGE_SIZE, (long) (SLOT * guestDirty) & ~(GuestMemory.PAGE_SIZE - 1));
        DirtyingWorkload workload = new DirtyingWorkload(new DirtyingWorkload.Settings(1 << 20, bytes / GuestMemory.PAGE_SIZE,
                GuestMemory.PAGE_SIZE, 0, 0, false));
        workload.install(memory, vm.createVcpu());
        log = new KvmDirtyLog(vm, manualProtect);
        into = new DirtyBitmap(region.size() / GuestMemory.PAGE_SIZE);
        log.start();
        log.sync(region, into); // generation 1: everything
        if (guestDirty > 0) vm.start(workload);
    }

    @Benchmark
    public DirtyBitmap sync() {
        into.clear();
        log.sync(region, into);
        return into;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        log.close();
        vm.close();
        memory.close();
        kvm.close();
        into.close();
    }
}
