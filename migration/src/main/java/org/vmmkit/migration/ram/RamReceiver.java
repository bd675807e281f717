package org.vmmkit.migration.ram;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ReadableByteChannel;
import java.util.zip.CRC32C;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.WireFormatException;

/**
 * Applies RAM and ZERO_RUN frames to the destination's guest memory. The range of a frame is checked against
 * the destination's own layout (inside one region, page-aligned, the payload the size the page count says)
 * before a byte is read into it; the payload is read straight into guest memory, then its CRC is checked.
 *
 * <p>Torn pages: while the source's vCPUs run (pre-copy), a page can change between the sender's CRC and
 * the kernel's copy, so a RAM payload may fail its CRC without anything being wrong: the guest wrote the
 * page, the source's dirty log has it, and a later round resends it. Each RAM frame carries a CRC32C per
 * page, so exactly the pages that changed are known. With {@link #allowTorn} on, such pages are marked torn
 * instead of failing; an intact frame for the same pages clears the mark; {@link #checkNoTornPages}
 * (at COMPLETE) fails naming any page still torn. With it off (stop-and-copy: nothing can change) a
 * mismatch is fatal at once.
 */
public final class RamReceiver {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final MemoryViews views;
    private final org.vmmkit.dirty.DirtyBitmap[] torn;
    private boolean allowTorn;
    private ByteBuffer table = ByteBuffer.allocateDirect(4096).order(ByteOrder.LITTLE_ENDIAN);
    private final CRC32C pageCrc = new CRC32C();
    private long ramPages, zeroPages, tornFrames;
    private boolean punchHoles = true;
    private PopulateAhead ahead; // null: no thread populates memory ahead of this receiver

    private final boolean pageChecksums;
    private final long[] hugePage; // by region index: the backing's page size where it is above PAGE (hugetlbfs), else 0
    private final MemorySegment inMemory = java.lang.foreign.Arena.ofAuto().allocate(1); // mincore's answer for one page

    public RamReceiver(MemoryViews views) {
        this(views, true);
    }

    /** {@code pageChecksums}: whether RAM frames carry a CRC table (the stream header says). */
    public RamReceiver(MemoryViews views, boolean pageChecksums) {
        this.pageChecksums = pageChecksums;
        this.views = views;
        this.torn = new org.vmmkit.dirty.DirtyBitmap[views.memory().regions().size()];
        for (GuestRegion r : views.memory().regions()) torn[r.index()] = new org.vmmkit.dirty.DirtyBitmap(r.size() / PAGE);
        this.hugePage = new long[torn.length];
        for (GuestRegion r : views.memory().regions()) {
            long size = views.memory().backingPageSize(r);
            hugePage[r.index()] = size > PAGE ? size : 0;
        }
    }

    /** Tells {@code ahead} how far this receiver got after each frame, so it populates memory before the frames arrive. */
    public void populateAhead(PopulateAhead ahead) {
        this.ahead = ahead;
    }

    /** Pre-copy (true): a RAM payload that fails its CRC marks its pages torn. Stop-and-copy (false): it is fatal. */
    public void allowTorn(boolean allow) {
        this.allowTorn = allow;
    }

    /** Fails naming the first pages still torn: each must have come again intact before the stream completes. */
    public void checkNoTornPages() {
        for (GuestRegion r : views.memory().regions()) {
            long page = torn[r.index()].nextSet(0);
            if (page >= 0) {
                throw new WireFormatException("the stream completed with " + torn[r.index()].count() + " pages of " + r
                        + " torn (they failed their CRC32C and never came again intact), the first at 0x" + Long.toHexString(r.guestAddress() + page * PAGE));
            }
        }
    }

    /** RAM frames whose payload failed its CRC while torn pages were allowed. */
    public long tornFrames() {
        return tornFrames;
    }

