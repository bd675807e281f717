package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.memory.ProcMaps;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.DataSection;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * What a resuming VMM fills straight from the network — the emulated device's data section, its memory
 * (the DIRECT window), the staging buffer of a trapped section — sits between inaccessible pages, so a
 * write past either end faults instead of corrupting the heap.
 */
class GuardPagesTest {
    private static final long PAGE = 4096;

    private static void assertGuarded(MemorySegment s, String what) {
        long start = s.address(), end = (start + s.byteSize() + PAGE - 1) & -PAGE;
        String where = what + " at " + ProcMaps.around(start, end);
        assertEquals("---p", ProcMaps.permissionsAt(start - PAGE), "the page before " + where);
        assertEquals("rw-p", ProcMaps.permissionsAt(start), where);
        assertEquals("---p", ProcMaps.permissionsAt(end), "the page after " + where);
    }

    @Test
    void theDataSectionAndTheDirectWindowSitBetweenGuardPages() {
        EmulatedMigratableDevice.Config config = EmulatedMigratableDevice.Config.defaults("guarded0").with(DataSection.DIRECT)
                .withMemory(1 << 20).withOpsPerSecond(0);
        try (EmulatedMigratableDevice device = new EmulatedMigratableDevice(config, 1)) {
            long data = config.dataSectionBytes();
            assertGuarded(device.mmap(EmulatedMigratableDevice.MIGRATION_REGION, EmulatedMigratableDevice.DATA_START, data), "the data section");
            assertGuarded(device.mmap(EmulatedMigratableDevice.MIGRATION_REGION, EmulatedMigratableDevice.DATA_START + data, config.memoryBytes()),
                    "the device memory window");
        }
    }

    @Test
    void theStagingBufferOfATrappedSectionSitsBetweenGuardPages() {
        EmulatedMigratableDevice.Config config = EmulatedMigratableDevice.Config.defaults("guarded1").with(DataSection.TRAPPED)
                .withMemory(1 << 20).withOpsPerSecond(0);
        try (EmulatedMigratableDevice device = new EmulatedMigratableDevice(config, 1);
             V1DeviceMigration migration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT)) {
            migration.startResume();
            assertEquals(0, migration.placeChunk(4096), "a trapped section is staged");
            assertGuarded(migration.targetSegment(), "the staging buffer");
            migration.abortResume();
        }
    }
}
