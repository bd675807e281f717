package org.vmmkit.migration;

/**
 * What a migration tells its listener ({@link MigrationSource#withListener}) as it goes, in QEMU's terms: a
 * {@link StatusChange} at each state transition (QMP's MIGRATION event) and a {@link Pass} at the end of each
 * pre-copy round (QMP's MIGRATION_PASS, with the round's figures).
 */
public sealed interface MigrationEvent {

    /**
     * The migration entered {@code status}: setup, active (pre-copy), device (vCPUs paused; {@code phase}
     * {@code stop-and-copy}, then {@code handover}), or an end — completed, failed, cancelled, unknown — with
     * {@code reason} (why it failed, was cancelled or is unknown; null for a plain completion). An unknown
     * outcome settled later is another change, to completed or failed.
     */
    record StatusChange(MigrationStatus status, String phase, String reason) implements MigrationEvent {}

    /**
     * One pre-copy round done: its number, the bytes it sent, the dirty pages its sync found, the downtime
     * expected if the migration stopped after it (microseconds), the guest's throttle during it (percent of each
     * period held paused, 0: none), the bytes sent so far, what is left for the next round (the devices'
     * pending bytes; RAM's dirty pages are found by its sync), the downtime limit it was judged against
     * (microseconds) and the round's wall time (microseconds).
     */
    record Pass(long round, long bytes, long dirtyPages, long expectedDowntimeMicros, int throttlePercent, long transferred,
                long remaining, long downtimeLimitMicros, long roundMicros) implements MigrationEvent {}
}
