package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class DirtyBitmapTest {

    @Test
    void bitIOfWordWIsPage64wPlusI() {
        try (DirtyBitmap b = new DirtyBitmap(200)) {
            b.set(0);
            b.set(65);
            b.set(199);
            assertEquals(1L, b.segment().get(JAVA_LONG, 0));
            assertEquals(2L, b.segment().get(JAVA_LONG, 8));
            assertEquals(1L << (199 - 192), b.segment().get(JAVA_LONG, 24));
            assertTrue(b.test(65));
            assertFalse(b.test(64));
            assertEquals(3, b.count());
            assertThrows(IndexOutOfBoundsException.class, () -> b.set(200));
        }
    }

    @Test
    void setAllLeavesTheTailOfTheLastWordClear() {
        try (DirtyBitmap b = new DirtyBitmap(130)) {
            b.setAll();
            assertEquals(130, b.count());
            assertEquals(0b11L, b.word(2));
        }
    }

    @Test
    void setRangeMarksExactlyTheRange() {
        Random r = new Random(1);
        for (int t = 0; t < 500; t++) {
            long pages = 1 + r.nextInt(1000);
            long first = r.nextInt((int) pages);
            long count = r.nextInt((int) (pages - first) + 1);
            try (DirtyBitmap b = new DirtyBitmap(pages)) {
                b.setRange(first, count);
                assertEquals(count, b.count());
                for (long p = 0; p < pages; p++) assertEquals(p >= first && p < first + count, b.test(p));
            }
        }
    }

    @Test
    void clearRangeUnmarksExactlyTheRange() {
        Random r = new Random(2);
        for (int t = 0; t < 500; t++) {
            long pages = 1 + r.nextInt(1000);
            long first = r.nextInt((int) pages);
            long count = r.nextInt((int) (pages - first) + 1);
            try (DirtyBitmap b = new DirtyBitmap(pages)) {
                b.setAll();
                b.clearRange(first, count);
                assertEquals(pages - count, b.count());
                for (long p = 0; p < pages; p++) assertEquals(!(p >= first && p < first + count), b.test(p));
            }
        }
    }

    @Test
    void orFromAKernelBufferDropsBitsPastTheEnd() {
        try (DirtyBitmap b = new DirtyBitmap(70); Arena arena = Arena.ofConfined()) {
            MemorySegment kernel = arena.allocate(16, 8);
            kernel.set(JAVA_LONG, 0, 0x5L);
            kernel.set(JAVA_LONG, 8, -1L);
            b.orWords(kernel);
            assertEquals(2 + 6, b.count());
        }
    }

    @Test
    void cursorYieldsTheSameRunsAsAPlainLoop() {
        Random r = new Random(7);
        DirtyRunCursor cursor = new DirtyRunCursor();
        for (int t = 0; t < 300; t++) {
            long pages = 1 + r.nextInt(5000);
            double density = r.nextDouble();
            try (DirtyBitmap b = new DirtyBitmap(pages)) {
                for (long p = 0; p < pages; p++) if (r.nextDouble() < density) b.set(p);
                if (r.nextBoolean()) b.setRange(0, Math.min(pages, 130));
                List<long[]> expected = new ArrayList<>();
                long runStart = -1;
                for (long p = 0; p <= pages; p++) {
                    boolean on = p < pages && b.test(p);
                    if (on && runStart < 0) runStart = p;
                    if (!on && runStart >= 0) {
                        expected.add(new long[] {runStart, p - runStart});
                        runStart = -1;
                    }
                }
                List<long[]> actual = new ArrayList<>();
                cursor.reset(b);
                while (cursor.next()) actual.add(new long[] {cursor.start(), cursor.length()});
                assertEquals(expected.size(), actual.size());
                for (int i = 0; i < expected.size(); i++) {
                    assertEquals(expected.get(i)[0], actual.get(i)[0]);
                    assertEquals(expected.get(i)[1], actual.get(i)[1]);
                }
            }
        }
    }

    @Test
    void cursorSplitsRunsLongerThanItsMaximum() {
        try (DirtyBitmap b = new DirtyBitmap(1000)) {
            b.setRange(10, 250);
            DirtyRunCursor c = new DirtyRunCursor(100).reset(b);
            assertTrue(c.next());
            assertEquals(10, c.start());
            assertEquals(100, c.length());
            assertTrue(c.next());
            assertTrue(c.next());
            assertEquals(210, c.start());
            assertEquals(50, c.length());
            assertFalse(c.next());
        }
    }

    @Test
    void moveToLosesNoMarkMadeConcurrently() throws Exception {
        long pages = 1 << 16;
        try (DirtyBitmap live = new DirtyBitmap(pages); DirtyBitmap taken = new DirtyBitmap(pages);
             DirtyBitmap expected = new DirtyBitmap(pages)) {
            AtomicBoolean stop = new AtomicBoolean();
            long[] marks = new Random(3).longs(200_000, 0, pages).toArray();
            Thread marker = new Thread(() -> {
                for (long p : marks) live.set(p);
                stop.set(true);
            });
            marker.start();
            while (!stop.get()) live.moveTo(taken);
            marker.join();
            live.moveTo(taken);
            for (long p : marks) expected.set(p);
            assertEquals(expected.count(), taken.count());
            taken.or(expected);
            assertEquals(expected.count(), taken.count(), "taken holds exactly the marks");
        }
    }

    @Test
    void mergeAndScanAllocateNothing() {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (DirtyBitmap a = new DirtyBitmap(1 << 20); DirtyBitmap b = new DirtyBitmap(1 << 20);
             DirtyBitmap merged = new DirtyBitmap(1 << 20)) {
            Random r = new Random(5);
            for (int i = 0; i < 50_000; i++) a.set(r.nextInt(1 << 20));
            b.setRange(1000, 70_000);
            DirtyRunCursor cursor = new DirtyRunCursor();
            long pages = 0;
            for (int warm = 0; warm < 200; warm++) pages += mergeAndScan(a, b, merged, cursor);
            long before = threads.getCurrentThreadAllocatedBytes();
            long after0 = threads.getCurrentThreadAllocatedBytes();
            long overhead = after0 - before;
            long start = threads.getCurrentThreadAllocatedBytes();
            for (int i = 0; i < 100; i++) pages += mergeAndScan(a, b, merged, cursor);
            long allocated = threads.getCurrentThreadAllocatedBytes() - start - overhead;
            assertTrue(pages > 0);
            assertEquals(0, allocated, "bytes allocated by 100 merges and scans");
        }
    }

    private static long mergeAndScan(DirtyBitmap a, DirtyBitmap b, DirtyBitmap merged, DirtyRunCursor cursor) {
        merged.clear();
        merged.or(a);
        merged.or(b);
        merged.set(3); // the atomic mark a device makes
        cursor.reset(merged);
        long n = 0;
        while (cursor.next()) n += cursor.length();
        return n;
    }
}
