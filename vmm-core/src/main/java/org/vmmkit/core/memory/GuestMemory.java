package org.vmmkit.core.memory;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;

/**
 * A VM's RAM: regions of guest physical address space, each a memfd mapped shared. Nothing is touched
 * at creation (the memfd is sparse), so an 8 GiB VM costs only what the guest writes. Every access by
 * guest address is bounds-checked against one region; nothing reads or writes outside it.
 */
public final class GuestMemory implements AutoCloseable {
    public static final long PAGE_SIZE = 4096;
    /** Where the standard layout leaves a hole below 4 GiB (for MMIO, as PC firmware does). */
    public static final long LOW_RAM_END = 3L << 30, HIGH_RAM_START = 4L << 30;

    private volatile List<GuestRegion> regions; // replaced (same host addresses, other backings) by adoptBackings and dropAdoptedBackings
    private final List<GuestRegion> ownRegions;
    private final List<GuardedMapping> mappings; // by region index: each region's mapping and its guards; null where the host owns it
    private Fd[] adopted; // another process's memfds mapped over the regions (adoptBackings); null when none; guarded by this
    private boolean ownReleased; // the own memfds closed after adopting; guarded by this
    private final HugePages hugePages;
    private final long[] backingPageSize; // by region index: the page size of the file behind it (4 KiB, or 2 MiB on hugetlbfs)
    private volatile boolean closed;

    private static final System.Logger LOG = System.getLogger("org.vmmkit.core.memory");

    private GuestMemory(List<GuestRegion> regions, List<GuardedMapping> mappings, HugePages hugePages) {
        this.regions = List.copyOf(regions);
        this.ownRegions = this.regions;
        this.mappings = java.util.Collections.unmodifiableList(new ArrayList<>(mappings)); // null entries: the host's own
        this.hugePages = hugePages;
        this.backingPageSize = new long[regions.size()];
        for (GuestRegion r : regions) {
            long size = PAGE_SIZE;
            if (hugePages == HugePages.HUGETLB) {
                size = HugePages.HUGE_PAGE_SIZE;
            } else if (mappings.get(r.index()) == null && r.backing() != null) {
                // The host's own file: hugetlbfs says its page size as the block size (tmpfs says 4 KiB).
                long block = Libc.blockSize(r.backing());
                if (block >= HugePages.HUGE_PAGE_SIZE && Long.bitCount(block) == 1 && r.size() % block == 0) size = block;
            }
            backingPageSize[r.index()] = size;
        }
    }

    /** A range of guest physical address space to back with RAM. */
    public record Range(long guestAddress, long size) {
        public Range {
            if (guestAddress % PAGE_SIZE != 0 || size <= 0 || size % PAGE_SIZE != 0) {
                throw new IllegalArgumentException("a RAM range must be page-aligned and non-empty: 0x"
                        + Long.toHexString(guestAddress) + " size " + size);
            }
        }
    }

    /** The PC-style layout for {@code size} bytes: RAM from 0 up to 3 GiB, the rest from 4 GiB. */
    public static List<Range> standardLayout(long size) {
        if (size <= LOW_RAM_END) return List.of(new Range(0, size));
        return List.of(new Range(0, LOW_RAM_END), new Range(HIGH_RAM_START, size - LOW_RAM_END));
    }

    /** Creates memfd-backed RAM of base pages for the given ranges, which must not overlap. */
    public static GuestMemory create(List<Range> ranges) {
        return create(ranges, HugePages.NONE);
    }

