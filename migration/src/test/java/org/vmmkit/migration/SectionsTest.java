package org.vmmkit.migration;

import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SnapshotSection;
import org.vmmkit.migration.HandoverTest.Destination;
import org.vmmkit.migration.testing.BufferSection;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The section SPI end to end, no KVM: an iterative section that is no VFIO device, a host device in the
 * snapshot form and an emulated VFIO v1 device migrate beside guest RAM, the coordinator iterating them
 * without knowing what they are; a destination without a loader of a section's kind or version refuses in
 * setup, naming it, with nothing changed on either side.
 */
@Timeout(120)
class SectionsTest {
    /** A host VMM's own device (a serial port's registers, say) in the simple form: saved whole while paused. */
    static final class Registers extends SnapshotSection {
        byte[] registers;
        int loadedVersion = -1;
        boolean running = true;

        Registers(int version, byte[] registers) {
            super(new SectionInfo("serial0", "host-uart", version));
            this.registers = registers;
        }

        @Override
        protected byte[] save() {
            return registers.clone();
        }

        @Override
        protected void load(byte[] state, int version) {
            registers = state;
            loadedVersion = version;
        }

        @Override
        protected void started() {
            running = true;
        }
    }

    @Test
    void aFakeSectionAHostDeviceAndAVfioDeviceMigrateBesideRam() throws Exception {
        EmulatedMigratableDevice.Config gpu = EmulatedMigratableDevice.Config.defaults("emulated-gpu0").withMemory(4 << 20).withOpsPerSecond(5_000);
        try (FakeGuest src = FakeGuest.source(HandoverTest.SIZE, 31);
             BufferSection buffer = new BufferSection(new SectionInfo("host/virtio-blk0", "host-virtio-blk", 2), 1 << 20, 7);
             BufferSection bufferThere = new BufferSection(new SectionInfo("host/virtio-blk0", "host-virtio-blk", 2), 1 << 20, 99);
             EmulatedMigratableDevice a = new EmulatedMigratableDevice(gpu, 1);
             EmulatedMigratableDevice b = new EmulatedMigratableDevice(gpu, 2).recordDigestOnResume();
             V1DeviceMigration aMigration = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration bMigration = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
            Registers uart = new Registers(3, new byte[] {1, 2, 3, 4, 5, 6, 7, 8});
            Registers uartThere = new Registers(3, new byte[8]);
            buffer.mutate(5, 0xC0FFEE); // changed "while running", before the migration
            try (Destination dst = new Destination(List.of(bMigration, bufferThere, uartThere), d -> d)) {
                MigrationSource source = new MigrationSource(src, List.of(), List.of(aMigration, buffer, uart), MigrationSettings.DEFAULT);
                MigrationStats stats = source.migrate(dst.address());
                assertEquals(MigrationStatus.COMPLETED, stats.status());
                dst.started.get(30, TimeUnit.SECONDS);
                assertTrue(dst.guest.equalsSource(src), "guest RAM and vCPU state");
                assertEquals(-1, buffer.state().mismatch(bufferThere.state()), "the iterative section's state");
                assertArrayEquals(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}, uartThere.registers, "the snapshot section's state");
                assertEquals(3, uartThere.loadedVersion);
                assertArrayEquals(a.stateDigest(), b.digestAtResume(), "the VFIO device's state at resume equals its state at stop");
                assertEquals(List.of(), a.misuse());
                assertEquals(List.of(), b.misuse());
                List<String> ids = stats.sections().stream().map(MigrationStats.SectionStats::id).toList();
                assertEquals(List.of("emulated-gpu0", "host/virtio-blk0", "serial0", "vcpu/0"), ids, "the vCPU is a section, after the others");
                assertEquals(2L << 20, stats.sections().get(1).bytes(), "the buffer went twice: in pre-copy and after the stop");
                assertEquals(8, stats.sections().get(2).bytes());
                assertEquals(src.saveVcpu(0).length, stats.sections().get(3).bytes(), "the vCPU's state went once, whole");
            }
        }
    }

    @Test
    void aDestinationWithoutALoaderOfThatKindOrVersionRefusesInSetupNamingIt() throws Exception {
        record Case(List<SnapshotSection> there, String expected) {}
        List<Case> cases = List.of(
                new Case(List.of(new Registers(2, new byte[8])), "section serial0 (host-uart) carries state version 3, which this VM cannot load"),
                new Case(List.of(new SnapshotSection(new SectionInfo("serial0", "host-uart-16550", 3)) {
                    protected byte[] save() {
                        return new byte[0];
                    }

                    protected void load(byte[] state, int version) {
                    }
                }), "section serial0 is of kind host-uart at the source, host-uart-16550 here"),
                new Case(List.of(), "the source has section serial0 (host-uart v3), which this VM does not have"));
        for (Case c : cases) refusedInSetup(c.there(), FakeGuest.destination(HandoverTest.SIZE), c.expected());
    }

    @Test
    void vcpusAreSectionsAndADestinationOfAnotherVcpuFormatRefusesInSetupNamingIt() throws Exception {
        Registers uart = new Registers(3, new byte[8]);
        refusedInSetup(List.of(uart), FakeGuest.destination(HandoverTest.SIZE).vcpuFormat("other-vcpu", 1),
                "section vcpu/0 is of kind fake-vcpu at the source, other-vcpu here");
        refusedInSetup(List.of(uart), FakeGuest.destination(HandoverTest.SIZE).vcpuFormat("fake-vcpu", 2),
                "section vcpu/0 (fake-vcpu) carries state version 1, which this VM cannot load (it has version 2)");
    }

    /** A migration of a guest with one host device (serial0 v3) to a destination of {@code guest} and {@code there} fails in setup saying {@code expected}; nothing changed. */
    private static void refusedInSetup(List<SnapshotSection> there, FakeGuest guest, String expected) throws Exception {
        try (FakeGuest src = FakeGuest.source(HandoverTest.SIZE, 32);
             Destination dst = new Destination(guest, there, d -> d)) {
            Registers uart = new Registers(3, new byte[] {9});
            MigrationSource source = new MigrationSource(src, List.of(), List.of(uart), MigrationSettings.DEFAULT);
            MigrationException e = assertThrows(MigrationException.class, () -> source.migrate(dst.address()));
            assertTrue(e.getMessage().contains(expected) && e.getMessage().contains("migration failed in setup"), e.getMessage());
            assertTrue(src.running(), "the source runs on");
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS));
            assertEquals(0, dst.guest.starts());
            assertFalse(dst.guest.running());
            assertTrue(dst.guest.memory().regions().get(0).host().asByteBuffer().equals(java.nio.ByteBuffer.allocate((int) HandoverTest.SIZE)),
                    "nothing was written to the destination's memory");
        }
    }
}
