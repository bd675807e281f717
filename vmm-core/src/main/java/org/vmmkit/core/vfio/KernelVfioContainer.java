package org.vmmkit.core.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The kernel's VFIO container ({@code /dev/vfio/vfio}) with the type1v2 IOMMU: real ioctls. Groups are
 * attached (issue #4's {@code VfioGroup}) before {@link #setIommu()}; the DMA and dirty-page calls need it.
 */
public final class KernelVfioContainer implements VfioContainer {
    public static final String PATH = "/dev/vfio/vfio";

    private final Fd fd;
    private final List<DmaMapping> mappings = new ArrayList<>();
    private Optional<DirtyPageCapability> capability = Optional.empty();

    private KernelVfioContainer(Fd fd) {
        this.fd = fd;
    }

    /**
     * Opens the container and checks the API version and type1v2 support. Where the host has no VFIO the
     * error says so: {@code open(O_RDWR) on /dev/vfio/vfio failed: ENOENT ...}.
     */
    public static KernelVfioContainer open() {
        Fd fd;
        try {
            fd = Libc.open(PATH, Libc.O_RDWR);
        } catch (SysException e) {
            if (e.errno() == Errno.ENOENT) {
                throw new SysException("open(O_RDWR) (no VFIO on this host: load vfio and vfio_iommu_type1)",
                        e.errno(), PATH);
            }
            throw e;
        }
        try {
            int version = fd.ioctl(VfioAbi.VFIO_GET_API_VERSION, 0L);
            if (version != VfioAbi.API_VERSION) {
                throw new IllegalStateException(PATH + " speaks VFIO API " + version + ", vmmkit needs " + VfioAbi.API_VERSION);
            }
            if (fd.ioctl(VfioAbi.VFIO_CHECK_EXTENSION, VfioAbi.TYPE1v2_IOMMU) <= 0) {
                throw new IllegalStateException(PATH + " does not support the type1v2 IOMMU");
            }
            return new KernelVfioContainer(fd);
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    public Fd fd() {
        return fd;
    }

    /** {@code VFIO_SET_IOMMU(type1v2)}, after a group joined; then reads the migration capability. */
    public void setIommu() {
        fd.ioctl(VfioAbi.VFIO_SET_IOMMU, VfioAbi.TYPE1v2_IOMMU);
        capability = readMigrationCapability();
    }

    /** {@code VFIO_IOMMU_GET_INFO}, re-asked with a larger {@code argsz} until the capability chain fits. */
    private Optional<DirtyPageCapability> readMigrationCapability() {
        try (Arena arena = Arena.ofConfined()) {
            long argsz = VfioAbi.IOMMU_TYPE1_INFO.byteSize();
            while (true) {
                MemorySegment info = arena.allocate(argsz, 8);
                info.set(JAVA_INT, 0, (int) argsz);
                fd.ioctl(VfioAbi.VFIO_IOMMU_GET_INFO, info);
                int wanted = info.get(JAVA_INT, 0);
                if (wanted > argsz) {
                    argsz = wanted;
                    continue;
                }
                return parseMigrationCapability(info);
            }
        }
    }

    /** Walks the capability chain of a {@code vfio_iommu_type1_info} for the migration capability. */
    static Optional<DirtyPageCapability> parseMigrationCapability(MemorySegment info) {
        int flags = info.get(JAVA_INT, 4);
        if ((flags & VfioAbi.IOMMU_INFO_CAPS) == 0) return Optional.empty();
        long next = Integer.toUnsignedLong(info.get(JAVA_INT, VfioAbi.IOMMU_TYPE1_INFO.byteOffset(
                java.lang.foreign.MemoryLayout.PathElement.groupElement("cap_offset"))));
        int hops = 0;
        while (next != 0 && hops++ < 64) {
            if (next + VfioAbi.INFO_CAP_HEADER.byteSize() > info.byteSize()) {
                throw new IllegalStateException("VFIO_IOMMU_GET_INFO capability at offset " + next + " lies outside argsz "
                        + info.byteSize());
            }
            int id = Short.toUnsignedInt(info.get(JAVA_SHORT, next));
            if (id == VfioAbi.IOMMU_TYPE1_INFO_CAP_MIGRATION) {
                MemorySegment cap = info.asSlice(next, VfioAbi.IOMMU_TYPE1_INFO_CAP_MIGRATION_LAYOUT.byteSize());
                return Optional.of(new DirtyPageCapability(cap.get(JAVA_LONG, 16), cap.get(JAVA_LONG, 24)));
            }
            next = Integer.toUnsignedLong(info.get(JAVA_INT, next + 4));
        }
        return Optional.empty();
    }

    @Override
    public String name() {
        return fd.describe();
    }

    @Override
    public Optional<DirtyPageCapability> dirtyPageCapability() {
        return capability;
    }

    @Override
    public synchronized void mapDma(long iova, MemorySegment host, boolean deviceReads, boolean deviceWrites) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment map = arena.allocate(VfioAbi.DMA_MAP);
            map.set(JAVA_INT, 0, (int) VfioAbi.DMA_MAP.byteSize());
            map.set(JAVA_INT, 4, (deviceReads ? VfioAbi.DMA_MAP_FLAG_READ : 0) | (deviceWrites ? VfioAbi.DMA_MAP_FLAG_WRITE : 0));
            map.set(JAVA_LONG, 8, host.address());
            map.set(JAVA_LONG, 16, iova);
            map.set(JAVA_LONG, 24, host.byteSize());
            fd.ioctl(VfioAbi.VFIO_IOMMU_MAP_DMA, map);
        }
        mappings.add(new DmaMapping(iova, host, deviceReads, deviceWrites));
        mappings.sort(Comparator.comparingLong(DmaMapping::iova));
    }

    @Override
    public long unmapDma(long iova, long size) {
        return unmap(iova, size, 0, null);
    }

    @Override
    public long unmapDmaAndGetDirty(long iova, long size, long pageSize, MemorySegment bitmap) {
        return unmap(iova, size, pageSize, bitmap);
    }

    private synchronized long unmap(long iova, long size, long pageSize, MemorySegment bitmap) {
        try (Arena arena = Arena.ofConfined()) {
            long argsz = VfioAbi.DMA_UNMAP.byteSize() + (bitmap == null ? 0 : VfioAbi.BITMAP.byteSize());
            MemorySegment unmap = arena.allocate(argsz, 8);
            unmap.set(JAVA_INT, 0, (int) argsz);
            unmap.set(JAVA_INT, 4, bitmap == null ? 0 : VfioAbi.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP);
            unmap.set(JAVA_LONG, 8, iova);
            unmap.set(JAVA_LONG, 16, size);
            if (bitmap != null) fillBitmap(unmap.asSlice(VfioAbi.DMA_UNMAP.byteSize()), pageSize, bitmap);
            fd.ioctl(VfioAbi.VFIO_IOMMU_UNMAP_DMA, unmap);
            mappings.removeIf(m -> m.iova() >= iova && m.end() <= iova + size);
            return unmap.get(JAVA_LONG, 16); // the kernel writes back the size it unmapped
        }
    }

    private static void fillBitmap(MemorySegment vfioBitmap, long pageSize, MemorySegment bitmap) {
        vfioBitmap.set(JAVA_LONG, 0, pageSize);
        vfioBitmap.set(JAVA_LONG, 8, bitmap.byteSize());
        vfioBitmap.set(JAVA_LONG, 16, bitmap.address());
    }

    private void dirtyPages(int flag) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment arg = arena.allocate(VfioAbi.DIRTY_BITMAP);
            arg.set(JAVA_INT, 0, (int) VfioAbi.DIRTY_BITMAP.byteSize());
            arg.set(JAVA_INT, 4, flag);
            fd.ioctl(VfioAbi.VFIO_IOMMU_DIRTY_PAGES, arg);
        }
    }

    @Override
    public void startDirtyTracking() {
        dirtyPages(VfioAbi.IOMMU_DIRTY_PAGES_FLAG_START);
    }

    @Override
    public void stopDirtyTracking() {
        dirtyPages(VfioAbi.IOMMU_DIRTY_PAGES_FLAG_STOP);
    }

    @Override
    public void getDirtyBitmap(long iova, long size, long pageSize, MemorySegment bitmap) {
        try (Arena arena = Arena.ofConfined()) {
            long argsz = VfioAbi.DIRTY_BITMAP.byteSize() + VfioAbi.DIRTY_BITMAP_GET.byteSize();
            MemorySegment arg = arena.allocate(argsz, 8);
            arg.set(JAVA_INT, 0, (int) argsz);
            arg.set(JAVA_INT, 4, VfioAbi.IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
            MemorySegment get = arg.asSlice(VfioAbi.DIRTY_BITMAP.byteSize());
            get.set(JAVA_LONG, 0, iova);
            get.set(JAVA_LONG, 8, size);
            fillBitmap(get.asSlice(16), pageSize, bitmap);
            fd.ioctl(VfioAbi.VFIO_IOMMU_DIRTY_PAGES, arg);
        }
    }

    @Override
    public synchronized List<DmaMapping> mappings() {
        return List.copyOf(mappings);
    }

    @Override
    public void close() {
        fd.close();
    }
}
