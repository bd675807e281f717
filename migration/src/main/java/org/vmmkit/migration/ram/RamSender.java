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
 * the file system answers SEEK_DATA/SEEK_HOLE (tmpfs does), each run is first split by the file's holes, two
 * {@code lseek} calls per stretch: a page inside a hole is a zero page without being read. What is learnt is
 * used within the one run only (microseconds), as the zero check's own result is: a page the guest writes
 * after either looked is dirty again and is sent again.
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
    private final boolean seekHoles; // the backing files answer SEEK_HOLE (probed once)
    private boolean seeking; // this run's region: seekHoles and a file that is the region alone
    private long holeEnd, dataEnd; // within the current run: pages below holeEnd (from some page on) are a hole; below dataEnd, data

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
        this.seekHoles = answersSeekHole(views.memory());
    }

    /** Whether every region of {@code memory} is its own file and that file answers SEEK_HOLE (asked once, errno captured). */
    private static boolean answersSeekHole(GuestMemory memory) {
        for (GuestRegion r : memory.regions()) {
            if (!memory.backingIsTheRegionAlone(r) || r.backing() == null) return false;
            try {
                org.vmmkit.core.sys.Libc.lseek(r.backing(), 0, org.vmmkit.core.sys.Libc.SEEK_HOLE);
            } catch (org.vmmkit.core.sys.SysException e) {
                return false; // EINVAL: no SEEK_HOLE here; every page is read by the zero check
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
        seeking = seekHoles;
        holeEnd = dataEnd = firstPage; // nothing known yet of this run
        while (page < end) {
            long viewEnd = page + MemoryViews.bytesToViewEnd(page * PAGE) / PAGE;
            long stop = Math.min(Math.min(end, viewEnd), page + maxFramePages);
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
        if (seeking && page >= holeEnd && page >= dataEnd) seek(region, page);
        return page < holeEnd || isZeroPage(region.host(), page * PAGE, MemoryViews.ZERO_PAGE);
    }

    /** Learns whether {@code page} lies in a hole of the region's file or in data, and how far that stretch goes. */
    private void seek(GuestRegion region, long page) {
        int fd = region.backing().raw();
        long offset = page * PAGE;
        long data = org.vmmkit.core.sys.Libc.lseekRaw(fd, offset, org.vmmkit.core.sys.Libc.SEEK_DATA);
        if (data < 0) { // ENXIO, the only failure of SEEK_DATA inside a file that answers it: no data from here on
            holeEnd = region.size() / PAGE;
        } else if (data > offset) {
            holeEnd = data / PAGE; // shmem's holes and data are whole pages
        } else {
            long hole = org.vmmkit.core.sys.Libc.lseekRaw(fd, offset, org.vmmkit.core.sys.Libc.SEEK_HOLE);
            dataEnd = hole <= offset ? page + 1 : (hole + PAGE - 1) / PAGE; // a failure (none expected): this page is data
        }
    }

    /** Whether the page at {@code offset} of {@code memory} is all zeros: a vectorized compare against {@code zeroPage}. */
    public static boolean isZeroPage(MemorySegment memory, long offset, MemorySegment zeroPage) {
        return MemorySegment.mismatch(memory, offset, offset + PAGE, zeroPage, 0, PAGE) < 0;
    }

    public long ramPages() { return ramPages; }

    public long zeroPages() { return zeroPages; }

    public long frames() { return frames; }
}
