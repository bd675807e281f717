package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.FutureTask;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.KvmDirtyLog;
import org.vmmkit.testbed.guest.SoftwareGuest;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.migration.testing.FrameProxy;
import org.vmmkit.migration.testing.FrameProxy.Action;
import org.vmmkit.migration.testing.FrameProxy.Direction;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.DataSection;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Randomized live migrations in one process: a guest rewriting memory (a real KVM guest; where KVM is
 * unusable, the software guest running the same workload on a Java thread, its writes logged by itself), an emulated VFIO v1 device
 * doing DMA, and every knob drawn from a seed: workload size and rate, the device's memory, data-section kind,
 * operation rate and DMA, the channel count (1 to 4), the frame size, RAM checksums, the ring size, the
 * downtime limit, the round cap, a bandwidth cap, and in about a third of the iterations a fault through a
 * {@link FrameProxy} before the handover's decision (a frame dropped, or a connection cut, in either
 * direction). A completed migration must resume exactly what the source paused (every page, the device's
 * state); a faulted one must leave the source running and intact (its guest's pages, its device, no dirty
 * logging) and the destination unstarted, and then take a genuine migration that completes.
 *
 * <p>{@code -Dsoak.iterations=N} (default 100, about a minute) and {@code -Dsoak.seed=S} (default: random,
 * printed) set the run; a failed iteration prints its seed, and {@code -Dsoak.seed=SEED -Dsoak.iterations=1}
 * replays its choices (the guest's timing, and so the dirty pages, are the machine's).
 */
class RandomizedMigrationSoakTest {
    private static final long MIB = 1 << 20;
    private static final Duration ITERATION_LIMIT = Duration.ofSeconds(90);

    /** A device's draw: its memory, data-section kind, operation rate, and the guest RAM it writes by DMA (0: none). */
    record DevicePlan(long memory, DataSection section, long opsPerSecond, long dmaBytes) {
    }

    /**
     * A fault before the decision: {@code action} on the {@code frame}-th frame of {@code connection} towards the
     * destination, or (towards the source) on the first connection's frame of type {@code returnFrame}.
     */
    record FaultPlan(Action action, Direction direction, int connection, int frame, FrameType returnFrame) {
        @Override
        public String toString() {
            return direction == Direction.TO_SOURCE ? action + " " + returnFrame + " to the source"
                    : action + " frame " + frame + " of connection " + connection + " to the destination";
        }
    }

    /** One iteration's choices, all drawn from its seed. */
    record Plan(long seed, long guestBytes, long workloadBytes, long pagesPerSecond, DevicePlan device, MigrationSettings settings,
                FaultPlan fault) {
        static Plan draw(long seed) {
            SplittableRandom r = new SplittableRandom(seed);
            long guest = r.nextBoolean() ? 16 * MIB : 32 * MIB;
            long workload = (1L << r.nextInt(4)) * MIB; // 1 to 8 MiB
            long pages = workload / GuestMemory.PAGE_SIZE;
            long rate = r.nextInt(20) == 0 ? 0 : pages * new long[] {4, 10, 40}[r.nextInt(3)]; // 0: flat out
            DevicePlan device = r.nextInt(5) == 0 ? null : new DevicePlan((1L << r.nextInt(3)) * MIB,
                    DataSection.values()[r.nextInt(DataSection.values().length)], new long[] {200, 2000, 10_000}[r.nextInt(3)],
                    r.nextBoolean() ? MIB : 0);
            MigrationSettings settings = new MigrationSettings(Duration.ofMillis(new long[] {20, 100, 300}[r.nextInt(3)]), 2 + r.nextInt(7),
                    new int[] {1, 4, 16}[r.nextInt(3)], new long[] {1, 16, 64, 256, 1024}[r.nextInt(5)], new int[] {64, 256, 1024}[r.nextInt(3)],
                    r.nextInt(4) == 0 ? new long[] {64, 128, 256}[r.nextInt(3)] * MIB : 0, 1 + r.nextInt(4), r.nextBoolean(),
                    ConvergencePolicy.FORCE); // every genuine attempt must complete, whatever the round cap drawn (ConvergenceTest has the others)
            FaultPlan fault = null;
            if (r.nextInt(3) == 0) {
                int kind = r.nextInt(5);
                fault = kind == 4
                        ? new FaultPlan(Action.CUT, Direction.TO_SOURCE, 0, 0, r.nextBoolean() ? FrameType.READY : FrameType.PREPARED)
                        : new FaultPlan(kind < 2 ? Action.DROP : Action.CUT, Direction.TO_DESTINATION, r.nextInt(settings.channels()),
                                r.nextInt(48), null);
            }
            return new Plan(seed, guest, workload, rate, device, settings, fault);
        }

        @Override
        public String toString() {
            return "seed " + seed + ": guest " + guestBytes / MIB + " MiB, workload " + workloadBytes / MIB + " MiB at "
                    + (pagesPerSecond == 0 ? "full speed" : pagesPerSecond + " pages/s") + ", "
                    + (device == null ? "no device" : "device " + device) + ", " + settings + ", fault: " + (fault == null ? "none" : fault);
        }
    }

