package org.vmmkit.core.vfio.v2;

import java.lang.foreign.MemorySegment;

/**
 * One v2 data transfer session: the byte stream a saving device produces (PRE_COPY, PRE_COPY_P2P, STOP_COPY)
 * or a resuming device consumes (RESUMING). The kernel hands it out as {@code data_fd}; a vfio-user device
 * carries it in {@code MIG_DATA_READ}/{@code MIG_DATA_WRITE} messages, an emulated one in a pipe. The raw
 * calls return {@code -errno} and allocate nothing: the save loop runs them per chunk.
 */
public interface MigrationData extends AutoCloseable {

    /** What errors name: the device and the session, e.g. {@code 0000:01:00.0 data_fd 17}. */
    String name();

    /**
     * {@code read(2)} of up to {@code dst.byteSize()} bytes: the count, 0 at the end of the stream (STOP_COPY,
     * for good), {@code -ENOMSG} at pre-copy's temporary end (nothing now; more may come), or another -errno.
     */
    long readRaw(MemorySegment dst);

    /** {@code write(2)} of up to {@code src.byteSize()} bytes (RESUMING): the count or -errno. */
    long writeRaw(MemorySegment src);

    /**
     * {@code VFIO_MIG_GET_PRECOPY_INFO} into {@code info} (a {@code struct vfio_precopy_info}, argsz set by the
     * callee): 0 or -errno (EINVAL outside the PRE_COPY states).
     */
    int precopyInfoRaw(MemorySegment info);

    /** The session as a file descriptor that {@code splice(2)} may take, or -1 when it is not one (vfio-user). */
    int fd();

    /** Ends the session from the VMM's side (the user closes {@code data_fd}). */
    @Override
    void close();
}
