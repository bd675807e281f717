package org.vmmkit.core.vfio.user.abi;

import java.lang.foreign.MemoryLayout;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import static java.lang.foreign.MemoryLayout.sequenceLayout;
import static java.lang.foreign.MemoryLayout.structLayout;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;

/**
 * The vfio-user wire format, written from the protocol specification ({@code docs/vfio-user.rst}, version
 * 0.9.1, "Header", "Commands" and the per-command tables; version 0.9.2 for migration v2: DEVICE_FEATURE,
 * MIG_DATA_READ/WRITE and the DMA logging features): the 16-byte message header, the command numbers,
 * the header flags and the fixed parts of the payloads this client sends and parses. Little-endian and
 * packed. Nothing but data; {@code VfioUserAbiTest} checks every layout and number against the peers'
 * {@code include/vfio-user.h} (the v1-era tree for the migration region's commands, the v2-era tree for
 * migration v2's). Payloads the protocol borrows from {@code linux/vfio.h} (region info and its capability
 * chain; the feature flags, indexes and migration states) use {@link org.vmmkit.core.vfio.abi.VfioAbi} and
 * {@link org.vmmkit.core.vfio.abi.V2Abi}.
 */
public final class VfioUserAbi {
    private VfioUserAbi() {}

    public static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The protocol version this client proposes (the peer's library answers 0.2 in both migration eras). */
    public static final int VERSION_MAJOR = 0, VERSION_MINOR = 2;

    // Commands ("Commands" table).
    public static final int VERSION = 1, DMA_MAP = 2, DMA_UNMAP = 3, DEVICE_GET_INFO = 4, DEVICE_GET_REGION_INFO = 5,
            DEVICE_GET_REGION_IO_FDS = 6, DEVICE_GET_IRQ_INFO = 7, DEVICE_SET_IRQS = 8, REGION_READ = 9,
            REGION_WRITE = 10, DMA_READ = 11, DMA_WRITE = 12, DEVICE_RESET = 13, DIRTY_PAGES = 14;
    // Migration v2 (specification 0.9.2; DIRTY_PAGES and the migration region are gone from that version).
    public static final int DEVICE_FEATURE = 16, MIG_DATA_READ = 17, MIG_DATA_WRITE = 18;

    // Header flags: bits 0-3 the type, bit 4 No_reply, bit 5 Error.
    public static final int FLAG_TYPE_MASK = 0xf, FLAG_TYPE_COMMAND = 0x0, FLAG_TYPE_REPLY = 0x1,
            FLAG_NO_REPLY = 0x10, FLAG_ERROR = 0x20;

    /** The header every message, command or reply, starts with. */
    public static final StructLayout HEADER = structLayout(
            U16.withName("msg_id"),
            U16.withName("cmd"),
            U32.withName("msg_size"),
            U32.withName("flags"),
            U32.withName("error_no")).withByteAlignment(1).withName("vfio_user_header");

    /** {@code VFIO_USER_VERSION} request and reply: major, minor, then NUL-terminated JSON. */
    public static final StructLayout VERSION_PAYLOAD = structLayout(
            U16.withName("major"),
            U16.withName("minor"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_version");

    /** {@code VFIO_USER_DEVICE_GET_INFO} request and reply (no capabilities in this protocol version). */
    public static final StructLayout DEVICE_INFO = structLayout(
            U32.withName("argsz"),
            U32.withName("flags"),
            U32.withName("num_regions"),
            U32.withName("num_irqs")).withByteAlignment(1).withName("vfio_user_device_info");

    /** {@code VFIO_USER_REGION_READ}/{@code _WRITE} request and reply: offset, region, count, then the data. */
    public static final StructLayout REGION_ACCESS = structLayout(
            U64.withName("offset"),
            U32.withName("region"),
            U32.withName("count"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_region_access");

    // DMA_MAP flags ("VFIO_USER_DMA_MAP"); DMA_UNMAP and DIRTY_PAGES flags are the kernel's (VfioAbi).
    public static final int DMA_REGION_READ = 1, DMA_REGION_WRITE = 2;

    /** {@code VFIO_USER_DMA_MAP} request: the memfd (if any) travels with it as SCM_RIGHTS. */
    public static final StructLayout DMA_MAP_PAYLOAD = structLayout(
            U32.withName("argsz"),
            U32.withName("flags"),
            U64.withName("offset"),
            U64.withName("addr"),
            U64.withName("size")).withByteAlignment(1).withName("vfio_user_dma_map");

    /** The bitmap header of DMA_UNMAP and DIRTY_PAGES: page size and bitmap bytes, then the bits. */
    public static final StructLayout BITMAP = structLayout(
            U64.withName("pgsize"),
            U64.withName("size"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_bitmap");

    /** {@code VFIO_USER_DMA_UNMAP} request and reply (without the optional bitmap this client never asks for). */
    public static final StructLayout DMA_UNMAP_PAYLOAD = structLayout(
            U32.withName("argsz"),
            U32.withName("flags"),
            U64.withName("addr"),
            U64.withName("size")).withByteAlignment(1).withName("vfio_user_dma_unmap");

    /** {@code VFIO_USER_DIRTY_PAGES}: argsz and one of START, STOP, GET_BITMAP. */
    public static final StructLayout DIRTY_PAGES_PAYLOAD = structLayout(
            U32.withName("argsz"),
            U32.withName("flags")).withByteAlignment(1).withName("vfio_user_dirty_pages");

    /** The range of a GET_BITMAP, after {@link #DIRTY_PAGES_PAYLOAD} in request and reply; the bits follow it in the reply. */
    public static final StructLayout BITMAP_RANGE = structLayout(
            U64.withName("iova"),
            U64.withName("size"),
            structLayout(U64.withName("pgsize"), U64.withName("size")).withByteAlignment(1).withName("bitmap"))
            .withByteAlignment(1).withName("vfio_user_bitmap_range");

    /** {@code VFIO_USER_DMA_READ}/{@code _WRITE} (server to client): address and count, then the data. */
    public static final StructLayout DMA_ACCESS = structLayout(
            U64.withName("addr"),
            U64.withName("count"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_dma_region_access");

    /** {@code VFIO_USER_DEVICE_SET_IRQS}: the kernel's {@code struct vfio_irq_set}; eventfds travel as SCM_RIGHTS. */
    public static final StructLayout IRQ_SET = structLayout(
            U32.withName("argsz"),
            U32.withName("flags"),
            U32.withName("index"),
            U32.withName("start"),
            U32.withName("count"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_irq_set");

    // SET_IRQS flags and the PCI IRQ indexes (linux/vfio.h).
    public static final int IRQ_SET_DATA_NONE = 1, IRQ_SET_DATA_BOOL = 2, IRQ_SET_DATA_EVENTFD = 4, IRQ_SET_ACTION_MASK = 8,
            IRQ_SET_ACTION_UNMASK = 16, IRQ_SET_ACTION_TRIGGER = 32;
    public static final int PCI_INTX_IRQ_INDEX = 0, PCI_MSI_IRQ_INDEX = 1, PCI_MSIX_IRQ_INDEX = 2;

    /**
     * {@code VFIO_USER_DEVICE_FEATURE} request and reply: argsz (the largest reply payload), flags (the kernel's
     * GET/SET/PROBE bits and feature index), then the feature's data ("analogous to struct vfio_device_feature").
     */
    public static final StructLayout DEVICE_FEATURE_PAYLOAD = structLayout(
            U32.withName("argsz"),
            U32.withName("flags"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_device_feature");

    /** The data of {@code VFIO_DEVICE_FEATURE_MIGRATION} GET's reply: the migration flags. */
    public static final StructLayout FEATURE_MIGRATION = structLayout(
            U64.withName("flags")).withByteAlignment(1).withName("vfio_user_device_feature_migration");

    /** The data of {@code VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE}: the state; {@code data_fd} is unused in vfio-user. */
    public static final StructLayout FEATURE_MIG_STATE = structLayout(
            U32.withName("device_state"),
            U32.withName("data_fd")).withByteAlignment(1).withName("vfio_user_device_feature_mig_state");

    /** One IOVA range of {@link #DMA_LOGGING_CONTROL}. */
    public static final StructLayout DMA_LOGGING_RANGE = structLayout(
            U64.withName("iova"),
            U64.withName("length")).withByteAlignment(1).withName("vfio_user_device_feature_dma_logging_range");

    /**
     * The data of {@code DMA_LOGGING_START}: unlike the kernel's struct, the ranges follow inline (the kernel's
     * holds a pointer to them).
     */
    public static final StructLayout DMA_LOGGING_CONTROL = structLayout(
            U64.withName("page_size"),
            U32.withName("num_ranges"),
            U32.withName("reserved"),
            sequenceLayout(0, DMA_LOGGING_RANGE).withName("ranges")).withByteAlignment(1).withName("vfio_user_device_feature_dma_logging_control");

    /** The data of {@code DMA_LOGGING_REPORT} GET: the range asked; in the reply the bitmap follows inline (the kernel's: a pointer). */
    public static final StructLayout DMA_LOGGING_REPORT = structLayout(
            U64.withName("iova"),
            U64.withName("length"),
            U64.withName("page_size"),
            sequenceLayout(0, JAVA_BYTE).withName("bitmap")).withByteAlignment(1).withName("vfio_user_device_feature_dma_logging_report");

    /**
     * {@code VFIO_USER_MIG_DATA_READ} request (no data) and reply, {@code VFIO_USER_MIG_DATA_WRITE} request (with
     * the data; its reply has no payload): argsz, size, then the data. A read reply's {@code size} below the
     * size asked means no more data for now.
     */
    public static final StructLayout MIG_DATA = structLayout(
            U32.withName("argsz"),
            U32.withName("size"),
            sequenceLayout(0, JAVA_BYTE).withName("data")).withByteAlignment(1).withName("vfio_user_mig_data");

    public static final long HEADER_SIZE = HEADER.byteSize();
    public static final long HEADER_MSG_ID = offset(HEADER, "msg_id"), HEADER_CMD = offset(HEADER, "cmd"),
            HEADER_MSG_SIZE = offset(HEADER, "msg_size"), HEADER_FLAGS = offset(HEADER, "flags"),
            HEADER_ERROR_NO = offset(HEADER, "error_no");

    public static final long VERSION_MAJOR_AT = offset(VERSION_PAYLOAD, "major"), VERSION_MINOR_AT = offset(VERSION_PAYLOAD, "minor"),
            VERSION_DATA_AT = offset(VERSION_PAYLOAD, "data");

    public static final long DEVICE_INFO_ARGSZ = offset(DEVICE_INFO, "argsz"), DEVICE_INFO_FLAGS = offset(DEVICE_INFO, "flags"),
            DEVICE_INFO_NUM_REGIONS = offset(DEVICE_INFO, "num_regions"), DEVICE_INFO_NUM_IRQS = offset(DEVICE_INFO, "num_irqs");

    public static final long ACCESS_OFFSET = offset(REGION_ACCESS, "offset"), ACCESS_REGION = offset(REGION_ACCESS, "region"),
            ACCESS_COUNT = offset(REGION_ACCESS, "count"), ACCESS_DATA = offset(REGION_ACCESS, "data");

    public static final long DMA_MAP_ARGSZ = offset(DMA_MAP_PAYLOAD, "argsz"), DMA_MAP_FLAGS = offset(DMA_MAP_PAYLOAD, "flags"),
            DMA_MAP_OFFSET = offset(DMA_MAP_PAYLOAD, "offset"), DMA_MAP_ADDR = offset(DMA_MAP_PAYLOAD, "addr"),
            DMA_MAP_SIZE = offset(DMA_MAP_PAYLOAD, "size");
    public static final long DMA_UNMAP_ARGSZ = offset(DMA_UNMAP_PAYLOAD, "argsz"), DMA_UNMAP_FLAGS = offset(DMA_UNMAP_PAYLOAD, "flags"),
            DMA_UNMAP_ADDR = offset(DMA_UNMAP_PAYLOAD, "addr"), DMA_UNMAP_SIZE = offset(DMA_UNMAP_PAYLOAD, "size");
    public static final long DIRTY_ARGSZ = offset(DIRTY_PAGES_PAYLOAD, "argsz"), DIRTY_FLAGS = offset(DIRTY_PAGES_PAYLOAD, "flags");
    /** Offsets of a GET_BITMAP's range, counted from the start of the payload (after {@link #DIRTY_PAGES_PAYLOAD}). */
    public static final long RANGE_IOVA = DIRTY_PAGES_PAYLOAD.byteSize() + offset(BITMAP_RANGE, "iova"),
            RANGE_SIZE = DIRTY_PAGES_PAYLOAD.byteSize() + offset(BITMAP_RANGE, "size"),
            RANGE_PGSIZE = DIRTY_PAGES_PAYLOAD.byteSize() + offset(BITMAP_RANGE, "bitmap") + offset(BITMAP, "pgsize"),
            RANGE_BITMAP_SIZE = DIRTY_PAGES_PAYLOAD.byteSize() + offset(BITMAP_RANGE, "bitmap") + offset(BITMAP, "size"),
            RANGE_BITS = DIRTY_PAGES_PAYLOAD.byteSize() + BITMAP_RANGE.byteSize();
    public static final long DMA_ACCESS_ADDR = offset(DMA_ACCESS, "addr"), DMA_ACCESS_COUNT = offset(DMA_ACCESS, "count"),
            DMA_ACCESS_DATA = offset(DMA_ACCESS, "data");
    public static final long IRQ_SET_ARGSZ = offset(IRQ_SET, "argsz"), IRQ_SET_FLAGS = offset(IRQ_SET, "flags"),
            IRQ_SET_INDEX = offset(IRQ_SET, "index"), IRQ_SET_START = offset(IRQ_SET, "start"), IRQ_SET_COUNT = offset(IRQ_SET, "count"),
            IRQ_SET_DATA = offset(IRQ_SET, "data");

    public static final long FEATURE_ARGSZ = offset(DEVICE_FEATURE_PAYLOAD, "argsz"), FEATURE_FLAGS = offset(DEVICE_FEATURE_PAYLOAD, "flags"),
            FEATURE_DATA = offset(DEVICE_FEATURE_PAYLOAD, "data");
    public static final long MIG_DATA_ARGSZ = offset(MIG_DATA, "argsz"), MIG_DATA_SIZE = offset(MIG_DATA, "size"),
            MIG_DATA_DATA = offset(MIG_DATA, "data");
    public static final long LOGGING_PAGE_SIZE = offset(DMA_LOGGING_CONTROL, "page_size"), LOGGING_NUM_RANGES = offset(DMA_LOGGING_CONTROL, "num_ranges"),
            LOGGING_RANGES = offset(DMA_LOGGING_CONTROL, "ranges");
    public static final long REPORT_IOVA = offset(DMA_LOGGING_REPORT, "iova"), REPORT_LENGTH = offset(DMA_LOGGING_REPORT, "length"),
            REPORT_PAGE_SIZE = offset(DMA_LOGGING_REPORT, "page_size"), REPORT_BITMAP = offset(DMA_LOGGING_REPORT, "bitmap");

    /** {@code max_data_xfer_size} when the VERSION JSON does not give one ("Version", capabilities table). */
    public static final long DEFAULT_MAX_DATA_XFER_SIZE = 1L << 20;
    /** {@code max_msg_fds} when the VERSION JSON does not give one. */
    public static final int DEFAULT_MAX_MSG_FDS = 1;

    private static long offset(StructLayout layout, String member) {
        return layout.byteOffset(MemoryLayout.PathElement.groupElement(member));
    }

    /** The command's name as the specification spells it, for messages; {@code command 99} for one it does not list. */
    public static String commandName(int command) {
        return switch (command) {
            case VERSION -> "VFIO_USER_VERSION";
            case DMA_MAP -> "VFIO_USER_DMA_MAP";
            case DMA_UNMAP -> "VFIO_USER_DMA_UNMAP";
            case DEVICE_GET_INFO -> "VFIO_USER_DEVICE_GET_INFO";
            case DEVICE_GET_REGION_INFO -> "VFIO_USER_DEVICE_GET_REGION_INFO";
            case DEVICE_GET_REGION_IO_FDS -> "VFIO_USER_DEVICE_GET_REGION_IO_FDS";
            case DEVICE_GET_IRQ_INFO -> "VFIO_USER_DEVICE_GET_IRQ_INFO";
            case DEVICE_SET_IRQS -> "VFIO_USER_DEVICE_SET_IRQS";
            case REGION_READ -> "VFIO_USER_REGION_READ";
            case REGION_WRITE -> "VFIO_USER_REGION_WRITE";
            case DMA_READ -> "VFIO_USER_DMA_READ";
            case DMA_WRITE -> "VFIO_USER_DMA_WRITE";
            case DEVICE_RESET -> "VFIO_USER_DEVICE_RESET";
            case DIRTY_PAGES -> "VFIO_USER_DIRTY_PAGES";
            case DEVICE_FEATURE -> "VFIO_USER_DEVICE_FEATURE";
            case MIG_DATA_READ -> "VFIO_USER_MIG_DATA_READ";
            case MIG_DATA_WRITE -> "VFIO_USER_MIG_DATA_WRITE";
            default -> "command " + command;
        };
    }
}
