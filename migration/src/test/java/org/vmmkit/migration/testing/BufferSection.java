package org.vmmkit.migration.testing;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.vmmkit.core.migration.SectionChunk;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.core.migration.SectionSaver;

/**
 * An iterative section that is no VFIO device: a buffer of state sent in chunks straight from its own memory,
 * the whole of it in pre-copy and again after {@link #stop} (so whatever changed while it ran arrives). {@link #mutate} changes it while it "runs". The destination side
 * loads chunks in order into its own buffer.
 */
public final class BufferSection implements SectionSaver, SectionLoader, AutoCloseable {
    private static final long CHUNK = 64 * 1024;
    private final SectionInfo info;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment state;
    private long cursor, sequence;
    private boolean stopped, finished, saving;
    private volatile boolean out;
    private int loadedChunks;
    private final Chunk chunk = new Chunk();

    /** The one chunk object, reused. */
    private final class Chunk implements SectionChunk {
        long offset, length, sequence;

        @Override
        public MemorySegment base() {
            return state;
        }

        @Override
        public long offset() {
            return offset;
        }

        @Override
        public long length() {
            return length;
        }

        @Override
        public long sequence() {
            return sequence;
        }

        @Override
        public void release() {
            out = false;
        }
    }

    public BufferSection(SectionInfo info, long size, long seed) {
        this.info = info;
        this.state = arena.allocate(size, 4096);
        for (long o = 0; o < size; o += 8) state.set(ValueLayout.JAVA_LONG, o, seed * 31 + o);
    }

    /** Changes a word of the state (the component at work). */
    public void mutate(long word, long value) {
        state.set(ValueLayout.JAVA_LONG, (word * 8) % state.byteSize(), value);
    }

    public MemorySegment state() {
        return state;
    }

    @Override
    public SectionInfo info() {
        return info;
    }

    @Override
    public void startSave() {
        cursor = sequence = 0;
        stopped = finished = false;
        saving = true;
    }

    @Override
    public long pending() {
        return state.byteSize() - cursor;
    }

    @Override
    public SectionChunk nextChunk() {
        chunk.offset = cursor;
        chunk.length = Math.min(CHUNK, state.byteSize() - cursor);
        chunk.sequence = sequence++;
        cursor += chunk.length;
        out = true;
        return chunk;
    }

    @Override
    public boolean chunkOut() {
        return out;
    }

    @Override
    public void stop() {
        stopped = true;
        cursor = 0; // everything again: what changed while it ran arrives
    }

    @Override
    public void finishSave() {
        if (!stopped || cursor != state.byteSize()) throw new IllegalStateException(info + ": finished with " + pending() + " bytes unsent");
        finished = true;
    }

    @Override
    public String cancelSave() {
        saving = false;
        return "section " + info.id() + " runs on";
    }

    public boolean saving() {
        return saving && !finished;
    }

    // ---- destination ----

    private long loadAt;

    @Override
    public boolean canLoad(int version) {
        return version == info.version();
    }

    @Override
    public void startLoad(int version) {
        loadAt = 0;
        loadedChunks = 0;
    }

    @Override
    public long placeChunk(long size) {
        if (loadAt + size > state.byteSize()) loadAt = 0; // the second pass starts over
        return loadAt;
    }

    @Override
    public MemorySegment targetSegment() {
        return state;
    }

    @Override
    public void commitChunk(long size) {
        loadAt += size;
        loadedChunks++;
    }

    @Override
    public void finishLoad() {
        if (loadAt != state.byteSize()) throw new IllegalStateException(info + ": the stream ended at byte " + loadAt + " of its state");
    }

    @Override
    public void start() {
    }

    @Override
    public String abortLoad() {
        return "section " + info.id() + " discarded";
    }

    public int loadedChunks() {
        return loadedChunks;
    }

    @Override
    public void close() {
        arena.close();
    }
}