    /** What an iteration ended as. */
    enum Result { COMPLETED, FAULTED_THEN_COMPLETED, FAULT_NOT_REACHED_COMPLETED }

    @Test
    void everyRandomMigrationResumesExactlyWhatWasPausedOrLeavesTheSourceRunningAndTheDestinationUnstarted() throws Exception {
        int iterations = Integer.getInteger("soak.iterations", 100);
        long base = Long.getLong("soak.seed", new SplittableRandom().nextLong());
        System.out.println("soak: " + iterations + " iterations from seed " + base + " (replay one: -Dsoak.seed=SEED -Dsoak.iterations=1)");
        List<String> failures = new ArrayList<>();
        int[] results = new int[Result.values().length];
        long start = System.nanoTime();
        if (!Kvm.available()) {
            if ("1".equals(System.getenv("VMMKIT_REQUIRE_KVM"))) throw new IllegalStateException("VMMKIT_REQUIRE_KVM=1 but KVM is unusable: " + Kvm.unavailableReason());
            System.out.println("soak: KVM is unusable here (" + Kvm.unavailableReason() + "): the software guest runs the workload");
        }
        try (Kvm kvm = Kvm.available() ? Kvm.open() : null) {
            for (int i = 0; i < iterations; i++) {
                Plan plan = Plan.draw(base + i);
                FutureTask<Result> task = new FutureTask<>(() -> iteration(kvm, plan));
                Thread runner = Thread.ofPlatform().name("soak-" + i).start(task);
                try {
                    results[task.get(ITERATION_LIMIT.toSeconds(), TimeUnit.SECONDS).ordinal()]++;
                } catch (java.util.concurrent.ExecutionException e) {
                    failures.add(plan + " -> " + e.getCause());
                    System.out.println("soak: FAILED " + plan);
                    e.getCause().printStackTrace(System.out);
                } catch (TimeoutException e) {
                    runner.interrupt();
                    failures.add(plan + " -> did not end within " + ITERATION_LIMIT.toSeconds() + " s; the soak stops here");
                    break;
                }
            }
        }
        long millis = (System.nanoTime() - start) / 1_000_000;
        System.out.printf("soak: %d iterations in %d ms (%d ms each): %d completed, %d faulted (rolled back, then completed), "
                        + "%d with a fault not reached (completed); %d failed%n", iterations, millis, millis / Math.max(1, iterations),
                results[Result.COMPLETED.ordinal()], results[Result.FAULTED_THEN_COMPLETED.ordinal()],
                results[Result.FAULT_NOT_REACHED_COMPLETED.ordinal()], failures.size());
        assertTrue(failures.isEmpty(), failures.size() + " of " + iterations + " iterations failed:\n" + String.join("\n", failures));
    }

    /** The destination's side: takes attempt after attempt on {@code server} until one runs, as the vmm process does. */
    private static final class Receiver {
        final MigrationDestination destination;
        final CompletableFuture<Void> started = new CompletableFuture<>();
        final Semaphore attemptsEnded = new Semaphore(0);
        final List<String> failures = new CopyOnWriteArrayList<>();
        final AtomicReference<byte[]> digestAtLoad = new AtomicReference<>();

