package org.vmmkit.migration.ram;

import java.io.IOException;
import java.nio.channels.ReadableByteChannel;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestMemoryException;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.WireFormatException;

/**
 * Applies RAM and ZERO_RUN frames to the destination's guest memory. The range of a frame is checked against
 * the destination's own layout (inside one region, page-aligned, the payload the size the page count says)
 * before a byte is read into it; the payload is read straight into guest memory, then its CRC is checked.
 */
public final class RamReceiver {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final MemoryViews views;
    private long ramPages, zeroPages;

    public RamReceiver(MemoryViews views) {
        this.views = views;
    }

    /** Applies the frame whose header {@code codec} just read (RAM or ZERO_RUN). */
    public void apply(ReadableByteChannel in, FrameCodec codec) throws IOException {
        FrameType type = codec.type();
        long gpa = codec.a(), pages = codec.b();
        long bytes = pages * PAGE;
        if (pages <= 0 || pages > Long.MAX_VALUE / PAGE || gpa % PAGE != 0
                || codec.length() != (type == FrameType.RAM ? bytes : 0)) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + type + ") at 0x" + Long.toHexString(gpa)
                    + " with " + pages + " pages and " + codec.length() + " payload bytes is malformed");
        }
        GuestRegion region;
        try {
            views.memory().slice(gpa, bytes); // throws unless the whole range lies in one region
            region = views.memory().regionOf(gpa);
        } catch (GuestMemoryException e) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + type + ") targets memory this VM does not have: "
                    + e.getMessage());
        }
        long offset = gpa - region.guestAddress();
        if (type == FrameType.ZERO_RUN) {
            region.host().asSlice(offset, bytes).fill((byte) 0);
            codec.verify();
            zeroPages += pages;
            return;
        }
        if (bytes > MemoryViews.bytesToViewEnd(offset)) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (RAM) at 0x" + Long.toHexString(gpa)
                    + " crosses a 1 GiB view boundary (the sender never does)");
        }
        codec.readPayload(in, views.view(region, offset, bytes));
        codec.verify();
        ramPages += pages;
    }

    public long ramPages() { return ramPages; }

    public long zeroPages() { return zeroPages; }
}
