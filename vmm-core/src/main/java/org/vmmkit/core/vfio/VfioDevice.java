package org.vmmkit.core.vfio;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.KernelMigrationData;
import org.vmmkit.core.vfio.v2.MigrationData;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * A VFIO device: its regions (info, reads and writes at native width, bulk transfers, mmap of sparse
 * areas) and reset. Implemented by the kernel ({@link KernelVfioDevice}) and by in-process emulations;
 * nothing above this interface knows which. Failures are {@link org.vmmkit.core.sys.SysException}s
 * naming the access, the errno and the device.
 */
public interface VfioDevice extends AutoCloseable {

    /** What errors name, e.g. {@code 0000:01:00.0 (fd 12)} or {@code emulated-nic0}. */
    String name();

    /** {@code VFIO_DEVICE_GET_INFO}: the number of regions. */
    int regionCount();

    /** Whether {@code VFIO_DEVICE_RESET} is supported. */
    boolean resettable();

    /** {@code VFIO_DEVICE_GET_REGION_INFO} with its capabilities. */
    RegionInfo regionInfo(int region);

    /** A 4-byte read at {@code offset} of the region (one native-width access). */
    int readInt(int region, long offset);

    /** An 8-byte read (one native-width access). */
    long readLong(int region, long offset);

    void writeInt(int region, long offset, int value);

    void writeLong(int region, long offset, long value);

    /** Reads {@code dst.byteSize()} bytes at {@code offset} (pread on the device fd). */
    void read(int region, long offset, MemorySegment dst);

    /** Writes {@code src} at {@code offset} (pwrite on the device fd). */
    void write(int region, long offset, MemorySegment src);

    /** Maps {@code [offset, offset + size)} of the region, which must lie in one sparse mmap area. */
    MemorySegment mmap(int region, long offset, long size);

    /** Undoes {@link #mmap}. */
    void unmap(MemorySegment mapping);

    /**
     * {@code VFIO_DEVICE_FEATURE} with {@code flags} (GET, SET or PROBE, with the feature index) and the feature's
     * {@code data} (read for SET, filled for GET; may be empty for PROBE). The kernel takes the uapi struct
     * after an 8-byte header; vfio-user's {@code VFIO_USER_DEVICE_FEATURE} carries the same struct, so its client
     * implements this method unchanged. A device without the call fails with ENOTTY, as an old kernel does.
     */
    default void feature(int flags, MemorySegment data) {
        throw new SysException(DeviceFeatures.describe(flags),
                Errno.ENOTTY, name());
    }

    /**
     * The data session that a {@code VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE} SET just opened, given that SET's
     * {@code struct vfio_device_feature_mig_state} ({@code data_fd} filled by the kernel). The kernel device wraps
     * {@code data_fd} (the session owns it); a vfio-user client ignores it and returns a session over
     * {@code MIG_DATA_READ}/{@code MIG_DATA_WRITE}; an emulated device returns its own.
     */
    default MigrationData migrationData(MemorySegment migState) {
        int dataFd = migState.get(JAVA_INT, V2Abi.MIG_STATE_DATA_FD);
        if (dataFd < 0) throw new IllegalStateException("device " + name() + ": the MIG_DEVICE_STATE SET returned no data_fd");
        return new KernelMigrationData(dataFd, name());
    }

    /** {@code VFIO_DEVICE_RESET}. */
    void reset();

    @Override
    void close();
}
