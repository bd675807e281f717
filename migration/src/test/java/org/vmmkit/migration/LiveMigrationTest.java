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
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.KvmDirtyLog;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

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

    /** What the helper saw: the final statistics and the live snapshots polled while the migration ran. */
    record Outcome(MigrationStats stats, List<MigrationStats> live) {}

    /**
     * Runs {@code incoming} on its own thread (not the common pool: on 2 cores its single worker may be taken),
     * accepting as many connections as the settings' channels, and migrates {@code source} to it over
     * loopback while a third thread polls the live statistics; returns them once both ends are done.
     */
    static Outcome migrateWatched(Vm source, List<org.vmmkit.dirty.DirtySource> dirty, List<V1DeviceMigration> devices,
                                  MigrationSettings settings, MigrationDestination incoming) throws Exception {
        try (ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Throwable> destinationFailure = new AtomicReference<>();
            Thread destination = Thread.ofPlatform().name("destination").start(() -> {
                try {
                    incoming.receive(server, Duration.ofSeconds(30));
                } catch (Throwable t) {
                    destinationFailure.set(t);
                }
            });
            MigrationSource migration = new MigrationSource(source, dirty, devices, settings);
            List<MigrationStats> live = new java.util.concurrent.CopyOnWriteArrayList<>();
            java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
            Thread watcher = Thread.ofPlatform().name("stats-watcher").start(() -> {
                while (!done.get()) {
                    live.add(migration.stats());
                    java.util.concurrent.locks.LockSupport.parkNanos(2_000_000);
                }
            });
            MigrationStats stats;
            try {
                stats = migration.migrate(server.getLocalAddress());
            } catch (MigrationException e) {
                destination.join(30_000);
                if (destinationFailure.get() != null) e.addSuppressed(destinationFailure.get());
                throw e;
            } finally {
                done.set(true);
                watcher.join();
            }
            destination.join(30_000);
            assertNull(destinationFailure.get(), "the destination failed");
            assertEquals(stats, migration.stats(), "after the end, stats() gives the final statistics");
            return new Outcome(stats, live);
        }
    }

    private static MigrationStats migrate(Vm source, List<org.vmmkit.dirty.DirtySource> dirty, List<V1DeviceMigration> devices,
                                          MigrationSettings settings, MigrationDestination incoming) throws Exception {
        return migrateWatched(source, dirty, devices, settings, incoming).stats();
    }

    /** A guest-only migration's statistics and the destination's memory digest taken before it started. */
    record GuestOnly(MigrationStats stats, byte[] destinationDigest) {}

    /** Migrates a KVM guest without devices (KVM dirty log only) to {@code destination}. */
    private static GuestOnly migrateGuestOnly(Vm source, Vm destination, GuestMemory destinationRam, DirtyingWorkload onDestination,
                                              MigrationSettings settings) throws Exception {
        AtomicReference<byte[]> destinationDigest = new AtomicReference<>();
        MigrationDestination incoming = new MigrationDestination(destination, List.of(), onDestination,
                () -> destinationDigest.set(digest(destinationRam)));
        KvmDirtyLog kvmLog = new KvmDirtyLog(source);
        try {
            MigrationStats stats = migrate(source, List.of(kvmLog), List.of(), settings, incoming);
            return new GuestOnly(stats, destinationDigest.get());
        } finally {
            kvmLog.close();
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
            GuestOnly result = migrateGuestOnly(source, destination, destinationRam, onDestination, MigrationSettings.DEFAULT.withMaxBandwidth(cap));
            MigrationStats stats = result.stats();
            System.out.println("capped at 40 MiB/s: " + stats);
            double bytesPerSecond = stats.transferredBytes() / (stats.totalMillis() / 1000.0);
            assertTrue(bytesPerSecond <= cap * 1.10, "sent at " + (long) bytesPerSecond + " B/s over a cap of " + cap);
            assertTrue(stats.totalMillis() >= 500, "a capped migration of this size cannot take " + stats.totalMillis() + " ms");
            assertFalse(stats.stoppedByIterationCap(), "2000 pages/s under a 40 MiB/s cap converges: " + stats);
            assertArrayEquals(digest(sourceRam), result.destinationDigest());
        }
    }

    @Test
    void aWorkloadThatCannotConvergeStopsAtTheIterationCapAndSaysSo() throws Exception {
        // Flat out over 32 MiB against a 0 ms downtime limit: no round can get under it.
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 32 * MIB, 0, 0);
        DirtyingWorkload onSource = new DirtyingWorkload(settings), onDestination = new DirtyingWorkload(settings);
        MigrationSettings capped = new MigrationSettings(Duration.ZERO, 3, 16, 256, 1024).withConvergence(ConvergencePolicy.FORCE);
        try (Kvm kvm = Kvm.open();
             GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm source = kvm.createVm(sourceRam); Vm destination = kvm.createVm(destinationRam)) {
            onSource.install(sourceRam, source.createVcpu());
            destination.createVcpu();
            source.start(onSource);
            assertTrue(onSource.awaitPasses(2, Duration.ofSeconds(30)));
            GuestOnly result = migrateGuestOnly(source, destination, destinationRam, onDestination, capped);
            MigrationStats stats = result.stats();
            System.out.println("capped migration: " + stats);
            assertTrue(stats.stoppedByIterationCap(), "the stats say the cap ended pre-copy");
            assertEquals(3, stats.rounds());
            assertArrayEquals(digest(sourceRam), result.destinationDigest());
            long passesAtPause = DirtyingWorkload.passesDone(sourceRam);
            assertTrue(onDestination.awaitPasses(passesAtPause + 2, Duration.ofSeconds(30)));
        }
    }

    @Test
    void aRunningGuestAndItsDeviceMigrateLiveAndContinue() throws Exception {
        MigrationStats stats = migrateGuestAndDevice(MigrationSettings.DEFAULT);
        assertEquals(1, stats.sections().size());
        assertTrue(stats.sections().get(0).bytes() > 16 * MIB && stats.sections().get(0).chunks() > 16, stats.sections().toString());
    }

    @Test
    void overTwoChannelsToo() throws Exception {
        migrateGuestAndDevice(MigrationSettings.DEFAULT.withChannels(2));
    }

    @Test
    void withoutRamChecksumsToo() throws Exception {
        migrateGuestAndDevice(MigrationSettings.DEFAULT.withChannels(2).withRamChecksums(false));
    }

    /** Reads the JFR events the source recorded in {@code recording}. */
    private static List<jdk.jfr.consumer.RecordedEvent> events(jdk.jfr.Recording recording) throws Exception {
        java.nio.file.Path file = java.nio.file.Files.createTempFile("migration", ".jfr");
        try {
            recording.dump(file);
            return jdk.jfr.consumer.RecordingFile.readAllEvents(file);
        } finally {
            java.nio.file.Files.deleteIfExists(file);
        }
    }

    /**
     * The must-show migration: a guest rewriting 32 MiB at 100k pages/s and an emulated device doing DMA and
     * changing its state migrate live with {@code settings}; memory, device state, the guest's counter, the
     * downtime, the live statistics and the JFR events are checked.
     */
    private MigrationStats migrateGuestAndDevice(MigrationSettings migrationSettings) throws Exception {
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
            Outcome outcome;
            List<jdk.jfr.consumer.RecordedEvent> events;
            try (jdk.jfr.Recording recording = new jdk.jfr.Recording()) {
                recording.enable("org.vmmkit.migration.Phase");
                recording.enable("org.vmmkit.migration.Round");
                recording.enable("org.vmmkit.migration.Incoming");
                recording.start();
                outcome = migrateWatched(source, List.of(kvmLog, new VfioIommuDirtyPages(container, sourceRam)), List.of(aMigration),
                        migrationSettings, incoming);
                recording.stop();
                events = events(recording);
            } finally {
                kvmLog.close();
            }
            MigrationStats stats = outcome.stats();
            System.out.println("live migration over " + migrationSettings.channels() + " channel(s): " + stats);
            // The source stays paused after the handover: its memory and device are what they were at the pause.
            long passesAtPause = DirtyingWorkload.passesDone(sourceRam);
            assertArrayEquals(digest(sourceRam), destinationDigest.get(), "guest memory at resume equals the source's at pause");
            assertArrayEquals(a.stateDigest(), b.digestAtResume(), "device state at resume equals the source's at stop");
            assertTrue(onDestination.awaitPasses(passesAtPause + 2, Duration.ofSeconds(30)),
                    "the guest's pass counter continues past " + passesAtPause + " on the destination");
            assertNull(destination.failure());
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            // The coordinator stopped because its estimate was under the limit (or at the cap): a decision the
            // test can check on any machine. The measured downtime is wall time, which a busy host stretches.
            assertTrue(stats.stoppedByIterationCap() || stats.expectedDowntimeMillis() <= MigrationSettings.DEFAULT.downtimeLimit().toMillis(),
                    "stopped at an expected downtime of " + stats.expectedDowntimeMillis() + " ms (measured " + stats.downtimeMillis() + " ms)");
            assertTrue(a.dmaWrites() > 0, "the device did DMA during the migration");
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());

            // Live statistics: seen while it ran, never going backwards.
            List<MigrationStats> live = outcome.live();
            assertTrue(live.stream().anyMatch(s -> s.status() == MigrationStatus.ACTIVE && s.transferredBytes() > 0), "a live snapshot in pre-copy");
            for (int i = 1; i < live.size(); i++) {
                assertTrue(live.get(i).transferredBytes() >= live.get(i - 1).transferredBytes(), "transferred never shrinks");
                assertTrue(live.get(i).rounds() >= live.get(i - 1).rounds(), "rounds never shrink");
            }
            // JFR: one event per phase, one per round.
            List<String> phases = events.stream().filter(e -> e.getEventType().getName().equals("org.vmmkit.migration.Phase"))
                    .map(e -> e.getString("phase") + ":" + e.getString("outcome")).toList();
            assertEquals(List.of("setup:done", "pre-copy:converged", "stop-and-copy:sent", "handover:acknowledged"), phases);
            long roundEvents = events.stream().filter(e -> e.getEventType().getName().equals("org.vmmkit.migration.Round")).count();
            assertEquals(stats.rounds(), roundEvents);
            // The destination's: one per incoming stream, with its outcome.
            List<String> incomingEvents = events.stream().filter(e -> e.getEventType().getName().equals("org.vmmkit.migration.Incoming"))
                    .map(e -> e.getString("outcome")).toList();
            assertEquals(List.of("started"), incomingEvents);
            return stats;
        }
    }
}
