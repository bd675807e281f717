package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;

/**
 * One chunk of device state as the device handed it out: a view of the mmap'd data section (zero copy)
 * or of the pooled buffer it was pread into. Valid until {@link #release()}; the device's next
 * {@code pending_bytes} read (save step f) waits for that release. One object per device, reused.
 */
public final class DeviceChunk implements org.vmmkit.core.migration.SectionChunk {
    private final V1DeviceMigration owner;
    private MemorySegment base;
    private long offset, length;
    private long sequence;
    private boolean mappedView;

    DeviceChunk(V1DeviceMigration owner) {
        this.owner = owner;
    }

    void set(MemorySegment base, long offset, long length, long sequence, boolean mappedView) {
        this.base = base;
        this.offset = offset;
        this.length = length;
        this.sequence = sequence;
        this.mappedView = mappedView;
    }

    /** The device's id in this migration. */
    public int deviceId() {
        return owner.deviceId();
    }

    /** 0 for the device's first chunk, then 1, 2, ...: the destination writes them in this order. */
    @Override
    public long sequence() {
        return sequence;
    }

    /** The bytes, exactly as the device produced them; opaque to the VMM. Slices (allocates) on each call. */
    public MemorySegment data() {
        return base.asSlice(offset, length);
    }

    /**
     * The segment the bytes are in (the whole mapped area, or the pooled buffer): with {@link #offset()} and
     * {@link #length()}, what a sender uses to write the chunk without creating an object per chunk.
     */
    @Override
    public MemorySegment base() {
        return base;
    }

    @Override
    public long offset() {
        return offset;
    }

    @Override
    public long length() {
        return length;
    }

    /** True when {@link #data()} is the mmap'd data section itself, false when it was pread into a buffer. */
    public boolean mappedView() {
        return mappedView;
    }

    /** Hands the chunk back: the data has been consumed (save step e is done). */
    @Override
    public void release() {
        owner.released(this);
    }
}
