package org.vmmkit.vfio.migration;

/**
 * A device migration step failed: names the device, the step, the state the device reports now and,
 * where a system call failed, its errno.
 */
public class DeviceMigrationException extends RuntimeException {
    public DeviceMigrationException(String message) {
        super(message);
    }

    public DeviceMigrationException(String message, Throwable cause) {
        super(message, cause);
    }
}