    /**
     * Creates memfd-backed RAM for the given ranges, which must not overlap, backed as {@code hugePages} says.
     * {@link HugePages#HUGETLB}: every range must be a multiple of 2 MiB, and the host's pool must hold a page for
     * every 2 MiB of the RAM (checked first, and again by the kernel when each region is mapped: the mapping
     * reserves its pages, so no later first touch can fail); otherwise an error naming {@code /proc/sys/vm/nr_hugepages}
     * and the pages needed. {@link HugePages#THP}: a warning, not an error, when the host's shmem THP setting gives
     * advised mappings no huge pages.
     */
    public static GuestMemory create(List<Range> ranges, HugePages hugePages) {
        List<Range> sorted = new ArrayList<>(ranges);
        sorted.sort((a, b) -> Long.compareUnsigned(a.guestAddress(), b.guestAddress()));
        for (int i = 1; i < sorted.size(); i++) {
            Range prev = sorted.get(i - 1);
            if (prev.guestAddress() + prev.size() > sorted.get(i).guestAddress()) {
                throw new IllegalArgumentException("RAM ranges overlap: " + prev + " and " + sorted.get(i));
            }
        }
        if (hugePages == HugePages.HUGETLB) checkHugetlb(sorted);
        if (hugePages == HugePages.THP) warnUnlessShmemThp();
        List<GuestRegion> regions = new ArrayList<>();
        List<GuardedMapping> mappings = new ArrayList<>();
        try {
            for (Range r : sorted) {
                int index = regions.size();
                Fd memfd = Libc.memfdCreate("vmmkit-ram-" + index, hugePages == HugePages.HUGETLB ? Libc.MFD_HUGETLB | Libc.MFD_HUGE_2MB : 0);
                try {
                    memfd.truncate(r.size());
                    GuardedMapping mapping;
                    try {
                        mapping = mapAligned(memfd, r.size());
                    } catch (SysException e) {
                        if (hugePages != HugePages.HUGETLB || e.errno() != Errno.ENOMEM) throw e;
                        throw new SysException(e.call(), e.errno(), e.object(), shortPool(r.size() / HugePages.HUGE_PAGE_SIZE, HostHugePages.pool()));
                    }
                    mappings.add(mapping);
                    if (hugePages == HugePages.THP) Libc.madvise(mapping.segment(), Libc.MADV_HUGEPAGE, memfd.describe() + " (vm.hugepages = thp)");
                    regions.add(new GuestRegion(index, r.guestAddress(), r.size(), mapping.segment(), memfd));
                } catch (RuntimeException e) {
                    memfd.close();
                    throw e;
                }
            }
        } catch (RuntimeException e) {
            new GuestMemory(regions, mappings, hugePages).close();
            throw e;
        }
        return new GuestMemory(regions, mappings, hugePages);
    }

    private static void checkHugetlb(List<Range> ranges) {
        long pages = 0;
        for (Range r : ranges) {
            if (r.size() % HugePages.HUGE_PAGE_SIZE != 0 || r.guestAddress() % HugePages.HUGE_PAGE_SIZE != 0) {
                throw new IllegalArgumentException("vm.hugepages = hugetlb backs RAM with 2 MiB pages: the RAM range at guest 0x"
                        + Long.toHexString(r.guestAddress()) + " of " + r.size() + " bytes is not a multiple of 2 MiB (2097152 bytes) at a 2 MiB-aligned address");
            }
            pages += r.size() / HugePages.HUGE_PAGE_SIZE;
        }
        HostHugePages.Pool pool = HostHugePages.pool();
        if (pool.pageSize() != HugePages.HUGE_PAGE_SIZE) {
            throw new IllegalStateException("vm.hugepages = hugetlb uses 2 MiB pages, but this host's default huge page is "
                    + pool.pageSize() + " bytes (Hugepagesize in /proc/meminfo)");
        }
        if (pool.available() < pages) throw new IllegalStateException(shortPool(pages, pool));
    }

    /** Why a hugetlbfs mapping of {@code pages} 2 MiB pages cannot be made, and what the operator does about it. */
    private static String shortPool(long pages, HostHugePages.Pool pool) {
        return "vm.hugepages = hugetlb needs " + pages + " free 2 MiB huge pages (" + (pages * HugePages.HUGE_PAGE_SIZE >> 20)
                + " MiB of guest RAM), but the host's pool has " + pool.available() + " available (HugePages_Total " + pool.total()
                + ", HugePages_Free " + pool.free() + ", HugePages_Rsvd " + pool.reserved() + "): raise " + HostHugePages.NR_HUGEPAGES
                + " by at least " + (pages - pool.available()) + " (e.g. echo " + (pool.total() + pages - pool.available()) + " > "
                + HostHugePages.NR_HUGEPAGES + " as root), or use vm.hugepages = none";
    }