        Receiver(MigratableVm vm, GuestMemory ram, List<V1DeviceMigration> devices, ServerSocketChannel server) {
            destination = new MigrationDestination(vm, devices, () -> digestAtLoad.set(LiveMigrationTest.digest(ram)));
            Thread.ofPlatform().name("soak-destination").daemon().start(() -> {
                while (server.isOpen()) {
                    try {
                        destination.receive(server, Duration.ofSeconds(60));
                        started.complete(null);
                        return;
                    } catch (MigrationException e) {
                        if (!server.isOpen()) return;
                        failures.add(e.getMessage());
                        attemptsEnded.release();
                    }
                }
            });
        }
    }

    /** Strikes the plan's fault once, never on COMPLETE or COMMIT (so always before the decision, and noticed at once). */
    private static final class FaultRule implements FrameProxy.Rule {
        final FaultPlan fault;
        volatile boolean struck;

        FaultRule(FaultPlan fault) {
            this.fault = fault;
        }

        @Override
        public Action on(int connection, Direction direction, long index, int type) {
            if (struck || direction != fault.direction() || connection != fault.connection()) return Action.FORWARD;
            if (type == FrameType.COMPLETE.code() || type == FrameType.COMMIT.code()) return Action.FORWARD;
            boolean here = direction == Direction.TO_SOURCE ? type == fault.returnFrame().code() : index == fault.frame();
            if (!here) return Action.FORWARD;
            struck = true;
            return fault.action();
        }
    }

    /**
     * One end's guest running the built-in workload: a KVM VM, or (kvm == null) the software guest. What the
     * checks need of it, whichever it is.
     */
    private static final class Guest implements AutoCloseable {
        final GuestMemory memory;
        final DirtyingWorkload.Settings settings;
        private final Vm vm;
        private final DirtyingWorkload workload;
        private final SoftwareGuest software;
        private final MigratableVm migratable;

        Guest(Kvm kvm, long bytes, DirtyingWorkload.Settings settings) {
            this.memory = GuestMemory.create(GuestMemory.standardLayout(bytes));
            this.settings = settings;
            if (kvm != null) {
                vm = kvm.createVm(memory);
                workload = new DirtyingWorkload(settings);
                software = null;
                migratable = new KvmGuest(vm, workload);
            } else {
                vm = null;
                workload = null;
                software = new SoftwareGuest(memory, settings);
                migratable = software;
            }
        }

        /** A source: the workload installed and running from pass 0. */
        Guest boot() {
            if (vm != null) {
                workload.install(memory, vm.createVcpu());
                vm.start(workload);
            } else {
                software.install();
                software.boot();
            }
            return this;
        }

        /** A destination: ready to be loaded (a vCPU to restore into, with KVM). */
        Guest awaitLoad() {
            if (vm != null) vm.createVcpu();
            return this;
        }

        MigratableVm vm() {
            return migratable;
        }

        /** The dirty sources of one migration attempt (a KVM dirty log is opened per attempt and closed after it). */
        List<DirtySource> openDirtyLogs() {
            return vm != null ? List.of(new KvmDirtyLog(vm)) : List.of(software);
        }

        void closeDirtyLogs(List<DirtySource> logs) {
            for (DirtySource d : logs) if (d instanceof KvmDirtyLog k) k.close();
        }

        boolean dirtyLogging() {
            return vm != null ? vm.dirtyLogging() : software.logging();
        }

        Throwable failure() {
            return vm != null ? vm.failure() : null;
        }

        void pause() {
            migratable.pause();
        }

        void resume() {
            migratable.resume();
        }

        /** Passes the guest says it completed (KVM: its port reports; software: the counter in its memory); -1 before any. */
        long passesSeen() {
            if (vm != null) return workload.passesReported();
            return software.booted() ? DirtyingWorkload.passesDone(memory) : -1;
        }

