package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.guest.DirtyingWorkload;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.KvmDirtyLog;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.vfio.migration.emulated.EmulatedMigratableDevice;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A real KVM guest dirtying memory and an emulated device doing DMA, migrated live in one process over loopback TCP. */
@RequiresKvm
@Timeout(120)
class LiveMigrationTest {
    private static final long MIB = 1 << 20;

    static byte[] digest(GuestMemory memory) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (GuestRegion r : memory.regions()) sha.update(r.host().asByteBuffer());
            return sha.digest();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Runs {@code incoming} on its own thread (not the common pool: on 2 cores its single worker may be taken)
     * and migrates {@code source} to it over loopback; returns the source's statistics once both ends are done.
     */
    private static MigrationStats migrate(Vm source, List<org.vmmkit.dirty.DirtySource> dirty, List<V1DeviceMigration> devices,
                                          MigrationSettings settings, MigrationDestination incoming) throws Exception {
        try (ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Throwable> destinationFailure = new AtomicReference<>();
            Thread destination = Thread.ofPlatform().name("destination").start(() -> {
                try (SocketChannel in = server.accept()) {
                    incoming.receive(in);
                } catch (Throwable t) {
                    destinationFailure.set(t);
                }
            });
            MigrationStats stats;
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                stats = new MigrationSource(source, dirty, devices, settings).migrate(out);
            }
            destination.join(30_000);
            assertNull(destinationFailure.get(), "the destination failed");
            return stats;
        }
    }

    @Test
    void aBandwidthCapHoldsTheSendRate() throws Exception {
        long cap = 40L << 20; // 40 MiB/s: the first round (24 MiB of random content, 16 MiB dirtied) takes ~1 s
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 16 * MIB, 0, 2_000);
        DirtyingWorkload onSource = new DirtyingWorkload(settings), onDestination = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open();
             GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm source = kvm.createVm(sourceRam); Vm destination = kvm.createVm(destinationRam)) {
            onSource.install(sourceRam, source.createVcpu());
            // Random content everywhere else, so the cap is measured on real RAM frames, not zero runs.
            java.util.SplittableRandom random = new java.util.SplittableRandom(4);
            for (long a = 40 * MIB; a < 64 * MIB; a += 8) sourceRam.writeLong(a, random.nextLong());
            destination.createVcpu();
            source.start(onSource);
            assertTrue(onSource.awaitPasses(1, Duration.ofSeconds(30)));
            AtomicReference<byte[]> destinationDigest = new AtomicReference<>();
            MigrationDestination incoming = new MigrationDestination(destination, List.of(), onDestination,
                    () -> destinationDigest.set(digest(destinationRam)));
            KvmDirtyLog kvmLog = new KvmDirtyLog(source);
            MigrationStats stats;
            try {
                stats = migrate(source, List.of(kvmLog), List.of(), MigrationSettings.DEFAULT.withMaxBandwidth(cap), incoming);
            } finally {
                kvmLog.close();
            }
            System.out.println("capped at 40 MiB/s: " + stats);
            double bytesPerSecond = stats.transferredBytes() / (stats.totalMillis() / 1000.0);
            assertTrue(bytesPerSecond <= cap * 1.10, "sent at " + (long) bytesPerSecond + " B/s over a cap of " + cap);
            assertTrue(stats.totalMillis() >= 500, "a capped migration of this size cannot take " + stats.totalMillis() + " ms");
            assertFalse(stats.stoppedByIterationCap(), "2000 pages/s under a 40 MiB/s cap converges: " + stats);
            assertArrayEquals(digest(sourceRam), destinationDigest.get());
        }
    }

    @Test
    void aWorkloadThatCannotConvergeStopsAtTheIterationCapAndSaysSo() throws Exception {
        // Flat out over 32 MiB against a 0 ms downtime limit: no round can get under it.
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 32 * MIB, 0, 0);
        DirtyingWorkload onSource = new DirtyingWorkload(settings), onDestination = new DirtyingWorkload(settings);
        MigrationSettings capped = new MigrationSettings(Duration.ZERO, 3, 16, 256, 1024);
        try (Kvm kvm = Kvm.open();
             GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm source = kvm.createVm(sourceRam); Vm destination = kvm.createVm(destinationRam)) {
            onSource.install(sourceRam, source.createVcpu());
            destination.createVcpu();
            source.start(onSource);
            assertTrue(onSource.awaitPasses(2, Duration.ofSeconds(30)));
            AtomicReference<byte[]> destinationDigest = new AtomicReference<>();
            MigrationDestination incoming = new MigrationDestination(destination, List.of(), onDestination,
                    () -> destinationDigest.set(digest(destinationRam)));
            KvmDirtyLog kvmLog = new KvmDirtyLog(source);
            MigrationStats stats;
            try {
                stats = migrate(source, List.of(kvmLog), List.of(), capped, incoming);
            } finally {
                kvmLog.close();
            }
            System.out.println("capped migration: " + stats);
            assertTrue(stats.stoppedByIterationCap(), "the stats say the cap ended pre-copy");
            assertEquals(3, stats.rounds());
            assertArrayEquals(digest(sourceRam), destinationDigest.get());
            long passesAtPause = DirtyingWorkload.passesDone(sourceRam);
            assertTrue(onDestination.awaitPasses(passesAtPause + 2, Duration.ofSeconds(30)));
        }
    }

    @Test
    void aRunningGuestAndItsDeviceMigrateLiveAndContinue() throws Exception {
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 32 * MIB, 0, 100_000);
        DirtyingWorkload onSource = new DirtyingWorkload(settings), onDestination = new DirtyingWorkload(settings);
        EmulatedMigratableDevice.Config deviceConfig = EmulatedMigratableDevice.Config.defaults("emulated-gpu0")
                .withMemory(16 * MIB).withOpsPerSecond(5_000);
        try (Kvm kvm = Kvm.open();
             GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm source = kvm.createVm(sourceRam); Vm destination = kvm.createVm(destinationRam);
             EmulatedMigratableDevice a = new EmulatedMigratableDevice(deviceConfig, 1);
             EmulatedMigratableDevice b = new EmulatedMigratableDevice(deviceConfig, 2).recordDigestOnResume();
             V1DeviceMigration aMigration = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration bMigration = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
            onSource.install(sourceRam, source.createVcpu());
            destination.createVcpu();
            EmulatedVfioContainer container = new EmulatedVfioContainer("emulated-container", 4096, EmulatedVfioContainer.Tracking.PRECISE);
            container.mapDma(0, sourceRam.regions().get(0).host(), true, true);
            a.attachDma(container, 40 * MIB, 8 * MIB); // DMA into guest RAM outside the workload's range
            source.start(onSource);
            assertTrue(onSource.awaitPasses(2, Duration.ofSeconds(30)), "the source guest runs");

            AtomicReference<byte[]> destinationDigest = new AtomicReference<>();
            MigrationDestination incoming = new MigrationDestination(destination, List.of(bMigration), onDestination,
                    () -> destinationDigest.set(digest(destinationRam)));
            KvmDirtyLog kvmLog = new KvmDirtyLog(source);
            MigrationStats stats;
            try {
                stats = migrate(source, List.of(kvmLog, new VfioIommuDirtyPages(container, sourceRam)), List.of(aMigration),
                        MigrationSettings.DEFAULT, incoming);
            } finally {
                kvmLog.close();
            }
            System.out.println("live migration: " + stats);
            // The source stays paused after the handover: its memory and device are what they were at the pause.
            long passesAtPause = DirtyingWorkload.passesDone(sourceRam);
            assertArrayEquals(digest(sourceRam), destinationDigest.get(), "guest memory at resume equals the source's at pause");
            assertArrayEquals(a.stateDigest(), b.digestAtResume(), "device state at resume equals the source's at stop");
            assertTrue(onDestination.awaitPasses(passesAtPause + 2, Duration.ofSeconds(30)),
                    "the guest's pass counter continues past " + passesAtPause + " on the destination");
            assertNull(destination.failure());
            assertEquals("completed", stats.status());
            assertTrue(stats.downtimeMillis() <= MigrationSettings.DEFAULT.downtimeLimit().toMillis(),
                    "downtime " + stats.downtimeMillis() + " ms");
            assertTrue(a.dmaWrites() > 0, "the device did DMA during the migration");
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());
        }
    }
}
