package org.vmmkit.core.vfio.abi;

import java.lang.foreign.StructLayout;

import org.vmmkit.core.sys.Ioctl;

import static java.lang.foreign.MemoryLayout.sequenceLayout;
import static java.lang.foreign.MemoryLayout.structLayout;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The VFIO migration v2 ABI from {@code linux/vfio.h}: {@code VFIO_DEVICE_FEATURE} and its migration and
 * DMA-logging features, the states of {@code enum vfio_device_mig_state}, and {@code VFIO_MIG_GET_PRECOPY_INFO}
 * on the data fd. Nothing but data. {@code V2AbiTest} checks every layout and number against the installed
 * header; the parts Linux added in 6.2 (PRE_COPY, PRECOPY_INFO, MIG_DATA_SIZE) are checked against the header
 * where it has them, and otherwise against {@link #C_DECLARATIONS_6_2} (the test says so on stderr).
 */
public final class V2Abi {
    private V2Abi() {}

    private static final int VFIO_TYPE = ';', VFIO_BASE = 100;

    // struct vfio_device_feature.flags
    public static final int FEATURE_MASK = 0xffff, FEATURE_GET = 1 << 16, FEATURE_SET = 1 << 17, FEATURE_PROBE = 1 << 18;

    // feature indices
    public static final int FEATURE_PCI_VF_TOKEN = 0, FEATURE_MIGRATION = 1, FEATURE_MIG_DEVICE_STATE = 2,
            FEATURE_LOW_POWER_ENTRY = 3, FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4, FEATURE_LOW_POWER_EXIT = 5,
            FEATURE_DMA_LOGGING_START = 6, FEATURE_DMA_LOGGING_STOP = 7, FEATURE_DMA_LOGGING_REPORT = 8,
            FEATURE_MIG_DATA_SIZE = 9;

    // struct vfio_device_feature_migration.flags
    public static final long MIGRATION_STOP_COPY = 1, MIGRATION_P2P = 1 << 1, MIGRATION_PRE_COPY = 1 << 2;

    // enum vfio_device_mig_state
    public static final int STATE_ERROR = 0, STATE_STOP = 1, STATE_RUNNING = 2, STATE_STOP_COPY = 3, STATE_RESUMING = 4,
            STATE_RUNNING_P2P = 5, STATE_PRE_COPY = 6, STATE_PRE_COPY_P2P = 7;

    /** {@code struct vfio_device_feature}: the header every feature's data follows. */
    public static final StructLayout DEVICE_FEATURE = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withName("vfio_device_feature");

    public static final StructLayout FEATURE_MIGRATION_LAYOUT = structLayout(
            JAVA_LONG.withName("flags")).withName("vfio_device_feature_migration");

    public static final StructLayout FEATURE_MIG_STATE = structLayout(
            JAVA_INT.withName("device_state"),
            JAVA_INT.withName("data_fd")).withName("vfio_device_feature_mig_state");

    public static final StructLayout FEATURE_MIG_DATA_SIZE_LAYOUT = structLayout(
            JAVA_LONG.withName("stop_copy_length")).withName("vfio_device_feature_mig_data_size");

    public static final StructLayout PRECOPY_INFO = structLayout(
            JAVA_INT.withName("argsz"),
            JAVA_INT.withName("flags"),
            JAVA_LONG.withName("initial_bytes"),
            JAVA_LONG.withName("dirty_bytes")).withName("vfio_precopy_info");

    public static final StructLayout DMA_LOGGING_CONTROL = structLayout(
            JAVA_LONG.withName("page_size"),
            JAVA_INT.withName("num_ranges"),
            JAVA_INT.withName("__reserved"),
            JAVA_LONG.withName("ranges")).withName("vfio_device_feature_dma_logging_control");

    public static final StructLayout DMA_LOGGING_RANGE = structLayout(
            JAVA_LONG.withName("iova"),
            JAVA_LONG.withName("length")).withName("vfio_device_feature_dma_logging_range");

    public static final StructLayout DMA_LOGGING_REPORT = structLayout(
            JAVA_LONG.withName("iova"),
            JAVA_LONG.withName("length"),
            JAVA_LONG.withName("page_size"),
            JAVA_LONG.withName("bitmap")).withName("vfio_device_feature_dma_logging_report");

    /** Byte offsets used by the typed layer (checked through the layouts above). */
    public static final long FEATURE_HEADER_BYTES = 8, MIG_STATE_DEVICE_STATE = 0, MIG_STATE_DATA_FD = 4,
            PRECOPY_ARGSZ = 0, PRECOPY_INITIAL_BYTES = 8, PRECOPY_DIRTY_BYTES = 16;

    /** Field offsets of the DMA logging structs, taken from their layouts (which the header test checks). */
    public static final long LOGGING_CONTROL_PAGE_SIZE = offset(DMA_LOGGING_CONTROL, "page_size"),
            LOGGING_CONTROL_NUM_RANGES = offset(DMA_LOGGING_CONTROL, "num_ranges"), LOGGING_CONTROL_RANGES = offset(DMA_LOGGING_CONTROL, "ranges"),
            LOGGING_RANGE_IOVA = offset(DMA_LOGGING_RANGE, "iova"), LOGGING_RANGE_LENGTH = offset(DMA_LOGGING_RANGE, "length"),
            LOGGING_REPORT_IOVA = offset(DMA_LOGGING_REPORT, "iova"), LOGGING_REPORT_LENGTH = offset(DMA_LOGGING_REPORT, "length"),
            LOGGING_REPORT_PAGE_SIZE = offset(DMA_LOGGING_REPORT, "page_size"), LOGGING_REPORT_BITMAP = offset(DMA_LOGGING_REPORT, "bitmap");

    private static long offset(StructLayout layout, String field) {
        return layout.byteOffset(java.lang.foreign.MemoryLayout.PathElement.groupElement(field));
    }

    public static final Ioctl VFIO_DEVICE_FEATURE = Ioctl.io("VFIO_DEVICE_FEATURE", VFIO_TYPE, VFIO_BASE + 17);
    /** On the data fd, in PRE_COPY and PRE_COPY_P2P only. */
    public static final Ioctl VFIO_MIG_GET_PRECOPY_INFO = Ioctl.io("VFIO_MIG_GET_PRECOPY_INFO", VFIO_TYPE, VFIO_BASE + 21);

    /**
     * The Linux 6.2 additions to the uapi, declared from the header's text, for the layout probe on a host
     * whose installed header predates them (Debian 12's is 6.1). A header that has them is used instead.
     */
    public static final String C_DECLARATIONS_6_2 = """
            #ifndef VFIO_MIG_GET_PRECOPY_INFO
            #define VFIO_MIGRATION_PRE_COPY (1 << 2)
            #define VFIO_DEVICE_STATE_PRE_COPY 6
            #define VFIO_DEVICE_STATE_PRE_COPY_P2P 7
            struct vfio_precopy_info {
                __u32 argsz;
                __u32 flags;
                __aligned_u64 initial_bytes;
                __aligned_u64 dirty_bytes;
            };
            #define VFIO_MIG_GET_PRECOPY_INFO _IO(VFIO_TYPE, VFIO_BASE + 21)
            #endif
            #ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
            struct vfio_device_feature_mig_data_size {
                __aligned_u64 stop_copy_length;
            };
            #define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
            #endif
            """;
}
