package org.vmmkit.core.vfio.abi;

import java.lang.foreign.StructLayout;

import org.vmmkit.core.sys.Ioctl;

import static java.lang.foreign.MemoryLayout.paddingLayout;
import static java.lang.foreign.MemoryLayout.sequenceLayout;
import static java.lang.foreign.MemoryLayout.structLayout;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The VFIO kernel ABI from {@code linux/vfio.h}: container and type1 IOMMU structs, ioctl numbers and
 * flags. Nothing but data; every layout and number is checked against the header by {@code VfioAbiTest}.
 */
public final class VfioAbi {
    private VfioAbi() {}

    public static final int API_VERSION = 0;
    private static final int VFIO_TYPE = ';', VFIO_BASE = 100;

    public static final int TYPE1_IOMMU = 1, TYPE1v2_IOMMU = 3;
    public static final int IOMMU_INFO_PGSIZES = 1, IOMMU_INFO_CAPS = 2;
    public static final int IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1, IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
    public static final int DMA_MAP_FLAG_READ = 1, DMA_MAP_FLAG_WRITE = 2;
    public static final int DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1;
    public static final int IOMMU_DIRTY_PAGES_FLAG_START = 1, IOMMU_DIRTY_PAGES_FLAG_STOP = 2,
            IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 4;

    public static final StructLayout INFO_CAP_HEADER = structLayout(
            JAVA_SHORT.withName("id"),
            JAVA_SHORT.withName("version"),
            JAVA_INT.withName("next")).withName("vfio_info_cap_header");

