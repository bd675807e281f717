package org.vmmkit.testbed.guest;

import java.time.Duration;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The software guest (no KVM needed): it writes the workload's values, stops dead when paused, and logs every page it writes. */
@Timeout(60)
class SoftwareGuestTest {
    private static final long MIB = 1 << 20, PAGE = GuestMemory.PAGE_SIZE;

    private static long awaitPasses(GuestMemory memory, long passes) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        long now;
        while ((now = DirtyingWorkload.passesDone(memory)) < passes) {
            assertTrue(System.nanoTime() < deadline, "pass " + now + " of " + passes);
            Thread.sleep(5);
        }
        return now;
    }

    private static byte[] snapshot(GuestMemory memory) {
        GuestRegion r = memory.regions().get(0);
        return r.host().asSlice(0, 8 * MIB).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    }

    @Test
    void itPausesDeadLogsItsWritesAndContinuesFromItsPassCounter() throws Exception {
        DirtyingWorkload.Settings settings = DirtyingWorkload.Settings.range(MIB, 4 * MIB, 0, 0);
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             DirtyBitmap dirty = new DirtyBitmap(16 * MIB / PAGE)) {
            SoftwareGuest guest = new SoftwareGuest(memory, settings);
            guest.install();
            guest.start();
            guest.boot();
            try {
                long passes = awaitPasses(memory, 2);
                guest.pause();
                long paused = DirtyingWorkload.passesDone(memory);
                byte[] atPause = snapshot(memory);
                Thread.sleep(50);
                assertArrayEquals(atPause, snapshot(memory), "nothing is written while paused");
                assertEquals(paused, DirtyingWorkload.passesDone(memory));

                guest.sync(memory.regions().get(0), dirty);
                for (long p = MIB / PAGE; p < 5 * MIB / PAGE; p++) assertTrue(dirty.test(p), "page " + p + " was written and logged");
                assertTrue(dirty.test(DirtyingWorkload.PASSES_DONE_ADDRESS / PAGE), "the pass counter's page is logged");
                assertEquals(1024 + 1, dirty.count(), "only the workload's pages and the counter's");
                dirty.clear();
                guest.sync(memory.regions().get(0), dirty);
                assertEquals(0, dirty.count(), "a sync takes what it reports");

                guest.resume();
                awaitPasses(memory, Math.max(passes, paused) + 2);
                assertTrue(passes >= 2);
            } finally {
                guest.shutdown();
            }
            // A finished pass leaves every page with that pass's value.
            long done = DirtyingWorkload.passesDone(memory);
            long page0 = memory.readLong(MIB);
            assertTrue(page0 == DirtyingWorkload.expectedValue(0, done) || page0 == DirtyingWorkload.expectedValue(0, done + 1),
                    Long.toHexString(page0) + " after pass " + done);
        }
    }
}
