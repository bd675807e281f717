package org.vmmkit.migration.pipeline;

import java.util.concurrent.locks.LockSupport;

import org.vmmkit.vfio.migration.V1DeviceMigration;

/**
 * Queues one device's chunks on the ring: save steps a–d on this thread, e (the write) on the sender's,
 * and step f only after the sender released the chunk. One chunk is out at a time (the v1 protocol allows
 * no more), so the release path is the chunk's own volatile flag: no queue is needed.
 */
public final class DeviceProducer {
    private final V1DeviceMigration device;
    private final TransferRing ring;

    public DeviceProducer(V1DeviceMigration device, TransferRing ring) {
        this.device = device;
        this.ring = ring;
    }

    /**
     * Publishes chunks while {@code pending_bytes} is above 0, at most {@code maxChunks} (0: no limit).
     * Returns the last {@code pending_bytes} read.
     */
    public long drain(long maxChunks) {
        long sent = 0;
        while (true) {
            awaitRelease();
            long pending = device.pendingBytes();
            if (pending == 0 || (maxChunks > 0 && sent >= maxChunks)) return pending;
            ring.publishDevice(device.nextChunk());
            sent++;
        }
    }

    /** Waits until the sender has released the device's chunk (or failed, which is thrown). */
    public void awaitRelease() {
        int spins = 0;
        while (device.chunkOut()) {
            if (ring.failure() != null) throw senderFailed();
            if (++spins < 100) Thread.onSpinWait();
            else LockSupport.parkNanos(20_000);
        }
        if (ring.failure() != null) throw senderFailed();
    }

    private IllegalStateException senderFailed() {
        return new IllegalStateException("the migration sender failed: " + ring.failure(), ring.failure());
    }
}
