package org.vmmkit.core.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RegionInfoTest {

    /** A vfio_region_info as vfio-pci fills it for a migration region: type cap, then sparse mmap cap. */
    private static MemorySegment migrationRegionInfo(Arena arena, long sparseCapOffset) {
        MemorySegment info = arena.allocate(32 + 16 + 16 + 16 * 2, 8);
        info.set(JAVA_INT, 0, (int) info.byteSize());
        info.set(JAVA_INT, 4, VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE | VfioAbi.REGION_INFO_FLAG_MMAP
                | VfioAbi.REGION_INFO_FLAG_CAPS);
        info.set(JAVA_INT, 8, 9);
        info.set(JAVA_INT, 12, 32);
        info.set(JAVA_LONG, 16, 0x101000);
        info.set(JAVA_LONG, 24, 0x90000000000L);
        info.set(JAVA_SHORT, 32, (short) VfioAbi.REGION_INFO_CAP_TYPE);
        info.set(JAVA_INT, 36, (int) sparseCapOffset);
        info.set(JAVA_INT, 40, VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED);
        info.set(JAVA_INT, 44, VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED);
        info.set(JAVA_SHORT, 48, (short) VfioAbi.REGION_INFO_CAP_SPARSE_MMAP);
        info.set(JAVA_INT, 56, 2);
        info.set(JAVA_LONG, 64, 0x1000);
        info.set(JAVA_LONG, 72, 0x80000);
        info.set(JAVA_LONG, 80, 0x81000);
        info.set(JAVA_LONG, 88, 0x1000);
        return info;
    }

    @Test
    void capabilityChainGivesTypeAndSparseAreas() {
        try (Arena arena = Arena.ofConfined()) {
            RegionInfo r = RegionInfo.parse(migrationRegionInfo(arena, 48));
            assertEquals(9, r.index());
            assertEquals(new RegionInfo.Type(3, 1), r.type().orElseThrow());
            assertEquals(2, r.sparseAreas().size());
            assertEquals(0x90000000000L, r.fdOffset());
            assertTrue(r.mmappableArea(0x1000, 0x80000).isPresent());
            assertTrue(r.mmappableArea(0x1000, 0x80001).isEmpty(), "a range must lie in one area");
            assertTrue(r.mmappableArea(0x81000, 0x1000).isPresent());
        }
    }

    @Test
    void aCapabilityOutsideTheInfoIsAnError() {
        try (Arena arena = Arena.ofConfined()) {
            assertThrows(IllegalStateException.class, () -> RegionInfo.parse(migrationRegionInfo(arena, 4096)));
        }
    }

    @Test
    void kernelGroupOnAHostWithoutVfioNamesThePath() {
        org.junit.jupiter.api.Assumptions.assumeFalse(java.nio.file.Files.exists(java.nio.file.Path.of("/dev/vfio/7")));
        org.vmmkit.core.sys.SysException e = assertThrows(org.vmmkit.core.sys.SysException.class, () -> KernelVfioGroup.open(7));
        assertEquals("open(O_RDWR) on /dev/vfio/7 failed: ENOENT (No such file or directory)", e.getMessage());
    }
}
