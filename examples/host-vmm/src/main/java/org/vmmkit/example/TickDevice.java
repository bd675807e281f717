package org.vmmkit.example;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SnapshotSection;

/**
 * A device of the host VMM's own (think of a timer or a serial port): a little state that the VMM models,
 * migrated as a section in the simple form — saved whole while the VM is paused, loaded whole before it
 * starts. Its state format is version 1 of kind {@code example-tick}; a destination with another version
 * refuses the stream in setup.
 */
public final class TickDevice extends SnapshotSection {
    private long ticks, period;

    public TickDevice(String id, long period) {
        super(new SectionInfo(id, "example-tick", 1));
        this.period = period;
    }

    /** The device at work (the VMM calls it). */
    public synchronized void tick() {
        ticks++;
    }

    public synchronized long ticks() {
        return ticks;
    }

    public synchronized long period() {
        return period;
    }

    @Override
    protected synchronized byte[] save() {
        return ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(ticks).putLong(period).array();
    }

    @Override
    protected synchronized void load(byte[] state, int version) {
        if (state.length != 16) throw new IllegalArgumentException("tick device state of " + state.length + " bytes, not 16");
        ByteBuffer b = ByteBuffer.wrap(state).order(ByteOrder.LITTLE_ENDIAN);
        ticks = b.getLong();
        period = b.getLong();
    }
}
