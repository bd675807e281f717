package org.vmmkit.migration;

import java.util.List;

/**
 * A migration's statistics, in QEMU's query-migrate vocabulary, as a snapshot: taken live from
 * {@link MigrationSource#stats()} while it runs, or returned when it completes ({@link MigrationStatus}). Times in milliseconds; the downtime runs from the pause to the
 * destination's acknowledgement that its VM runs; {@code expectedDowntimeMillis} is -1 until the first round
 * has given an estimate; {@code remainingBytes} is what the current round still
 * has to move (its dirty pages not yet sent — a zero page counts as sent once its address is — plus the
 * devices' pending bytes at the round's start, less the device bytes sent);
 * {@code dirtyPagesRate} is pages per second; {@code stoppedByIterationCap} says the last round was reached
 * by {@code max-iterations} rather than the downtime limit; {@code destinationResidentBytes} is what the
 * guest RAM costs the destination's host once loaded (its acknowledgement says; -1 until then); {@code
 * convergence} says how pre-copy met (or did not meet) the downtime limit and what throttling cost the guest;
 * {@code memfdsPassed} says the guest memory was handed over as memfds (a local live upgrade: no RAM copied).
 */
public record MigrationStats(MigrationStatus status, long totalMillis, long setupMillis, long downtimeMillis, long expectedDowntimeMillis,
                             long transferredBytes, long remainingBytes, long rounds, long ramPages, long zeroPages,
                             long sectionBytes, long dirtyPagesRate, double throughputMbps, boolean stoppedByIterationCap,
                             List<SectionStats> sections, long destinationResidentBytes, ConvergenceStats convergence,
                             boolean memfdsPassed) {

    /** One section's share of this migration: the bytes and chunks of its state sent. */
    public record SectionStats(String id, String kind, long bytes, long chunks) {}

    /**
     * The policy in force, how pre-copy ended under it ({@code converged}, {@code converged under a 40 %
     * throttle}, {@code forced over the limit (...)}, {@code cancelled: ...}; empty while it runs), the
     * throttle's last share of each period (0: never throttled) and the time the guest was held paused by it.
     */
    public record ConvergenceStats(ConvergencePolicy policy, String outcome, int throttlePercent, long throttledMillis) {
        /** Before a migration: the default policy, nothing applied. */
        public static final ConvergenceStats NONE = new ConvergenceStats(ConvergencePolicy.THROTTLE, "", 0, 0);
    }

    public MigrationStats {
        sections = List.copyOf(sections);
    }

    /** The same figures under another status (the end of a failed or cancelled migration). */
    public MigrationStats withStatus(MigrationStatus newStatus) {
        return new MigrationStats(newStatus, totalMillis, setupMillis, downtimeMillis, expectedDowntimeMillis, transferredBytes, remainingBytes,
                rounds, ramPages, zeroPages, sectionBytes, dirtyPagesRate, throughputMbps, stoppedByIterationCap, sections,
                destinationResidentBytes, convergence, memfdsPassed);
    }

    /** Whether the migration has ended: completed, failed, cancelled, or with its handover's outcome unknown. */
    public boolean ended() {
        return status.ended();
    }

    /** The stats of a migration that has not started. */
    public static MigrationStats none() {
        return new MigrationStats(MigrationStatus.NONE, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, false, List.of(), -1, ConvergenceStats.NONE, false);
    }
}
