package org.vmmkit.migration.pipeline;

import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.migration.SectionSaver;

/**
 * Queues one section's chunks on the ring: the section produces a chunk on this thread, the sender writes it
 * and releases it, and only then is the section asked for more. One chunk is out at a time (a VFIO v1 device
 * allows no more), so the release path is the chunk's own flag: no queue is needed.
 */
public final class SectionProducer {
    private final SectionSaver section;
    private final int index;
    private final TransferRing ring;

    /** {@code index}: the section's place in the stream header, which its frames carry. */
    public SectionProducer(SectionSaver section, int index, TransferRing ring) {
        this.section = section;
        this.index = index;
        this.ring = ring;
    }

    public SectionSaver section() {
        return section;
    }

    /**
     * Publishes chunks while the section has bytes pending, at most {@code maxChunks} (0: no limit). Returns
     * the last pending count read.
     */
    public long drain(long maxChunks) {
        long sent = 0;
        while (true) {
            awaitRelease();
            long pending = section.pending();
            if (pending == 0 || (maxChunks > 0 && sent >= maxChunks)) return pending;
            ring.publishSection(index, section.nextChunk());
            sent++;
        }
    }

    /** Waits until the sender has released the section's chunk (or failed, which is thrown). */
    public void awaitRelease() {
        int spins = 0;
        while (section.chunkOut()) {
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
