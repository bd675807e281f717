package org.vmmkit.migration;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.SplittableRandom;
import java.util.zip.CRC32C;

import org.vmmkit.migration.testing.StreamImage;
import org.vmmkit.migration.testing.StreamImage.Frame;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.OutcomeQuery;
import org.vmmkit.migration.wire.StreamHeader;

/**
 * Mutates a genuine stream knowing its structure: the stream header's fields, each frame's fields (type,
 * flags, sequence, a, b, length, both CRCs), payload bytes, whole frames (dropped, repeated, moved, swapped,
 * inserted), and bytes (truncation, bit flips). Deterministic: the same seed gives the same input.
 *
 * <p>Each change either leaves the stream well-formed — every CRC, sequence number, COMPLETE count and page
 * CRC recomputed for what was changed ("sealed": a stream a buggy or hostile source could send, which the
 * destination may accept, and must then load exactly as it says) — or it does not, and then the
 * destination must refuse it, or load exactly the genuine result (a change it may ignore: bytes after
 * COMMIT). Several sealed changes may be stacked, ordered so that none repairs another's damage: frames are
 * moved and renumbered first, fields changed after, bytes last.
 */
final class StreamMutator {
    /**
     * A mutated stream: its bytes, what was done to it (to replay and read), whether it is sealed, and the
     * stream as it was before its changes that are not sealed ({@code intended}; null: the genuine stream).
     * A destination that accepts an input that is not sealed must load what {@code intended} says: the
     * corruption is refused, or changed nothing that stays loaded (a torn page a later frame rewrote).
     */
    record Input(long seed, byte[] bytes, String mutation, boolean sealed, byte[] intended) {}

    /** One change: applied in phase order (frames, fields, the header, the end); says what it did. */
    private interface Change {
        int phase();

        /** Applies the change; returns its description, ending in "(sealed)" or "(not sealed)". */
        String apply(StreamImage s, SplittableRandom r);
    }

