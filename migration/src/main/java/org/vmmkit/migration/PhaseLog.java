package org.vmmkit.migration;

import org.vmmkit.migration.pipeline.TransferRing;

/**
 * A source's phases (setup, pre-copy, stop-and-copy, handover) as they end: each a JFR event
 * ({@link MigrationEvents.Phase}) and, unless quiet, an INFO line with its time and the figures at its end.
 */
final class PhaseLog {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    private final boolean quiet;
    private final LiveStats stats;
    private long phaseStartNanos;

    PhaseLog(boolean quiet, LiveStats stats, long startNanos) {
        this.quiet = quiet;
        this.stats = stats;
        this.phaseStartNanos = startNanos;
    }

    /** The first phase's event, begun. */
    MigrationEvents.Phase begin() {
        MigrationEvents.Phase event = new MigrationEvents.Phase();
        event.begin();
        return event;
    }

    /** Commits the event of the phase that ends and logs it (INFO: a line per phase); returns the next phase's event, begun. */
    MigrationEvents.Phase end(MigrationEvents.Phase event, String phase, String outcome) {
        event.phase = phase;
        event.outcome = outcome;
        event.commit();
        long now = System.nanoTime();
        TransferRing ring = stats.ring;
        if (!quiet) LOG.log(System.Logger.Level.INFO, "migration {0}: {1} in {2} ms (round {3}, {4} bytes sent, expected downtime {5} us)", phase, outcome,
                (now - phaseStartNanos) / 1_000_000, stats.rounds, ring == null ? 0 : ring.bytesWritten(), stats.expectedMicros);
        phaseStartNanos = now;
        return begin();
    }
}