        boolean awaitPasses(long passes, Duration timeout) throws InterruptedException {
            return vm != null ? workload.awaitPasses(passes, timeout) : software.awaitPasses(passes, timeout);
        }

        @Override
        public void close() {
            if (software != null) software.shutdown();
            if (vm != null) vm.close();
            memory.close();
        }
    }

    private static Result iteration(Kvm kvm, Plan plan) throws Exception {
        DirtyingWorkload.Settings work = DirtyingWorkload.Settings.range(MIB, plan.workloadBytes(), 0, plan.pagesPerSecond());
        DevicePlan dp = plan.device();
        EmulatedMigratableDevice.Config deviceConfig = dp == null ? null : EmulatedMigratableDevice.Config.defaults("soak-gpu")
                .withMemory(dp.memory()).with(dp.section()).withOpsPerSecond(dp.opsPerSecond());
        try (Guest source = new Guest(kvm, plan.guestBytes(), work); Guest destination = new Guest(kvm, plan.guestBytes(), work);
             EmulatedMigratableDevice a = dp == null ? null : new EmulatedMigratableDevice(deviceConfig, plan.seed());
             EmulatedMigratableDevice b = dp == null ? null : new EmulatedMigratableDevice(deviceConfig, ~plan.seed()).recordDigestOnResume();
             V1DeviceMigration aMigration = a == null ? null : V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration bMigration = b == null ? null : V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            source.boot();
            destination.awaitLoad();
            EmulatedVfioContainer container = new EmulatedVfioContainer("soak-iommu", GuestMemory.PAGE_SIZE, EmulatedVfioContainer.Tracking.PRECISE);
            container.mapDma(0, source.memory.regions().get(0).host(), true, true);
            if (dp != null && dp.dmaBytes() > 0) a.attachDma(container, plan.guestBytes() - 2 * MIB, dp.dmaBytes()); // above the workload's pages
            assertTrue(source.awaitPasses(1, Duration.ofSeconds(30)), "the source guest runs");
            List<V1DeviceMigration> sourceDevices = a == null ? List.of() : List.of(aMigration);
            Receiver receiver = new Receiver(destination.vm(), destination.memory, b == null ? List.of() : List.of(bMigration), server);
            Rig rig = new Rig(plan, source, container, sourceDevices, server, receiver, destination, a, b);
            try {
                return migrateAndCheck(rig);
            } catch (Throwable t) {
                throw new AssertionError(t.getMessage() + " (the destination's failures: " + receiver.failures + ")", t);
            }
        }
    }

    /** One iteration's two ends, set up. */
    private record Rig(Plan plan, Guest source, EmulatedVfioContainer container, List<V1DeviceMigration> sourceDevices,
                       ServerSocketChannel server, Receiver receiver, Guest destination,
                       EmulatedMigratableDevice a, EmulatedMigratableDevice b) {
    }

    /** Migrates the rig's source to {@code to} (a KVM dirty log of its own, closed after); returns the source, whatever happened. */
    private static MigrationSource migrate(Rig r, java.net.SocketAddress to, List<MigrationException> failure) {
        List<DirtySource> logs = r.source().openDirtyLogs();
        List<DirtySource> sources = new ArrayList<>(logs);
        sources.add(new VfioIommuDirtyPages(r.container(), r.source().memory));
        MigrationSource m = new MigrationSource(r.source().vm(), sources, r.sourceDevices(), r.plan().settings());
        try {
            m.migrate(to);
        } catch (MigrationException e) {
            failure.add(e);
        } finally {
            r.source().closeDirtyLogs(logs);
        }
        return m;
    }