    /** Applies the frame whose header {@code codec} just read (RAM or ZERO_RUN). */
    public void apply(ReadableByteChannel in, FrameCodec codec) throws IOException {
        FrameType type = codec.type();
        long gpa = codec.a(), pages = codec.b();
        long bytes = pages * PAGE;
        if (pages <= 0 || pages > Long.MAX_VALUE / (PAGE + 4) || gpa % PAGE != 0
                || codec.length() != (type == FrameType.RAM ? bytes + (pageChecksums ? 4 * pages : 0) : 0)) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + type + ") at 0x" + Long.toHexString(gpa)
                    + " with " + pages + " pages and " + codec.length() + " payload bytes is malformed");
        }
        GuestRegion region = views.memory().regionHolding(gpa, bytes);
        if (region == null) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + type + ") targets memory this VM does not have: [0x"
                    + Long.toHexString(gpa) + ", +0x" + Long.toHexString(bytes) + ") is not inside one RAM region");
        }
        long offset = gpa - region.guestAddress();
        if (type == FrameType.ZERO_RUN) {
            codec.verify(); // no payload: the header's CRC of nothing
            zero(region, offset, bytes);
            clearTorn(region, offset / PAGE, pages);
            zeroPages += pages;
            if (ahead != null) ahead.passed(gpa + bytes, false);
            return;
        }
        if (bytes > MemoryViews.bytesToViewEnd(offset)) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (RAM) at 0x" + Long.toHexString(gpa)
                    + " crosses a 1 GiB view boundary (the sender never does)");
        }
        codec.readPayloadUnchecked(in, views.view(region, offset, bytes));
        if (ahead != null) ahead.passed(gpa + bytes, true);
        if (!pageChecksums) {
            codec.verify(); // the CRC of an empty table: what the header says
            clearTorn(region, offset / PAGE, pages);
            ramPages += pages;
            return;
        }
        if (table.capacity() < 4 * pages) table = ByteBuffer.allocateDirect((int) (4 * pages)).order(ByteOrder.LITTLE_ENDIAN);
        table.clear().limit((int) (4 * pages));
        codec.readPayload(in, table);
        codec.verify(); // the table's own CRC: a damaged table is a corrupt stream
        long firstPage = offset / PAGE;
        boolean anyTorn = false;
        for (int i = 0; i < pages; i++) {
            pageCrc.reset();
            pageCrc.update(views.view(region, offset + i * PAGE, PAGE));
            if ((int) pageCrc.getValue() == table.getInt(4 * i)) {
                if (tornFrames > 0) torn[region.index()].clearRange(firstPage + i, 1);
            } else if (allowTorn) {
                torn[region.index()].set(firstPage + i);
                anyTorn = true;
            } else {
                throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (RAM): the page at 0x"
                        + Long.toHexString(gpa + i * PAGE) + " fails its CRC32C");
            }
        }
        if (anyTorn) tornFrames++;
        ramPages += pages;
    }

    /**
     * Makes the range zero without making it cost memory: MADV_REMOVE punches it out of the memfd (the pages
     * are freed, a never-written page stays unbacked, and every page reads as zero from then on, whatever the
     * range held — an earlier attempt's data, a device's DMA). Where the memory cannot be punched (not a
     * shared memfd or hugetlbfs mapping: EINVAL, EOPNOTSUPP) the pages are written with zeros instead, from
     * then on for every run.
     */
    private void zero(GuestRegion region, long offset, long bytes) {
        long huge = hugePage[region.index()];
        if (huge != 0) {
            zeroHuge(region, offset, bytes, huge);
            return;
        }
        if (punchHoles) {
            int r = Libc.madviseRaw(region.host().address() + offset, bytes, Libc.MADV_REMOVE);
            if (r == 0) return;
            punchHoles = false;
        }
        clear(region, offset, bytes);
    }

    /**
     * {@link #zero} on hugetlbfs, where a page is 2 MiB: the whole huge pages inside the run are punched out
     * (freed); at each edge, a part of a huge page, the run is cleared without allocating: where the huge page is
     * in this process's page tables (mincore) its part is written with zeros (or the whole huge page punched, where
 * the rest of it reads zero too); where it is not, it is either a hole
     * (reads zero: nothing to do, and writing would allocate 2 MiB for nothing) or a page another process wrote
     * through its own mapping, so the part is punched, which the kernel (6.2 on) turns into zeroing the part of a
     * page that exists, and nothing for a hole. Allocates nothing.
     */
    private void zeroHuge(GuestRegion region, long offset, long bytes, long huge) {
        long end = offset + bytes;
        long middleStart = (offset + huge - 1) & -huge, middleEnd = end & -huge;
        long base = region.host().address();
        if (middleStart < middleEnd) {
            if (Libc.madviseRaw(base + middleStart, middleEnd - middleStart, Libc.MADV_REMOVE) != 0) {
                clear(region, middleStart, middleEnd - middleStart); // cannot happen on hugetlbfs; still correct
            }
            clearEdge(region, offset, middleStart - offset, huge);
            clearEdge(region, middleEnd, end - middleEnd, huge);
        } else if (middleStart >= end || middleEnd <= offset) { // within one huge page
            clearEdge(region, offset, bytes, huge);
        } else { // spans one huge page boundary with no whole page inside
            clearEdge(region, offset, middleStart - offset, huge);
            clearEdge(region, middleStart, end - middleStart, huge);
        }
    }

    /**
     * Zeroes part of one huge page as {@link #zeroHuge} says; where the huge page is mapped and the rest of it
     * already reads zero, the whole huge page is punched instead (its content is the same, and it is freed): zero
     * runs come at most a frame (1 MiB) long, so without this a zero huge page populated ahead would stay resident.
     */
    private void clearEdge(GuestRegion region, long offset, long bytes, long huge) {
        if (bytes <= 0) return;
        long address = region.host().address() + offset;
        boolean mapped = Libc.mincoreRaw(address, PAGE, inMemory) == 0 && (inMemory.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0) & 1) != 0;
        if (!mapped) {
            if (Libc.madviseRaw(address, bytes, Libc.MADV_REMOVE) != 0) clear(region, offset, bytes);
            return;
        }
        long pageStart = offset & -huge, pageEnd = Math.min(pageStart + huge, region.size());
        if (isZero(region.host(), pageStart, offset) && isZero(region.host(), offset + bytes, pageEnd)
                && Libc.madviseRaw(region.host().address() + pageStart, pageEnd - pageStart, Libc.MADV_REMOVE) == 0) {
            return;
        }
        clear(region, offset, bytes);
    }

    /** Whether {@code [from, to)} of {@code memory} (page-aligned) reads all zeros; stops at the first byte that does not. */
    private static boolean isZero(MemorySegment memory, long from, long to) {
        for (long p = from; p < to; p += PAGE) {
            if (MemorySegment.mismatch(memory, p, p + PAGE, MemoryViews.ZERO_PAGE, 0, PAGE) >= 0) return false;
        }
        return true;
    }

    private static void clear(GuestRegion region, long offset, long bytes) {
        for (long p = 0; p < bytes; p += PAGE) MemorySegment.copy(MemoryViews.ZERO_PAGE, 0, region.host(), offset + p, PAGE); // no slice object
    }

    private void clearTorn(GuestRegion region, long firstPage, long pages) {
        if (tornFrames > 0) torn[region.index()].clearRange(firstPage, pages); // nothing to clear until a frame tore
    }

    public long ramPages() { return ramPages; }

    public long zeroPages() { return zeroPages; }
}
