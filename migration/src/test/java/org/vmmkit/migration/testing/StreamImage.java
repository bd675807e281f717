package org.vmmkit.migration.testing;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;

/**
 * A recorded first connection of a migration stream, taken apart so a test can change it field by field:
 * the stream header's bytes, then every frame (its 40-byte header as fields, and its payload), then any
 * bytes after the last whole frame. {@link #encode} puts it together again exactly as the fields say —
 * stale CRCs, wrong sequences and lengths that do not match the payload included — and the {@code seal}
 * methods recompute what a writer would, for a change that should look genuine. Layout in
 * docs/wire-format.md (version 4: bytes 4..8 of a frame header are its sequence).
 */
public final class StreamImage {
    /** Where the stream header keeps its size and its flags. */
    public static final int HEADER_SIZE_AT = 12, HEADER_FLAGS_AT = 36;
    private static final int PAGE = 4096;

    private byte[] header;
    private final List<Frame> frames;
    private byte[] trailer;

    private StreamImage(byte[] header, List<Frame> frames, byte[] trailer) {
        this.header = header;
        this.frames = frames;
        this.trailer = trailer;
    }

    /** One frame: the header's fields as they will be written, and the payload. */
    public static final class Frame {
        public int type, flags, sequence;
        public long a, b, length;
        public int payloadCrc, headerCrc;
        private byte[] payload;
        private boolean ownPayload; // copies share a payload until one of them changes it

        public Frame(int type, int flags, long a, long b, byte[] payload) {
            this.type = type;
            this.flags = flags;
            this.a = a;
            this.b = b;
            this.payload = payload;
            this.length = payload.length;
            this.ownPayload = true;
        }

        private Frame() {
        }

        /** A copy that shares the payload until either changes it. */
        public Frame copy() {
            Frame f = new Frame();
            f.type = type;
            f.flags = flags;
            f.sequence = sequence;
            f.a = a;
            f.b = b;
            f.length = length;
            f.payloadCrc = payloadCrc;
            f.headerCrc = headerCrc;
            f.payload = payload;
            f.ownPayload = false;
            ownPayload = false;
            return f;
        }

        /** The payload, read-only by convention; {@link #payloadForWriting} to change it. */
        public byte[] payload() {
            return payload;
        }

        /** The payload, this frame's own copy, to change in place. */
        public byte[] payloadForWriting() {
            if (!ownPayload) {
                payload = payload.clone();
                ownPayload = true;
            }
            return payload;
        }

        /** Replaces the payload (the length field is left as it is). */
        public void payload(byte[] bytes) {
            payload = bytes;
            ownPayload = true;
        }

        /** The payload CRC a writer computes: of the per-page CRC table alone for RAM with page checksums. */
        public void sealPayload(boolean ramChecksums) {
            CRC32C crc = new CRC32C();
            if (type == FrameType.RAM.code() && !ramChecksums) {
                // no table: the CRC of nothing
            } else if (type == FrameType.RAM.code() && b > 0 && b <= payload.length / PAGE) {
                int tableAt = (int) b * PAGE;
                crc.update(payload, tableAt, payload.length - tableAt);
            } else {
                crc.update(payload, 0, payload.length);
            }
            payloadCrc = (int) crc.getValue();
        }

        /** The header CRC over bytes 0..35 as they are now. */
        public void sealHeader() {
            ByteBuffer h = headerBytes();
            CRC32C crc = new CRC32C();
            crc.update(h.array(), 0, 36);
            headerCrc = (int) crc.getValue();
        }

        /** Both CRCs, payload first (the header's covers it). */
        public void seal(boolean ramChecksums) {
            sealPayload(ramChecksums);
            sealHeader();
        }

        ByteBuffer headerBytes() {
            ByteBuffer h = ByteBuffer.allocate(FrameCodec.HEADER).order(ByteOrder.LITTLE_ENDIAN);
            h.putShort((short) type).putShort((short) flags).putInt(sequence).putLong(a).putLong(b).putLong(length).putInt(payloadCrc)
                    .putInt(headerCrc);
            return h.flip();
        }

