package org.vmmkit.core.migration;

import java.lang.foreign.MemorySegment;

/**
 * The simple form of a section, for small state that is saved whole while the VM is paused and loaded whole
 * (a serial port's registers, an interrupt controller): implement {@link #save} and {@link #load}, and it
 * is a {@link SectionSaver} and a {@link SectionLoader}. Its state travels as one chunk in stop-and-copy;
 * nothing in pre-copy.
 */
public abstract class SnapshotSection implements SectionSaver, SectionLoader {
    /** The largest state this form carries; larger state wants the iterative form. */
    public static final int MAX_BYTES = 16 << 20;

    private final SectionInfo info;
    private byte[] saved;
    private boolean stopped, out, sent;
    private MemorySegment target;
    private boolean loaded;
    private int loadVersion;
    private final SectionChunk chunk = new SectionChunk() {
        @Override
        public MemorySegment base() {
            return MemorySegment.ofArray(saved);
        }

        @Override
        public long offset() {
            return 0;
        }

        @Override
        public long length() {
            return saved.length;
        }

        @Override
        public long sequence() {
            return 0;
        }

        @Override
        public void release() {
            out = false;
        }
    };

    protected SnapshotSection(SectionInfo info) {
        this.info = info;
    }

    /** The component's whole state; called once, with the VM paused. */
    protected abstract byte[] save();

    /** Loads {@link #save}'s bytes of {@code version}; called once, before the VM starts. Throws if they do not fit. */
    protected abstract void load(byte[] state, int version);

    /** Called when the VM starts with the loaded state (nothing by default). */
    protected void started() {
    }

    @Override
    public SectionInfo info() {
        return info;
    }

    @Override
    public boolean canLoad(int version) {
        return version == info.version();
    }

    @Override
    public void startSave() {
        saved = null;
        stopped = out = sent = false;
    }

    @Override
    public long pending() {
        if (!stopped) return 0; // nothing moves while the VM runs
        if (saved == null) {
            saved = save();
            if (saved.length > MAX_BYTES) throw new IllegalStateException("section " + info + ": " + saved.length + " bytes; the snapshot form carries at most " + MAX_BYTES);
        }
        return sent ? 0 : saved.length;
    }

    @Override
    public SectionChunk nextChunk() {
        if (!stopped || saved == null || sent) throw new IllegalStateException("section " + info + ": no chunk is due");
        sent = true;
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
    }

    @Override
    public void finishSave() {
        if (!sent) throw new IllegalStateException("section " + info + ": finished before its state was sent");
    }

    @Override
    public String cancelSave() {
        saved = null;
        stopped = out = sent = false;
        return "section " + info.id() + " unchanged";
    }

    @Override
    public void startLoad(int version) {
        loadVersion = version;
        loaded = false;
        target = null;
    }

    @Override
    public long placeChunk(long size) {
        if (loaded || size < 0 || size > MAX_BYTES) throw new IllegalStateException("section " + info + ": a chunk of " + size + " bytes where " + (loaded ? "none" : "one of at most " + MAX_BYTES) + " is due");
        target = MemorySegment.ofArray(new byte[(int) size]);
        return 0;
    }

    @Override
    public MemorySegment targetSegment() {
        return target;
    }

    @Override
    public void commitChunk(long size) {
        load(target.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), loadVersion);
        loaded = true;
        target = null;
    }

    @Override
    public void finishLoad() {
        if (!loaded) throw new IllegalStateException("section " + info + ": the stream completed without its state");
    }

    @Override
    public void start() {
        started();
    }

    @Override
    public String abortLoad() {
        loaded = false;
        target = null;
        return "section " + info.id() + " discarded";
    }
}
