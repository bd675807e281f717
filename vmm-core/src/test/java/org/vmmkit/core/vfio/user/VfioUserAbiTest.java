package org.vmmkit.core.vfio.user;

import java.nio.file.Path;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.vmmkit.core.sys.HeaderProbe;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

/**
 * Our vfio-user layouts and numbers, written from the specification, against the peer's
 * {@code include/vfio-user.h} compiled by gcc (its structs are packed, so every offset is checked).
 */
class VfioUserAbiTest {

    private static Path tree, v2Tree;

    @BeforeAll
    static void peerTree() {
        tree = VfioUserPeer.v1Tree();
        VfioUserPeer.assumeAvailable("VfioUserAbiTest", tree == null ? "no " + VfioUserPeer.V1_TREE + " tree under " + VfioUserPeer.peersDir() : null);
    }

    /** The v2-era tree's header (migration v2 commands); skips loudly, or fails where the peer is required, without it. */
    private static HeaderProbe v2Probe() {
        v2Tree = VfioUserPeer.v2Tree();
        VfioUserPeer.assumeAvailable("VfioUserAbiTest (v2)", v2Tree == null ? "no " + VfioUserPeer.V2_TREE + " tree under " + VfioUserPeer.peersDir() : null);
        return new HeaderProbe("vfio-user.h").includeDir(v2Tree.resolve("include"));
    }

    private static HeaderProbe probe() {
        return new HeaderProbe("vfio-user.h").includeDir(tree.resolve("include"));
    }

    @Test
    void everyVfioUserStructMatchesThePeersHeader() {
        probe().expectLayout(VfioUserAbi.HEADER, "struct vfio_user_header")
                .expectLayout(VfioUserAbi.VERSION_PAYLOAD, "struct vfio_user_version")
                .expectLayout(VfioUserAbi.DEVICE_INFO, "struct vfio_user_device_info")
                .expectLayout(VfioUserAbi.REGION_ACCESS, "struct vfio_user_region_access")
                .expectLayout(VfioUserAbi.DMA_MAP_PAYLOAD, "struct vfio_user_dma_map")
                .expectLayout(VfioUserAbi.BITMAP, "struct vfio_user_bitmap")
                .expectLayout(VfioUserAbi.DMA_UNMAP_PAYLOAD, "struct vfio_user_dma_unmap")
                .expectLayout(VfioUserAbi.DIRTY_PAGES_PAYLOAD, "struct vfio_user_dirty_pages")
                .expectLayout(VfioUserAbi.BITMAP_RANGE, "struct vfio_user_bitmap_range")
                .expectLayout(VfioUserAbi.DMA_ACCESS, "struct vfio_user_dma_region_access")
                .expectLayout(VfioUserAbi.IRQ_SET, "struct vfio_irq_set")
                .verify();
    }

