package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.KvmDirtyLog;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.core.vfio.v1.DeviceState;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The connection cut at each phase: the source rolls back and its guest keeps running with its memory intact. */
@RequiresKvm
@Timeout(120)
class RollbackTest {
    private static final long MIB = 1 << 20;

    enum Cut { IN_SETUP, MID_ROUND, IN_STOP_AND_COPY, BEFORE_THE_ACKNOWLEDGEMENT }

    /** Reads past the payload of the frame whose header {@code codec} just read. */
    private static void skipPayload(FrameCodec codec, SocketChannel in, ByteBuffer scratch) throws java.io.IOException {
        for (long left = codec.length(); left > 0; ) {
            scratch.clear().limit((int) Math.min(left, scratch.capacity()));
            codec.readPayloadUnchecked(in, scratch);
            left -= scratch.position();
        }
    }

    /** What a destination does before READY: HELLO with a nonce, the header (carrying it back), READY. Returns the return path's codec. */
    static FrameCodec handshake(SocketChannel in) throws java.io.IOException {
        FrameCodec back = new FrameCodec(1 << 20);
        back.write(in, FrameType.HELLO, 1, 2, null, null);
        StreamHeader header = StreamHeader.read(in);
        assertEquals(new org.vmmkit.migration.wire.Nonce(1, 2), header.nonce(), "the header carries the HELLO's nonce back");
        back.write(in, FrameType.READY, 0, 0, null, null);
        return back;
    }

    /** A destination that reads the stream and closes the connection at {@code cut}. */
    private static void cuttingDestination(ServerSocketChannel server, Cut cut) {
        try (SocketChannel in = server.accept()) {
            if (cut == Cut.IN_SETUP) return;
            handshake(in);
            FrameCodec codec = new FrameCodec(1L << 30);
            ByteBuffer scratch = ByteBuffer.allocateDirect(8 << 20);
            long frames = 0;
            while (true) {
                FrameType t = codec.readHeader(in);
                skipPayload(codec, in, scratch);
                frames++;
                if (cut == Cut.MID_ROUND && frames == 20) return;
                if (cut == Cut.IN_STOP_AND_COPY && t == FrameType.SECTION_CHUNK && codec.a() == 1) return; // vcpu/0, after the one device
                if (cut == Cut.BEFORE_THE_ACKNOWLEDGEMENT && t == FrameType.COMPLETE) return;
            }
        } catch (Exception e) {
            // the source may cut first; nothing to report from here
        }
    }

    enum CancelAt { IN_PRE_COPY, WHILE_THE_DESTINATION_HANGS_BEFORE_ITS_ACKNOWLEDGEMENT }

    /** A destination that takes everything and never answers the COMPLETE: only a cancel ends the wait. */
    private static void silentDestination(ServerSocketChannel server, java.util.concurrent.CountDownLatch completeSeen) {
        try (SocketChannel in = server.accept()) {
            handshake(in);
            FrameCodec codec = new FrameCodec(1L << 30);
            ByteBuffer scratch = ByteBuffer.allocateDirect(8 << 20);
            while (true) {
                FrameType t = codec.readHeader(in);
                skipPayload(codec, in, scratch);
                if (t == FrameType.COMPLETE) completeSeen.countDown();
            }
        } catch (Exception e) {
            // ends when the source closes the connection
        }
    }