        /** The frame's name in a test's message: {@code RAM a=0x3000 b=3 (12300 bytes)}. */
        public String describe() {
            FrameType t = FrameType.of(type);
            return (t == null ? "type " + type : t.toString()) + " a=0x" + Long.toHexString(a) + " b=" + b + " (" + payload.length + " bytes)";
        }
    }

    /**
     * Takes a recorded first connection apart: the header (its size field says how long it is), then frames
     * by their length fields. Bytes after the last whole frame are the trailer.
     */
    public static StreamImage parse(byte[] stream) {
        ByteBuffer in = ByteBuffer.wrap(stream).order(ByteOrder.LITTLE_ENDIAN);
        int size = in.getInt(HEADER_SIZE_AT);
        if (size < HEADER_FLAGS_AT + 4 || size > stream.length) throw new IllegalArgumentException("a stream header of " + size + " bytes in a recording of " + stream.length);
        byte[] header = java.util.Arrays.copyOf(stream, size);
        List<Frame> frames = new ArrayList<>();
        int at = size;
        while (stream.length - at >= FrameCodec.HEADER) {
            long length = in.getLong(at + 24);
            if (length < 0 || length > stream.length - at - FrameCodec.HEADER) break;
            Frame f = new Frame();
            f.type = Short.toUnsignedInt(in.getShort(at));
            f.flags = Short.toUnsignedInt(in.getShort(at + 2));
            f.sequence = in.getInt(at + 4);
            f.a = in.getLong(at + 8);
            f.b = in.getLong(at + 16);
            f.length = length;
            f.payloadCrc = in.getInt(at + 32);
            f.headerCrc = in.getInt(at + 36);
            f.payload = java.util.Arrays.copyOfRange(stream, at + FrameCodec.HEADER, at + FrameCodec.HEADER + (int) length);
            f.ownPayload = true;
            frames.add(f);
            at += FrameCodec.HEADER + (int) length;
        }
        return new StreamImage(header, frames, java.util.Arrays.copyOfRange(stream, at, stream.length));
    }

    /** A copy to change: frames copied, payloads shared until changed. */
    public StreamImage copy() {
        List<Frame> fs = new ArrayList<>(frames.size());
        for (Frame f : frames) fs.add(f.copy());
        return new StreamImage(header.clone(), fs, trailer.clone());
    }

    /** The stream header's bytes (its CRC in the last 4), to change in place. */
    public byte[] header() {
        return header;
    }

    public void header(byte[] bytes) {
        header = bytes;
    }

    /** The frames in stream order, to change, drop, repeat and move. */
    public List<Frame> frames() {
        return frames;
    }

    public byte[] trailer() {
        return trailer;
    }

    public void trailer(byte[] bytes) {
        trailer = bytes;
    }

    /** Whether the header says RAM frames carry a per-page CRC table. */
    public boolean ramChecksums() {
        return (ByteBuffer.wrap(header).order(ByteOrder.LITTLE_ENDIAN).getInt(HEADER_FLAGS_AT) & 1) != 0;
    }

    /** The index of the first frame of {@code type}, or -1. */
    public int indexOf(FrameType type) {
        for (int i = 0; i < frames.size(); i++) if (frames.get(i).type == type.code()) return i;
        return -1;
    }

    /** Recomputes the stream header's CRC32C (its last 4 bytes, over everything before them). */
    public void sealHeader() {
        CRC32C crc = new CRC32C();
        crc.update(header, 0, header.length - 4);
        ByteBuffer.wrap(header).order(ByteOrder.LITTLE_ENDIAN).putInt(header.length - 4, (int) crc.getValue());
    }

    /**
     * What a writer of these frames in this order would have sent: every sequence its index, every COMPLETE's
     * {@code a} the frames before it, every header CRC recomputed (payload CRCs are left as they are).
     */
    public void renumber() {
        for (int i = 0; i < frames.size(); i++) {
            Frame f = frames.get(i);
            f.sequence = i;
            if (f.type == FrameType.COMPLETE.code()) f.a = i;
            f.sealHeader();
        }
    }

    /** The bytes as the fields say. */
    public byte[] encode() {
        long total = header.length + trailer.length;
        for (Frame f : frames) total += FrameCodec.HEADER + f.payload.length;
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(total));
        out.put(header);
        for (Frame f : frames) out.put(f.headerBytes()).put(f.payload);
        out.put(trailer);
        return out.array();
    }
}
