package org.vmmkit.migration.wire;

/** A stream that is not a valid vmmkit migration stream: says where and what, so the destination can refuse it. */
public final class WireFormatException extends RuntimeException {
    public WireFormatException(String message) {
        super(message);
    }
}
