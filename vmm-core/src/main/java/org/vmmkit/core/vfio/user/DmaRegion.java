package org.vmmkit.core.vfio.user;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Fd;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One DMA region the client mapped for a vfio-user server: its IOVA, the host memory behind it (guest RAM),
 * the access it allows, and the file and offset the server was given to map it (null: none, the server
 * reaches it only with DMA_READ/DMA_WRITE messages). The pages the server wrote by DMA_WRITE messages are
 * recorded here, at the migration page size: the server cannot report those (the client did the writes), so
 * they are merged into every dirty bitmap the client reads for the region.
 *
 * <p>The written-page bits are read and written under the connection's {@code dmaLock} (server commands are
 * served under it, and the bitmap is drained under it).
 */
final class DmaRegion {
    private final long iova;
    private final MemorySegment host;
    private final boolean readable, writable;
    private final Fd fd;
    private final long fdOffset;
    private final long pageSize;
    private final long[] written;

    DmaRegion(long iova, MemorySegment host, boolean readable, boolean writable, Fd fd, long fdOffset, long pageSize) {
        this.iova = iova;
        this.host = host;
        this.readable = readable;
        this.writable = writable;
        this.fd = fd;
        this.fdOffset = fdOffset;
        this.pageSize = pageSize;
        this.written = new long[(int) ((pages() + 63) >>> 6)];
    }

    long iova() {
        return iova;
    }

    long size() {
        return host.byteSize();
    }

    long end() {
        return iova + host.byteSize();
    }

    MemorySegment host() {
        return host;
    }

    boolean readable() {
        return readable;
    }

    boolean writable() {
        return writable;
    }

    /** The file the server maps, or null. */
    Fd fd() {
        return fd;
    }

    long fdOffset() {
        return fdOffset;
    }

    long pages() {
        return (host.byteSize() + pageSize - 1) / pageSize;
    }

    /** Records that the server wrote {@code [offset, offset + count)} of the region by DMA_WRITE. */
    void markWritten(long offset, long count) {
        if (count == 0) return;
        for (long p = offset / pageSize, last = (offset + count - 1) / pageSize; p <= last; p++) written[(int) (p >>> 6)] |= 1L << p;
    }

    /** Whether page {@code page} of the region was written by DMA_WRITE since the last drain. */
    boolean written(long page) {
        return (written[(int) (page >>> 6)] & (1L << page)) != 0;
    }

    /** Clears the written-page record (tracking starts afresh). */
    void clearWritten() {
        java.util.Arrays.fill(written, 0);
    }

    /** ORs the written pages into {@code bitmap} (64-bit words, bit {@code firstBit} = this region's first page) and clears them. */
    void drainWritten(MemorySegment bitmap, long firstBit) {
        for (int w = 0; w < written.length; w++) {
            long v = written[w];
            if (v == 0) continue;
            written[w] = 0;
            orWord(bitmap, firstBit + ((long) w << 6), v);
        }
    }

    /** ORs the 64 bits of {@code v} into {@code bitmap} at bit {@code bit} (any alignment); bits past its end are dropped. */
    static void orWord(MemorySegment bitmap, long bit, long v) {
        long word = bit >>> 6;
        int shift = (int) (bit & 63);
        long words = bitmap.byteSize() >>> 3;
        if (word < words) bitmap.set(JAVA_LONG, word << 3, bitmap.get(JAVA_LONG, word << 3) | (v << shift));
        if (shift != 0 && word + 1 < words) {
            bitmap.set(JAVA_LONG, (word + 1) << 3, bitmap.get(JAVA_LONG, (word + 1) << 3) | (v >>> (64 - shift)));
        }
    }

    @Override
    public String toString() {
        return "DMA region [0x" + Long.toHexString(iova) + ", 0x" + Long.toHexString(end()) + ")" + (fd == null ? " (no fd)" : "");
    }
}
