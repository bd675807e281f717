package org.vmmkit.migration.ram;

import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.List;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

/**
 * ByteBuffer views of guest RAM for channel I/O, made once: a ByteBuffer holds at most 2 GiB, so each region
 * is cut into 1 GiB views. {@link #view} sets position and limit on a cached view instead of creating one,
 * so sending or receiving a frame creates no object. One instance per thread (the views are stateful).
 */
public final class MemoryViews {
    public static final long VIEW_BYTES = 1L << 30;
    /** One page of zeros, never written: what a zero page is compared with (send) and copied from (receive). */
    public static final MemorySegment ZERO_PAGE = java.lang.foreign.Arena.global().allocate(GuestMemory.PAGE_SIZE, GuestMemory.PAGE_SIZE);

    private final GuestMemory memory;
    private final ByteBuffer[][] views;

    public MemoryViews(GuestMemory memory) {
        this.memory = memory;
        List<GuestRegion> regions = memory.regions();
        this.views = new ByteBuffer[regions.size()][];
        for (GuestRegion r : regions) {
            int n = (int) ((r.size() + VIEW_BYTES - 1) / VIEW_BYTES);
            views[r.index()] = new ByteBuffer[n];
            for (int i = 0; i < n; i++) {
                long from = i * VIEW_BYTES;
                views[r.index()][i] = r.host().asSlice(from, Math.min(VIEW_BYTES, r.size() - from)).asByteBuffer();
            }
        }
    }

    public GuestMemory memory() {
        return memory;
    }

    /**
     * The view of {@code [offset, offset + length)} of a region, which must not cross a 1 GiB view boundary
     * ({@link #bytesToViewEnd}); position and limit are set on the cached buffer.
     */
    public ByteBuffer view(GuestRegion region, long offset, long length) {
        int i = (int) (offset / VIEW_BYTES);
        int start = (int) (offset - i * VIEW_BYTES);
        ByteBuffer v = views[region.index()][i];
        v.limit(start + (int) length).position(start);
        return v;
    }

    /** Bytes from {@code offset} of a region to the end of the view holding it. */
    public static long bytesToViewEnd(long offset) {
        return VIEW_BYTES - offset % VIEW_BYTES;
    }
}
