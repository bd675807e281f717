package org.vmmkit.migration;

/**
 * What a finished (or failed) migration reports, in QEMU's query-migrate vocabulary: status, total time,
 * setup time, downtime (pause to the destination's acknowledgement), the expected downtime at the last
 * round, bytes transferred, rounds (dirty syncs), zero pages, the dirty page rate and the throughput, and
 * whether the last round was reached by the iteration cap rather than the downtime limit.
 */
public record MigrationStats(String status, long totalMillis, long setupMillis, long downtimeMillis, long expectedDowntimeMillis,
                             long transferredBytes, long rounds, long ramPages, long zeroPages, long deviceBytes,
                             long dirtyPagesRate, double throughputMbps, boolean stoppedByIterationCap) {}
