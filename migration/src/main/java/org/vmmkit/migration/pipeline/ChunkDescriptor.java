package org.vmmkit.migration.pipeline;

import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.vfio.migration.DeviceChunk;

/**
 * One slot of the transfer ring, allocated once and reused: what the sender is to write next. It points
 * at the data (a run of guest pages, or a device chunk in the device's data section); it never holds a copy.
 */
public final class ChunkDescriptor {
    enum Kind { RAM, DEVICE, CONTROL }

    Kind kind;
    int channel; // the channel whose sender writes it; TransferRing.ALL_CHANNELS for every one
    GuestRegion region;
    long firstPage, pages;
    DeviceChunk chunk;
    FrameType control;
    long a, b;
    java.nio.ByteBuffer payload; // small control payloads only (vCPU state); null for none

    void ram(GuestRegion region, long firstPage, long pages, int channel) {
        this.kind = Kind.RAM;
        this.channel = channel;
        this.region = region;
        this.firstPage = firstPage;
        this.pages = pages;
        this.chunk = null;
    }

    void device(DeviceChunk chunk) {
        this.kind = Kind.DEVICE;
        this.channel = 0;
        this.chunk = chunk;
        this.region = null;
    }

    void control(FrameType type, long a, long b, java.nio.ByteBuffer payload, int channel) {
        this.kind = Kind.CONTROL;
        this.channel = channel;
        this.control = type;
        this.a = a;
        this.b = b;
        this.payload = payload;
        this.region = null;
        this.chunk = null;
    }
}
