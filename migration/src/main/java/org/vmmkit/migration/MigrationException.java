package org.vmmkit.migration;

/** A migration that failed: says in which phase and why; the source has been rolled back when it is thrown there. */
public final class MigrationException extends Exception {
    public MigrationException(String message, Throwable cause) {
        super(message, cause);
    }

    public MigrationException(String message) {
        super(message);
    }
}