    @Test
    void everyVfioUserCommandAndFlagMatchesThePeersHeader() {
        probe().expectValue("VFIO_USER_VERSION", VfioUserAbi.VERSION)
                .expectValue("VFIO_USER_DMA_MAP", VfioUserAbi.DMA_MAP)
                .expectValue("VFIO_USER_DMA_UNMAP", VfioUserAbi.DMA_UNMAP)
                .expectValue("VFIO_USER_DEVICE_GET_INFO", VfioUserAbi.DEVICE_GET_INFO)
                .expectValue("VFIO_USER_DEVICE_GET_REGION_INFO", VfioUserAbi.DEVICE_GET_REGION_INFO)
                .expectValue("VFIO_USER_DEVICE_GET_REGION_IO_FDS", VfioUserAbi.DEVICE_GET_REGION_IO_FDS)
                .expectValue("VFIO_USER_DEVICE_GET_IRQ_INFO", VfioUserAbi.DEVICE_GET_IRQ_INFO)
                .expectValue("VFIO_USER_DEVICE_SET_IRQS", VfioUserAbi.DEVICE_SET_IRQS)
                .expectValue("VFIO_USER_REGION_READ", VfioUserAbi.REGION_READ)
                .expectValue("VFIO_USER_REGION_WRITE", VfioUserAbi.REGION_WRITE)
                .expectValue("VFIO_USER_DMA_READ", VfioUserAbi.DMA_READ)
                .expectValue("VFIO_USER_DMA_WRITE", VfioUserAbi.DMA_WRITE)
                .expectValue("VFIO_USER_DEVICE_RESET", VfioUserAbi.DEVICE_RESET)
                .expectValue("VFIO_USER_DIRTY_PAGES", VfioUserAbi.DIRTY_PAGES)
                .expectValue("VFIO_USER_F_TYPE_MASK", VfioUserAbi.FLAG_TYPE_MASK)
                .expectValue("VFIO_USER_F_TYPE_COMMAND", VfioUserAbi.FLAG_TYPE_COMMAND)
                .expectValue("VFIO_USER_F_TYPE_REPLY", VfioUserAbi.FLAG_TYPE_REPLY)
                .expectValue("VFIO_USER_F_NO_REPLY", VfioUserAbi.FLAG_NO_REPLY)
                .expectValue("VFIO_USER_F_ERROR", VfioUserAbi.FLAG_ERROR)
                .expectValue("VFIO_USER_DEFAULT_MAX_DATA_XFER_SIZE", VfioUserAbi.DEFAULT_MAX_DATA_XFER_SIZE)
                .expectValue("VFIO_USER_F_DMA_REGION_READ", VfioUserAbi.DMA_REGION_READ)
                .expectValue("VFIO_USER_F_DMA_REGION_WRITE", VfioUserAbi.DMA_REGION_WRITE)
                .expectValue("VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP", org.vmmkit.core.vfio.abi.VfioAbi.DMA_UNMAP_FLAG_GET_DIRTY_BITMAP)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_START", org.vmmkit.core.vfio.abi.VfioAbi.IOMMU_DIRTY_PAGES_FLAG_START)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP", org.vmmkit.core.vfio.abi.VfioAbi.IOMMU_DIRTY_PAGES_FLAG_STOP)
                .expectValue("VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP", org.vmmkit.core.vfio.abi.VfioAbi.IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
                .expectValue("VFIO_IRQ_SET_DATA_NONE", VfioUserAbi.IRQ_SET_DATA_NONE)
                .expectValue("VFIO_IRQ_SET_DATA_BOOL", VfioUserAbi.IRQ_SET_DATA_BOOL)
                .expectValue("VFIO_IRQ_SET_DATA_EVENTFD", VfioUserAbi.IRQ_SET_DATA_EVENTFD)
                .expectValue("VFIO_IRQ_SET_ACTION_MASK", VfioUserAbi.IRQ_SET_ACTION_MASK)
                .expectValue("VFIO_IRQ_SET_ACTION_UNMASK", VfioUserAbi.IRQ_SET_ACTION_UNMASK)
                .expectValue("VFIO_IRQ_SET_ACTION_TRIGGER", VfioUserAbi.IRQ_SET_ACTION_TRIGGER)
                .expectValue("VFIO_PCI_INTX_IRQ_INDEX", VfioUserAbi.PCI_INTX_IRQ_INDEX)
                .expectValue("VFIO_PCI_MSI_IRQ_INDEX", VfioUserAbi.PCI_MSI_IRQ_INDEX)
                .expectValue("VFIO_PCI_MSIX_IRQ_INDEX", VfioUserAbi.PCI_MSIX_IRQ_INDEX)
                .expectValue("VFIO_REGION_TYPE_MIGRATION", org.vmmkit.core.vfio.abi.VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED)
                .expectValue("VFIO_REGION_SUBTYPE_MIGRATION", org.vmmkit.core.vfio.abi.VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED)
                .verify();
    }

