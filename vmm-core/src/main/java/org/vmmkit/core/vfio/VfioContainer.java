package org.vmmkit.core.vfio;

import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Optional;

/**
 * A VFIO container with a type1 IOMMU: DMA mappings and the IOMMU's dirty-page tracking
 * ({@code VFIO_IOMMU_DIRTY_PAGES}). Implemented by the kernel ({@link KernelVfioContainer}) and by the
 * in-process emulation ({@code org.vmmkit.testbed.vfio.EmulatedVfioContainer}, module vmm-testbed); nothing
 * above this interface knows which.
 * Failures are {@link org.vmmkit.core.sys.SysException}s with the errno the kernel would return.
 */
public interface VfioContainer extends AutoCloseable {

    /** What errors name: {@code /dev/vfio/vfio (fd 7)} or {@code emulated-container}. */
    String name();

    /** The dirty-tracking capability; empty when the IOMMU cannot track (then every page counts dirty). */
    Optional<DirtyPageCapability> dirtyPageCapability();

    /** {@code VFIO_IOMMU_MAP_DMA}: the device sees {@code host} at {@code iova}. */
    void mapDma(long iova, MemorySegment host, boolean deviceReads, boolean deviceWrites);

    /** {@code VFIO_IOMMU_UNMAP_DMA}; the range may not split a mapping. Returns the bytes unmapped. */
    long unmapDma(long iova, long size);

    /**
     * {@code VFIO_IOMMU_UNMAP_DMA} with {@code VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP}: unmaps and reports the
     * pages the device dirtied in the range since the last report, so unmapping during migration loses
     * nothing. Bit {@code i} of {@code bitmap} (64-bit little-endian words) is page {@code iova + i * pageSize}.
     */
    long unmapDmaAndGetDirty(long iova, long size, long pageSize, MemorySegment bitmap);

    /** {@code VFIO_IOMMU_DIRTY_PAGES_FLAG_START}. */
    void startDirtyTracking();

    /** {@code VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP}. */
    void stopDirtyTracking();

    /**
     * {@code VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP}: writes the dirty bits of {@code [iova, iova + size)}
     * into {@code bitmap} and clears them in the IOMMU. The range must begin at a mapping's start and end
     * at a mapping's end, and {@code pageSize} must be the capability's page size.
     */
    void getDirtyBitmap(long iova, long size, long pageSize, MemorySegment bitmap);

    /** The current DMA mappings, by IOVA. */
    List<DmaMapping> mappings();

    @Override
    void close();
}
