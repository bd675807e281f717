package org.vmmkit.core.vfio;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.sys.HeaderProbe;
import org.vmmkit.core.sys.Ioctl;
import org.vmmkit.core.vfio.abi.VfioAbi;

class VfioAbiTest {

    @Test
    void everyVfioIommuStructMatchesTheHeader() {
        new HeaderProbe("linux/vfio.h")
                .expectLayout(VfioAbi.INFO_CAP_HEADER, "struct vfio_info_cap_header")
                .expectLayout(VfioAbi.IOMMU_TYPE1_INFO, "struct vfio_iommu_type1_info")
                .expectLayout(VfioAbi.IOMMU_TYPE1_INFO_CAP_MIGRATION_LAYOUT, "struct vfio_iommu_type1_info_cap_migration")
                .expectLayout(VfioAbi.DMA_MAP, "struct vfio_iommu_type1_dma_map")
                .expectLayout(VfioAbi.BITMAP, "struct vfio_bitmap")
                .expectLayout(VfioAbi.DMA_UNMAP, "struct vfio_iommu_type1_dma_unmap")
                .expectLayout(VfioAbi.DIRTY_BITMAP, "struct vfio_iommu_type1_dirty_bitmap")
                .expectLayout(VfioAbi.DIRTY_BITMAP_GET, "struct vfio_iommu_type1_dirty_bitmap_get")
                .expectLayout(VfioAbi.GROUP_STATUS, "struct vfio_group_status")
                .expectLayout(VfioAbi.DEVICE_INFO, "struct vfio_device_info")
                .expectLayout(VfioAbi.REGION_INFO, "struct vfio_region_info")
                .expectLayout(VfioAbi.REGION_INFO_CAP_TYPE_LAYOUT, "struct vfio_region_info_cap_type")
                .expectLayout(VfioAbi.REGION_SPARSE_MMAP_AREA, "struct vfio_region_sparse_mmap_area")
                .expectLayout(VfioAbi.REGION_INFO_CAP_SPARSE_MMAP_LAYOUT, "struct vfio_region_info_cap_sparse_mmap")
                .verify();
    }

    @Test
    void everyVfioIommuIoctlAndFlagMatchesTheHeader() {
        HeaderProbe probe = new HeaderProbe("linux/vfio.h");
        for (Ioctl ioctl : VfioAbi.ioctls()) probe.expectIoctl(ioctl);
        probe.expectValue("VFIO_API_VERSION", VfioAbi.API_VERSION)
                .expectValue("VFIO_TYPE1_IOMMU", VfioAbi.TYPE1_IOMMU)
                .expectValue("VFIO_TYPE1v2_IOMMU", VfioAbi.TYPE1v2_IOMMU)
                .expectValue("VFIO_IOMMU_INFO_PGSIZES", VfioAbi.IOMMU_INFO_PGSIZES)
                .expectValue("VFIO_IOMMU_INFO_CAPS", VfioAbi.IOMMU_INFO_CAPS)
                .expectValue("VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE", VfioAbi.IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
                .expectValue("VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION", VfioAbi.IOMMU_TYPE1_INFO_CAP_MIGRATION)
                .expectValue("VFIO_DMA_MAP_FLAG_READ", VfioAbi.DMA_MAP_FLAG_READ)
                .expectValue("VFIO_DMA_MAP_FLAG_WRITE", VfioAbi.DMA_MAP_FLAG_WRITE)
                .expectValue("VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP", VfioAbi.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_START", VfioAbi.IOMMU_DIRTY_PAGES_FLAG_START)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP", VfioAbi.IOMMU_DIRTY_PAGES_FLAG_STOP)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP", VfioAbi.IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
                .expectValue("VFIO_GROUP_FLAGS_VIABLE", VfioAbi.GROUP_FLAGS_VIABLE)
                .expectValue("VFIO_GROUP_FLAGS_CONTAINER_SET", VfioAbi.GROUP_FLAGS_CONTAINER_SET)
                .expectValue("VFIO_DEVICE_FLAGS_RESET", VfioAbi.DEVICE_FLAGS_RESET)
                .expectValue("VFIO_DEVICE_FLAGS_PCI", VfioAbi.DEVICE_FLAGS_PCI)
                .expectValue("VFIO_REGION_INFO_FLAG_READ", VfioAbi.REGION_INFO_FLAG_READ)
                .expectValue("VFIO_REGION_INFO_FLAG_WRITE", VfioAbi.REGION_INFO_FLAG_WRITE)
                .expectValue("VFIO_REGION_INFO_FLAG_MMAP", VfioAbi.REGION_INFO_FLAG_MMAP)
                .expectValue("VFIO_REGION_INFO_FLAG_CAPS", VfioAbi.REGION_INFO_FLAG_CAPS)
                .expectValue("VFIO_REGION_INFO_CAP_SPARSE_MMAP", VfioAbi.REGION_INFO_CAP_SPARSE_MMAP)
                .expectValue("VFIO_REGION_INFO_CAP_TYPE", VfioAbi.REGION_INFO_CAP_TYPE)
                .expectValue("VFIO_REGION_TYPE_MIGRATION_DEPRECATED", VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED)
                .expectValue("VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED", VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED)
                .verify();
    }
}
