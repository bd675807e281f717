package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;

/**
 * One chunk of device state as the device handed it out: a view of the mmap'd data section (zero copy)
 * or of the pooled buffer it was pread into. Valid until {@link #release()}; the device's next
 * {@code pending_bytes} read (save step f) waits for that release. One object per device, reused.
 */
public final class DeviceChunk {
    private final V1DeviceMigration owner;
    private MemorySegment data;
    private long sequence;
    private boolean mappedView;

    DeviceChunk(V1DeviceMigration owner) {
        this.owner = owner;
    }

    void set(MemorySegment data, long sequence, boolean mappedView) {
        this.data = data;
        this.sequence = sequence;
        this.mappedView = mappedView;
    }

    /** The device's id in this migration. */
    public int deviceId() {
        return owner.deviceId();
    }

    /** 0 for the device's first chunk, then 1, 2, ...: the destination writes them in this order. */
    public long sequence() {
        return sequence;
    }

    /** The bytes, exactly as the device produced them; opaque to the VMM. */
    public MemorySegment data() {
        return data;
    }

    /** True when {@link #data()} is the mmap'd data section itself, false when it was pread into a buffer. */
    public boolean mappedView() {
        return mappedView;
    }

    /** Hands the chunk back: the data has been consumed (save step e is done). */
    public void release() {
        owner.released(this);
    }
}
