package org.vmmkit.migration;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The estimate on synthetic rounds: times in nanoseconds, 4 KiB pages, a 100 us round trip. */
class DowntimeEstimatorTest {
    private static final long MS = 1_000_000, PAGE = 4096;

    @Test
    void theFirstRoundEstimatesSendingEverythingItFoundAgain() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        // Round 1: 65536 pages (256 MiB) found and sent in 256 ms: 1 GiB/s.
        long micros = e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        assertEquals(256_000 + 100, micros, 2);
        assertEquals(0, e.dirtyRate(), "no rate from the sync that reports every page");
    }

    @Test
    void theDirtyRateIsPagesPerSyncIntervalOverAWindow() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        // Round 2 synced at 256 ms and found 12 800 pages: dirtied at 50 000 pages/s since the sync at 0.
        e.round(256 * MS, 12_800, 256 * MS, 306 * MS, 50L << 20, 306L << 20, 0);
        assertEquals(50_000, e.dirtyRate(), 1);
    }

    @Test
    void shortRoundsUseTheWindowsRateNotTheirOwnNearZeroCount() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        e.round(256 * MS, 12_800, 256 * MS, 306 * MS, 50L << 20, 306L << 20, 0); // 50k pages/s
        // A 1 ms round whose sync found nothing (the vCPU did not run): the estimate still counts what 1 ms
        // at 50k pages/s dirties (50 pages = 200 KiB at 1 GiB/s = ~190 us) plus the round trip.
        long micros = e.round(306 * MS, 0, 306 * MS, 307 * MS, 1, (306L << 20) + 1, 0);
        assertTrue(micros > 100 + 150 && micros < 100 + 300, micros + " us");
    }

    @Test
    void devicePendingBytesCountAndTheRoundTripIsTheFloor() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 0, 0, MS, 1L << 20, 1L << 20, 0); // 1 MiB in 1 ms: ~1 GiB/s
        assertEquals(100, e.round(MS, 0, MS, 2 * MS, 1, (1L << 20) + 1, 0), 1, "nothing to send: one round trip, never 0");
        long withDevice = e.round(2 * MS, 0, 2 * MS, 3 * MS, 1, (1L << 20) + 2, 10L << 20);
        assertEquals(10_000 + 100, withDevice, 300, "10 MiB pending at ~1 GiB/s");
    }

    @Test
    void onceARateIsMeasuredARoundIsEstimatedByItsOwnLengthNotByWhatThePreviousRoundLetTheGuestDirty() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        // Round 2 found 12 800 pages (dirtied during the 256 ms of round 1: 50 000 pages/s) and took 50 ms.
        // Stopping after it sends what 50 ms at 50 000 pages/s dirties: 2 500 pages, 10 MiB, ~10 ms at the
        // ~1 GiB/s measured; not the 12 800 pages (50 ms) its own sync found.
        long micros = e.round(256 * MS, 12_800, 256 * MS, 306 * MS, 50L << 20, 306L << 20, 0);
        assertEquals(10_000 + 100, micros, 500, micros + " us");
    }

    @Test
    void aThrottleChangeRestartsTheRatesWindowAtTheNextSync() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        e.round(256 * MS, 12_800, 256 * MS, 306 * MS, 50L << 20, 306L << 20, 0); // 50k pages/s
        e.throttleChanged();
        // The next sync's pages were dirtied before the throttle: they do not enter the new window, even at
        // a rate (200k pages/s) that would have raised the mixed one.
        e.round(306 * MS, 10_000, 306 * MS, 356 * MS, 40L << 20, 346L << 20, 0);
        assertEquals(50_000, e.dirtyRate(), 1, "the last rate stands until the new window closes");
        // Under the throttle: 2 000 pages per 50 ms (40k pages/s), a window of 100 ms closes at 456 ms.
        e.round(356 * MS, 2_000, 356 * MS, 406 * MS, 8L << 20, 354L << 20, 0);
        e.round(406 * MS, 2_000, 406 * MS, 456 * MS, 8L << 20, 362L << 20, 0);
        assertEquals(40_000, e.dirtyRate(), 1);
    }

    @Test
    void aThrottleRaisedEveryRoundStillLetsTheRateFollowIt() {
        DowntimeEstimator e = new DowntimeEstimator(PAGE, 100);
        e.round(0, 65_536, 0, 256 * MS, 256L << 20, 256L << 20, 0);
        e.round(256 * MS, 12_800, 256 * MS, 306 * MS, 50L << 20, 306L << 20, 0); // 50k pages/s
        e.throttleChanged();
        e.round(306 * MS, 10_000, 306 * MS, 336 * MS, 40L << 20, 346L << 20, 0); // dirtied before the throttle: not counted
        e.throttleChanged(); // raised again after a 30 ms round
        // The 30 ms since the last sync ran under the first throttle alone: 600 pages, 20 000 pages/s.
        e.round(336 * MS, 600, 336 * MS, 356 * MS, 2L << 20, 348L << 20, 0);
        assertEquals(20_000, e.dirtyRate(), 1, "not frozen at the unthrottled 50 000 pages/s");
        e.throttleChanged();
        e.round(356 * MS, 200, 356 * MS, 376 * MS, 1L << 20, 349L << 20, 0); // 20 ms under the second: 10 000 pages/s
        assertEquals(10_000, e.dirtyRate(), 1);
    }
}
