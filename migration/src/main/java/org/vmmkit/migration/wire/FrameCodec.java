package org.vmmkit.migration.wire;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.GatheringByteChannel;
import java.nio.channels.ReadableByteChannel;
import java.util.zip.CRC32C;

/**
 * Frames of wire format version 5 (unchanged since 3): a 40-byte little-endian header (type, flags, sequence, {@code a},
 * {@code b}, payload length, CRC32C of the payload, CRC32C of the header) and the payload. The sequence is
 * the frame's index on its connection in its direction (from 0, modulo 2^32): the reader checks it on every
 * frame, so a frame dropped, repeated or moved is caught at the first frame out of place. The header CRC is
 * checked before any field is used; the payload CRC separately, because a RAM page sent while the guest
 * runs may change between the CRC and the send (a torn page, which pre-copy resends anyway). One codec
 * per channel and thread: its header buffer and CRC are reused, so writing and reading a frame allocates
 * nothing. The payload is written straight from its own buffers (views of guest RAM or a device's data
 * section), one write per buffer (see {@code write} for why not one gathering write).
 */
public final class FrameCodec {
    public static final int HEADER = 40;
    /** Flag: a destination that does not know this frame type may skip it (no type of version 1 sets it). */
    public static final int FLAG_SKIPPABLE = 1;

    private final ByteBuffer header = ByteBuffer.allocateDirect(HEADER).order(ByteOrder.LITTLE_ENDIAN);
    private final CRC32C crc = new CRC32C();
    private final long maxPayload;

    // The last header read.
    private FrameType type;
    private int code, flags; // code: the type as read, for messages about a type this version does not know
    private long a, b, length;
    private int expectedCrc;
    private long framesRead, framesWritten;
    private ByteBuffer scratch; // for skipping payloads; made on the first skip

    /** {@code maxPayload}: the largest payload a frame may announce; more is a corrupt stream. */
    public FrameCodec(long maxPayload) {
        this.maxPayload = maxPayload;
    }

    /**
     * Sets where this codec's sequence stands: {@code frames} frames already written or read on its connection
     * (0 starts it over, as a reader replaying the same recorded frames needs; the protocol itself never
     * continues a sequence across codecs: each connection's frames count from its opening).
     */
    public FrameCodec sequenceFrom(long frames) {
        this.framesRead = frames;
        this.framesWritten = frames;
        return this;
    }

    /** Frames this codec wrote (including those of {@link #sequenceFrom}). */
    public long framesWritten() {
        return framesWritten;
    }

    /** Writes a frame with up to two payload buffers (read from position to limit; positions advance). */
    public void write(GatheringByteChannel out, FrameType type, long a, long b, ByteBuffer payload1, ByteBuffer payload2)
            throws IOException {
        write(out, type, a, b, payload1, payload2, false);
    }

    /**
     * Writes a frame whose payload CRC covers only {@code table}, the second buffer: a RAM frame, whose
     * table holds a CRC32C per page of {@code data} (so the data is read once for its CRCs).
     */
    public void writeWithTable(GatheringByteChannel out, FrameType type, long a, long b, ByteBuffer data, ByteBuffer table)
            throws IOException {
        write(out, type, a, b, data, table, true);
    }

    private void write(GatheringByteChannel out, FrameType type, long a, long b, ByteBuffer payload1, ByteBuffer payload2,
                       boolean tableOnly) throws IOException {
        long length = (payload1 == null ? 0 : payload1.remaining()) + (payload2 == null ? 0 : payload2.remaining());
        crc.reset();
        if (payload1 != null && !tableOnly) crcOf(payload1);
        if (payload2 != null) crcOf(payload2);
        header.clear();
        header.putShort((short) type.code()).putShort((short) 0).putInt((int) framesWritten).putLong(a).putLong(b).putLong(length)
                .putInt((int) crc.getValue());
        crc.reset();
        header.flip();
        crc.update(header);
        header.limit(HEADER).position(36);
        header.putInt((int) crc.getValue());
        header.flip();
        // One write per buffer rather than one gathering write: the JDK allocates 40 bytes for every
        // gathering write that includes a buffer backed by a memory segment (guest RAM, a data section) to
        // acquire its scope, and nothing for a single write (measured on JDK 25). Three system calls per
        // 1 MiB frame cost nothing measurable; the sockets have TCP_NODELAY, so a header is never held back.
        framesWritten++; // a frame begun counts: whatever follows on this connection comes after it
        writeFully(out, header);
        if (payload1 != null) writeFully(out, payload1);
        if (payload2 != null) writeFully(out, payload2);
    }

