package org.vmmkit.dirty;

/**
 * Walks the runs of consecutive marked pages in a {@link DirtyBitmap}, allocation-free: skips clean
 * words 64 pages at a time, finds run edges with {@link Long#numberOfTrailingZeros}. Reusable: call
 * {@link #reset} for another bitmap or another pass. Runs longer than {@code maxRun} are split.
 *
 * <pre>{@code
 * cursor.reset(bitmap);
 * while (cursor.next()) send(cursor.start(), cursor.length());
 * }</pre>
 */
public final class DirtyRunCursor {
    private DirtyBitmap bitmap;
    private long position, start, length;
    private final long maxRun;

    public DirtyRunCursor() {
        this(Long.MAX_VALUE);
    }

    public DirtyRunCursor(long maxRun) {
        if (maxRun <= 0) throw new IllegalArgumentException("maxRun " + maxRun);
        this.maxRun = maxRun;
    }

    public DirtyRunCursor reset(DirtyBitmap bitmap) {
        this.bitmap = bitmap;
        this.position = 0;
        this.start = -1;
        this.length = 0;
        return this;
    }

    /** Advances to the next run; false when there is none. */
    public boolean next() {
        long s = bitmap.nextSet(position);
        if (s < 0) {
            position = bitmap.pages();
            return false;
        }
        long e = bitmap.nextClear(s);
        if (e - s > maxRun) e = s + maxRun;
        start = s;
        length = e - s;
        position = e;
        return true;
    }

    /** First page of the current run. */
    public long start() {
        return start;
    }

    /** Pages in the current run. */
    public long length() {
        return length;
    }
}
