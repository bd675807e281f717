package org.vmmkit.migration.ram;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.memory.GuestMemory;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PopulateAheadTest {
    private static final long MIB = 1 << 20;

    @Test
    void populatesOneWindowPastTheLastDataAndNoFurther() throws Exception {
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(128 * MIB))) {
            PopulateAhead ahead = new PopulateAhead(memory, 16 * MIB);
            ahead.awaitPopulated(16 * MIB); // before any frame: the first window
            ahead.passed(8 * MIB, true); // a RAM frame ending at 8 MiB: populated up to 24 MiB
            ahead.awaitPopulated(24 * MIB);
            ahead.close();
            assertEquals(24 * MIB, ahead.populatedBytes(), "nothing past the window");
            assertEquals(24 * MIB, memory.residentBytes());
            assertNull(ahead.failure());
        }
    }

    @Test
    void neverPopulatesBehindTheFrontierSoZeroRunsStayHoles() throws Exception {
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(128 * MIB))) {
            PopulateAhead ahead = new PopulateAhead(memory, 16 * MIB);
            ahead.awaitPopulated(16 * MIB);
            ahead.passed(64 * MIB, false); // ZERO_RUNs up to 64 MiB: the frontier moves, the data end does not
            ahead.passed(72 * MIB, true); // data again at 72 MiB: populated from there, one window on
            ahead.awaitPopulated(32 * MIB);
            ahead.close();
            assertEquals(32 * MIB, ahead.populatedBytes());
            assertEquals(32 * MIB, memory.residentBytes(), "[16 MiB, 72 MiB) was passed as zero runs and never populated");
        }
    }

    @Test
    void endsByItselfOnceTheFrontierPassesTheEndOfMemory() throws Exception {
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB))) {
            PopulateAhead ahead = new PopulateAhead(memory, 16 * MIB);
            ahead.passed(64 * MIB, true);
            ahead.awaitEnd();
            assertTrue(ahead.populatedBytes() <= 16 * MIB, ahead.populatedBytes() + " bytes: it never ran past the frontier");
            ahead.close();
        }
    }

    @Test
    void withAWindowOfEverythingItPopulatesAllMemoryAndEnds() throws Exception {
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB))) {
            PopulateAhead prealloc = new PopulateAhead(memory, Long.MAX_VALUE / 4); // the destination's prealloc toggle
            prealloc.awaitEnd();
            assertEquals(64 * MIB, prealloc.populatedBytes());
            assertEquals(64 * MIB, memory.residentBytes());
            prealloc.close();
        }
    }

    @Test
    void aReceiversReportAllocatesNothing() throws Exception {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(64 * MIB))) {
            PopulateAhead ahead = new PopulateAhead(memory, 16 * MIB);
            for (int i = 0; i < 20_000; i++) ahead.passed(i % 64 * 4096, i % 2 == 0); // warm up (below the first window: nothing moves)
            // As RamTransferTest's: a deoptimization can materialize an object once, so at least one of five
            // measured batches allocates exactly nothing, and all five together far less than a byte a call.
            long overhead = -(threads.getCurrentThreadAllocatedBytes() - threads.getCurrentThreadAllocatedBytes());
            long min = Long.MAX_VALUE, total = 0;
            for (int round = 0; round < 5; round++) {
                long start = threads.getCurrentThreadAllocatedBytes();
                for (int i = 0; i < 100_000; i++) ahead.passed(i % 64 * 4096, i % 2 == 0);
                long allocated = threads.getCurrentThreadAllocatedBytes() - start + overhead;
                min = Math.min(min, allocated);
                total += allocated;
            }
            assertEquals(0, min, "a batch of 100,000 reports allocates nothing");
            assertTrue(total < 4096, total + " bytes over 500,000 reports");
            ahead.close();
        }
    }
}
