package org.vmmkit.migration.pipeline;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyRunCursor;
import org.vmmkit.dirty.DirtyTracker;

/** Queues a sync generation's dirty pages on the ring as runs (the sender splits zero pages out). */
public final class MemoryProducer {
    private final TransferRing ring;
    private final GuestMemory memory;
    private final DirtyRunCursor cursor;

    public MemoryProducer(TransferRing ring, GuestMemory memory, long maxRunPages) {
        this.ring = ring;
        this.memory = memory;
        this.cursor = new DirtyRunCursor(maxRunPages);
    }

    /** Publishes every dirty page of the tracker's current generation; returns how many. */
    public long publish(DirtyTracker tracker) {
        long pages = 0;
        for (GuestRegion r : memory.regions()) {
            cursor.reset(tracker.bitmap(r));
            while (cursor.next()) {
                ring.publishRam(r, cursor.start(), cursor.length());
                pages += cursor.length();
            }
        }
        return pages;
    }
}
