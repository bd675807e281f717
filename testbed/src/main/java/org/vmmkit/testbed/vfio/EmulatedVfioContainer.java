package org.vmmkit.testbed.vfio;

import org.vmmkit.core.vfio.DirtyPageCapability;
import org.vmmkit.core.vfio.DmaMapping;
import org.vmmkit.core.vfio.IommuFaultException;
import org.vmmkit.core.vfio.VfioContainer;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.locks.ReentrantReadWriteLock;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * An in-process VFIO container with the type1v2 IOMMU's semantics, for hosts without VFIO hardware:
 * the same argument checks and errno values as {@code drivers/vfio/vfio_iommu_type1.c} for MAP_DMA,
 * UNMAP_DMA (no splitting of mappings; dirty bitmap on unmap) and DIRTY_PAGES (START and STOP are
 * idempotent; GET_BITMAP only at the smallest page size, only over a range that starts and ends at
 * a range that bisects no mapping, and it clears what it returns). Its device side, {@link #dmaWrite} and
 * {@link #dmaRead}, is what an emulated device's DMA engine calls; a write marks the dirty bitmap after
 * the data is in place, so a sync never clears a bit for data not yet written.
 */
public final class EmulatedVfioContainer implements VfioContainer {

    /** How the emulated IOMMU tracks device writes. */
    public enum Tracking {
        /** Every page a device writes is marked (a vendor driver that pins, or an IOMMU with dirty bits). */
        PRECISE,
        /** The capability exists but every mapped page is reported dirty (type1 with non-pinning groups). */
        ALL_DIRTY,
        /** No migration capability: DIRTY_PAGES fails with ENOTTY, as on a kernel without it. */
        NONE
    }

    /** type1's DIRTY_BITMAP_PAGES_MAX is INT_MAX pages; its byte size is what the capability reports. */
    static final long MAX_BITMAP_PAGES = Integer.MAX_VALUE;
    static final long MAX_BITMAP_BYTES = ((MAX_BITMAP_PAGES + 63) / 64) * 8;

    private final String name;
    private final long pageSize;
    private final long maxBitmapBytes;
    private final Tracking tracking;
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final TreeMap<Long, Mapping> mappings = new TreeMap<>();
    private volatile boolean trackingOn;

    private static final class Mapping {
        final DmaMapping dma;
        /** Replaced only under the write lock (a fresh, zeroed array at START), read under either lock. */
        AtomicLongArray dirty;

        Mapping(DmaMapping dma, long pageSize) {
            this.dma = dma;
            this.dirty = new AtomicLongArray((int) ((dma.size() / pageSize + 63) / 64));
        }
    }

    public EmulatedVfioContainer(String name, long pageSize, Tracking tracking) {
        this(name, pageSize, tracking, MAX_BITMAP_BYTES);
    }

    /** With a smaller maximum bitmap than type1's 256 MiB, to exercise callers that fetch in pieces. */
    public EmulatedVfioContainer(String name, long pageSize, Tracking tracking, long maxBitmapBytes) {
        if (Long.bitCount(pageSize) != 1 || pageSize < 4096) throw new IllegalArgumentException("IOMMU page size " + pageSize);
        if (maxBitmapBytes < 8 || maxBitmapBytes > MAX_BITMAP_BYTES) throw new IllegalArgumentException("max bitmap " + maxBitmapBytes);
        this.maxBitmapBytes = maxBitmapBytes;
        this.name = name;
        this.pageSize = pageSize;
        this.tracking = tracking;
    }

    @Override
    public String name() {
        return name;
    }

    public long pageSize() {
        return pageSize;
    }

    @Override
    public Optional<DirtyPageCapability> dirtyPageCapability() {
        return tracking == Tracking.NONE ? Optional.empty() : Optional.of(new DirtyPageCapability(pageSize, maxBitmapBytes));
    }

    private SysException error(String call, int errno) {
        return new SysException("ioctl(" + call + ")", errno, name);
    }

    @Override
    public void mapDma(long iova, MemorySegment host, boolean deviceReads, boolean deviceWrites) {
        long size = host.byteSize();
        if (size == 0 || ((size | iova | host.address()) & (pageSize - 1)) != 0 || !(deviceReads || deviceWrites)) {
            throw error("VFIO_IOMMU_MAP_DMA", Errno.EINVAL);
        }
        if (iova + size - 1 < iova) throw error("VFIO_IOMMU_MAP_DMA", Errno.EINVAL);
        lock.writeLock().lock();
        try {
            var below = mappings.floorEntry(iova + size - 1);
            if (below != null && below.getValue().dma.end() > iova) throw error("VFIO_IOMMU_MAP_DMA", Errno.EEXIST);
            mappings.put(iova, new Mapping(new DmaMapping(iova, host, deviceReads, deviceWrites), pageSize));
        } finally {
            lock.writeLock().unlock();
        }
    }

    @Override
    public long unmapDma(long iova, long size) {
        return unmap(iova, size, 0, null);
    }

    @Override
    public long unmapDmaAndGetDirty(long iova, long size, long pageSize, MemorySegment bitmap) {
        return unmap(iova, size, pageSize, bitmap);
    }

    private long unmap(long iova, long size, long bitmapPageSize, MemorySegment bitmap) {
        String call = "VFIO_IOMMU_UNMAP_DMA";
        if (((iova | size) & (pageSize - 1)) != 0 || size == 0) throw error(call, Errno.EINVAL);
        if (bitmap != null) {
            if (tracking == Tracking.NONE || !trackingOn || bitmapPageSize != pageSize) throw error(call, Errno.EINVAL);
            checkBitmapSize(call, size, bitmap);
        }
        lock.writeLock().lock();
        try {
            // type1v2: a mapping that straddles either end of the range may not be split.
            var first = mappings.lowerEntry(iova);
            if (first != null && first.getValue().dma.end() > iova) throw error(call, Errno.EINVAL);
            var last = mappings.lowerEntry(iova + size);
            if (last != null && last.getValue().dma.end() > iova + size) throw error(call, Errno.EINVAL);
            if (bitmap != null) bitmap.fill((byte) 0);
            long unmapped = 0;
            for (Mapping m : new ArrayList<>(mappings.subMap(iova, true, iova + size, false).values())) {
                if (bitmap != null) copyAndClear(m, iova, bitmap);
                mappings.remove(m.dma.iova());
                unmapped += m.dma.size();
            }
            return unmapped;
        } finally {
            lock.writeLock().unlock();
        }
    }

    private void checkBitmapSize(String call, long size, MemorySegment bitmap) {
        long pages = size / pageSize;
        if (pages > Math.min(MAX_BITMAP_PAGES, maxBitmapBytes * 8) || bitmap.byteSize() < ((pages + 63) / 64) * 8) {
            throw error(call, Errno.EINVAL);
        }
    }

    @Override
    public void startDirtyTracking() {
        if (tracking == Tracking.NONE) throw error("VFIO_IOMMU_DIRTY_PAGES", Errno.ENOTTY);
        lock.writeLock().lock();
        try {
            if (!trackingOn) {
                // A fresh array is zeroed by the allocator: clearing the old one word by word took 1.7 ms for 2 GiB
                // warm and 7 ms cold (a migration's first START), in the setup the source's migration waits for.
                for (Mapping m : mappings.values()) m.dirty = new AtomicLongArray(m.dirty.length());
                trackingOn = true;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }

    @Override
    public void stopDirtyTracking() {
        if (tracking == Tracking.NONE) throw error("VFIO_IOMMU_DIRTY_PAGES", Errno.ENOTTY);
        trackingOn = false;
    }

    public boolean dirtyTrackingOn() {
        return trackingOn;
    }

    @Override
    public void getDirtyBitmap(long iova, long size, long bitmapPageSize, MemorySegment bitmap) {
        String call = "VFIO_IOMMU_DIRTY_PAGES";
        if (tracking == Tracking.NONE) throw error(call, Errno.ENOTTY);
        checkBitmapSize(call, size, bitmap);
        if (bitmapPageSize != pageSize || (iova & (pageSize - 1)) != 0 || size == 0 || (size & (pageSize - 1)) != 0) {
            throw error(call, Errno.EINVAL);
        }
        lock.readLock().lock();
        try {
            if (!trackingOn) throw error(call, Errno.EINVAL);
            // type1: the range may cover several mappings and gaps, but may not bisect a mapping.
            var atStart = mappings.floorEntry(iova);
            if (atStart != null && atStart.getValue().dma.end() > iova && atStart.getKey() != iova) throw error(call, Errno.EINVAL);
            var atEnd = mappings.floorEntry(iova + size - 1);
            if (atEnd != null && atEnd.getValue().dma.end() > iova + size - 1 && atEnd.getValue().dma.end() != iova + size) {
                throw error(call, Errno.EINVAL);
            }
            bitmap.asSlice(0, ((size / pageSize + 63) / 64) * 8).fill((byte) 0);
            for (Mapping m : mappings.subMap(iova, true, iova + size, false).values()) copyAndClear(m, iova, bitmap);
        } finally {
            lock.readLock().unlock();
        }
    }

    /** ORs the mapping's dirty bits into {@code bitmap} (whose bit 0 is {@code base}) and clears them. */
    private void copyAndClear(Mapping m, long base, MemorySegment bitmap) {
        long firstBit = (m.dma.iova() - base) / pageSize;
        long pages = m.dma.size() / pageSize;
        for (int w = 0; w < m.dirty.length(); w++) {
            long bits = tracking == Tracking.ALL_DIRTY ? allBits(w, pages) : m.dirty.getAndSet(w, 0);
            if (bits == 0) continue;
            long bit = firstBit + 64L * w;
            if ((bit & 63) == 0) {
                long at = (bit >>> 6) * 8;
                bitmap.set(JAVA_LONG, at, bitmap.get(JAVA_LONG, at) | bits);
            } else {
                for (long b = bits; b != 0; b &= b - 1) {
                    long page = bit + Long.numberOfTrailingZeros(b);
                    long at = (page >>> 6) * 8;
                    bitmap.set(JAVA_LONG, at, bitmap.get(JAVA_LONG, at) | (1L << (page & 63)));
                }
            }
        }
    }

    private static long allBits(int word, long pages) {
        long left = pages - 64L * word;
        return left >= 64 ? -1L : (1L << left) - 1;
    }

    /** The device side: DMA {@code src} into guest memory at {@code iova}; marks the pages dirty after. */
    public void dmaWrite(long iova, MemorySegment src) {
        dma(iova, src, true);
    }

    /** The device side: DMA guest memory at {@code iova} into {@code dst}. */
    public void dmaRead(long iova, MemorySegment dst) {
        dma(iova, dst, false);
    }

    /** One DMA, split at mapping boundaries; each piece needs the mapping's permission for its direction. */
    private void dma(long iova, MemorySegment buffer, boolean write) {
        String access = write ? "write" : "read";
        lock.readLock().lock();
        try {
            long done = 0, length = buffer.byteSize();
            while (done < length) {
                Mapping m = translate(iova + done, access);
                if (write ? !m.dma.deviceWrites() : !m.dma.deviceReads()) {
                    throw new IommuFaultException(name, access, iova + done, length - done, write ? "mapped read-only" : "mapped write-only");
                }
                long offset = iova + done - m.dma.iova();
                long n = Math.min(length - done, m.dma.size() - offset);
                if (write) {
                    MemorySegment.copy(buffer, done, m.dma.host(), offset, n);
                    if (trackingOn && tracking == Tracking.PRECISE) {
                        for (long page = offset / pageSize; page <= (offset + n - 1) / pageSize; page++) {
                            m.dirty.getAndAccumulate((int) (page >>> 6), 1L << (page & 63), (a, b) -> a | b);
                        }
                    }
                } else {
                    MemorySegment.copy(m.dma.host(), offset, buffer, done, n);
                }
                done += n;
            }
        } finally {
            lock.readLock().unlock();
        }
    }

    private Mapping translate(long iova, String access) {
        var e = mappings.floorEntry(iova);
        if (e == null || e.getValue().dma.end() <= iova) throw new IommuFaultException(name, access, iova, 0, "no mapping");
        return e.getValue();
    }

    @Override
    public List<DmaMapping> mappings() {
        lock.readLock().lock();
        try {
            List<DmaMapping> out = new ArrayList<>();
            for (Mapping m : mappings.values()) out.add(m.dma);
            return out;
        } finally {
            lock.readLock().unlock();
        }
    }

    @Override
    public void close() {
        lock.writeLock().lock();
        try {
            mappings.clear();
            trackingOn = false;
        } finally {
            lock.writeLock().unlock();
        }
    }
}
