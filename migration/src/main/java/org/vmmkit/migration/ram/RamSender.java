package org.vmmkit.migration.ram;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.GatheringByteChannel;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.DirtyRunCursor;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;

/**
 * Sends the dirty pages of one generation as frames: the bitmap's runs, cut at {@code maxFramePages} and at
 * 1 GiB view boundaries; within a run, zero pages (found at send time with {@code MemorySegment.mismatch}
 * against a zero page) go as ZERO_RUN frames of addresses only, the rest as RAM frames written straight
 * from guest memory. Allocates nothing per frame.
 */
public final class RamSender {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final MemoryViews views;
    private final FrameCodec codec;
    private final DirtyRunCursor cursor;
    private final MemorySegment zeroPage = Arena.ofAuto().allocate(PAGE, PAGE);
    private long ramPages, zeroPages, frames;

    public RamSender(MemoryViews views, FrameCodec codec, long maxFramePages) {
        this.views = views;
        this.codec = codec;
        this.cursor = new DirtyRunCursor(Math.min(maxFramePages, MemoryViews.VIEW_BYTES / PAGE));
    }

    /** Sends every page marked in {@code bitmap} of {@code region}. */
    public void send(GatheringByteChannel out, GuestRegion region, DirtyBitmap bitmap) throws IOException {
        cursor.reset(bitmap);
        while (cursor.next()) {
            long page = cursor.start(), end = cursor.start() + cursor.length();
            while (page < end) {
                // Never cross a view boundary within one frame.
                long viewEnd = page + MemoryViews.bytesToViewEnd(page * PAGE) / PAGE;
                long stop = Math.min(end, viewEnd);
                boolean zero = isZero(region, page);
                long runEnd = page + 1;
                while (runEnd < stop && isZero(region, runEnd) == zero) runEnd++;
                long gpa = region.guestAddress() + page * PAGE;
                long pages = runEnd - page;
                if (zero) {
                    codec.write(out, FrameType.ZERO_RUN, gpa, pages, null, null);
                    zeroPages += pages;
                } else {
                    codec.write(out, FrameType.RAM, gpa, pages, views.view(region, page * PAGE, pages * PAGE), null);
                    ramPages += pages;
                }
                frames++;
                page = runEnd;
            }
        }
    }

    private boolean isZero(GuestRegion region, long page) {
        return MemorySegment.mismatch(region.host(), page * PAGE, page * PAGE + PAGE, zeroPage, 0, PAGE) < 0;
    }

    public long ramPages() { return ramPages; }

    public long zeroPages() { return zeroPages; }

    public long frames() { return frames; }
}
