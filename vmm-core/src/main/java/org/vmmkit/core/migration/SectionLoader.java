package org.vmmkit.core.migration;

import java.lang.foreign.MemorySegment;

/**
 * The destination side of a migratable component. The destination calls {@link #canLoad} on the stream
 * header's version before anything changes; then {@link #startLoad}; for each chunk, in the source's order,
 * {@link #placeChunk} (where the bytes go: the destination reads them straight there), then
 * {@link #commitChunk} once they arrived intact; {@link #finishLoad} when the stream is complete (before
 * the destination says it is prepared); {@link #start} when the VM starts; or {@link #abortLoad} when the
 * stream will not complete.
 */
public interface SectionLoader {
    SectionInfo info();

    /** Whether this loader reads state of {@code version} (of its own kind). */
    boolean canLoad(int version);

    /** Setup: the stream carries state of {@code version} (one {@link #canLoad} accepted). */
    void startLoad(int version);

    /** Where the next chunk of {@code size} bytes goes: an offset into {@link #targetSegment} at which {@code size} bytes fit. */
    long placeChunk(long size);

    /** The memory {@link #placeChunk}'s offset is in. */
    MemorySegment targetSegment();

    /** The chunk placed last arrived whole and intact: load it. */
    void commitChunk(long size);

    /** The stream is complete: fails if this component's state is not (before the destination says PREPARED). */
    void finishLoad();

    /** The VM starts: the component runs with the loaded state. */
    void start();

    /** A load that will not complete: the component must not run with partial state. Says what it did. */
    String abortLoad();
}
