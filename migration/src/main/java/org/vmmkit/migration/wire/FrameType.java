package org.vmmkit.migration.wire;

/** The frame types of wire format version 5 (a closed set: see docs/wire-format.md for the version rules). */
public enum FrameType {
    /** Guest RAM: {@code a} = guest physical address, {@code b} = pages, payload = the pages. */
    RAM(1),
    /** A run of zero pages: {@code a} = guest physical address, {@code b} = pages, no payload. */
    ZERO_RUN(2),
    /** A section's chunk: {@code a} = the section's index in the stream header, {@code b} = sequence, payload = the chunk as the section produced it. */
    SECTION_CHUNK(3),
    // 4 was VCPU_STATE up to wire format version 3; vCPU state travels as sections (vcpu/N) since version 4.
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
    /**
     * The source's decision to hand over, answering PREPARED: the destination may start its VM once it has
     * read it. From the moment the source begins to write it, the source never resumes on its own.
     */
    COMMIT(10),
    // Return path, destination to source.
    /** The destination accepted the stream header and is ready. */
    READY(16),
    /** The destination's VM runs (it read COMMIT and started): the source may let go. */
    ACK_COMPLETE(17),
    /** The destination failed and its VM does not run, nor will from this stream; payload = the reason (UTF-8). */
    ERROR(18),
    /**
     * The first frame on every connection the destination accepts, before it reads anything: {@code a},
     * {@code b} = a fresh 128-bit nonce that the stream header (or an outcome query) must carry back.
     */
    HELLO(19),
    /** The stream is whole and loaded (COMPLETE checked, vCPU state restored); the VM waits for COMMIT. */
    PREPARED(20),
    /** The answer to an outcome query: {@code a} = the {@link HandoverOutcome} code of the stream asked about. */
    OUTCOME(21),
    /**
     * The destination read END_OF_ROUND {@code a} on the first channel: that round is no longer in flight (on
     * the first channel), so the source's next estimate is not missing what its socket still held.
     */
    ROUND_ACK(22);

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