    private static void warnUnlessShmemThp() {
        String setting = HostHugePages.shmemThp();
        if (!HostHugePages.shmemThpAdvisable(setting)) {
            LOG.log(System.Logger.Level.WARNING, "vm.hugepages = thp: the host's shmem THP setting is '" + setting + "' ("
                    + HostHugePages.SHMEM_ENABLED + "), so guest RAM stays in 4 KiB pages although it is advised MADV_HUGEPAGE;"
                    + " echo advise > " + HostHugePages.SHMEM_ENABLED + " as root to let it have 2 MiB pages");
        }
    }

    /**
     * Guest RAM the host VMM already has: each region's guest address, the host's own mapping of it (shared,
     * so a destination can read pages straight in and a device process can map the same fd) and the file
     * behind it (a memfd or a hugetlbfs file: zero pages are punched out of it, and its allocated size is the
     * resident figure). The host keeps owning both: {@link #close} unmaps and closes nothing of them.
     */
    public record HostRegion(long guestAddress, MemorySegment mapping, Fd backing) {
        public HostRegion {
            if (guestAddress % PAGE_SIZE != 0 || mapping.byteSize() <= 0 || mapping.byteSize() % PAGE_SIZE != 0 || mapping.address() % PAGE_SIZE != 0) {
                throw new IllegalArgumentException("a host region must be page-aligned and non-empty: guest 0x" + Long.toHexString(guestAddress)
                        + ", host 0x" + Long.toHexString(mapping.address()) + " size " + mapping.byteSize());
            }
        }
    }

    /** Wraps memory the host VMM mapped itself (see {@link HostRegion}); the regions must not overlap. */
    public static GuestMemory wrap(List<HostRegion> host) {
        List<HostRegion> sorted = new ArrayList<>(host);
        sorted.sort((a, b) -> Long.compareUnsigned(a.guestAddress(), b.guestAddress()));
        List<GuestRegion> regions = new ArrayList<>();
        List<GuardedMapping> mappings = new ArrayList<>();
        for (HostRegion h : sorted) {
            if (!regions.isEmpty() && regions.getLast().end() > h.guestAddress()) {
                throw new IllegalArgumentException("host regions overlap at guest 0x" + Long.toHexString(h.guestAddress()));
            }
            regions.add(new GuestRegion(regions.size(), h.guestAddress(), h.mapping().byteSize(), h.mapping(), h.backing()));
            mappings.add(null);
        }
        return new GuestMemory(regions, mappings, HugePages.NONE);
    }

    /**
     * Maps the memfd shared at a 2 MiB-aligned address (as QEMU aligns RAM): transparent huge pages can back
     * it, and an IOMMU whose smallest page is 2 MiB can map it (type1 requires the host address aligned to
     * its page size). The mapping sits between PROT_NONE guard pages that stay for its whole life
     * ({@link GuardedMapping}): a write that runs off a region faults instead of corrupting its neighbour.
     */
    private static GuardedMapping mapAligned(Fd memfd, long size) {
        return GuardedMapping.shared(memfd, size, HOST_ALIGNMENT);
    }

