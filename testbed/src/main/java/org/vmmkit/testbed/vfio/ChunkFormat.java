package org.vmmkit.testbed.vfio;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.vmmkit.testbed.vfio.DeviceModel.PAGE;
import static org.vmmkit.testbed.vfio.DeviceModel.REGISTERS;

/**
 * The emulated device's own chunk format, what its driver writes into the data section and checks on resume:
 * a 32-byte header (magic, sequence, kind, record count, payload length, checksum) then the payload — dirty
 * pages as (page number, 4 KiB) records, the registers with the device's memory size (the final chunk), a
 * run header naming a run of pages that follows raw, or nothing. The checksum is test instrumentation that
 * a benchmark may switch off on both sides.
 */
final class ChunkFormat {
    private ChunkFormat() {}

    static final int RECORD = 8 + PAGE, HEADER = 32;
    static final int MAGIC = 0x56444D43, POISON = 0xDEADDEAD;
    static final int KIND_PAGES = 1, KIND_REGISTERS = 2, KIND_EMPTY = 3, KIND_RUN_HEADER = 4, KIND_RAW = 5;
    /** The longest run one raw chunk carries: 4 MiB. */
    static final int MAX_RUN_PAGES = 1024;
    /** Payload of a registers chunk: the registers, then the device's memory size. */
    static final int REGISTERS_PAYLOAD = REGISTERS + 8;
    /** Payload of a run header: first page, page count. */
    static final int RUN_HEADER_PAYLOAD = 16;

    /** A chunk the destination's driver will not apply: {@code misuse} is the VMM's fault (EINVAL), else corrupt data (EIO). */
    static final class Refusal extends RuntimeException {
        final boolean misuse;

        Refusal(boolean misuse, String why) {
            super(why, null, false, false);
            this.misuse = misuse;
        }
    }

    static void header(MemorySegment s, long at, long sequence, int kind, int count, long payload, boolean checksums) {
        s.set(JAVA_INT, at, MAGIC);
        s.set(JAVA_INT, at + 4, (int) sequence);
        s.set(JAVA_INT, at + 8, kind);
        s.set(JAVA_INT, at + 12, count);
        s.set(JAVA_LONG, at + 16, payload);
        s.set(JAVA_LONG, at + 24, checksums ? checksum(s, at + HEADER, payload) : 0);
    }

    /** Up to {@code max} dirty pages of {@code model} as records after the header at {@code at}; their numbers in {@code taken}. */
    static int pages(DeviceModel model, MemorySegment s, long at, int max, long[] taken) {
        int want = (int) Math.min(max, model.dirtyCount()), n = 0;
        long rec = at + HEADER;
        while (n < want) {
            long p = model.takeDirty();
            taken[n++] = p;
            s.set(JAVA_LONG, rec, p);
            MemorySegment.copy(model.memory, p * PAGE, s, rec + 8, PAGE);
            rec += RECORD;
        }
        return n;
    }

    static void registers(DeviceModel model, MemorySegment s, long at) {
        MemorySegment.copy(model.registers, 0, s, at + HEADER, REGISTERS);
        s.set(JAVA_LONG, at + HEADER + REGISTERS, model.memory.byteSize());
    }

    static void runHeader(MemorySegment s, long at, long start, long count) {
        s.set(JAVA_LONG, at + HEADER, start);
        s.set(JAVA_LONG, at + HEADER + 8, count);
    }

    static long checksum(MemorySegment s, long from, long length) {
        long h = 0x9E3779B97F4A7C15L;
        long n = length & ~7L;
        for (long o = 0; o < n; o += 8) h = Long.rotateLeft(h ^ s.get(JAVA_LONG, from + o), 29) * 0xBF58476D1CE4E5B9L;
        for (long o = n; o < length; o++) h = Long.rotateLeft(h ^ s.get(ValueLayout.JAVA_BYTE, from + o), 7) * 31;
        return h;
    }