    public static final StructLayout IOMMU_TYPE1_INFO = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_LONG.withName("iova_pgsizes"),
            JAVA_INT.withName("cap_offset"),
            paddingLayout(4)).withName("vfio_iommu_type1_info");

    public static final StructLayout IOMMU_TYPE1_INFO_CAP_MIGRATION_LAYOUT = structLayout(
            INFO_CAP_HEADER.withName("header"),
            JAVA_INT.withName("flags"),
            paddingLayout(4),
            JAVA_LONG.withName("pgsize_bitmap"),
            JAVA_LONG.withName("max_dirty_bitmap_size")).withName("vfio_iommu_type1_info_cap_migration");

    public static final StructLayout DMA_MAP = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_LONG.withName("vaddr"),
            JAVA_LONG.withName("iova"),
            JAVA_LONG.withName("size")).withName("vfio_iommu_type1_dma_map");

    public static final StructLayout BITMAP = structLayout(
            JAVA_LONG.withName("pgsize"),
            JAVA_LONG.withName("size"),
            ADDRESS.withName("data")).withName("vfio_bitmap");

    public static final StructLayout DMA_UNMAP = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_LONG.withName("iova"),
            JAVA_LONG.withName("size"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withName("vfio_iommu_type1_dma_unmap");

    public static final StructLayout DIRTY_BITMAP = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withName("vfio_iommu_type1_dirty_bitmap");

    public static final StructLayout DIRTY_BITMAP_GET = structLayout(
            JAVA_LONG.withName("iova"),
            JAVA_LONG.withName("size"),
            BITMAP.withName("bitmap")).withName("vfio_iommu_type1_dirty_bitmap_get");

    public static final int GROUP_FLAGS_VIABLE = 1, GROUP_FLAGS_CONTAINER_SET = 2;
    public static final int DEVICE_FLAGS_RESET = 1, DEVICE_FLAGS_PCI = 2;
    public static final int REGION_INFO_FLAG_READ = 1, REGION_INFO_FLAG_WRITE = 2, REGION_INFO_FLAG_MMAP = 4,
            REGION_INFO_FLAG_CAPS = 8;
    public static final int REGION_INFO_CAP_SPARSE_MMAP = 1, REGION_INFO_CAP_TYPE = 2;
    /** The v1 migration region: {@code VFIO_REGION_TYPE_MIGRATION_DEPRECATED}, subtype 1. */
    public static final int REGION_TYPE_MIGRATION_DEPRECATED = 3, REGION_SUBTYPE_MIGRATION_DEPRECATED = 1;

    public static final StructLayout GROUP_STATUS = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags")).withName("vfio_group_status");

    public static final StructLayout DEVICE_INFO = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_INT.withName("num_regions"),
            JAVA_INT.withName("num_irqs"),
            JAVA_INT.withName("cap_offset")).withName("vfio_device_info");

    public static final StructLayout REGION_INFO = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_INT.withName("index"),
            JAVA_INT.withName("cap_offset"),
            JAVA_LONG.withName("size"),
            JAVA_LONG.withName("offset")).withName("vfio_region_info");

    public static final StructLayout REGION_INFO_CAP_TYPE_LAYOUT = structLayout(
            INFO_CAP_HEADER.withName("header"),
            JAVA_INT.withName("type"),
            JAVA_INT.withName("subtype")).withName("vfio_region_info_cap_type");

    public static final StructLayout REGION_SPARSE_MMAP_AREA = structLayout(
            JAVA_LONG.withName("offset"),
            JAVA_LONG.withName("size")).withName("vfio_region_sparse_mmap_area");

    public static final StructLayout REGION_INFO_CAP_SPARSE_MMAP_LAYOUT = structLayout(
            INFO_CAP_HEADER.withName("header"),
            JAVA_INT.withName("nr_areas"),
            JAVA_INT.withName("reserved"),
            sequenceLayout(0, REGION_SPARSE_MMAP_AREA).withName("areas")).withName("vfio_region_info_cap_sparse_mmap");

    public static final Ioctl VFIO_GET_API_VERSION = Ioctl.io("VFIO_GET_API_VERSION", VFIO_TYPE, VFIO_BASE);
    public static final Ioctl VFIO_CHECK_EXTENSION = Ioctl.io("VFIO_CHECK_EXTENSION", VFIO_TYPE, VFIO_BASE + 1);
    public static final Ioctl VFIO_SET_IOMMU = Ioctl.io("VFIO_SET_IOMMU", VFIO_TYPE, VFIO_BASE + 2);
    public static final Ioctl VFIO_IOMMU_GET_INFO = Ioctl.io("VFIO_IOMMU_GET_INFO", VFIO_TYPE, VFIO_BASE + 12);
    public static final Ioctl VFIO_IOMMU_MAP_DMA = Ioctl.io("VFIO_IOMMU_MAP_DMA", VFIO_TYPE, VFIO_BASE + 13);
    public static final Ioctl VFIO_IOMMU_UNMAP_DMA = Ioctl.io("VFIO_IOMMU_UNMAP_DMA", VFIO_TYPE, VFIO_BASE + 14);
    public static final Ioctl VFIO_IOMMU_DIRTY_PAGES = Ioctl.io("VFIO_IOMMU_DIRTY_PAGES", VFIO_TYPE, VFIO_BASE + 17);

    public static final Ioctl VFIO_GROUP_GET_STATUS = Ioctl.io("VFIO_GROUP_GET_STATUS", VFIO_TYPE, VFIO_BASE + 3);
    public static final Ioctl VFIO_GROUP_SET_CONTAINER = Ioctl.io("VFIO_GROUP_SET_CONTAINER", VFIO_TYPE, VFIO_BASE + 4);
    public static final Ioctl VFIO_GROUP_UNSET_CONTAINER = Ioctl.io("VFIO_GROUP_UNSET_CONTAINER", VFIO_TYPE, VFIO_BASE + 5);
    public static final Ioctl VFIO_GROUP_GET_DEVICE_FD = Ioctl.io("VFIO_GROUP_GET_DEVICE_FD", VFIO_TYPE, VFIO_BASE + 6);
    public static final Ioctl VFIO_DEVICE_GET_INFO = Ioctl.io("VFIO_DEVICE_GET_INFO", VFIO_TYPE, VFIO_BASE + 7);
    public static final Ioctl VFIO_DEVICE_GET_REGION_INFO = Ioctl.io("VFIO_DEVICE_GET_REGION_INFO", VFIO_TYPE, VFIO_BASE + 8);
    public static final Ioctl VFIO_DEVICE_RESET = Ioctl.io("VFIO_DEVICE_RESET", VFIO_TYPE, VFIO_BASE + 11);

    public static Ioctl[] ioctls() {
        return new Ioctl[] {VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION, VFIO_SET_IOMMU, VFIO_IOMMU_GET_INFO,
                VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA, VFIO_IOMMU_DIRTY_PAGES, VFIO_GROUP_GET_STATUS,
                VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER, VFIO_GROUP_GET_DEVICE_FD, VFIO_DEVICE_GET_INFO,
                VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET};
    }
}