    @Test
    void everyMigrationV2StructMatchesTheV2PeersHeader() {
        v2Probe().expectLayout(VfioUserAbi.HEADER, "struct vfio_user_header")
                .expectLayout(VfioUserAbi.DEVICE_INFO, "struct vfio_user_device_info")
                .expectLayout(VfioUserAbi.REGION_ACCESS, "struct vfio_user_region_access")
                .expectLayout(VfioUserAbi.DMA_MAP_PAYLOAD, "struct vfio_user_dma_map")
                .expectLayout(VfioUserAbi.DEVICE_FEATURE_PAYLOAD, "struct vfio_user_device_feature")
                .expectLayout(VfioUserAbi.FEATURE_MIGRATION, "struct vfio_user_device_feature_migration")
                .expectLayout(VfioUserAbi.FEATURE_MIG_STATE, "struct vfio_user_device_feature_mig_state")
                .expectLayout(VfioUserAbi.DMA_LOGGING_RANGE, "struct vfio_user_device_feature_dma_logging_range")
                .expectLayout(VfioUserAbi.DMA_LOGGING_CONTROL, "struct vfio_user_device_feature_dma_logging_control")
                .expectLayout(VfioUserAbi.DMA_LOGGING_REPORT, "struct vfio_user_device_feature_dma_logging_report")
                .expectLayout(VfioUserAbi.MIG_DATA, "struct vfio_user_mig_data")
                .verify();
    }

    @Test
    void everyMigrationV2CommandFeatureAndStateMatchesTheV2PeersHeader() {
        v2Probe().expectValue("VFIO_USER_DEVICE_FEATURE", VfioUserAbi.DEVICE_FEATURE)
                .expectValue("VFIO_USER_MIG_DATA_READ", VfioUserAbi.MIG_DATA_READ)
                .expectValue("VFIO_USER_MIG_DATA_WRITE", VfioUserAbi.MIG_DATA_WRITE)
                .expectValue("VFIO_USER_DEVICE_RESET", VfioUserAbi.DEVICE_RESET)
                .expectValue("VFIO_DEVICE_FEATURE_MASK", V2Abi.FEATURE_MASK)
                .expectValue("VFIO_DEVICE_FEATURE_GET", V2Abi.FEATURE_GET)
                .expectValue("VFIO_DEVICE_FEATURE_SET", V2Abi.FEATURE_SET)
                .expectValue("VFIO_DEVICE_FEATURE_PROBE", V2Abi.FEATURE_PROBE)
                .expectValue("VFIO_DEVICE_FEATURE_MIGRATION", V2Abi.FEATURE_MIGRATION)
                .expectValue("VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE", V2Abi.FEATURE_MIG_DEVICE_STATE)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_START", V2Abi.FEATURE_DMA_LOGGING_START)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP", V2Abi.FEATURE_DMA_LOGGING_STOP)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT", V2Abi.FEATURE_DMA_LOGGING_REPORT)
                .expectValue("VFIO_MIGRATION_STOP_COPY", V2Abi.MIGRATION_STOP_COPY)
                .expectValue("VFIO_MIGRATION_P2P", V2Abi.MIGRATION_P2P)
                .expectValue("VFIO_MIGRATION_PRE_COPY", V2Abi.MIGRATION_PRE_COPY)
                .expectValue("VFIO_USER_DEVICE_STATE_ERROR", MigState.ERROR.value())
                .expectValue("VFIO_USER_DEVICE_STATE_STOP", MigState.STOP.value())
                .expectValue("VFIO_USER_DEVICE_STATE_RUNNING", MigState.RUNNING.value())
                .expectValue("VFIO_USER_DEVICE_STATE_STOP_COPY", MigState.STOP_COPY.value())
                .expectValue("VFIO_USER_DEVICE_STATE_RESUMING", MigState.RESUMING.value())
                .expectValue("VFIO_USER_DEVICE_STATE_RUNNING_P2P", MigState.RUNNING_P2P.value())
                .expectValue("VFIO_USER_DEVICE_STATE_PRE_COPY", MigState.PRE_COPY.value())
                .expectValue("VFIO_USER_DEVICE_STATE_PRE_COPY_P2P", MigState.PRE_COPY_P2P.value())
                .verify();
    }
}
