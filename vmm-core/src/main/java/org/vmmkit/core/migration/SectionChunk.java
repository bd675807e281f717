package org.vmmkit.core.migration;

import java.lang.foreign.MemorySegment;

/**
 * One chunk of a section's state as the section hands it out: {@code length} bytes at {@code offset} of
 * {@code base}, memory the section owns (a device's mapped data section, a buffer it reuses), valid until
 * {@link #release()}. The migration writes it from there without a copy; a section asks for its next chunk
 * only once the last one was released. Implementations are typically one reused object per section.
 */
public interface SectionChunk {
    MemorySegment base();

    long offset();

    long length();

    /** 0 for the section's first chunk of a migration, then 1, 2, ...: the destination loads them in this order. */
    long sequence();

    /** The bytes were written: the section may produce its next chunk. */
    void release();
}
