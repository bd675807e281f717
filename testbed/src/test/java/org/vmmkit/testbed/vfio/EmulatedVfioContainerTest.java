package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.IommuFaultException;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer.Tracking;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class EmulatedVfioContainerTest {
    private static final long MIB = 1 << 20;
    private GuestMemory memory;
    private Arena arena;

    @BeforeEach
    void setUp() {
        memory = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
        arena = Arena.ofConfined();
    }

    @AfterEach
    void tearDown() {
        arena.close();
        memory.close();
    }

    private EmulatedVfioContainer containerWithTwoMappings(Tracking tracking) {
        EmulatedVfioContainer c = new EmulatedVfioContainer("emulated-container", 4096, tracking);
        c.mapDma(0, memory.slice(0, 8 * MIB), true, true);
        c.mapDma(8 * MIB, memory.slice(8 * MIB, 8 * MIB), true, true);
        return c;
    }

    private MemorySegment bitmapFor(long bytes) {
        return arena.allocate(((bytes / 4096 + 63) / 64) * 8, 8);
    }

    private static boolean bit(MemorySegment bitmap, long page) {
        return (bitmap.get(JAVA_LONG, (page >>> 6) * 8) & (1L << (page & 63))) != 0;
    }

    private static long count(MemorySegment bitmap) {
        long n = 0;
        for (long o = 0; o < bitmap.byteSize(); o += 8) n += Long.bitCount(bitmap.get(JAVA_LONG, o));
        return n;
    }

    @Test
    void overlappingMapIsEexist() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        SysException e = assertThrows(SysException.class, () -> c.mapDma(4 * MIB, memory.slice(0, MIB), true, true));
        assertEquals("EEXIST", e.errnoName());
        assertTrue(e.getMessage().contains("VFIO_IOMMU_MAP_DMA") && e.getMessage().contains("emulated-container"));
    }

    @Test
    void misalignedOrAccesslessMapIsEinval() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", 4096, Tracking.PRECISE);
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.mapDma(100, memory.slice(0, 4096), true, true)).errnoName());
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.mapDma(0, memory.slice(0, 100), true, true)).errnoName());
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.mapDma(0, memory.slice(0, 4096), false, false)).errnoName());
    }

    @Test
    void unmapThatWouldSplitAMappingIsEinval() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.unmapDma(0, 4 * MIB)).errnoName());
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.unmapDma(4 * MIB, 8 * MIB)).errnoName());
        assertEquals(16 * MIB, c.unmapDma(0, 16 * MIB));
        assertTrue(c.mappings().isEmpty());
    }

    @Test
    void getBitmapReportsDeviceWritesOnceAndClearsThem() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        c.startDirtyTracking();
        c.dmaWrite(3 * 4096 + 100, arena.allocate(8));
        c.dmaWrite(8 * MIB - 8, arena.allocate(16)); // crosses into the second mapping
        MemorySegment bitmap = bitmapFor(16 * MIB);
        c.getDirtyBitmap(0, 16 * MIB, 4096, bitmap);
        assertEquals(3, count(bitmap));
        assertTrue(bit(bitmap, 3) && bit(bitmap, 2047) && bit(bitmap, 2048));
        c.getDirtyBitmap(0, 16 * MIB, 4096, bitmap);
        assertEquals(0, count(bitmap), "GET_BITMAP clears what it returns");
    }

    @Test
    void getBitmapRangeMustStartAndEndAtMappingBoundaries() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        c.startDirtyTracking();
        MemorySegment bitmap = bitmapFor(16 * MIB);
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.getDirtyBitmap(4096, 8 * MIB - 4096, 4096, bitmap)).errnoName());
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.getDirtyBitmap(0, 4 * MIB, 4096, bitmap)).errnoName());
        c.getDirtyBitmap(8 * MIB, 8 * MIB, 4096, bitmap); // one whole mapping is fine
        c.unmapDma(8 * MIB, 8 * MIB);
        c.getDirtyBitmap(0, 16 * MIB, 4096, bitmap);     // a range may end in a gap
    }

    @Test
    void getBitmapLargerThanTheMaximumIsEinval() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", 4096, Tracking.PRECISE, 64);
        c.mapDma(0, memory.slice(0, 2 * MIB), true, true);
        c.mapDma(2 * MIB, memory.slice(2 * MIB, 2 * MIB), true, true);
        c.startDirtyTracking();
        assertEquals(2 * MIB, c.dirtyPageCapability().orElseThrow().maxRangeBytes());
        MemorySegment bitmap = bitmapFor(4 * MIB);
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.getDirtyBitmap(0, 4 * MIB, 4096, bitmap)).errnoName());
        c.getDirtyBitmap(0, 2 * MIB, 4096, bitmap);
    }

    @Test
    void getBitmapOnlyAtTheSmallestPageSizeAndOnlyWhileTracking() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        MemorySegment bitmap = bitmapFor(16 * MIB);
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.getDirtyBitmap(0, 16 * MIB, 4096, bitmap)).errnoName());
        c.startDirtyTracking();
        c.startDirtyTracking(); // idempotent, as in type1
        assertEquals("EINVAL", assertThrows(SysException.class, () -> c.getDirtyBitmap(0, 16 * MIB, 8192, bitmap)).errnoName());
        assertEquals("EINVAL", assertThrows(SysException.class,
                () -> c.getDirtyBitmap(0, 16 * MIB, 4096, arena.allocate(8))).errnoName(), "bitmap too small");
        c.stopDirtyTracking();
        c.stopDirtyTracking();
        assertFalse(c.dirtyTrackingOn());
    }

    @Test
    void unmapWithDirtyBitmapLosesNoDirtyPage() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        c.startDirtyTracking();
        c.dmaWrite(8 * MIB + 5 * 4096, arena.allocate(4096));
        MemorySegment bitmap = bitmapFor(8 * MIB);
        assertEquals(8 * MIB, c.unmapDmaAndGetDirty(8 * MIB, 8 * MIB, 4096, bitmap));
        assertEquals(1, count(bitmap));
        assertTrue(bit(bitmap, 5));
        assertThrows(IommuFaultException.class, () -> c.dmaWrite(8 * MIB, arena.allocate(8)));
    }

    @Test
    void allDirtyTrackingReportsEveryMappedPage() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.ALL_DIRTY);
        c.startDirtyTracking();
        MemorySegment bitmap = bitmapFor(16 * MIB);
        c.getDirtyBitmap(0, 16 * MIB, 4096, bitmap);
        assertEquals(4096, count(bitmap));
    }

    @Test
    void noCapabilityMeansDirtyPagesIsEnotty() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.NONE);
        assertTrue(c.dirtyPageCapability().isEmpty());
        assertEquals("ENOTTY", assertThrows(SysException.class, c::startDirtyTracking).errnoName());
    }

    @Test
    void dmaToAReadOnlyOrUnmappedIovaFaultsNamingTheIova() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", 4096, Tracking.PRECISE);
        c.mapDma(0, memory.slice(0, MIB), true, false);
        IommuFaultException e = assertThrows(IommuFaultException.class, () -> c.dmaWrite(0x2000, arena.allocate(8)));
        assertTrue(e.getMessage().contains("0x2000") && e.getMessage().contains("read-only"), e.getMessage());
        e = assertThrows(IommuFaultException.class, () -> c.dmaRead(2 * MIB, arena.allocate(8)));
        assertTrue(e.getMessage().contains("no mapping"), e.getMessage());
    }

    @Test
    void dmaWriteLandsInGuestMemory() {
        EmulatedVfioContainer c = containerWithTwoMappings(Tracking.PRECISE);
        MemorySegment src = arena.allocate(8);
        src.set(JAVA_LONG, 0, 0xABCDL);
        c.dmaWrite(0x3000, src);
        assertEquals(0xABCDL, memory.readLong(0x3000));
    }
}
