package org.vmmkit.core.vfio;

/**
 * The type1 IOMMU's migration capability ({@code VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION}): the page sizes a
 * dirty bitmap may use and the largest bitmap one {@code VFIO_IOMMU_DIRTY_PAGES} call may fill.
 */
public record DirtyPageCapability(long pageSizeBitmap, long maxBitmapBytes) {
    public DirtyPageCapability {
        if (pageSizeBitmap == 0 || maxBitmapBytes <= 0) {
            throw new IllegalArgumentException("a migration capability needs a page size and a bitmap size");
        }
    }

    /** The kernel accepts only its smallest supported page size for dirty bitmaps. */
    public long pageSize() {
        return Long.lowestOneBit(pageSizeBitmap);
    }

    /** The largest IOVA range one call can report: 8 pages per bitmap byte. */
    public long maxRangeBytes() {
        long pages = maxBitmapBytes * 8;
        return pages > Long.MAX_VALUE / pageSize() ? Long.MAX_VALUE : pages * pageSize();
    }
}
