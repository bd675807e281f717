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
 * 0.9.1, "Header", "Commands" and the per-command tables): the 16-byte message header, the command numbers,
 * the header flags and the fixed parts of the payloads this client sends and parses. Little-endian and
 * packed. Nothing but data; {@code VfioUserAbiTest} checks every layout and number against the peer's
 * {@code include/vfio-user.h}. Payloads the protocol borrows from {@code linux/vfio.h} (region info and its
 * capability chain) use {@link org.vmmkit.core.vfio.abi.VfioAbi}.
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
            default -> "command " + command;
        };
    }
}