    /**
     * Maps {@code backings} — another process's guest RAM, one file per region holding it from offset 0 (the
     * memfds a source passes with SCM_RIGHTS in a local live upgrade) — over this memory's regions, at the same
     * host addresses ({@code MAP_SHARED | MAP_FIXED}): every view of a region made before (KVM's memory slots,
     * DMA mappings, segments) reaches the other process's pages from then on. Nothing is read or written, so
     * no page is zeroed, populated or allocated. Takes ownership of {@code backings} (closed by
     * {@link #dropAdoptedBackings} or {@link #close}); {@link GuestRegion#backing()} names them from now on.
     * Only for memory this class created, and once.
     */
    public synchronized void adoptBackings(List<Fd> backings) {
        if (closed) throw new IllegalStateException("guest memory is closed");
        if (adopted != null) throw new IllegalStateException("guest memory already maps another process's backings");
        List<GuestRegion> own = ownRegions;
        if (backings.size() != own.size()) {
            throw new IllegalArgumentException(backings.size() + " backing files for " + own.size() + " regions of guest memory");
        }
        for (GuestRegion r : own) {
            if (mappings.get(r.index()) == null) throw new UnsupportedOperationException(r + " is mapped by the host VMM; it cannot be replaced");
            Fd fd = backings.get(r.index());
            long size = Libc.fileSize(fd);
            if (size < r.size()) {
                throw new IllegalArgumentException(fd.describe() + " holds " + size + " bytes; " + r + " needs " + r.size());
            }
            long pageSize = Libc.blockSize(fd);
            if (pageSize != backingPageSize[r.index()]) { // vm.hugepages differs between the two processes
                throw new IllegalArgumentException(fd.describe() + " is backed by " + pageSize + "-byte pages; " + r + " by "
                        + backingPageSize[r.index()] + "-byte pages here (vm.hugepages must be the same at both ends)");
            }
        }
        List<GuestRegion> next = new ArrayList<>();
        try {
            for (GuestRegion r : own) {
                Fd fd = backings.get(r.index());
                remap(r, fd);
                next.add(new GuestRegion(r.index(), r.guestAddress(), r.size(), r.host(), fd));
            }
        } catch (RuntimeException e) {
            for (GuestRegion r : own.subList(0, next.size())) remap(r, r.backing());
            throw e;
        }
        adopted = backings.toArray(Fd[]::new);
        regions = List.copyOf(next);
    }

    /** Whether the regions map another process's backings ({@link #adoptBackings}). */
    public synchronized boolean adoptedBackings() {
        return adopted != null;
    }

    /**
     * Undoes {@link #adoptBackings} before anything ran on the adopted memory (an incoming migration refused
     * after it): maps this memory's own files back at the same addresses and closes the adopted ones.
     */
    public synchronized void dropAdoptedBackings() {
        if (adopted == null || closed) return;
        if (ownReleased) throw new IllegalStateException("the own backing files are released; the adopted ones stay");
        for (GuestRegion r : ownRegions) remap(r, r.backing());
        regions = ownRegions;
        for (Fd fd : adopted) fd.close();
        adopted = null;
    }

    /**
     * After {@link #adoptBackings}, once the VM runs on the adopted memory: closes this memory's own files,
     * which nothing maps any more (what they held is freed).
     */
    public synchronized void releaseOwnBackings() {
        if (adopted == null || ownReleased) return;
        ownReleased = true;
        for (GuestRegion r : ownRegions) r.backing().close();
    }

    private static void remap(GuestRegion r, Fd fd) {
        Libc.mmap(r.host().address(), r.size(), Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_FIXED, fd.raw(), 0,
                fd.describe() + " over " + r);
    }

    /** Host alignment of every region's mapping. */
    public static final long HOST_ALIGNMENT = 2L << 20;

    public List<GuestRegion> regions() {
        return regions;
    }

    /** How this memory was created ({@link HugePages#NONE} for {@link #wrap wrapped} memory, whatever backs it). */
    public HugePages hugePages() {
        return hugePages;
    }

    /**
     * The page size of the file behind {@code region}: {@link #PAGE_SIZE}, or the huge page size where it is on
     * hugetlbfs (a {@link HugePages#HUGETLB} memfd, or a host's hugetlbfs file). On hugetlbfs a page is allocated,
     * punched and reported by {@code mincore} whole (a punch of part of one only zeroes that part), and a page
     * missing from this process's page tables may still hold data another process wrote through its own mapping.
     * THP-backed shmem stays {@link #PAGE_SIZE}: the kernel splits its huge pages as needed.
     */
    public long backingPageSize(GuestRegion region) {
        return backingPageSize[region.index()];
    }