    private static Result migrateAndCheck(Rig r) throws Exception {
        Result result = Result.COMPLETED;
        if (r.plan().fault() != null) {
            FaultRule rule = new FaultRule(r.plan().fault());
            List<MigrationException> failures = new ArrayList<>();
            MigrationSource faulted;
            try (FrameProxy proxy = new FrameProxy(r.server().getLocalAddress(), rule, false)) {
                faulted = migrate(r, proxy.address(), failures);
            }
            if (!rule.struck) {
                assertEquals(List.of(), failures, "the fault was never reached, yet the migration failed");
                checkResumedExactly(r);
                return Result.FAULT_NOT_REACHED_COMPLETED;
            }
            assertEquals(1, failures.size(), "the migration completed through a fault (" + r.plan().fault() + ")");
            String why = failures.get(0).getMessage();
            assertEquals(MigrationStatus.FAILED, faulted.stats().status(), why);
            assertTrue(why.contains("rolled back"), why);
            checkSourceRunsIntact(r);
            Receiver receiver = r.receiver();
            assertTrue(receiver.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS), "the destination did not give the faulted stream up");
            assertFalse(receiver.started.isDone(), "the destination started from a faulted stream");
            assertEquals(-1, r.destination().passesSeen(), "the destination's guest ran");
            if (receiver.destination.lastStream() != null) {
                assertEquals(HandoverOutcome.NOT_STARTED, receiver.destination.outcomeOf(receiver.destination.lastStream()));
            }
            if (r.b() != null) {
                assertNull(r.b().digestAtResume(), "the destination's device resumed from a faulted stream");
                assertEquals(List.of(), r.b().misuse());
            }
            result = Result.FAULTED_THEN_COMPLETED;
        }
        // The migration (after a fault: the genuine one that the destination, still waiting, must take).
        List<MigrationException> failures = new ArrayList<>();
        MigrationSource m = migrate(r, r.server().getLocalAddress(), failures);
        if (!failures.isEmpty()) throw failures.get(0);
        assertEquals(MigrationStatus.COMPLETED, m.stats().status());
        checkResumedExactly(r);
        return result;
    }

    /** The destination runs what the source paused: every page, the device's state; its guest goes on from there. */
    private static void checkResumedExactly(Rig r) throws Exception {
        GuestMemory sourceRam = r.source().memory;
        EmulatedMigratableDevice a = r.a(), b = r.b();
        Guest onDestination = r.destination();
        Receiver receiver = r.receiver();
        receiver.started.get(30, TimeUnit.SECONDS);
        assertArrayEquals(LiveMigrationTest.digest(sourceRam), receiver.digestAtLoad.get(), "guest memory at resume differs from the source's at pause");
        if (a != null) {
            assertArrayEquals(a.stateDigest(), b.digestAtResume(), "device state at resume differs from the source's at stop");
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());
        }
        long paused = DirtyingWorkload.passesDone(sourceRam);
        assertTrue(onDestination.awaitPasses(paused + 1, Duration.ofSeconds(30)), "the destination's guest does not go on from pass " + paused);
        assertEquals(paused, DirtyingWorkload.passesDone(sourceRam), "the source's guest ran on after the handover");
    }

    /** After a rollback: no dirty logging, every workload page as a pass left it, the guest and the device running on. */
    private static void checkSourceRunsIntact(Rig r) throws Exception {
        Guest source = r.source();
        GuestMemory ram = source.memory;
        EmulatedMigratableDevice device = r.a();
        assertFalse(source.dirtyLogging(), "dirty logging still on after the rollback");
        assertNull(source.failure());
        source.pause();
        try {
            long done = DirtyingWorkload.passesDone(ram);
            DirtyingWorkload.Settings s = source.settings;
            for (long i = 0; i < s.pages(); i++) {
                long v = ram.readLong(s.pageAddress(i));
                if (v != DirtyingWorkload.expectedValue(i, done) && v != DirtyingWorkload.expectedValue(i, done + 1)) {
                    fail("after the rollback, page " + i + " holds 0x" + Long.toHexString(v) + " after " + done + " passes");
                }
            }
        } finally {
            source.resume();
        }
        assertTrue(source.awaitPasses(source.passesSeen() + 2, Duration.ofSeconds(30)), "the source's guest does not run on");
        if (device != null) {
            assertEquals(List.of(), device.misuse());
            long ops = device.operations();
            long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
            while (device.operations() == ops) {
                assertTrue(System.nanoTime() < deadline, "the source's device does not run on after the rollback");
                Thread.sleep(1);
            }
        }
    }
}
