package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.Random;
import java.util.TreeSet;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.DirtyingWorkload.Settings;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.LongMode;
import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

@RequiresKvm
class KvmDirtyLogTest {
    private static final long MIB = 1 << 20, PAGE = GuestMemory.PAGE_SIZE;
    /** The only page the guest writes besides its workload pages: the control block (pass counter). */
    private static final long CONTROL_PAGE = DirtyingWorkload.CONTROL / PAGE;

    private static TreeSet<Long> marked(DirtyBitmap b) {
        TreeSet<Long> s = new TreeSet<>();
        DirtyRunCursor c = new DirtyRunCursor().reset(b);
        while (c.next()) for (long p = c.start(); p < c.start() + c.length(); p++) s.add(p);
        return s;
    }

    /** Fails naming the pages missing from and extra in {@code actual}, never dumping whole sets. */
    private static void assertSamePages(TreeSet<Long> expected, TreeSet<Long> actual, String what) {
        TreeSet<Long> missing = new TreeSet<>(expected);
        missing.removeAll(actual);
        TreeSet<Long> extra = new TreeSet<>(actual);
        extra.removeAll(expected);
        if (!missing.isEmpty() || !extra.isEmpty()) {
            throw new AssertionError(what + ": " + expected.size() + " pages expected, " + actual.size() + " reported; missing "
                    + missing.size() + " " + head(missing) + ", extra " + extra.size() + " " + head(extra));
        }
    }

    private static String head(TreeSet<Long> s) {
        return s.stream().limit(12).toList() + (s.size() > 12 ? "..." : "");
    }

    private static TreeSet<Long> expectedPages(Settings s) {
        TreeSet<Long> pages = new TreeSet<>();
        for (long i = 0; i < s.pages(); i++) pages.add(s.pageAddress(i) / PAGE);
        pages.add(CONTROL_PAGE);
        return pages;
    }

