package org.vmmkit.core.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.vmmkit.core.sys.SysException;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The kernel container's parts that run without VFIO: its refusal on such a host, and the capability chain. */
class KernelVfioContainerTest {
    private Arena arena;

    @BeforeEach
    void setUp() {
        arena = Arena.ofConfined();
    }

    @AfterEach
    void tearDown() {
        arena.close();
    }

    @Test
    void kernelContainerOnAHostWithoutVfioSaysSo() {
        org.junit.jupiter.api.Assumptions.assumeFalse(java.nio.file.Files.exists(java.nio.file.Path.of(KernelVfioContainer.PATH)),
                "this host has VFIO");
        SysException e = assertThrows(SysException.class, KernelVfioContainer::open);
        assertEquals("ENOENT", e.errnoName());
        assertTrue(e.getMessage().contains("/dev/vfio/vfio") && e.getMessage().contains("no VFIO on this host"), e.getMessage());
    }

    @Test
    void migrationCapabilityIsFoundInTheInfoChain() {
        // A vfio_iommu_type1_info as the kernel fills it: an IOVA-range capability, then the migration one.
        MemorySegment info = arena.allocate(24 + 32 + 32, 8);
        info.set(java.lang.foreign.ValueLayout.JAVA_INT, 0, (int) info.byteSize());
        info.set(java.lang.foreign.ValueLayout.JAVA_INT, 4, 3);      // PGSIZES | CAPS
        info.set(java.lang.foreign.ValueLayout.JAVA_INT, 16, 24);    // cap_offset
        info.set(java.lang.foreign.ValueLayout.JAVA_SHORT, 24, (short) 1); // IOVA_RANGE
        info.set(java.lang.foreign.ValueLayout.JAVA_INT, 28, 56);          // next
        info.set(java.lang.foreign.ValueLayout.JAVA_SHORT, 56, (short) 2); // MIGRATION
        info.set(JAVA_LONG, 56 + 16, 0x1000 | 0x200000);
        info.set(JAVA_LONG, 56 + 24, 256L << 20);
        DirtyPageCapability cap = KernelVfioContainer.parseMigrationCapability(info).orElseThrow();
        assertEquals(4096, cap.pageSize());
        assertEquals(256L << 20, cap.maxBitmapBytes());
    }
}
