package org.vmmkit.migration.wire;

/**
 * What became of a stream at its destination, as an outcome query answers it: the one fact a source that
 * lost its connection after COMMIT needs to know whether it may resume.
 */
public enum HandoverOutcome {
    /** This destination never issued that stream's nonce (another process, or one restarted since). */
    UNKNOWN_STREAM(0),
    /** The stream is still being received or waits for COMMIT: the destination has not decided. */
    IN_PROGRESS(1),
    /** The destination read COMMIT and started its VM from that stream. */
    STARTED(2),
    /** The destination gave that stream up (refused, failed, cut before COMMIT): it will never start from it. */
    NOT_STARTED(3);

    private final int code;

    HandoverOutcome(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    /** Whether the source can act on it: its VM must stay paused on any other answer. */
    public boolean decided() {
        return this == STARTED || this == NOT_STARTED;
    }

    public static HandoverOutcome of(long code) {
        for (HandoverOutcome o : values()) if (o.code == code) return o;
        throw new WireFormatException("outcome code " + code + " is unknown");
    }
}