    private static final int PAGE = 4096;
    private static final long MAX_PAYLOAD = (64L << 20) + 64; // MigrationDestination's limit on the first channel
    private static final int[] KNOWN = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21};

    private final StreamImage genuine;
    private final boolean ramChecksums;

    StreamMutator(StreamImage genuine) {
        this.genuine = genuine;
        this.ramChecksums = genuine.ramChecksums();
    }

    Input mutate(long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        StreamImage s = genuine.copy();
        List<String> done = new ArrayList<>();
        byte[] bytes, intended;
        int mode = r.nextInt(100);
        if (mode < 20) { // havoc: two to four sealed changes, then perhaps one at the byte level
            List<Change> changes = new ArrayList<>();
            for (int i = 2 + r.nextInt(3); i > 0; i--) changes.add(change(r, true));
            changes.sort(Comparator.comparingInt(Change::phase));
            for (Change c : changes) done.add(c.apply(s, r));
            bytes = intended = s.encode();
            if (r.nextInt(3) == 0) bytes = byteLevel(intended.clone(), s, r, done);
        } else if (mode < 80) {
            done.add(change(r, r.nextBoolean()).apply(s, r));
            bytes = intended = s.encode();
        } else {
            bytes = byteLevel(s.encode(), s, r, done);
            intended = null;
        }
        boolean sealed = true;
        for (String d : done) sealed &= !d.endsWith("(not sealed)");
        if (!sealed && done.size() == 1) intended = null; // a single change: the stream before it is the genuine one
        return new Input(seed, bytes, String.join("; then ", done), sealed, intended);
    }

    /** A random change; {@code seal}: recompute what it invalidates (when it can). */
    private Change change(SplittableRandom r, boolean seal) {
        return switch (r.nextInt(14)) {
            case 0 -> change(1, (s, x) -> frameField(s, x, seal));
            case 1 -> change(1, (s, x) -> frameField(s, x, seal));
            case 2 -> change(1, (s, x) -> unknownType(s, x, seal));
            case 3 -> change(1, (s, x) -> payloadBytes(s, x, seal));
            case 4 -> change(1, (s, x) -> hugeLength(s, x, seal));
            case 5 -> change(1, (s, x) -> resizePayload(s, x, seal));
            case 6 -> change(1, this::rewritePage);
            case 7 -> change(0, (s, x) -> dropFrame(s, x, seal));
            case 8 -> change(0, (s, x) -> repeatFrame(s, x, seal));
            case 9 -> change(0, (s, x) -> moveFrame(s, x, seal));
            case 10 -> change(0, (s, x) -> insertFrame(s, x, seal));
            case 11 -> change(2, (s, x) -> headerField(s, x, seal));
            case 12 -> change(2, this::channelCount);
            default -> change(3, this::trailingBytes);
        };
    }

    private static Change change(int phase, java.util.function.BiFunction<StreamImage, SplittableRandom, String> apply) {
        return new Change() {
            public int phase() {
                return phase;
            }

            public String apply(StreamImage s, SplittableRandom r) {
                return apply.apply(s, r);
            }
        };
    }

    private static String sealed(boolean sealed) {
        return sealed ? " (sealed)" : " (not sealed)";
    }

    // ---- which frame ----

    /** Half the time any frame, half the time a frame of a type picked first, so rare types are mutated as often. */
    private static int pickFrame(StreamImage s, SplittableRandom r) {
        List<Frame> fs = s.frames();
        if (r.nextBoolean()) return r.nextInt(fs.size());
        List<Integer> types = new ArrayList<>();
        for (Frame f : fs) if (!types.contains(f.type)) types.add(f.type);
        int type = types.get(r.nextInt(types.size()));
        List<Integer> of = new ArrayList<>();
        for (int i = 0; i < fs.size(); i++) if (fs.get(i).type == type) of.add(i);
        return of.get(r.nextInt(of.size()));
    }

    private static String name(StreamImage s, int index) {
        return "frame " + index + " (" + s.frames().get(index).describe() + ")";
    }

    private static long interesting(SplittableRandom r, long current) {
        return switch (r.nextInt(13)) {
            case 0 -> 0;
            case 1 -> 1;
            case 2 -> -1;
            case 3 -> current + 1;
            case 4 -> current - 1;
            case 5 -> current ^ (1L << r.nextInt(64));
            case 6 -> Long.MAX_VALUE;
            case 7 -> Long.MIN_VALUE;
            case 8 -> current + PAGE;
            case 9 -> current - PAGE;
            case 10 -> 1L << r.nextInt(63);
            case 11 -> current * 2;
            default -> r.nextLong();
        };
    }

    private static int unknownType(SplittableRandom r) {
        return switch (r.nextInt(3)) {
            case 0 -> 11 + r.nextInt(5);  // between the source's and the return path's codes
            case 1 -> 22 + r.nextInt(10); // above the last known, inside FrameType's table
            default -> 32 + r.nextInt(65536 - 32);
        };
    }

    // ---- frame fields ----

    /**
     * One header field of a frame. Sealed, only fields that are not themselves checks (type, flags, a, b,
     * length) change, and the header CRC is recomputed; not sealed, any field, the sequence and both CRCs too.
     */
    private String frameField(StreamImage s, SplittableRandom r, boolean seal) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        Frame f = s.frames().get(i);
        String what;
        switch (seal ? r.nextInt(5) : r.nextInt(8)) {
            case 0 -> {
                int before = f.type;
                f.type = r.nextBoolean() ? KNOWN[r.nextInt(KNOWN.length)] : unknownType(r);
                if (r.nextBoolean()) f.flags |= FrameCodec.FLAG_SKIPPABLE;
                what = "type " + before + " -> " + f.type + ", flags 0x" + Integer.toHexString(f.flags);
            }
            case 1 -> {
                int before = f.flags;
                f.flags = switch (r.nextInt(4)) {
                    case 0 -> f.flags | FrameCodec.FLAG_SKIPPABLE;
                    case 1 -> f.flags | 1 << (1 + r.nextInt(15));
                    case 2 -> 0xffff;
                    default -> r.nextInt(65536);
                };
                what = "flags 0x" + Integer.toHexString(before) + " -> 0x" + Integer.toHexString(f.flags);
            }
            case 2 -> {
                long before = f.a;
                f.a = interesting(r, f.a);
                what = "a 0x" + Long.toHexString(before) + " -> 0x" + Long.toHexString(f.a);
            }
            case 3 -> {
                long before = f.b;
                f.b = interesting(r, f.b);
                what = "b " + before + " -> " + f.b;
            }
            case 4 -> {
                long before = f.length;
                f.length = interesting(r, f.length);
                what = "length " + before + " -> " + f.length;
            }
            case 5 -> {
                int before = f.sequence;
                f.sequence = (int) interesting(r, f.sequence);
                if (f.sequence == before) f.sequence++;
                what = "sequence " + Integer.toUnsignedString(before) + " -> " + Integer.toUnsignedString(f.sequence);
            }
            case 6 -> {
                int before = f.payloadCrc;
                f.payloadCrc = (int) interesting(r, f.payloadCrc);
                if (f.payloadCrc == before) f.payloadCrc ^= 1;
                what = "payload CRC 0x" + Integer.toHexString(before) + " -> 0x" + Integer.toHexString(f.payloadCrc);
            }
            default -> {
                int before = f.headerCrc;
                f.headerCrc ^= 1 << r.nextInt(32);
                what = "header CRC 0x" + Integer.toHexString(before) + " -> 0x" + Integer.toHexString(f.headerCrc);
            }
        }
        if (seal) f.sealHeader();
        return frame + ": " + what + (seal ? ", header CRC recomputed" : "") + sealed(seal);
    }

    /** A known frame turned into a type this version does not know, skippable or not. */
    private String unknownType(StreamImage s, SplittableRandom r, boolean seal) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        Frame f = s.frames().get(i);
        f.type = unknownType(r);
        boolean skippable = r.nextBoolean();
        f.flags = skippable ? FrameCodec.FLAG_SKIPPABLE : 0;
        if (seal) f.seal(ramChecksums); // an unknown type's payload CRC covers all of it
        return frame + ": type -> unknown " + f.type + (skippable ? ", skippable" : ", not skippable") + (seal ? ", CRCs recomputed" : "")
                + sealed(seal);
    }

    /**
     * Payload bytes changed: RAM pages or page table, device chunk or vCPU bytes. Sealed, the frame's CRCs are
     * recomputed, and for RAM with page checksums only page bytes change, their page CRCs recomputed too.
     */
    private String payloadBytes(StreamImage s, SplittableRandom r, boolean seal) {
        int i = pickFrame(s, r);
        Frame f = s.frames().get(i);
        if (f.payload().length == 0) return frameField(s, r, seal);
        String frame = name(s, i);
        boolean pages = seal && ramChecksums && pagesAsWritten(f); // (an earlier change may have made it another frame)
        byte[] p = f.payloadForWriting();
        int n = 1 + r.nextInt(4);
        StringBuilder at = new StringBuilder();
        for (int k = 0; k < n; k++) {
            int o = r.nextInt(pages ? (int) f.b * PAGE : p.length);
            p[o] ^= (byte) (1 + r.nextInt(255));
            if (pages) sealPage(f, o / PAGE);
            at.append(k == 0 ? "" : ",").append(o);
        }
        if (seal) f.seal(ramChecksums);
        return frame + ": " + n + " payload bytes changed at " + at + (pages ? ", their page CRCs" : "") + (seal ? ", frame CRCs recomputed" : "")
                + sealed(seal);
    }

    /** Whether {@code f} is a RAM frame whose payload is {@code b} pages (and their CRC table), as a writer makes it. */
    private boolean pagesAsWritten(Frame f) {
        return f.type == FrameType.RAM.code() && f.b >= 1 && f.b <= Integer.MAX_VALUE / (PAGE + 4)
                && f.payload().length == f.b * (PAGE + (ramChecksums ? 4 : 0));
    }

    /** Recomputes the CRC of page {@code page} of a RAM frame in its table. */
    private static void sealPage(Frame f, int page) {
        byte[] p = f.payloadForWriting();
        CRC32C crc = new CRC32C();
        crc.update(p, page * PAGE, PAGE);
        ByteBuffer.wrap(p).order(ByteOrder.LITTLE_ENDIAN).putInt((int) (f.b * PAGE + 4L * page), (int) crc.getValue());
    }

    /** One page of a RAM frame rewritten with its page CRC and the frame's CRCs: a well-formed stream that says something else. */
    private String rewritePage(StreamImage s, SplittableRandom r) {
        List<Integer> ram = new ArrayList<>();
        for (int i = 0; i < s.frames().size(); i++) if (pagesAsWritten(s.frames().get(i))) ram.add(i);
        if (ram.isEmpty()) return trailingBytes(s, r);
        int i = ram.get(r.nextInt(ram.size()));
        String frame = name(s, i);
        Frame f = s.frames().get(i);
        byte[] p = f.payloadForWriting();
        int page = r.nextInt((int) f.b);
        int o = page * PAGE + r.nextInt(PAGE);
        p[o] ^= (byte) (1 + r.nextInt(255));
        if (ramChecksums) sealPage(f, page);
        f.seal(ramChecksums);
        return frame + ": byte " + o + " of page " + page + " changed, its page CRC and the frame's CRCs recomputed" + sealed(true);
    }

    private String hugeLength(StreamImage s, SplittableRandom r, boolean seal) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        Frame f = s.frames().get(i);
        long before = f.length;
        f.length = switch (r.nextInt(7)) {
            case 0 -> MAX_PAYLOAD;
            case 1 -> MAX_PAYLOAD + 1;
            case 2 -> Integer.MAX_VALUE;
            case 3 -> (1L << 32) + f.payload().length;
            case 4 -> Long.MAX_VALUE;
            case 5 -> -1;
            default -> 1L << (33 + r.nextInt(30));
        };
        if (seal) f.sealHeader();
        return frame + ": length " + before + " -> " + f.length + (seal ? ", header CRC recomputed" : "") + sealed(seal);
    }

    /** Payload bytes added or removed, with a length to match and CRCs recomputed (or not). */
    private String resizePayload(StreamImage s, SplittableRandom r, boolean seal) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        Frame f = s.frames().get(i);
        byte[] p = f.payload();
        int delta = switch (r.nextInt(4)) {
            case 0 -> 1;
            case 1 -> -1;
            case 2 -> 1 + r.nextInt(64);
            default -> -PAGE;
        };
        int size = Math.max(0, p.length + delta);
        byte[] q = java.util.Arrays.copyOf(p, size);
        for (int k = p.length; k < size; k++) q[k] = (byte) r.nextInt(256);
        f.payload(q);
        f.length = size;
        if (seal) f.seal(ramChecksums);
        return frame + ": payload " + p.length + " -> " + size + " bytes, length to match" + (seal ? ", CRCs recomputed" : "") + sealed(seal);
    }

    // ---- whole frames ----

    private String dropFrame(StreamImage s, SplittableRandom r, boolean renumber) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        s.frames().remove(i);
        if (renumber) s.renumber();
        return frame + " dropped" + (renumber ? ", later frames renumbered" : "") + sealed(renumber);
    }

    private String repeatFrame(StreamImage s, SplittableRandom r, boolean renumber) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        int copies = 1 + (r.nextInt(4) == 0 ? r.nextInt(3) : 0);
        for (int k = 0; k < copies; k++) s.frames().add(i + 1, s.frames().get(i).copy());
        if (renumber) s.renumber();
        return frame + " repeated " + copies + " time(s)" + (renumber ? ", frames renumbered" : "") + sealed(renumber);
    }

    private String moveFrame(StreamImage s, SplittableRandom r, boolean renumber) {
        int i = pickFrame(s, r);
        String frame = name(s, i);
        List<Frame> fs = s.frames();
        String what;
        if (r.nextBoolean()) {
            int j = r.nextInt(fs.size());
            fs.add(j, fs.remove(i));
            what = frame + " moved to " + j;
        } else {
            int j = r.nextInt(fs.size());
            Frame other = fs.get(j);
            fs.set(j, fs.get(i));
            fs.set(i, other);
            what = frame + " swapped with frame " + j;
        }
        if (renumber) s.renumber();
        return what + (renumber ? ", frames renumbered" : "") + sealed(renumber);
    }

    /** A frame that does not belong in the stream, of a known or an unknown type, inserted anywhere. */
    private String insertFrame(StreamImage s, SplittableRandom r, boolean renumber) {
        byte[] small = new byte[r.nextInt(4) == 0 ? 0 : r.nextInt(200)];
        for (int k = 0; k < small.length; k++) small[k] = (byte) r.nextInt(256);
        Frame f = switch (r.nextInt(12)) {
            case 0 -> new Frame(unknownType(r), FrameCodec.FLAG_SKIPPABLE, r.nextLong(), r.nextLong(), small);
            case 1 -> new Frame(unknownType(r), 0, 0, 0, small);
            case 2 -> new Frame(FrameType.END_OF_ROUND.code(), 0, 1 + r.nextInt(5), 0, new byte[0]);
            case 3 -> new Frame(FrameType.COMPLETE.code(), 0, 0, 0, new byte[0]);
            case 4 -> new Frame(FrameType.COMMIT.code(), 0, 0, 0, new byte[0]);
            case 5 -> new Frame(FrameType.ABANDON.code(), 0, 0, 0, "fuzz".getBytes());
            case 6 -> new Frame(FrameType.DEVICE_CONFIG.code(), 0, 0, 0, small);
            case 7 -> new Frame(FrameType.CHANNEL.code(), 0, 0, 1, new byte[0]);
            case 8 -> new Frame(4, 0, r.nextInt(3), 0, small); // VCPU_STATE of wire version 3, retired: vCPUs are sections now
            case 9 -> new Frame(FrameType.ZERO_RUN.code(), 0, (long) r.nextInt(GenuineStream.GUEST_SIZE / PAGE) * PAGE, 1, new byte[0]);
            case 10 -> new Frame(KNOWN[10 + r.nextInt(6)], 0, 0, 0, new byte[0]); // the return path's types
            default -> new Frame(FrameType.SECTION_CHUNK.code(), 0, r.nextInt(2), r.nextInt(6), small);
        };
        f.seal(ramChecksums);
        int at = r.nextInt(s.frames().size() + 1);
        s.frames().add(at, f);
        String frame = f.describe() + (f.flags != 0 ? " flags 0x" + Integer.toHexString(f.flags) : "");
        if (renumber) s.renumber();
        return frame + " inserted at " + at + (renumber ? ", frames renumbered" : "") + sealed(renumber);
    }

    // ---- the stream header ----

    /** Offsets and widths of the stream header's fields (version 4), then its RAM ranges and sections. */
    private static final int[][] HEADER_FIELDS = {{0, 8}, {8, 4}, {12, 4}, {16, 4}, {20, 4}, {24, 4}, {28, 4}, {32, 4}, {36, 4}, {40, 8}, {48, 8}, {56, 8},
            {64, 8}, {72, 8}};
    private static final String[] HEADER_NAMES = {"magic", "version", "size", "page size", "RAM ranges", "sections", "vCPUs", "channels",
            "flags", "stream id", "nonce (high)", "nonce (low)", "VM identity (high)", "VM identity (low)"};

    private String headerField(StreamImage s, SplittableRandom r, boolean seal) {
        byte[] h = s.header();
        ByteBuffer b = ByteBuffer.wrap(h).order(ByteOrder.LITTLE_ENDIAN);
        String what;
        int pick = r.nextInt(HEADER_FIELDS.length + 3);
        if (pick < HEADER_FIELDS.length) {
            int at = HEADER_FIELDS[pick][0], width = HEADER_FIELDS[pick][1];
            long before = width == 8 ? b.getLong(at) : Integer.toUnsignedLong(b.getInt(at));
            long after = pick == 0 && r.nextInt(4) == 0 ? OutcomeQuery.MAGIC : interesting(r, before);
            if (width == 8) b.putLong(at, after);
            else b.putInt(at, (int) after);
            what = HEADER_NAMES[pick] + " 0x" + Long.toHexString(before) + " -> 0x" + Long.toHexString(width == 8 ? after : after & 0xffffffffL);
        } else if (pick == HEADER_FIELDS.length) { // one byte of the ranges and sections (after the 80 fixed bytes)
            int at = 80 + r.nextInt(h.length - 4 - 80);
            h[at] ^= (byte) (1 + r.nextInt(255));
            what = "byte " + at + " (RAM ranges and sections) changed";
        } else if (pick == HEADER_FIELDS.length + 1) { // longer by 8 stray bytes, its size to match
            byte[] longer = new byte[h.length + 8];
            System.arraycopy(h, 0, longer, 0, h.length - 4);
            ByteBuffer.wrap(longer).order(ByteOrder.LITTLE_ENDIAN).putInt(StreamImage.HEADER_SIZE_AT, longer.length);
            s.header(longer);
            what = "8 stray bytes before the CRC, size " + h.length + " -> " + longer.length;
        } else {
            int before = b.getInt(StreamImage.HEADER_FLAGS_AT);
            b.putInt(StreamImage.HEADER_FLAGS_AT, before ^ 1);
            what = "RAM_CHECKSUMS flag toggled";
        }
        if (seal) s.sealHeader();
        return "stream header: " + what + (seal ? ", CRC recomputed" : "") + sealed(seal);
    }

    private String channelCount(StreamImage s, SplittableRandom r) {
        int[] counts = {0, 2, 3, StreamHeader.MAX_CHANNELS, StreamHeader.MAX_CHANNELS + 1, 255, -1};
        int n = counts[r.nextInt(counts.length)];
        ByteBuffer.wrap(s.header()).order(ByteOrder.LITTLE_ENDIAN).putInt(32, n);
        s.sealHeader();
        return "stream header: channels 1 -> " + n + ", CRC recomputed" + sealed(true);
    }

    /** Bytes after COMMIT: the destination has what it needs before them. */
    private String trailingBytes(StreamImage s, SplittableRandom r) {
        byte[] t = new byte[1 + r.nextInt(100)];
        for (int k = 0; k < t.length; k++) t[k] = (byte) r.nextInt(256);
        s.trailer(t);
        return t.length + " bytes after the last frame" + sealed(true);
    }

    // ---- bytes ----

    /** Truncation or bit flips on the encoded stream: never sealed. */
    private static byte[] byteLevel(byte[] bytes, StreamImage s, SplittableRandom r, List<String> done) {
        if (r.nextBoolean()) {
            int cut;
            if (r.nextBoolean()) { // near a frame boundary
                List<Integer> boundaries = new ArrayList<>();
                int at = s.header().length;
                boundaries.add(at);
                for (Frame f : s.frames()) boundaries.add(at += FrameCodec.HEADER + f.payload().length);
                cut = boundaries.get(r.nextInt(boundaries.size())) + r.nextInt(81) - 40;
            } else {
                cut = r.nextInt(bytes.length);
            }
            cut = Math.clamp(cut, 0, bytes.length - 1);
            done.add("truncated to " + cut + " of " + bytes.length + " bytes" + sealed(false));
            return java.util.Arrays.copyOf(bytes, cut);
        }
        int n = 1 + r.nextInt(8);
        StringBuilder at = new StringBuilder();
        for (int k = 0; k < n; k++) {
            int o = r.nextInt(4) == 0 ? r.nextInt(Math.min(bytes.length, s.header().length + 4 * FrameCodec.HEADER)) : r.nextInt(bytes.length);
            int bit = r.nextInt(8);
            bytes[o] ^= (byte) (1 << bit);
            at.append(k == 0 ? "" : ",").append(o).append('.').append(bit);
        }
        done.add(n + " bits flipped at " + at + sealed(false));
        return bytes;
    }
}
