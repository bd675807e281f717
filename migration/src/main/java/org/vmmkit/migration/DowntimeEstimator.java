package org.vmmkit.migration;

/**
 * Estimates the downtime of stopping now, from what each pre-copy round measured: the dirty rate (distinct
 * pages found by each sync after the first, over the time between syncs) and the send bandwidth (bytes
 * over wall time), each over windows of at least {@link #WINDOW_NANOS}, since a round lasts under a
 * millisecond once pre-copy has caught up; and a floor of one round trip, which the handover always costs.
 * Stopping after a round sends what the guest dirtied during that round: the rate times the round's length.
 * The count the round's own sync found is what the previous round let the guest dirty; it is used only until
 * a rate has been measured (in a converging migration each round is shorter than the last, so it overstates
 * what is left: about 2x on a shaped link). A throttle change restarts the rate's window.
 * Pure arithmetic on the times and counts it is given, so it is tested without a VM.
 */
final class DowntimeEstimator {
    static final long WINDOW_NANOS = 100_000_000L;

    private final long pageSize, roundTripMicros;
    private long rateWindowStart, rateWindowPages, bandwidthWindowStart, bandwidthWindowBytes;
    private double bytesPerNano, dirtyRate;
    private boolean rateMeasured, restartRateWindow;
    private boolean windowFromRestart; // the rate's window opened at a restart: all its pages were dirtied under one throttle
    private int rounds;

    /** {@code roundTripMicros}: the measured round trip to the destination (at least 1). */
    DowntimeEstimator(long pageSize, long roundTripMicros) {
        this.pageSize = pageSize;
        this.roundTripMicros = Math.max(1, roundTripMicros);
    }

    /**
     * Records one round and returns the expected downtime in microseconds of stopping after it.
     *
     * @param syncedAt     when the round's dirty sync was taken (its pages were dirtied since the previous one)
     * @param dirtyPages   what that sync found (the first sync reports every page: not a rate of writing)
     * @param roundStart   when the round began, {@code roundEnd} when everything it queued was sent
     * @param sentBytes    bytes the round sent
     * @param totalSent    bytes sent since the migration began, at {@code roundEnd}
     * @param devicePending every device's pending bytes after the round
     */
    long round(long syncedAt, long dirtyPages, long roundStart, long roundEnd, long sentBytes, long totalSent, long devicePending) {
        rounds++;
        long roundNanos = Math.max(1, roundEnd - roundStart);
        if (rounds == 1) {
            rateWindowStart = syncedAt;
            bandwidthWindowStart = roundEnd;
            bandwidthWindowBytes = totalSent;
            bytesPerNano = Math.max(sentBytes, 1) / (double) roundNanos;
        } else if (restartRateWindow) {
            // This sync's pages were dirtied under the previous throttle: the new window starts here, and the last
            // rate (measured with less throttle, so no lower) stands until the window closes. Where the throttle
            // changes again before that (every round that misses the limit raises it), a window that itself began
            // at a restart held one throttle throughout: its pages are that throttle's rate, however short it was,
            // so the rate follows the throttle instead of staying at what was measured before it began.
            if (windowFromRestart && syncedAt > rateWindowStart) {
                dirtyRate = (rateWindowPages + dirtyPages) * 1e9 / (syncedAt - rateWindowStart);
                rateMeasured = true;
            }
            restartRateWindow = false;
            windowFromRestart = true;
            rateWindowStart = syncedAt;
            rateWindowPages = 0;
            updateBandwidth(roundEnd, totalSent);
        } else {
            rateWindowPages += dirtyPages;
            if (syncedAt - rateWindowStart >= WINDOW_NANOS) {
                dirtyRate = rateWindowPages * 1e9 / (syncedAt - rateWindowStart);
                rateWindowStart = syncedAt;
                rateWindowPages = 0;
                rateMeasured = true;
                windowFromRestart = false;
            } else if (!rateMeasured) {
                dirtyRate = rateWindowPages * 1e9 / Math.max(1, syncedAt - rateWindowStart); // the partial window until one closes
            }
            updateBandwidth(roundEnd, totalSent);
        }
        // Stopping now sends what the guest dirtied during this round (at the dirty rate; until a rate is
        // measured, no less than this round's sync found) and every device's pending bytes, then waits a
        // round trip for the ACK.
        long duringRound = (long) (dirtyRate * (roundNanos / 1e9));
        long nextDirty = rateMeasured ? duringRound : Math.max(dirtyPages, duringRound);
        return (long) ((nextDirty * pageSize + devicePending) / bytesPerNano / 1e3) + roundTripMicros;
    }

    private void updateBandwidth(long roundEnd, long totalSent) {
        if (roundEnd - bandwidthWindowStart >= WINDOW_NANOS) {
            bytesPerNano = Math.max(totalSent - bandwidthWindowBytes, 1) / (double) (roundEnd - bandwidthWindowStart);
            bandwidthWindowStart = roundEnd;
            bandwidthWindowBytes = totalSent;
        }
    }

    /**
     * The guest's throttle changed after the last round: the next sync's pages were dirtied under the old
     * one, so the rate's window restarts at that sync instead of mixing the two.
     */
    void throttleChanged() {
        restartRateWindow = true;
    }

    /** Pages dirtied per second, as last measured (0 before the second round). */
    long dirtyRate() {
        return (long) dirtyRate;
    }
}