    private static void writeFully(java.nio.channels.WritableByteChannel out, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) out.write(b);
    }

    private void crcOf(ByteBuffer payload) {
        int p = payload.position();
        crc.update(payload);
        payload.position(p);
    }

    /**
     * Reads and checks the next header: a known type (or a skippable one), reserved fields zero, a payload
     * no larger than the limit. Returns its type; {@link #a()}, {@link #b()}, {@link #length()} describe it.
     */
    public FrameType readHeader(ReadableByteChannel in) throws IOException {
        header.clear();
        readFrame(in, header, true);
        header.flip();
        crc.reset();
        header.limit(36);
        crc.update(header);
        header.limit(HEADER);
        if ((int) crc.getValue() != header.getInt(36)) {
            throw new WireFormatException("frame " + framesRead + " header fails its CRC32C: the stream is corrupt");
        }
        code = Short.toUnsignedInt(header.getShort(0));
        flags = Short.toUnsignedInt(header.getShort(2));
        a = header.getLong(8);
        b = header.getLong(16);
        length = header.getLong(24);
        expectedCrc = header.getInt(32);
        type = FrameType.of(code);
        if (type == null && (flags & FLAG_SKIPPABLE) == 0) {
            throw new WireFormatException("frame " + framesRead + " has type " + code + ", unknown to wire format version "
                    + StreamHeader.VERSION + " and not skippable");
        }
        if ((flags & ~FLAG_SKIPPABLE) != 0) {
            throw new WireFormatException("frame " + framesRead + " (" + typeName() + ") has reserved bits set");
        }
        int sequence = header.getInt(4);
        if (sequence != (int) framesRead) {
            throw new WireFormatException("frame " + framesRead + " (" + typeName() + ") carries sequence " + Integer.toUnsignedString(sequence)
                    + ": a frame was dropped, repeated or moved on this connection");
        }
        if (length < 0 || length > maxPayload) {
            throw new WireFormatException("frame " + framesRead + " (" + typeName() + ") announces " + length + " bytes; the limit is " + maxPayload);
        }
        crc.reset();
        framesRead++;
        return type;
    }

    /** Reads {@code dst.remaining()} payload bytes of the current frame into {@code dst} and adds them to the CRC. */
    public void readPayload(ReadableByteChannel in, ByteBuffer dst) throws IOException {
        int p = dst.position();
        readFrame(in, dst, false);
        int end = dst.position();
        dst.position(p);
        crc.update(dst);
        dst.position(end);
    }

    /**
     * Reads past the whole payload of the current frame (a skippable frame of an unknown type), checking
     * its CRC32C; a payload of any length the limit allows is skipped whole, through one reused buffer.
     */
    public void skipPayload(ReadableByteChannel in) throws IOException {
        if (scratch == null) scratch = ByteBuffer.allocateDirect(64 * 1024);
        for (long left = length; left > 0; left -= scratch.capacity()) {
            scratch.clear().limit((int) Math.min(left, scratch.capacity()));
            readPayload(in, scratch);
        }
        verify();
    }

    /** Reads payload bytes into {@code dst} without adding them to the payload CRC (RAM data: the table covers it). */
    public void readPayloadUnchecked(ReadableByteChannel in, ByteBuffer dst) throws IOException {
        readFrame(in, dst, false);
    }

    /** After the whole payload: whether its CRC32C matches. */
    public boolean payloadIntact() {
        return (int) crc.getValue() == expectedCrc;
    }

    /** After the whole payload: the frame is good only if the payload CRC32C matches. */
    public void verify() {
        if (!payloadIntact()) {
            throw new WireFormatException("frame " + (framesRead - 1) + " (" + typeName() + ", a=0x" + Long.toHexString(a) + ", "
                    + length + " bytes) payload fails its CRC32C");
        }
    }

    /**
     * After the header of a type that carries no payload (COMPLETE, END_OF_ROUND, CHANNEL): it must announce
     * none. A payload announced and never read would leave this reader framing the stream differently from
     * every other (the bytes after the header read as frames here, skipped as payload by a proxy or recorder).
     */
    public void verifyEmpty() {
        if (length != 0) {
            throw new WireFormatException("frame " + (framesRead - 1) + " (" + typeName() + ") announces " + length + " payload bytes; "
                    + typeName() + " carries none");
        }
        verify();
    }

    public FrameType type() { return type; }

    /** The last header's type for a message: its name, or its code if this version does not know it. */
    private String typeName() {
        return type != null ? type.toString() : "unknown type " + code;
    }

    public long a() { return a; }

    public long b() { return b; }

    public long length() { return length; }

    public long framesRead() { return framesRead; }

    /** {@link #readFully} for a frame's header or payload, naming it only when the stream ends (no string per frame). */
    private void readFrame(ReadableByteChannel in, ByteBuffer dst, boolean ofHeader) throws IOException {
        if (!fill(in, dst)) throw endedInside(ofHeader ? "frame " + framesRead : "frame " + (framesRead - 1) + " (" + typeName() + ") payload", dst);
    }

    /** Reads until {@code dst} is full; a stream that ends first is a clear error, not a hang. */
    static void readFully(ReadableByteChannel in, ByteBuffer dst, String what) throws IOException {
        if (!fill(in, dst)) throw endedInside(what, dst);
    }

    /** Reads until {@code dst} is full; false if the stream ended first. */
    private static boolean fill(ReadableByteChannel in, ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) {
            if (in.read(dst) < 0) return false;
        }
        return true;
    }

    private static EOFException endedInside(String what, ByteBuffer dst) {
        return new EOFException("the stream ended inside " + what + " (" + dst.remaining() + " bytes missing)");
    }
}
