package org.vmmkit.core.vfio;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.vmmkit.core.sys.HeaderProbe;
import org.vmmkit.core.vfio.abi.V2Abi;

/**
 * The v2 migration ABI against {@code linux/vfio.h}. What Linux 6.2 added (PRE_COPY, PRECOPY_INFO,
 * MIG_DATA_SIZE) is compared with the installed header when it has it; an older header (Debian 12 ships
 * 6.1) gets {@link V2Abi#C_DECLARATIONS_6_2} instead, and the test says so on stderr.
 */
class V2AbiTest {
    private static boolean headerHas62;

    @BeforeAll
    static void whichHeader() throws IOException {
        Path header = Path.of("/usr/include/linux/vfio.h");
        headerHas62 = Files.exists(header) && Files.readString(header).contains("VFIO_MIG_GET_PRECOPY_INFO");
        if (!headerHas62) {
            System.err.println("!!! NOTE: the installed linux/vfio.h predates Linux 6.2: PRE_COPY, vfio_precopy_info, "
                    + "VFIO_MIG_GET_PRECOPY_INFO and MIG_DATA_SIZE are checked against V2Abi.C_DECLARATIONS_6_2, not the header");
        }
    }

    private static HeaderProbe probe() {
        return new HeaderProbe("linux/vfio.h").declare(V2Abi.C_DECLARATIONS_6_2);
    }

    @Test
    void everyV2StructMatchesTheHeader() {
        probe().expectLayout(V2Abi.DEVICE_FEATURE, "struct vfio_device_feature")
                .expectLayout(V2Abi.FEATURE_MIGRATION_LAYOUT, "struct vfio_device_feature_migration")
                .expectLayout(V2Abi.FEATURE_MIG_STATE, "struct vfio_device_feature_mig_state")
                .expectLayout(V2Abi.FEATURE_MIG_DATA_SIZE_LAYOUT, "struct vfio_device_feature_mig_data_size")
                .expectLayout(V2Abi.PRECOPY_INFO, "struct vfio_precopy_info")
                .expectLayout(V2Abi.DMA_LOGGING_CONTROL, "struct vfio_device_feature_dma_logging_control")
                .expectLayout(V2Abi.DMA_LOGGING_RANGE, "struct vfio_device_feature_dma_logging_range")
                .expectLayout(V2Abi.DMA_LOGGING_REPORT, "struct vfio_device_feature_dma_logging_report")
                .expect("offsetof(vfio_device_feature, data)", "offsetof(struct vfio_device_feature, data)", V2Abi.FEATURE_HEADER_BYTES)
                .expect("offsetof(mig_state, data_fd)", "offsetof(struct vfio_device_feature_mig_state, data_fd)", V2Abi.MIG_STATE_DATA_FD)
                .expect("offsetof(precopy, initial_bytes)", "offsetof(struct vfio_precopy_info, initial_bytes)", V2Abi.PRECOPY_INITIAL_BYTES)
                .expect("offsetof(precopy, dirty_bytes)", "offsetof(struct vfio_precopy_info, dirty_bytes)", V2Abi.PRECOPY_DIRTY_BYTES)
                .verify();
    }

    @Test
    void everyV2IoctlFeatureFlagAndStateMatchesTheHeader() {
        probe().expectIoctl(V2Abi.VFIO_DEVICE_FEATURE)
                .expectIoctl(V2Abi.VFIO_MIG_GET_PRECOPY_INFO)
                .expectValue("VFIO_DEVICE_FEATURE_MASK", V2Abi.FEATURE_MASK)
                .expectValue("VFIO_DEVICE_FEATURE_GET", V2Abi.FEATURE_GET)
                .expectValue("VFIO_DEVICE_FEATURE_SET", V2Abi.FEATURE_SET)
                .expectValue("VFIO_DEVICE_FEATURE_PROBE", V2Abi.FEATURE_PROBE)
                .expectValue("VFIO_DEVICE_FEATURE_PCI_VF_TOKEN", V2Abi.FEATURE_PCI_VF_TOKEN)
                .expectValue("VFIO_DEVICE_FEATURE_MIGRATION", V2Abi.FEATURE_MIGRATION)
                .expectValue("VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE", V2Abi.FEATURE_MIG_DEVICE_STATE)
                .expectValue("VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY", V2Abi.FEATURE_LOW_POWER_ENTRY)
                .expectValue("VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP", V2Abi.FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP)
                .expectValue("VFIO_DEVICE_FEATURE_LOW_POWER_EXIT", V2Abi.FEATURE_LOW_POWER_EXIT)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_START", V2Abi.FEATURE_DMA_LOGGING_START)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP", V2Abi.FEATURE_DMA_LOGGING_STOP)
                .expectValue("VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT", V2Abi.FEATURE_DMA_LOGGING_REPORT)
                .expectValue("VFIO_DEVICE_FEATURE_MIG_DATA_SIZE", V2Abi.FEATURE_MIG_DATA_SIZE)
                .expectValue("VFIO_MIGRATION_STOP_COPY", V2Abi.MIGRATION_STOP_COPY)
                .expectValue("VFIO_MIGRATION_P2P", V2Abi.MIGRATION_P2P)
                .expectValue("VFIO_MIGRATION_PRE_COPY", V2Abi.MIGRATION_PRE_COPY)
                .expectValue("VFIO_DEVICE_STATE_ERROR", V2Abi.STATE_ERROR)
                .expectValue("VFIO_DEVICE_STATE_STOP", V2Abi.STATE_STOP)
                .expectValue("VFIO_DEVICE_STATE_RUNNING", V2Abi.STATE_RUNNING)
                .expectValue("VFIO_DEVICE_STATE_STOP_COPY", V2Abi.STATE_STOP_COPY)
                .expectValue("VFIO_DEVICE_STATE_RESUMING", V2Abi.STATE_RESUMING)
                .expectValue("VFIO_DEVICE_STATE_RUNNING_P2P", V2Abi.STATE_RUNNING_P2P)
                .expectValue("VFIO_DEVICE_STATE_PRE_COPY", V2Abi.STATE_PRE_COPY)
                .expectValue("VFIO_DEVICE_STATE_PRE_COPY_P2P", V2Abi.STATE_PRE_COPY_P2P)
                .verify();
    }
}
