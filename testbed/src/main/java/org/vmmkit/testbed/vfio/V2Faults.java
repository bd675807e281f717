package org.vmmkit.testbed.vfio;

import org.vmmkit.core.vfio.v2.MigState;

/**
 * Failures to inject into an {@link EmulatedV2Device}: what a real v2 driver may do that the header allows for.
 * Set from a test thread; read by the device under its lock.
 */
public final class V2Faults {
    volatile MigState failArcInto;
    volatile int failArcErrno;
    volatile MigState errorOnArcInto;
    volatile int readErrno;
    volatile long readErrorAfterBytes = -1;
    volatile long endStreamAfterBytes = -1;
    volatile boolean refuseStream;
    volatile int precopyInfoErrno;

    /** The arc into {@code state} fails with {@code errno}; the device stays where the walk had got to. */
    public V2Faults failArc(MigState state, int errno) {
        failArcErrno = errno;
        failArcInto = state;
        return this;
    }

    /** The arc into {@code state} fails with EIO and leaves the device in ERROR. */
    public V2Faults errorOnArc(MigState state) {
        errorOnArcInto = state;
        return this;
    }

    /** Reads of the saving data_fd fail with {@code errno} once {@code afterBytes} were read. */
    public V2Faults failReads(int errno, long afterBytes) {
        readErrno = errno;
        readErrorAfterBytes = afterBytes;
        return this;
    }

    /** The saving data_fd reaches its end after {@code bytes} bytes, before the device's state is complete. */
    public V2Faults endStreamAfter(long bytes) {
        endStreamAfterBytes = bytes;
        return this;
    }

    /** The resuming device finds the stream invalid at RESUMING → STOP (EINVAL, then ERROR). */
    public V2Faults refuseStream() {
        refuseStream = true;
        return this;
    }

    /** VFIO_MIG_GET_PRECOPY_INFO fails with {@code errno}. */
    public V2Faults failPrecopyInfo(int errno) {
        precopyInfoErrno = errno;
        return this;
    }

    public void clear() {
        failArcInto = null;
        errorOnArcInto = null;
        readErrorAfterBytes = -1;
        endStreamAfterBytes = -1;
        refuseStream = false;
        precopyInfoErrno = 0;
    }
}
