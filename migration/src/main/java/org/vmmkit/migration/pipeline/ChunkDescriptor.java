package org.vmmkit.migration.pipeline;

import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.core.migration.SectionChunk;

/**
 * One slot of the transfer ring, allocated once and reused: what the sender is to write next. It points
 * at the data (a run of guest pages, or a section's chunk in memory the section owns); it never holds a copy.
 */
public final class ChunkDescriptor {
    enum Kind { RAM, SECTION, CONTROL }

    Kind kind;
    int channel; // the channel whose sender writes it; TransferRing.ALL_CHANNELS for every one
    GuestRegion region;
    long firstPage, pages;
    SectionChunk chunk;
    int section; // the section's index in the stream header
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

    void section(int section, SectionChunk chunk) {
        this.kind = Kind.SECTION;
        this.channel = 0;
        this.section = section;
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