    /** Runs a halting workload between two syncs; the second must report exactly its pages. */
    private void assertExactSet(Settings settings, boolean manualProtect) throws Exception {
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory)) {
            workload.install(memory, vm.createVcpu());
            KvmDirtyLog log = new KvmDirtyLog(vm, manualProtect);
            assertEquals(manualProtect, log.manualProtect(), "this host offers manual protect");
            try (DirtyTracker tracker = new DirtyTracker(memory, List.of(log))) {
                tracker.start();
                GuestRegion region = memory.regions().get(0);
                assertEquals(1, tracker.sync());
                assertEquals(region.size() / PAGE, tracker.bitmap(region).count(), "generation 1 is everything");
                vm.start(workload);
                assertTrue(vm.awaitHalt(Duration.ofSeconds(20)));
                assertNull(vm.failure());
                tracker.sync();
                assertSamePages(expectedPages(settings), marked(tracker.bitmap(region)), "the halted guest's pages");
                tracker.sync();
                assertEquals(0, tracker.bitmap(region).count(), "a halted guest dirties nothing");
            } finally {
                log.close();
            }
        }
    }

    @ParameterizedTest(name = "manualProtect={0}")
    @ValueSource(booleans = {true, false})
    void oneSyncReportsExactlyTheRangeTheGuestWrote(boolean manualProtect) throws Exception {
        assertExactSet(Settings.range(LongMode.FREE_FROM + 3 * MIB, 5 * MIB, 2, 0), manualProtect);
    }

    @ParameterizedTest(name = "manualProtect={0}")
    @ValueSource(booleans = {true, false})
    void oneSyncReportsExactlyTheStrideTheGuestWrote(boolean manualProtect) throws Exception {
        assertExactSet(new Settings(4 * MIB, 1000, 3 * PAGE + 64, 2, 0, true), manualProtect);
    }

    @ParameterizedTest(name = "manualProtect={0}")
    @ValueSource(booleans = {true, false})
    void oneSyncReportsExactlyTheRandomSubsetTheGuestWrote(boolean manualProtect) throws Exception {
        long[] pages = new Random(11).longs(700, 2 * MIB / PAGE, 64 * MIB / PAGE).distinct().map(p -> p * PAGE + 16).toArray();
        // The table the guest reads its addresses from (at 1 MiB) is read, never written: not dirty.
        assertExactSet(Settings.pageList(LongMode.FREE_FROM, pages, 2, 0), manualProtect);
    }

    /** Pages whose bytes differ between two copies of a region. */
    private static TreeSet<Long> changed(MemorySegment before, MemorySegment after) {
        TreeSet<Long> s = new TreeSet<>();
        for (long off = 0; off < before.byteSize(); off += PAGE) {
            if (MemorySegment.mismatch(before, off, off + PAGE, after, off, off + PAGE) >= 0) s.add(off / PAGE);
        }
        return s;
    }

    @Test
    void everyPageWrittenBetweenTwoSyncsAppearsInTheLaterOneWhileTheGuestRuns() throws Exception {
        // 48 MiB at 300k pages/s: a pass takes ~40 ms, so each generation catches partial passes.
        Settings settings = Settings.range(LongMode.FREE_FROM, 48 * MIB, 0, 300_000);
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory); Arena arena = Arena.ofConfined()) {
            workload.install(memory, vm.createVcpu());
            KvmDirtyLog log = new KvmDirtyLog(vm);
            GuestRegion region = memory.regions().get(0);
            try (DirtyTracker tracker = new DirtyTracker(memory, List.of(log))) {
                tracker.start();
                tracker.sync();
                // The baseline is taken before the guest starts: every write after generation 1 counts.
                MemorySegment previous = arena.allocate(region.size(), 4096).copyFrom(region.host());
                vm.start(workload);
                MemorySegment current = arena.allocate(region.size(), 4096);
                // Exact, with each sync taken while paused: the set equals the pages that changed.
                for (int g = 0; g < 6; g++) {
                    Thread.sleep(15 + 7 * g);
                    vm.pause();
                    tracker.sync();
                    current.copyFrom(region.host());
                    vm.resume();
                    TreeSet<Long> diff = changed(previous, current);
                    assertTrue(diff.size() > 10, "the guest did not write in generation " + g);
                    assertSamePages(diff, marked(tracker.bitmap(region)), "generation " + tracker.generation());
                    previous.copyFrom(current);
                }
                // Live: a write racing a sync may fall into the next generation, never out of both.
                TreeSet<Long> last = null;
                TreeSet<Long> lastDiff = null;
                for (int g = 0; g < 8; g++) {
                    Thread.sleep(10 + 5 * g);
                    tracker.sync();
                    TreeSet<Long> now = marked(tracker.bitmap(region));
                    current.copyFrom(region.host());
                    if (lastDiff != null) {
                        TreeSet<Long> union = new TreeSet<>(last);
                        union.addAll(now);
                        TreeSet<Long> lost = new TreeSet<>(lastDiff);
                        lost.removeAll(union);
                        assertTrue(lost.isEmpty(), "pages written in generation " + (tracker.generation() - 1)
                                + " are in neither it nor the next: " + head(lost));
                    }
                    lastDiff = changed(previous, current);
                    last = now;
                    previous.copyFrom(current);
                }
                assertNull(vm.failure());
            } finally {
                log.close();
            }
        }
    }

    @Test
    void pagesDirtiedByDmaAndByTheVcpuInOneGenerationAllAppearOnce() throws Exception {
        Settings settings = Settings.range(4 * MIB, 4 * MIB, 1, 0); // pages 1024..2047
        DirtyingWorkload workload = new DirtyingWorkload(settings);
        try (Kvm kvm = Kvm.open(); GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             Vm vm = kvm.createVm(memory); Arena arena = Arena.ofConfined()) {
            workload.install(memory, vm.createVcpu());
            EmulatedVfioContainer container = new EmulatedVfioContainer("emulated-container", PAGE,
                    EmulatedVfioContainer.Tracking.PRECISE);
            GuestRegion region = memory.regions().get(0);
            container.mapDma(0, region.host(), true, true);
            KvmDirtyLog log = new KvmDirtyLog(vm);
            VfioIommuDirtyPages iommu = new VfioIommuDirtyPages(container, memory);
            try (DirtyTracker tracker = new DirtyTracker(memory, List.of(log, iommu))) {
                tracker.start();
                tracker.sync();
                vm.start(workload);
                // DMA: pages 1500..2599 (overlapping the guest's 1024..2047) and a lone page.
                MemorySegment block = arena.allocate(1100 * PAGE);
                block.fill((byte) 0x5A);
                container.dmaWrite(1500 * PAGE, block);
                container.dmaWrite(9000 * PAGE + 100, arena.allocate(8));
                assertTrue(vm.awaitHalt(Duration.ofSeconds(20)));
                tracker.sync();
                TreeSet<Long> expected = new TreeSet<>();
                for (long p = 1024; p < 2600; p++) expected.add(p);
                expected.add(9000L);
                expected.add(CONTROL_PAGE);
                DirtyBitmap merged = tracker.bitmap(region);
                assertSamePages(expected, marked(merged), "vCPU and DMA pages");
                long inRuns = 0;
                DirtyRunCursor c = new DirtyRunCursor().reset(merged);
                while (c.next()) inRuns += c.length();
                assertEquals(expected.size(), inRuns, "each page once");
            } finally {
                log.close();
            }
        }
    }
}