    @ParameterizedTest(name = "cancelled {0}")
    @EnumSource(CancelAt.class)
    void aCancelledMigrationRollsBackAndNeverHangs(CancelAt when) throws Exception {
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 16 * MIB, 0, 0); // flat out
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        // In pre-copy: a device whose workload keeps dirtying its 16 MiB, one chunk a round, against a 0 ms
        // limit, so pending device data never runs out and pre-copy is still going when the cancel comes.
        // Before the acknowledgement: two rounds, then the handover to a destination that never answers.
        MigrationSettings settingsForCase = when == CancelAt.IN_PRE_COPY
                ? new MigrationSettings(java.time.Duration.ZERO, 1_000_000, 1, 256, 1024).withConvergence(ConvergencePolicy.FORCE)
                : new MigrationSettings(java.time.Duration.ZERO, 2, 16, 256, 1024).withConvergence(ConvergencePolicy.FORCE);
        try (Kvm kvm = Kvm.open();
             GuestMemory ram = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             Vm vm = kvm.createVm(ram);
             EmulatedMigratableDevice device = new EmulatedMigratableDevice(EmulatedMigratableDevice.Config.defaults("gpu0")
                     .withMemory(16 * MIB).withOpsPerSecond(20_000), 1);
             V1DeviceMigration deviceMigration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            workload.install(ram, vm.createVcpu());
            vm.start(workload);
            assertTrue(workload.awaitPasses(1, Duration.ofSeconds(30)));
            java.util.concurrent.CountDownLatch completeSeen = new java.util.concurrent.CountDownLatch(1);
            // Own threads, not the common pool: on 2 cores its single worker would be taken by the destination.
            Thread destination = Thread.ofPlatform().start(() -> silentDestination(server, completeSeen));
            KvmDirtyLog log = new KvmDirtyLog(vm);
            MigrationSource source = new MigrationSource(vm, List.of(log), List.of(deviceMigration), settingsForCase);
            Thread canceller = Thread.ofPlatform().start(() -> {
                try {
                    if (when == CancelAt.IN_PRE_COPY) Thread.sleep(300);
                    else completeSeen.await(30, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                source.cancel();
            });
            long t0 = System.nanoTime();
            MigrationException failure;
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                failure = assertThrows(MigrationException.class, () -> source.migrate(out));
            } finally {
                log.close();
            }
            canceller.join(30_000);
            destination.join(30_000);
            System.out.println(when + ": " + failure.getMessage());
            assertTrue(failure.getMessage().startsWith("migration cancelled in " + (when == CancelAt.IN_PRE_COPY ? "pre-copy" : "handover")),
                    failure.getMessage());
            assertTrue(System.nanoTime() - t0 < 30_000_000_000L, "no hang");
            long passes = workload.passesReported();
            assertTrue(workload.awaitPasses(passes + 3, Duration.ofSeconds(30)), "the source guest runs after the cancel");
            assertTrue(!vm.dirtyLogging(), "dirty logging is off again");
            assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits(), "the device runs again");
            assertEquals(List.of(), device.misuse());
        }
    }

    @ParameterizedTest(name = "connection cut {0}")
    @EnumSource(Cut.class)
    void theSourceGuestKeepsRunningWithItsMemoryIntact(Cut cut) throws Exception {
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 16 * MIB, 0, 100_000);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open();
             GuestMemory ram = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             Vm vm = kvm.createVm(ram);
             EmulatedMigratableDevice device = new EmulatedMigratableDevice(EmulatedMigratableDevice.Config.defaults("gpu0")
                     .withMemory(4 * MIB).withOpsPerSecond(5_000), 1);
             V1DeviceMigration deviceMigration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            workload.install(ram, vm.createVcpu());
            EmulatedVfioContainer container = new EmulatedVfioContainer("c", 4096, EmulatedVfioContainer.Tracking.PRECISE);
            container.mapDma(0, ram.regions().get(0).host(), true, true);
            device.attachDma(container, 24 * MIB, 4 * MIB);
            vm.start(workload);
            assertTrue(workload.awaitPasses(1, Duration.ofSeconds(30)));
            Thread destination = Thread.ofPlatform().start(() -> cuttingDestination(server, cut));
            KvmDirtyLog log = new KvmDirtyLog(vm);
            MigrationException failure;
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                MigrationSource source = new MigrationSource(vm, List.of(log, new VfioIommuDirtyPages(container, ram)),
                        List.of(deviceMigration), MigrationSettings.DEFAULT);
                failure = assertThrows(MigrationException.class, () -> source.migrate(out));
            } finally {
                log.close();
            }
            destination.join(30_000);
            System.out.println(cut + ": " + failure.getMessage());
            assertTrue(failure.getMessage().contains("rolled back"), failure.getMessage());
            // The guest keeps running ...
            long passes = workload.passesReported();
            assertTrue(workload.awaitPasses(passes + 3, Duration.ofSeconds(30)), "the source guest runs after the rollback");
            assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits(), "the device runs again");
            assertTrue(!vm.dirtyLogging(), "dirty logging is off again");
            // ... with its memory intact: paused, every page holds pass P or P+1 of its own counter.
            vm.pause();
            long done = DirtyingWorkload.passesDone(ram);
            for (long i = 0; i < settings.pages(); i++) {
                long v = ram.readLong(settings.pageAddress(i));
                boolean ok = v == DirtyingWorkload.expectedValue(i, done) || v == DirtyingWorkload.expectedValue(i, done + 1);
                assertTrue(ok, "page " + i + " holds 0x" + Long.toHexString(v) + " after " + done + " passes");
            }
            vm.resume();
            assertEquals(List.of(), device.misuse());
        }
    }

    @Test
    void aListenerThatNeverAnswersReadyIsGivenUpOnWithNothingChanged() throws Exception {
        DirtyingWorkload workload = new DirtyingWorkload(DirtyingWorkload.Settings.range(MIB, 4 * MIB, 0, 10_000));
        try (Kvm kvm = Kvm.open();
             GuestMemory ram = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             Vm vm = kvm.createVm(ram);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            workload.install(ram, vm.createVcpu());
            vm.start(workload);
            KvmDirtyLog log = new KvmDirtyLog(vm);
            long t0 = System.nanoTime();
            MigrationException failure;
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress()); SocketChannel silent = server.accept()) {
                MigrationSource source = new MigrationSource(vm, List.of(log), List.of(), MigrationSettings.DEFAULT)
                        .withReadyTimeout(Duration.ofMillis(500));
                failure = assertThrows(MigrationException.class, () -> source.migrate(out));
                assertTrue(silent.isOpen());
            } finally {
                log.close();
            }
            long millis = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(failure.getMessage().contains("did not answer READY within 500 ms") && failure.getMessage().contains("migration failed in setup"),
                    failure.getMessage());
            assertTrue(millis >= 450 && millis < 10_000, millis + " ms");
            assertTrue(!vm.dirtyLogging(), "dirty logging (begun with the handshake) is off again");
            long passes = workload.passesReported();
            assertTrue(workload.awaitPasses(passes + 2, Duration.ofSeconds(30)), "the guest runs on");
        }
    }
}
