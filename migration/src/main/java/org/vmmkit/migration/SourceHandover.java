package org.vmmkit.migration;

import java.io.IOException;
import java.net.SocketAddress;
import java.time.Duration;
import java.util.List;
import java.util.function.Supplier;

import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.OutcomeQuery;

/**
 * The source's side of an outcome it cannot see: after COMMIT was begun, an answer that does not come leaves
 * the destination possibly running the VM. This asks the destination on a fresh connection and acts on a
 * decided answer; otherwise it keeps the rollback until {@link #resolve} (an operator's word) or
 * {@link #resolveByAsking} settles it. Never resumes the VM on its own.
 */
final class SourceHandover {
    private final Transport transport;
    private final Duration queryTimeout;
    private final LiveStats stats;
    private Supplier<String> rollback; // set while the outcome is unknown; guarded by this
    private Nonce stream;
    private SocketAddress destination;

    SourceHandover(Transport transport, Duration queryTimeout, LiveStats stats) {
        this.transport = transport;
        this.queryTimeout = queryTimeout;
        this.stats = stats;
    }

    /**
     * Settles a handover whose answer was lost ({@code lost} says how): asks the destination at
     * {@code destination} (null: cannot) about {@code stream}. STARTED completes the migration; NOT_STARTED
     * runs {@code rollback} and fails it; anything else leaves it unknown, the VM paused.
     */
    synchronized MigrationStats settle(String lost, Throwable failure, SocketAddress destination, Nonce stream, Supplier<String> rollback)
            throws MigrationException {
        this.destination = destination;
        this.stream = stream;
        String asked;
        try {
            HandoverOutcome outcome = ask(destination);
            if (outcome == HandoverOutcome.STARTED) return stats.completed(lost + "; the destination, asked, said its VM runs");
            if (outcome == HandoverOutcome.NOT_STARTED) {
                stats.end(MigrationStatus.FAILED, "migration failed in handover: " + lost + "; the destination, asked, said it did not start; " + rollback.get());
                throw new MigrationException(stats.error(), failure);
            }
            asked = "the destination answered " + outcome;
        } catch (IOException | RuntimeException e) {
            asked = "asking the destination failed: " + e.getMessage();
        }
        this.rollback = rollback;
        stats.end(MigrationStatus.UNKNOWN, "handover outcome unknown: " + lost + "; " + asked + ". The VM stays paused here, since it may run at the"
                + " destination (stream " + stream + "): ask again with migrate-resolve, or settle it with migrate-resolve destination=running|stopped");
        throw new MigrationException(stats.error(), failure);
    }

    /** Asks the destination at {@code where}, on a fresh connection of this migration's transport, what became of the stream. */
    private HandoverOutcome ask(SocketAddress where) throws IOException {
        if (where == null) throw new IOException("no destination address to ask (the migration was given its connections)");
        try (Connection c = transport.connect(where, queryTimeout);
             Watchdog silent = new Watchdog("migration-outcome-query-watchdog", queryTimeout, List.of(c))) {
            try {
                return OutcomeQuery.ask(c, stream);
            } catch (IOException e) {
                if (silent.fired()) throw new IOException("the destination did not answer within " + queryTimeout.toMillis() + " ms", e);
                throw e;
            }
        }
    }

    synchronized boolean unresolved() {
        return rollback != null;
    }

    synchronized MigrationStats resolveByAsking(SocketAddress where) throws IOException {
        requireUnresolved();
        HandoverOutcome outcome = ask(where != null ? where : destination);
        if (!outcome.decided()) throw new IOException("the destination answered " + outcome + " for stream " + stream + "; the outcome stays unknown");
        return resolve(outcome == HandoverOutcome.STARTED, "the destination, asked, said " + outcome);
    }

    synchronized MigrationStats resolve(boolean destinationRuns, String why) {
        requireUnresolved();
        Supplier<String> undo = rollback;
        rollback = null;
        if (destinationRuns) return stats.settle(MigrationStatus.COMPLETED, "resolved: " + why + "; this VM stays paused");
        return stats.settle(MigrationStatus.FAILED, "resolved: " + why + "; " + undo.get() + ": the VM runs here again");
    }

    private void requireUnresolved() {
        if (rollback == null) throw new IllegalStateException("no migration outcome is unknown (status " + stats.snapshot().status() + ")");
    }
}
