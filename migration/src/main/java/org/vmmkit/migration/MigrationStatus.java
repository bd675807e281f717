package org.vmmkit.migration;

/**
 * Where a migration stands, in QEMU's query-migrate words ({@link #label}): not started, setting up, in
 * pre-copy, in stop-and-copy and handover with the vCPUs paused ({@code device}), and the ends: completed,
 * failed, cancelled, or {@code unknown} — the handover's outcome is unknown and the VM stays paused until it
 * is resolved, since it may run at the destination.
 */
public enum MigrationStatus {
    NONE, SETUP, ACTIVE, DEVICE, COMPLETED, FAILED, CANCELLED, UNKNOWN;

    /** The name query-migrate shows: {@code none}, {@code setup}, ... */
    public String label() {
        return name().toLowerCase(java.util.Locale.ROOT);
    }

    /** Whether the migration has ended (unknown included: nothing more happens until it is resolved). */
    public boolean ended() {
        return this == COMPLETED || this == FAILED || this == CANCELLED || this == UNKNOWN;
    }

    /** The status of a label, or an error naming it. */
    public static MigrationStatus of(String label) {
        for (MigrationStatus s : values()) if (s.label().equals(label)) return s;
        throw new IllegalArgumentException("no migration status '" + label + "'");
    }

    @Override
    public String toString() {
        return label();
    }
}
