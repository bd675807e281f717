package org.vmmkit.vfio.migration;

/** A device that cannot take part in migration: no v1 migration region, or marked non-migratable. */
public final class MigrationBlockedException extends DeviceMigrationException {
    public MigrationBlockedException(String message) {
        super(message);
    }
}
