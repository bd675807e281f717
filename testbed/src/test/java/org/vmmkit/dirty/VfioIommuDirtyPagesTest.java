package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer.Tracking;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VfioIommuDirtyPagesTest {
    private static final long MIB = 1 << 20, PAGE = 4096;
    private GuestMemory memory;
    private Arena arena;

    @BeforeEach
    void setUp() {
        memory = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
        arena = Arena.ofConfined();
    }

    @AfterEach
    void tearDown() {
        arena.close();
        memory.close();
    }

    private GuestRegion region() {
        return memory.regions().get(0);
    }

    @Test
    void aRangeLargerThanOneCallIsFetchedInPiecesThatSplitNoMapping() {
        // At most 64 bytes of bitmap = 512 pages = 2 MiB per call; four 2 MiB mappings and one of 1 MiB.
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", PAGE, Tracking.PRECISE, 64);
        for (long at = 0; at < 8 * MIB; at += 2 * MIB) c.mapDma(at, memory.slice(at, 2 * MIB), true, true);
        c.mapDma(10 * MIB, memory.slice(10 * MIB, MIB), true, true);
        VfioIommuDirtyPages source = new VfioIommuDirtyPages(c, memory);
        try (DirtyTracker tracker = new DirtyTracker(memory, List.of(source))) {
            tracker.start();
            tracker.sync();
            long[] pages = {0, 511, 512, 1500, 2047, 2560, 2815};
            for (long p : pages) c.dmaWrite(p * PAGE + 8, arena.allocate(16));
            tracker.sync();
            assertEquals(pages.length, tracker.bitmap(region()).count());
            for (long p : pages) assertTrue(tracker.bitmap(region()).test(p), "page " + p);
        }
    }

    @Test
    void largerIommuPagesMarkEveryGuestPageTheyCover() {
        for (long iommuPage : new long[] {64 * 1024, 2 * MIB}) {
            EmulatedVfioContainer c = new EmulatedVfioContainer("c", iommuPage, Tracking.PRECISE);
            c.mapDma(0, memory.slice(0, 16 * MIB), true, true);
            VfioIommuDirtyPages source = new VfioIommuDirtyPages(c, memory);
            try (DirtyTracker tracker = new DirtyTracker(memory, List.of(source))) {
                tracker.start();
                tracker.sync();
                c.dmaWrite(3 * iommuPage + 5, arena.allocate(1));
                tracker.sync();
                DirtyBitmap b = tracker.bitmap(region());
                long perIommuPage = iommuPage / PAGE;
                assertEquals(perIommuPage, b.count(), "IOMMU page " + iommuPage);
                assertTrue(b.test(3 * perIommuPage) && b.test(4 * perIommuPage - 1));
                assertFalse(b.test(4 * perIommuPage));
            }
        }
    }

    @Test
    void aContainerThatCannotTrackReportsEveryMappedPageEverySyncAndSaysSo() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", PAGE, Tracking.NONE);
        c.mapDma(2 * MIB, memory.slice(2 * MIB, 3 * MIB), true, true);
        VfioIommuDirtyPages source = new VfioIommuDirtyPages(c, memory);
        try (DirtyTracker tracker = new DirtyTracker(memory, List.of(source))) {
            tracker.start();
            assertTrue(tracker.anySourceReportsEverything());
            assertTrue(tracker.stats().get(0).reportsEverything());
            tracker.sync();
            for (int g = 0; g < 3; g++) {
                tracker.sync();
                assertEquals(3 * MIB / PAGE, tracker.bitmap(region()).count());
                assertTrue(tracker.bitmap(region()).test(2 * MIB / PAGE));
            }
        }
    }

    @Test
    void unmappingDuringTrackingLosesNoDirtyPage() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", PAGE, Tracking.PRECISE);
        c.mapDma(0, memory.slice(0, 8 * MIB), true, true);
        c.mapDma(8 * MIB, memory.slice(8 * MIB, 8 * MIB), true, true);
        VfioIommuDirtyPages source = new VfioIommuDirtyPages(c, memory);
        try (DirtyTracker tracker = new DirtyTracker(memory, List.of(source))) {
            tracker.start();
            tracker.sync();
            c.dmaWrite(8 * MIB + 7 * PAGE, arena.allocate(8));
            c.dmaWrite(PAGE, arena.allocate(8));
            assertEquals(8 * MIB, source.unmap(8 * MIB, 8 * MIB));
            tracker.sync();
            DirtyBitmap b = tracker.bitmap(region());
            assertEquals(2, b.count());
            assertTrue(b.test(8 * MIB / PAGE + 7) && b.test(1));
            tracker.sync();
            assertEquals(0, b.count(), "reported once");
        }
    }

    @Test
    void allDirtyTrackingAtTheIommuIsTakenAsItComes() {
        EmulatedVfioContainer c = new EmulatedVfioContainer("c", PAGE, Tracking.ALL_DIRTY);
        c.mapDma(0, memory.slice(0, MIB), true, true);
        VfioIommuDirtyPages source = new VfioIommuDirtyPages(c, memory);
        try (DirtyTracker tracker = new DirtyTracker(memory, List.of(source))) {
            tracker.start();
            tracker.sync();
            tracker.sync();
            assertEquals(MIB / PAGE, tracker.bitmap(region()).count());
        }
    }
}
