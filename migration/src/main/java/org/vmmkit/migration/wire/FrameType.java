package org.vmmkit.migration.wire;

/** The frame types of wire format version 1 (a closed set: see docs/wire-format.md for the version rules). */
public enum FrameType {
    /** Guest RAM: {@code a} = guest physical address, {@code b} = pages, payload = the pages. */
    RAM(1),
    /** A run of zero pages: {@code a} = guest physical address, {@code b} = pages, no payload. */
    ZERO_RUN(2),
    /** A device state chunk: {@code a} = device id, {@code b} = sequence, payload = the chunk as the device produced it. */
    DEVICE_CHUNK(3),
    /** One vCPU's state: {@code a} = vCPU id, payload = {@code VcpuState.toBytes()}. */
    VCPU_STATE(4),
    /** A device's configuration: {@code a} = device id, payload = opaque bytes. */
    DEVICE_CONFIG(5),
    /** End of a pre-copy round: {@code a} = round number. */
    END_OF_ROUND(6),
    /** Everything was sent: {@code a} = frames sent before this one. */
    COMPLETE(7),
    /** The source gives up; {@code payload} = the reason (UTF-8). The destination discards everything. */
    ABANDON(8),
    /** The first frame of every channel but the first: {@code a} = the stream id of the header, {@code b} = the channel's index (1, 2, ...). */
    CHANNEL(9),
    // Return path, destination to source.
    /** The destination accepted the stream header and is ready. */
    READY(16),
    /** The destination loaded everything and its VM runs: the source may let go. */
    ACK_COMPLETE(17),
    /** The destination failed; payload = the reason (UTF-8). */
    ERROR(18);

    private final int code;

    FrameType(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    private static final FrameType[] BY_CODE = new FrameType[32];

    static {
        for (FrameType t : values()) BY_CODE[t.code] = t;
    }

    /** The type for a code, or null for a code this version does not know. */
    public static FrameType of(int code) {
        return code >= 0 && code < BY_CODE.length ? BY_CODE[code] : null;
    }
}
