package org.vmmkit.core.vfio.user;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.DirtyPageCapability;
import org.vmmkit.core.vfio.DmaMapping;
import org.vmmkit.core.vfio.VfioContainer;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A vfio-user device's DMA space as a {@link VfioContainer}, so that what drives a kernel container (the
 * dirty tracker's {@code VfioIommuDirtyPages}) drives it unchanged. vfio-user has no container: each server
 * has its own DMA space, so there is one of these per device ({@link VfioUserDevice#dmaSpace}).
 *
 * <ul>
 * <li>{@link #mapDma}: VFIO_USER_DMA_MAP. Host memory inside a guest RAM region is passed with the region's
 *     memfd (SCM_RIGHTS) and its offset in it, so the server can map guest RAM and access it directly (and
 *     track what it writes); other host memory is mapped without an fd, reachable only through the server's
 *     DMA_READ/DMA_WRITE messages, which the client serves against these mappings.</li>
 * <li>{@link #unmapDma}: VFIO_USER_DMA_UNMAP, one whole mapping at a time, as the protocol requires.</li>
 * <li>Dirty pages: DIRTY_PAGES START/STOP, and GET_BITMAP once per mapping that has an fd (the server reports
 *     only those, and only a range that is exactly one mapping); the pages the server wrote by DMA_WRITE
 *     messages, which only the client saw, are ORed in. The capability is the server's migration page size,
 *     present when VERSION announced migration. A migration v2 server ({@link VfioUserDevice#migrationProtocol})
 *     has no DIRTY_PAGES: there the same steps are DEVICE_FEATURE's DMA_LOGGING_START/STOP and one
 *     DMA_LOGGING_REPORT per mapping with an fd, with the same rules.</li>
 * </ul>
 *
 * <p>Mappings are kept by the container (the {@link DmaMapping}s) and handed to the connection, which serves
 * the server's DMA against them. Thread-safe.
 */
public final class VfioUserContainer implements VfioContainer {
    /** The largest bitmap one GET_BITMAP reply may carry (the reply stays within the client's 1 MiB). */
    static final long MAX_BITMAP_BYTES = VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE - 64;

    private final VfioUserDevice device;
    private final GuestMemory memory;
    private final Optional<DirtyPageCapability> capability;
    private final List<DmaRegion> regions = new ArrayList<>();
    private final Arena arena = Arena.ofShared();
    private MemorySegment scratch = MemorySegment.NULL;
    private boolean tracking;

    VfioUserContainer(VfioUserDevice device, GuestMemory memory) {
        this.device = device;
        this.memory = memory;
        this.capability = device.capabilities().migrationPgsize().stream()
                .mapToObj(pg -> new DirtyPageCapability(pg, MAX_BITMAP_BYTES)).findFirst();
    }

    GuestMemory memory() {
        return memory;
    }

    @Override
    public String name() {
        return "vfio-user-dma(" + device.name() + ")";
    }

    @Override
    public Optional<DirtyPageCapability> dirtyPageCapability() {
        return capability;
    }

    private long pageSize() {
        return capability.map(DirtyPageCapability::pageSize).orElse(GuestMemory.PAGE_SIZE);
    }

    /**
     * VFIO_USER_DMA_MAP of {@code host} at {@code iova}, with the memfd of the guest RAM region holding it (if
     * any). The range may not overlap a mapping (the server refuses that too, with EINVAL).
     */
    @Override
    public synchronized void mapDma(long iova, MemorySegment host, boolean deviceReads, boolean deviceWrites) {
        for (DmaRegion r : regions) {
            if (iova < r.end() && r.iova() < iova + host.byteSize()) {
                throw new SysException("VFIO_USER_DMA_MAP(iova 0x" + Long.toHexString(iova)
                        + ", " + host.byteSize() + " bytes)", Errno.EEXIST, device.toString(), "overlaps " + r + "; not sent");
            }
        }
        GuestRegion backing = null;
        if (memory != null) {
            for (GuestRegion g : memory.regions()) {
                long at = host.address() - g.host().address();
                if (at >= 0 && host.byteSize() <= g.size() && at <= g.size() - host.byteSize()) backing = g;
            }
        }
        long fdOffset = backing == null ? 0 : host.address() - backing.host().address();
        device.dmaMap(iova, host.byteSize(), backing == null ? null : backing.backing(), fdOffset, deviceReads, deviceWrites);
        DmaRegion region = new DmaRegion(iova, host, deviceReads, deviceWrites, backing == null ? null : backing.backing(), fdOffset, pageSize());
        regions.add(region);
        regions.sort((a, b) -> Long.compareUnsigned(a.iova(), b.iova()));
        long bytes = ((region.pages() + 63) >>> 6) << 3;
        if (scratch.byteSize() < bytes) scratch = arena.allocate(bytes, 8);
        publish();
    }

    private void publish() {
        device.connection().dmaRegions(regions.toArray(new DmaRegion[0]));
    }

    /** VFIO_USER_DMA_UNMAP of every mapping in {@code [iova, iova + size)}, which must not split one. */
    @Override
    public synchronized long unmapDma(long iova, long size) {
        long done = 0;
        for (DmaRegion r : inRange(iova, size, "VFIO_USER_DMA_UNMAP")) {
            device.dmaUnmap(r.iova(), r.size());
            regions.remove(r);
            publish();
            done += r.size();
        }
        return done;
    }

    /**
     * Reads the dirty bits of the range ({@link #getDirtyBitmap}), then unmaps it ({@link #unmapDma}). Unlike the
     * kernel's GET_DIRTY_BITMAP unmap flag the two steps are not one: a page the server writes between them is
     * not reported, so an unmap during migration belongs after the device has stopped (010b), as the
     * coordinator's stop-and-copy does.
     */
    @Override
    public synchronized long unmapDmaAndGetDirty(long iova, long size, long pageSize, MemorySegment bitmap) {
        getDirtyBitmap(iova, size, pageSize, bitmap);
        return unmapDma(iova, size);
    }

    @Override
    public synchronized void startDirtyTracking() {
        if (capability.isEmpty()) throw new SysException("VFIO_USER_DIRTY_PAGES(START)", Errno.EOPNOTSUPP, device.toString(), "the server announced no migration capability");
        if (deviceLogs()) {
            List<DmaRegion> withFd = regions.stream().filter(r -> r.fd() != null).toList();
            device.dmaLoggingStart(pageSize(), withFd.stream().mapToLong(DmaRegion::iova).toArray(), withFd.stream().mapToLong(DmaRegion::size).toArray());
        } else {
            device.dirtyPages(VfioAbi.IOMMU_DIRTY_PAGES_FLAG_START);
        }
        synchronized (device.connection().dmaLock()) {
            for (DmaRegion r : regions) r.clearWritten();
        }
        tracking = true;
    }

    @Override
    public synchronized void stopDirtyTracking() {
        if (!tracking) return;
        tracking = false;
        if (deviceLogs()) device.dmaLoggingStop();
        else device.dirtyPages(VfioAbi.IOMMU_DIRTY_PAGES_FLAG_STOP);
    }

    /** Whether the server's dirty pages come from DMA logging (migration v2) rather than DIRTY_PAGES (v1). */
    private boolean deviceLogs() {
        return device.migrationProtocol() == VfioUserDevice.MigrationProtocol.V2_FEATURE;
    }

    /**
     * The dirty bits of {@code [iova, iova + size)}: per mapping in it, the server's (GET_BITMAP, for a mapping
     * with an fd) ORed with the pages it wrote through DMA_WRITE messages; bit {@code i} of {@code bitmap} is
     * page {@code iova + i * pageSize}. {@code bitmap} is overwritten. Allocates nothing.
     */
    @Override
    public synchronized void getDirtyBitmap(long iova, long size, long pageSize, MemorySegment bitmap) {
        if (!tracking) throw new SysException("VFIO_USER_DIRTY_PAGES(GET_BITMAP)", Errno.EINVAL, device.toString(), "dirty tracking is not started");
        if (pageSize != pageSize()) {
            throw new SysException("VFIO_USER_DIRTY_PAGES(GET_BITMAP)", Errno.EINVAL, device.toString(), "page size " + pageSize + ", the server's is " + pageSize());
        }
        long words = ((size / pageSize + 63) >>> 6);
        if (bitmap.byteSize() < words << 3) throw new IllegalArgumentException("a " + bitmap.byteSize() + "-byte bitmap for " + size / pageSize + " pages");
        bitmap.asSlice(0, words << 3).fill((byte) 0);
        for (int i = 0; i < regions.size(); i++) {
            DmaRegion r = regions.get(i);
            if (r.end() <= iova || r.iova() >= iova + size) continue;
            if (r.iova() < iova || r.end() > iova + size) {
                throw new SysException("VFIO_USER_DIRTY_PAGES(GET_BITMAP, iova 0x" + Long.toHexString(iova) + ", " + size + " bytes)", Errno.EINVAL,
                        device.toString(), "the range splits " + r);
            }
            long firstBit = (r.iova() - iova) / pageSize;
            if (r.fd() != null) {
                long bytes = ((r.pages() + 63) >>> 6) << 3;
                if (deviceLogs()) device.dmaLoggingReport(r.iova(), r.size(), pageSize, scratch, false);
                else device.dirtyBitmap(r.iova(), r.size(), pageSize, scratch);
                for (long w = 0; w < bytes >>> 3; w++) {
                    long v = scratch.get(JAVA_LONG, w << 3);
                    if (v != 0) DmaRegion.orWord(bitmap, firstBit + (w << 6), v);
                }
            }
            synchronized (device.connection().dmaLock()) {
                r.drainWritten(bitmap, firstBit);
            }
        }
    }

    private List<DmaRegion> inRange(long iova, long size, String op) {
        List<DmaRegion> out = new ArrayList<>();
        for (DmaRegion r : regions) {
            if (r.end() <= iova || r.iova() >= iova + size) continue;
            if (r.iova() < iova || r.end() > iova + size) {
                throw new SysException(op + "(iova 0x" + Long.toHexString(iova) + ", " + size + " bytes)", Errno.EINVAL, device.toString(),
                        "the range splits " + r + " (vfio-user unmaps whole mappings)");
            }
            out.add(r);
        }
        return out;
    }

    @Override
    public synchronized List<DmaMapping> mappings() {
        List<DmaMapping> out = new ArrayList<>();
        for (DmaRegion r : regions) out.add(new DmaMapping(r.iova(), r.host(), r.readable(), r.writable()));
        return out;
    }

    /** Stops tracking and unmaps everything, as far as the server still answers; the device stays open. */
    @Override
    public synchronized void close() {
        try {
            if (tracking) stopDirtyTracking();
            for (DmaRegion r : new ArrayList<>(regions)) {
                device.dmaUnmap(r.iova(), r.size());
                regions.remove(r);
            }
        } catch (SysException e) {
            regions.clear(); // the server has gone: nothing is mapped there any more
        } finally {
            publish();
        }
    }
}
