package org.vmmkit.core.vfio.abi;

import java.lang.foreign.StructLayout;

import static java.lang.foreign.MemoryLayout.structLayout;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The v1 VFIO migration region ABI, from the reference thread ([PATCH v14 Kernel 1/7]): the packed
 * {@code struct vfio_device_migration_info} at offset 0 of the region and the state bits. Current headers
 * no longer carry the struct (only the deprecated region type and the {@code _V1} state bits);
 * {@code V1AbiTest} checks the layout against the thread's declaration compiled by gcc.
 */
public final class V1Abi {
    private V1Abi() {}

    /** {@code __attribute__((packed))}: 32 bytes, fields at 0, 4, 8, 16, 24. */
    public static final StructLayout MIGRATION_INFO = structLayout(
            JAVA_INT.withByteAlignment(1).withName("device_state"),
            JAVA_INT.withByteAlignment(1).withName("reserved"),
            JAVA_LONG.withByteAlignment(1).withName("pending_bytes"),
            JAVA_LONG.withByteAlignment(1).withName("data_offset"),
            JAVA_LONG.withByteAlignment(1).withName("data_size")).withByteAlignment(1).withName("vfio_device_migration_info");

    public static final long DEVICE_STATE = 0, RESERVED = 4, PENDING_BYTES = 8, DATA_OFFSET = 16, DATA_SIZE = 24;
    public static final long HEADER_SIZE = 32;

    public static final int STATE_STOP = 0, STATE_RUNNING = 1, STATE_SAVING = 1 << 1, STATE_RESUMING = 1 << 2;
    public static final int STATE_MASK = STATE_RUNNING | STATE_SAVING | STATE_RESUMING;

    /** The thread's C declaration, for the layout probe. */
    public static final String C_DECLARATION = """
            struct vfio_device_migration_info {
                __u32 device_state;
                __u32 reserved;
                __u64 pending_bytes;
                __u64 data_offset;
                __u64 data_size;
            } __attribute__((packed));
            """;
}
