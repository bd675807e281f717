package org.vmmkit.testbed.vfio;

import java.time.Duration;

/**
 * Failures to inject into an {@link EmulatedMigratableDevice}, each the misbehaviour of a real vendor
 * driver that the reference thread allows for. Set from a test thread; read by the device under its lock.
 */
public final class Faults {
    volatile int failStateWriteTo = -1, failStateWriteErrno;
    volatile int errorOnStateWriteTo = -1;
    volatile long badDataOffset = -1, badDataSize = -1;
    volatile boolean pendingNeverDrains;
    volatile long slowDataNanos;
    volatile String failRead;
    volatile int failReadErrno;
    volatile int failResumeErrno;
    volatile int failStagingAfterChunks = -1;

    /** Writing {@code device_state} with these state bits fails with {@code errno}; the state stays. */
    public Faults failStateWrite(int stateBits, int errno) {
        failStateWriteErrno = errno;
        failStateWriteTo = stateBits;
        return this;
    }

    /** Writing {@code device_state} with these state bits fails with EIO and the device falls into ERROR. */
    public Faults errorOnStateWrite(int stateBits) {
        errorOnStateWriteTo = stateBits;
        return this;
    }

    /** {@code data_offset} reads return this value. */
    public Faults badDataOffset(long offset) {
        badDataOffset = offset;
        return this;
    }

    /** {@code data_size} reads return this value. */
    public Faults badDataSize(long size) {
        badDataSize = size;
        return this;
    }

    /** In stop-and-copy {@code pending_bytes} never reaches 0 (each chunk is empty). */
    public Faults pendingNeverDrains() {
        pendingNeverDrains = true;
        return this;
    }

    /** Each {@code data_offset} read (staging a chunk) takes this long. */
    public Faults slowData(Duration delay) {
        slowDataNanos = delay.toNanos();
        return this;
    }

    /** Reads of this register ({@code pending_bytes}, {@code data_offset}, {@code data_size}, {@code device_state}) fail. */
    public Faults failRead(String register, int errno) {
        failReadErrno = errno;
        failRead = register;
        return this;
    }

    /** On the destination, writing {@code data_size} (applying a chunk) fails with {@code errno}. */
    public Faults failResume(int errno) {
        failResumeErrno = errno;
        return this;
    }

    /** After this many chunks, staging the next one fails (EIO on the {@code data_offset} read). */
    public Faults failStagingAfter(int chunks) {
        failStagingAfterChunks = chunks;
        return this;
    }

    /** Removes every fault. */
    public Faults clear() {
        failStateWriteTo = -1;
        errorOnStateWriteTo = -1;
        badDataOffset = -1;
        badDataSize = -1;
        pendingNeverDrains = false;
        slowDataNanos = 0;
        failRead = null;
        failResumeErrno = 0;
        failStagingAfterChunks = -1;
        return this;
    }
}
