package org.vmmkit.testbed.guest;

import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.KvmException;
import org.vmmkit.core.kvm.LongMode;
import org.vmmkit.core.kvm.Vcpu;
import org.vmmkit.core.kvm.VcpuState;
import org.vmmkit.core.kvm.Vm;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.DirtyingWorkload.Settings;
import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.memory.GuestMemory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

@RequiresKvm
class KvmGuestTest {
    private static final long MIB = 1 << 20;

    @Test
    void guestRunsItsPassesAndLeavesExactlyTheDefinedMemory() throws Exception {
        Settings settings = Settings.range(LongModeFreeFrom(), 16 * MIB, 5, 0);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            assertTrue(vm.awaitHalt(Duration.ofSeconds(20)), "guest did not halt");
            assertNull(vm.failure());
            assertEquals(5, DirtyingWorkload.passesDone(memory));
            assertEquals(5, workload.passesReported());
            assertEquals(-1, workload.firstMismatch(memory, 5));
            // Above the range nothing was written.
            long end = settings.pageAddress(settings.pages());
            byte[] rest = memory.read(end, (int) (64 * MIB - end));
            assertTrue(allZero(rest), "memory above the workload range was written");
            assertEquals(0, vm.unhandledAccesses());
        }
    }

    @Test
    void guestReachesMemoryAboveFourGibInAnEightGibVm() throws Exception {
        Settings settings = new Settings(6L << 30, 1024, 4096, 2, 0, true);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(8L << 30));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            assertTrue(vm.awaitHalt(Duration.ofSeconds(20)), "guest did not halt");
            assertNull(vm.failure());
            assertEquals(-1, workload.firstMismatch(memory, 2));
        }
    }

    @Test
    void snapshotAndRestoreContinuesFromThePassCounter() throws Exception {
        // 8192 pages at 400k pages/s: ~20 ms a pass. No pass reports: the guest's only exits are its throttle
        // exits every 400 pages, all mid-pass, so a pause lands mid-pass wherever the machine's load puts it
        // (with a report at each pass end, a busy host caught it there half the time).
        Settings settings = new Settings(LongModeFreeFrom(), 8192, 4096, 40, 400_000, false);
        DirtyingWorkload onA = new DirtyingWorkload(settings);
        DirtyingWorkload onB = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open();
             GuestMemory memA = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory memB = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm a = kvm.createVm(memA); Vm b = kvm.createVm(memB)) {
            Vcpu cpuA = a.createVcpu();
            onA.install(memA, cpuA);
            a.start(onA);
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (DirtyingWorkload.passesDone(memA) < 3) {
                assertTrue(System.nanoTime() < deadline, "A made no progress");
                Thread.onSpinWait();
            }
            // The premise is an event, not a timing: pause, and if the vCPU stood exactly at a pass boundary,
            // let it run on and pause again.
            VcpuState state = null;
            long pageIndex = -1;
            for (int attempt = 0; attempt < 100; attempt++) {
                a.pause();
                state = VcpuState.fromBytes(cpuA.state().toBytes());
                pageIndex = state.register("rdx");
                if (pageIndex > 0 && pageIndex < settings.pages() || DirtyingWorkload.passesDone(memA) >= 39) break;
                a.resume();
            }
            long doneAtPause = DirtyingWorkload.passesDone(memA);
            assertTrue(pageIndex > 0 && pageIndex < settings.pages(), "the pause must land mid-pass, rdx=" + pageIndex);
            byte[] digestA = digest(memA);

            Vcpu cpuB = b.createVcpu();
            memA.copyTo(memB);
            cpuB.restore(state);
            assertTrue(Arrays.equals(digestA, digest(memB)), "memory differs at the pause");
            VcpuState onBefore = cpuB.state();
            for (String reg : new String[] {"rip", "rbx", "rcx", "rdx", "rdi", "rsi", "r8", "r9"}) {
                assertEquals(state.register(reg), onBefore.register(reg), reg);
            }
            assertEquals(state.specialRegister("cr3"), onBefore.specialRegister("cr3"));
            assertEquals(state.specialRegister("efer"), onBefore.specialRegister("efer"));

            b.start(onB);
            assertTrue(b.awaitHalt(Duration.ofSeconds(30)), "B did not halt");
            assertNull(b.failure());
            assertEquals(40, DirtyingWorkload.passesDone(memB));
            assertTrue(doneAtPause >= 3 && doneAtPause < 40, "pause at " + doneAtPause);
            assertEquals(-1, onB.firstMismatch(memB, 40), "B's memory after its passes");
            // A, resumed, finishes the same way: the snapshot took nothing from it.
            a.resume();
            assertTrue(a.awaitHalt(Duration.ofSeconds(30)), "A did not halt");
            assertEquals(-1, onA.firstMismatch(memA, 40));
        }
    }

    @Test
    void pausingAGuestThatNeverExitsIsBounded() throws Exception {
        // No pass reports and no rate: the guest never leaves KVM_RUN on its own.
        Settings settings = new Settings(LongModeFreeFrom(), 2048, 4096, 0, 0, false);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            Thread.sleep(200);
            assertEquals(0, vm.exits(0), "the spinning guest exited on its own");
            assertTrue(DirtyingWorkload.passesDone(memory) > 0, "the guest is not running");
            long[] nanos = new long[20];
            for (int i = 0; i < nanos.length; i++) {
                nanos[i] = vm.pause().toNanos();
                long frozen = DirtyingWorkload.passesDone(memory);
                Thread.sleep(20);
                assertEquals(frozen, DirtyingWorkload.passesDone(memory), "the guest ran while paused");
                vm.resume();
                Thread.sleep(10);
            }
            Arrays.sort(nanos);
            System.out.printf("pause latency of a spinning guest: median %.3f ms, max %.3f ms over %d pauses%n",
                    nanos[nanos.length / 2] / 1e6, nanos[nanos.length - 1] / 1e6, nanos.length);
            // A kick costs a signal and one VM exit (microseconds). The bound allows for a shared, noisy
            // 2-core host where the vCPU thread may wait for a time slice: 50 ms median, 1 s worst case.
            assertTrue(nanos[nanos.length / 2] < 50_000_000L, "median pause " + nanos[nanos.length / 2] + " ns");
            assertTrue(nanos[nanos.length - 1] < 1_000_000_000L, "worst pause " + nanos[nanos.length - 1] + " ns");
            assertEquals(0, vm.exits(0), "pausing must not count as a guest exit");
            assertNull(vm.failure());
        }
    }

    @Test
    void aTripleFaultIsAClearErrorNamingTheVcpuAndRip() throws Exception {
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(8 * MIB));
             Vm vm = kvm.createVm(memory)) {
            Vcpu vcpu = vm.createVcpu();
            LongMode.buildTables(memory);
            memory.write(DirtyingWorkload.CODE, new byte[] {0x0F, 0x0B}); // ud2, and no IDT to deliver #UD
            LongMode.boot(vcpu, DirtyingWorkload.CODE, DirtyingWorkload.STACK_TOP);
            vm.start(new DirtyingWorkload(Settings.range(LongModeFreeFrom(), 0, 1, 0)));
            assertTrue(vm.awaitHalt(Duration.ofSeconds(10)));
            KvmException e = assertInstanceOf(KvmException.class, vm.failure());
            assertTrue(e.getMessage().contains("KVM_EXIT_SHUTDOWN") && e.getMessage().contains("vcpu 0")
                    && e.getMessage().contains("rip=0x4000"), e.getMessage());
        }
    }

    @Test
    void pausingAHaltedGuestReturnsAtOnce() throws Exception {
        DirtyingWorkload workload = new DirtyingWorkload(Settings.range(LongModeFreeFrom(), MIB, 1, 0));
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(8 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            assertTrue(vm.awaitHalt(Duration.ofSeconds(10)));
            assertTrue(vm.pause().toMillis() < 100);
            vm.resume();
        }
    }

    @Test
    void theWorkloadHoldsItsConfiguredRate() throws Exception {
        // 50k pages/s over 2048-page passes: 40 passes' worth would take 1.6 s at the set rate.
        Settings settings = Settings.range(LongModeFreeFrom(), 8 * MIB, 0, 50_000);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            assertTrue(workload.awaitPasses(1, Duration.ofSeconds(10)));
            long p0 = workload.passesReported(), t0 = System.nanoTime();
            Thread.sleep(1000);
            long p1 = workload.passesReported(), t1 = System.nanoTime();
            double rate = (p1 - p0) * (double) settings.pages() / ((t1 - t0) / 1e9);
            System.out.printf("workload rate: %.0f pages/s for a set rate of 50000%n", rate);
            // Pacing never runs ahead of the rate (one pass of slack for the window edges). A busy host may only
            // make it slower, by any amount (28 % of the rate was seen with both cores loaded), so the lower
            // side checks only that the guest went on.
            assertTrue(rate <= 50_000 * 1.1 + settings.pages(), "rate " + rate);
            assertTrue(p1 > p0, "the guest made no progress in a second");
        }
    }

    @Test
    void twoVcpusSnapshotAndRestoreWithTheSecondParkedInHlt() throws Exception {
        Settings settings = Settings.range(LongModeFreeFrom(), 4 * MIB, 20, 100_000);
        DirtyingWorkload onA = new DirtyingWorkload(settings), onB = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open();
             GuestMemory memA = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             GuestMemory memB = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             Vm a = kvm.createVm(memA); Vm b = kvm.createVm(memB)) {
            a.createVcpu();
            a.createVcpu();
            onA.install(memA, a.vcpus());
            a.start(onA);
            assertTrue(onA.awaitPasses(2, Duration.ofSeconds(20)));
            a.pause();
            b.createVcpu();
            b.createVcpu();
            memA.copyTo(memB);
            for (int i = 0; i < 2; i++) b.vcpus().get(i).restore(a.vcpus().get(i).state());
            assertEquals(DirtyingWorkload.IDLE + 1, b.vcpus().get(1).state().rip(), "vCPU 1 resumes after its HLT");
            b.start(onB);
            assertTrue(b.awaitHalt(Duration.ofSeconds(30)));
            assertNull(b.failure());
            assertEquals(-1, onB.firstMismatch(memB, 20));
        }
    }

    @Test
    void aVcpuSleepingInAnExitHandlerPausesPromptlyAndClosesWithoutKillingTheProcess() throws Exception {
        // 10 pages/s: the vCPU thread spends ~100 ms in the pacing sleep of each throttle exit. A kick
        // that lands there must wake it, and one still pending when the thread ends must be taken
        // (a pending kick delivered after the JVM restores the thread's mask would end the process).
        Settings settings = Settings.range(LongModeFreeFrom(), MIB, 0, 10);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        for (int round = 0; round < 3; round++) {
            try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(8 * MIB));
                 Vm vm = kvm.createVm(memory)) {
                workload.install(memory, vm.createVcpu());
                vm.start(workload);
                Thread.sleep(150);
                assertTrue(vm.pause().toMillis() < 50, "pause waited for the exit handler's sleep");
                vm.resume();
                Thread.sleep(120);
            }
        }
    }

    @Test
    void aPageListGuestWritesExactlyTheListedPages() throws Exception {
        java.util.Random random = new java.util.Random(42);
        long[] pages = random.longs(300, 2 * MIB / 4096, 32 * MIB / 4096).distinct().map(p -> p * 4096 + 8 * (p % 7)).toArray();
        Settings settings = Settings.pageList(LongModeFreeFrom(), pages, 3, 0);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            vm.start(workload);
            assertTrue(vm.awaitHalt(Duration.ofSeconds(10)));
            assertNull(vm.failure());
            assertEquals(-1, workload.firstMismatch(memory, 3));
            long nonZero = 0;
            for (long a = 2 * MIB; a < 32 * MIB; a += 8) if (memory.readLong(a) != 0) nonZero++;
            assertEquals(pages.length, nonZero, "only the listed qwords were written");
        }
    }

    @Test
    void mmioOutsideRamReachesTheExitHandlerBothWays() throws Exception {
        long hole = 0xC000_0000L; // in the hole below 4 GiB: no RAM, so an MMIO exit
        org.vmmkit.testbed.guest.X86Assembler a = new org.vmmkit.testbed.guest.X86Assembler();
        a.movImm(org.vmmkit.testbed.guest.X86Assembler.Reg.RAX, hole)
                .movImm(org.vmmkit.testbed.guest.X86Assembler.Reg.RBX, 0x1122334455667788L)
                .store(org.vmmkit.testbed.guest.X86Assembler.Reg.RAX, 0, org.vmmkit.testbed.guest.X86Assembler.Reg.RBX)
                .load(org.vmmkit.testbed.guest.X86Assembler.Reg.RCX, org.vmmkit.testbed.guest.X86Assembler.Reg.RAX, 8)
                .movImm(org.vmmkit.testbed.guest.X86Assembler.Reg.RDX, 0x2000)
                .store(org.vmmkit.testbed.guest.X86Assembler.Reg.RDX, 0, org.vmmkit.testbed.guest.X86Assembler.Reg.RCX)
                .hlt();
        byte[] code = a.assemble(List.of());
        java.util.List<String> seen = new java.util.concurrent.CopyOnWriteArrayList<>();
        ExitHandler handler = new ExitHandler() {
            public boolean portOut(int vcpu, int port, int size, int count, java.lang.foreign.MemorySegment data) { return false; }
            public boolean portIn(int vcpu, int port, int size, int count, java.lang.foreign.MemorySegment data) { return false; }
            @Override
            public boolean mmio(int vcpu, long address, boolean write, java.lang.foreign.MemorySegment data) {
                if (write) {
                    seen.add("write 0x" + Long.toHexString(address) + " = 0x"
                            + Long.toHexString(data.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0)) + " (" + data.byteSize() + ")");
                } else {
                    seen.add("read 0x" + Long.toHexString(address) + " (" + data.byteSize() + ")");
                    data.set(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 0, 0xCAFEF00DL);
                }
                return true;
            }
        };
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(8 * MIB));
             Vm vm = kvm.createVm(memory)) {
            Vcpu vcpu = vm.createVcpu();
            LongMode.buildTables(memory);
            memory.write(DirtyingWorkload.CODE, code);
            LongMode.boot(vcpu, DirtyingWorkload.CODE, DirtyingWorkload.STACK_TOP);
            vm.start(handler);
            assertTrue(vm.awaitHalt(Duration.ofSeconds(10)));
            assertNull(vm.failure());
            assertEquals(List.of("write 0xc0000000 = 0x1122334455667788 (8)", "read 0xc0000008 (8)"), seen);
            assertEquals(0xCAFEF00DL, memory.readLong(0x2000), "the value the handler returned reached the guest");
        }
    }

    @Test
    void hostCapabilitiesAreReported() {
        try (Kvm kvm = Kvm.open()) {
            System.out.println("KVM: vcpu mmap size " + kvm.vcpuMmapSize() + ", manual dirty-log protect "
                    + kvm.checkExtension(KvmAbi.CAP_MANUAL_DIRTY_LOG_PROTECT2) + ", dirty ring "
                    + kvm.checkExtension(KvmAbi.CAP_DIRTY_LOG_RING) + ", memslots "
                    + kvm.checkExtension(KvmAbi.CAP_NR_MEMSLOTS) + ", " + kvm.msrIndexList().length + " MSRs");
            assertTrue(kvm.vcpuMmapSize() >= KvmAbi.RUN.byteSize());
            assertTrue(kvm.supportsMsr(KvmAbi.MSR_IA32_TSC));
        }
    }

    private static long LongModeFreeFrom() {
        return LongMode.FREE_FROM;
    }

    private static boolean allZero(byte[] bytes) {
        for (byte x : bytes) if (x != 0) return false;
        return true;
    }

    static byte[] digest(GuestMemory memory) throws Exception {
        java.security.MessageDigest sha = java.security.MessageDigest.getInstance("SHA-256");
        for (var r : memory.regions()) sha.update(r.host().asByteBuffer());
        return sha.digest();
    }
}
