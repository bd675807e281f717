package org.vmmkit.core.vfio;

import java.lang.foreign.MemorySegment;

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

    /** {@code VFIO_DEVICE_RESET}. */
    void reset();

    @Override
    void close();
}
