package org.vmmkit.migration.testing;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;

/**
 * What the first connection of a one-channel stream says, read the way docs/wire-format.md frames it and
 * checking nothing else: the guest memory a destination holds after applying it to zeroed memory, the vCPU
 * states (the chunks of the sections the header names {@code vcpu/N}, the last of each), and the other
 * sections' chunks in order, up to its first COMPLETE. The outside judge
 * of an accepted stream: whatever the destination checked, what it loaded must be what the stream says.
 * A stream that cannot be framed that way, or whose RAM frames do not fit a memory of the given size, says
 * nothing ({@link #of} returns null).
 */
public record StreamMeaning(byte[] memory, Map<Long, byte[]> vcpus, List<byte[]> deviceChunks) {
    private static final int PAGE = 4096;

    public static StreamMeaning of(byte[] stream, int memorySize) {
        ByteBuffer in = ByteBuffer.wrap(stream).order(ByteOrder.LITTLE_ENDIAN);
        if (stream.length < StreamImage.HEADER_FLAGS_AT + 8) return null;
        int size = in.getInt(StreamImage.HEADER_SIZE_AT);
        if (size < StreamImage.HEADER_FLAGS_AT + 8 || size > stream.length) return null;
        boolean ramChecksums = (in.getInt(StreamImage.HEADER_FLAGS_AT) & 1) != 0;
        List<String> ids = sectionIds(in, size);
        if (ids == null) return null;
        byte[] memory = new byte[memorySize];
        Map<Long, byte[]> vcpus = new HashMap<>();
        List<byte[]> chunks = new ArrayList<>();
        long at = size;
        while (stream.length - at >= FrameCodec.HEADER) {
            int p = (int) at;
            int type = Short.toUnsignedInt(in.getShort(p));
            long a = in.getLong(p + 8), b = in.getLong(p + 16), length = in.getLong(p + 24);
            if (length < 0 || length > stream.length - at - FrameCodec.HEADER) return null; // the stream ends inside it
            int payload = p + FrameCodec.HEADER;
            FrameType t = FrameType.of(type);
            if (t == FrameType.COMPLETE) return new StreamMeaning(memory, vcpus, chunks);
            if (t == FrameType.RAM || t == FrameType.ZERO_RUN) {
                if (b <= 0 || b > memorySize / PAGE || a < 0 || a % PAGE != 0 || a > memorySize - b * PAGE) return null;
                if (t == FrameType.RAM) {
                    if (length != b * PAGE + (ramChecksums ? 4 * b : 0)) return null;
                    System.arraycopy(stream, payload, memory, (int) a, (int) (b * PAGE));
                } else {
                    Arrays.fill(memory, (int) a, (int) (a + b * PAGE), (byte) 0);
                }
            } else if (t == FrameType.SECTION_CHUNK) {
                byte[] bytes = Arrays.copyOfRange(stream, payload, payload + (int) length);
                String id = a >= 0 && a < ids.size() ? ids.get((int) a) : "";
                if (id.startsWith("vcpu/")) vcpus.put(Long.parseLong(id.substring(5)), bytes);
                else chunks.add(bytes);
            }
            // Any other type (and an unknown one, skipped) changes nothing a destination loads.
            at += FrameCodec.HEADER + length;
        }
        return null; // no COMPLETE
    }

    /** The section ids of the header ({@code size} bytes) in order, or null where they cannot be framed. */
    private static List<String> sectionIds(ByteBuffer in, int size) {
        int regions = in.getInt(20), sections = in.getInt(24);
        long at = 80 + 16L * regions; // the fixed part (identity included), then the RAM ranges
        List<String> ids = new ArrayList<>();
        for (int i = 0; i < sections; i++) {
            if (regions < 0 || sections < 0 || at + 16 > size) return null;
            int idLength = in.getInt((int) at + 4), kindLength = in.getInt((int) at + 8), configLength = in.getInt((int) at + 12);
            long entry = 16 + pad8(idLength) + pad8(kindLength) + pad8(configLength);
            if (idLength < 0 || kindLength < 0 || configLength < 0 || at + entry > size) return null;
            byte[] id = new byte[idLength];
            in.get((int) at + 16, id);
            ids.add(new String(id, java.nio.charset.StandardCharsets.UTF_8));
            at += entry;
        }
        return ids;
    }

    private static long pad8(long n) {
        return (n + 7) & ~7;
    }

    /** Whether the device chunks are exactly {@code others}, in order. */
    public boolean sameDeviceChunks(List<byte[]> others) {
        if (others.size() != deviceChunks.size()) return false;
        for (int i = 0; i < others.size(); i++) if (!Arrays.equals(others.get(i), deviceChunks.get(i))) return false;
        return true;
    }
}
