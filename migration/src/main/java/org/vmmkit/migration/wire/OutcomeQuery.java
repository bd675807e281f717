package org.vmmkit.migration.wire;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ByteChannel;
import java.nio.channels.ReadableByteChannel;
import java.util.zip.CRC32C;

/**
 * The question a source asks a destination on a fresh connection when the answer to its COMMIT was lost:
 * what became of the stream with this nonce? Opened, like a stream, after the destination's HELLO: the
 * magic {@code VMMKITOQ}, the 16-byte nonce of the stream asked about, a CRC32C; answered by one OUTCOME
 * frame. Layout in docs/wire-format.md.
 */
public final class OutcomeQuery {
    /** "VMMKITOQ" as little-endian bytes. */
    public static final long MAGIC = 0x514F54494B4D4D56L;
    static final int SIZE = 28;

    private OutcomeQuery() {
    }

    /** The query's bytes. */
    public static ByteBuffer encode(Nonce stream) {
        ByteBuffer b = ByteBuffer.allocate(SIZE).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(MAGIC).putLong(stream.high()).putLong(stream.low());
        CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, 24);
        b.putInt((int) crc.getValue());
        return b.flip();
    }

    /** Reads the rest of a query whose magic was already read; returns the nonce asked about. */
    public static Nonce readAfterMagic(ReadableByteChannel in) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(SIZE).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(MAGIC);
        FrameCodec.readFully(in, b, "an outcome query");
        CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, 24);
        if ((int) crc.getValue() != b.getInt(24)) throw new WireFormatException("outcome query CRC32C mismatch");
        return new Nonce(b.getLong(8), b.getLong(16));
    }

    /**
     * Asks, on {@code connection} (fresh, to the destination), what became of {@code stream}: reads the
     * destination's HELLO, sends the query, reads the OUTCOME. An ERROR answer is thrown with its reason.
     */
    public static HandoverOutcome ask(ByteChannel connection, Nonce stream) throws IOException {
        FrameCodec codec = new FrameCodec(1 << 16);
        if (codec.readHeader(connection) != FrameType.HELLO) throw new WireFormatException("the destination did not open with HELLO");
        codec.skipPayload(connection);
        ByteBuffer query = encode(stream);
        while (query.hasRemaining()) connection.write(query);
        FrameType t = codec.readHeader(connection);
        if (t == FrameType.ERROR) {
            ByteBuffer reason = ByteBuffer.allocate((int) codec.length());
            codec.readPayload(connection, reason);
            throw new IOException("the destination refused the query: " + new String(reason.array(), java.nio.charset.StandardCharsets.UTF_8));
        }
        if (t != FrameType.OUTCOME) throw new WireFormatException("the destination answered " + t + " to an outcome query");
        codec.skipPayload(connection);
        return HandoverOutcome.of(codec.a());
    }
}