    /** The destination's side: applies chunks in the source's order, remembering an announced raw run. */
    static final class Resume {
        private final DeviceModel model;
        private final boolean runsAllowed;
        long sequence, expectRawStart = -1, expectRawCount;
        boolean finalReceived;

        Resume(DeviceModel model, boolean runsAllowed) {
            this.model = model;
            this.runsAllowed = runsAllowed;
        }

        /** A fresh resume: nothing received. */
        void reset() {
            sequence = 0;
            expectRawStart = -1;
            finalReceived = false;
        }

        boolean rawDue() {
            return expectRawStart >= 0;
        }

        /**
         * The announced raw run arrived as {@code size} bytes at {@code at} of a window that maps device memory
         * from {@code windowStart}: check it; there is nothing to copy.
         */
        void rawArrived(long at, long size, long windowStart) {
            if (at != windowStart + expectRawStart * PAGE || size != expectRawCount * PAGE) {
                throw new Refusal(true, "raw chunk of " + size + " bytes at 0x" + Long.toHexString(at) + " where the announced run of "
                        + expectRawCount + " pages at page " + expectRawStart + " was due");
            }
            expectRawStart = -1; // the bytes are already in device memory: the VMM wrote them there
            sequence++;
        }

        /** Checks and applies {@code chunk} (one whole chunk as the source staged it). */
        void apply(MemorySegment chunk, boolean checksums) {
            long size = chunk.byteSize();
            int magic = chunk.get(JAVA_INT, 0);
            if (magic == POISON) {
                throw new Refusal(false, "chunk " + sequence + " was overwritten at the source: the VMM used it after reading "
                        + "pending_bytes (save step f before e)");
            }
            if (magic != MAGIC) throw new Refusal(false, "chunk " + sequence + " has magic 0x" + Integer.toHexString(magic));
            long seq = Integer.toUnsignedLong(chunk.get(JAVA_INT, 4));
            if (seq != sequence) throw new Refusal(true, "chunk " + seq + " written where chunk " + sequence + " was due: order must be the source's");
            long payload = chunk.get(JAVA_LONG, 16);
            if (payload != size - HEADER) {
                throw new Refusal(true, "chunk " + seq + " written with data_size " + size + ", the source's was " + (payload + HEADER));
            }
            if (checksums && checksum(chunk, HEADER, payload) != chunk.get(JAVA_LONG, 24)) {
                throw new Refusal(false, "chunk " + seq + " fails its checksum");
            }
            int kind = chunk.get(JAVA_INT, 8);
            switch (kind) {
                case KIND_PAGES -> {
                    int n = chunk.get(JAVA_INT, 12);
                    for (int i = 0; i < n; i++) {
                        long base = HEADER + (long) i * RECORD;
                        long page = chunk.get(JAVA_LONG, base);
                        if (page < 0 || page >= model.pages) throw new Refusal(false, "chunk " + seq + " names page " + page);
                        MemorySegment.copy(chunk, base + 8, model.memory, page * PAGE, PAGE);
                    }
                }
                case KIND_REGISTERS -> {
                    long theirs = chunk.get(JAVA_LONG, HEADER + REGISTERS);
                    if (theirs != model.memory.byteSize()) {
                        throw new Refusal(false, "the source device has " + theirs + " bytes of memory, this one " + model.memory.byteSize());
                    }
                    MemorySegment.copy(chunk, HEADER, model.registers, 0, REGISTERS);
                    finalReceived = true;
                }
                case KIND_RUN_HEADER -> {
                    long start = chunk.get(JAVA_LONG, HEADER), count = chunk.get(JAVA_LONG, HEADER + 8);
                    if (!runsAllowed || start < 0 || count <= 0 || start + count > model.pages) {
                        throw new Refusal(false, "chunk " + seq + " announces a run of " + count + " pages at page " + start);
                    }
                    expectRawStart = start;
                    expectRawCount = count;
                }
                case KIND_EMPTY -> { }
                default -> throw new Refusal(false, "chunk " + seq + " has kind " + kind);
            }
            sequence++;
        }
    }
}