    /**
     * Whether {@code region}'s backing file holds exactly that region from offset 0 — memory this class created,
     * a memfd per region — so a hole in the file (SEEK_HOLE) is a page of the region never written, which reads
     * as zero. Not said of {@link #wrap wrapped} memory: its host may map one file for several regions.
     */
    public boolean backingIsTheRegionAlone(GuestRegion region) {
        return mappings.get(region.index()) != null;
    }

    /**
     * Bytes of guest RAM that cost host memory now: what the regions' memfds hold (pages never written, or
     * punched out as zero, cost nothing). One {@code fstat} per region.
     */
    public long residentBytes() {
        long total = 0;
        for (GuestRegion r : regions) total += org.vmmkit.core.sys.Libc.allocatedBytes(r.backing());
        return total;
    }

    public long totalSize() {
        long total = 0;
        for (GuestRegion r : regions) total += r.size();
        return total;
    }

    /** The region holding {@code gpa}, or an error naming the address. */
    public GuestRegion regionOf(long gpa) {
        for (GuestRegion r : regions) {
            if (r.contains(gpa)) return r;
        }
        throw new GuestMemoryException("no RAM at", gpa, 0);
    }

    /**
     * The region holding all of {@code [gpa, gpa + length)}, or null: the check of {@link #slice} without a
     * slice or an exception, for a receiver that runs it once a frame and words its own error.
     */
    public GuestRegion regionHolding(long gpa, long length) {
        List<GuestRegion> rs = regions; // one volatile read
        for (int i = 0; i < rs.size(); i++) { // indexed: no iterator object on a per-frame path
            GuestRegion r = rs.get(i);
            if (length >= 0 && r.contains(gpa) && length <= r.size() - (gpa - r.guestAddress())) return r;
        }
        return null;
    }

    /** The host view of {@code [gpa, gpa + length)}; the range must lie inside one region. */
    public MemorySegment slice(long gpa, long length) {
        if (length < 0) throw new GuestMemoryException("negative length", gpa, length);
        for (GuestRegion r : regions) {
            if (r.contains(gpa)) {
                long offset = gpa - r.guestAddress();
                if (length > r.size() - offset) {
                    throw new GuestMemoryException("range crosses the end of " + r, gpa, length);
                }
                return r.host().asSlice(offset, length);
            }
        }
        throw new GuestMemoryException("no RAM at", gpa, length);
    }

    public long readLong(long gpa) {
        return slice(gpa, 8).get(ValueLayout.JAVA_LONG_UNALIGNED, 0);
    }

    public void writeLong(long gpa, long value) {
        slice(gpa, 8).set(ValueLayout.JAVA_LONG_UNALIGNED, 0, value);
    }

    public void write(long gpa, byte[] bytes) {
        MemorySegment.copy(MemorySegment.ofArray(bytes), 0, slice(gpa, bytes.length), 0, bytes.length);
    }

    public byte[] read(long gpa, int length) {
        return slice(gpa, length).toArray(ValueLayout.JAVA_BYTE);
    }

    /**
     * Copies every region's bytes into {@code target}, which must have the same layout: the offline
     * copy behind snapshot and restore.
     */
    public void copyTo(GuestMemory target) {
        if (target.regions.size() != regions.size()) throw new IllegalArgumentException("memory layouts differ");
        for (int i = 0; i < regions.size(); i++) {
            GuestRegion a = regions.get(i), b = target.regions.get(i);
            if (a.guestAddress() != b.guestAddress() || a.size() != b.size()) {
                throw new IllegalArgumentException("memory layouts differ: " + a + " vs " + b);
            }
            b.host().copyFrom(a.host());
        }
    }

    @Override
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
        }
        for (int i = 0; i < ownRegions.size(); i++) {
            if (mappings.get(i) == null) continue; // the host's own
            mappings.get(i).close();
            ownRegions.get(i).backing().close();
        }
        synchronized (this) {
            if (adopted != null) for (Fd fd : adopted) fd.close();
        }
    }
}
