package org.vmmkit.migration.ram;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.GatheringByteChannel;
import java.util.zip.CRC32C;

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
 * from guest memory, followed by a CRC32C per page (so a receiver can tell which page a running guest
 * changed mid-send). Allocates nothing per frame.
 *
 * <p>Holes: a page never written is a hole in its region's memfd, and reading it through the shared mapping
 * would allocate it (a shared memfd has no zero page to map): the zero check alone made a source holding
 * a mostly-empty guest fault in every empty page, as slowly as a fresh destination does, and cost the host
 * that memory. So where a region's file is the region alone ({@link GuestMemory#backingIsTheRegionAlone}) and
 * the file system answers SEEK_DATA (tmpfs does), one {@code mincore} per run says which pages are in memory:
 * those are read by the zero check as before (reading an allocated page allocates nothing); for one that is
 * not, {@code lseek(SEEK_DATA)} says whether it is a hole (then it and the rest of the hole, up to the next
 * data, are zero pages, unread) or data swapped out (read). SEEK_HOLE is not used: on tmpfs its cost grows
 * with the distance to the next hole, which made a run's lookup scan the rest of an all-data file (one run of
 * a 2 GiB all-data migration: 20.9 s, where the runs before took 13.4–18.5 s). What is learnt is used within the one run only (microseconds),
 * as the zero check's own result is: a page the guest writes after either looked is dirty again and is sent
 * again.
 *
 * <p>On hugetlbfs ({@link GuestMemory#backingPageSize} above a page) SEEK_DATA answers "data" everywhere, and
 * {@code mincore} reports only this process's page tables, not the file: a huge page another process wrote
 * through its own mapping (a vfio-user device's DMA) is "not in memory" here. So a page {@code mincore} does
 * not show is read with {@code pread} from the file into a scratch buffer, which for a hole in hugetlbfs copies
 * zeros without allocating a huge page, and the zero check runs on that copy.
 */
public final class RamSender {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final MemoryViews views;
    private final FrameCodec codec;
    private final DirtyRunCursor cursor;
    private final long maxFramePages;
    private final ByteBuffer crcTable;
    private final CRC32C pageCrc = new CRC32C();
    private final boolean pageChecksums;
    private final ByteBuffer noTable = ByteBuffer.allocateDirect(0);
    private long ramPages, zeroPages, frames;
    private final boolean seekHoles; // the backing files answer SEEK_DATA (probed once)
    private boolean seeking; // this run: seekHoles, and mincore answered for it
    private long runStart, holeEnd; // within the current run: its first page; pages from some page below holeEnd are a hole
    private final MemorySegment inMemory; // mincore's answer for the current run, a byte per page
    private final long[] hugePage; // by region index: the backing's page size where it is hugetlbfs, else 0
    private final MemorySegment scratch; // hugetlbfs only: pages mincore does not show, read from the file; else null
    private long runStop, scratchFirst, scratchEnd; // the current run's end; pages [scratchFirst, scratchEnd) are in scratch

    public RamSender(MemoryViews views, FrameCodec codec, long maxFramePages) {
        this(views, codec, maxFramePages, true);
    }

    /**
     * {@code pageChecksums} false: RAM frames carry no CRC table (the stream header says so); the pages are
     * trusted to TCP as QEMU trusts them, and a page the guest changes mid-send is simply sent again.
     */
    public RamSender(MemoryViews views, FrameCodec codec, long maxFramePages, boolean pageChecksums) {
        this.pageChecksums = pageChecksums;
        this.views = views;
        this.codec = codec;
        this.maxFramePages = Math.min(maxFramePages, MemoryViews.VIEW_BYTES / PAGE);
        this.cursor = new DirtyRunCursor(this.maxFramePages);
        this.crcTable = ByteBuffer.allocateDirect((int) (this.maxFramePages * 4)).order(ByteOrder.LITTLE_ENDIAN);
        this.seekHoles = answersSeekData(views.memory());
        this.inMemory = java.lang.foreign.Arena.ofAuto().allocate(this.maxFramePages);
        GuestMemory memory = views.memory();
        this.hugePage = new long[memory.regions().size()];
        boolean anyHuge = false;
        for (GuestRegion r : memory.regions()) {
            long size = memory.backingPageSize(r);
            hugePage[r.index()] = size > PAGE ? size : 0;
            anyHuge |= size > PAGE;
        }
        this.scratch = anyHuge ? java.lang.foreign.Arena.ofAuto().allocate(this.maxFramePages * PAGE, PAGE) : null;
    }

    /** Whether every region of {@code memory} is its own file and that file answers SEEK_DATA (asked once, errno captured). */
    private static boolean answersSeekData(GuestMemory memory) {
        for (GuestRegion r : memory.regions()) {
            if (!memory.backingIsTheRegionAlone(r) || r.backing() == null) return false;
            if (memory.backingPageSize(r) > PAGE) continue; // hugetlbfs: pread instead of SEEK_DATA (see the class comment)
            try {
                org.vmmkit.core.sys.Libc.lseek(r.backing(), 0, org.vmmkit.core.sys.Libc.SEEK_HOLE); // EINVAL where unsupported
            } catch (org.vmmkit.core.sys.SysException e) {
                return false; // no hole seeking here: every page is read by the zero check
            }
        }
        return true;
    }

    /** Sends every page marked in {@code bitmap} of {@code region}. */
    public void send(GatheringByteChannel out, GuestRegion region, DirtyBitmap bitmap) throws IOException {
        cursor.reset(bitmap);
        while (cursor.next()) sendRun(out, region, cursor.start(), cursor.length());
    }

    /**
     * Sends pages {@code [firstPage, firstPage + count)} of {@code region} (page numbers within the region):
     * frames of at most {@code maxFramePages}, never across a view boundary, zero and non-zero pages apart.
     */
    public void sendRun(GatheringByteChannel out, GuestRegion region, long firstPage, long count) throws IOException {
        long page = firstPage, end = firstPage + count;
        while (page < end) {
            long viewEnd = page + MemoryViews.bytesToViewEnd(page * PAGE) / PAGE;
            long stop = Math.min(Math.min(end, viewEnd), page + maxFramePages);
            runStart = holeEnd = scratchFirst = scratchEnd = page;
            runStop = stop;
            seeking = seekHoles && org.vmmkit.core.sys.Libc.mincoreRaw(region.host().address() + page * PAGE, (stop - page) * PAGE, inMemory) == 0;
            boolean zero = isZero(region, page);
            long runEnd = page + 1;
            while (runEnd < stop && isZero(region, runEnd) == zero) runEnd++;
            long gpa = region.guestAddress() + page * PAGE;
            long pages = runEnd - page;
            if (zero) {
                codec.write(out, FrameType.ZERO_RUN, gpa, pages, null, null);
                zeroPages += pages;
            } else if (!pageChecksums) {
                codec.writeWithTable(out, FrameType.RAM, gpa, pages, views.view(region, page * PAGE, pages * PAGE), noTable.clear());
                ramPages += pages;
            } else {
                crcTable.clear();
                for (long p = page; p < runEnd; p++) {
                    pageCrc.reset();
                    pageCrc.update(views.view(region, p * PAGE, PAGE));
                    crcTable.putInt((int) pageCrc.getValue());
                }
                crcTable.flip();
                codec.writeWithTable(out, FrameType.RAM, gpa, pages, views.view(region, page * PAGE, pages * PAGE), crcTable);
                ramPages += pages;
            }
            frames++;
            page = runEnd;
        }
    }

    private boolean isZero(GuestRegion region, long page) {
        if (seeking && page >= holeEnd && (inMemory.get(java.lang.foreign.ValueLayout.JAVA_BYTE, page - runStart) & 1) == 0) {
            long offset = page * PAGE;
            long huge = hugePage[region.index()];
            if (huge != 0) {
                if (page >= scratchEnd) {
                    long upTo = Math.min(runStop, ((offset + huge) & -huge) / PAGE); // the rest of this run within the huge page
                    long want = (upTo - page) * PAGE;
                    if (org.vmmkit.core.sys.Libc.preadRaw(region.backing().raw(), scratch.address(), want, offset) != want) {
                        return isZeroPage(region.host(), offset, MemoryViews.ZERO_PAGE); // cannot happen; still correct
                    }
                    scratchFirst = page;
                    scratchEnd = upTo;
                }
                return isZeroPage(scratch, (page - scratchFirst) * PAGE, MemoryViews.ZERO_PAGE);
            }
            long data = org.vmmkit.core.sys.Libc.lseekRaw(region.backing().raw(), offset, org.vmmkit.core.sys.Libc.SEEK_DATA);
            // -1 is ENXIO, the only failure of SEEK_DATA inside a file that answers it: no data from here on.
            // data == offset: not in memory but data, swapped out; it is read (and swapped in) below.
            if (data < 0) holeEnd = region.size() / PAGE;
            else if (data > offset) holeEnd = data / PAGE; // shmem's holes and data are whole pages
        }
        return page < holeEnd || isZeroPage(region.host(), page * PAGE, MemoryViews.ZERO_PAGE);
    }

    /** Whether the page at {@code offset} of {@code memory} is all zeros: a vectorized compare against {@code zeroPage}. */
    public static boolean isZeroPage(MemorySegment memory, long offset, MemorySegment zeroPage) {
        return MemorySegment.mismatch(memory, offset, offset + PAGE, zeroPage, 0, PAGE) < 0;
    }

    public long ramPages() { return ramPages; }

    public long zeroPages() { return zeroPages; }

    public long frames() { return frames; }
}
