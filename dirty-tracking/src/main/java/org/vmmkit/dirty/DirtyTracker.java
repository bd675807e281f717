package org.vmmkit.dirty;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

/**
 * One merged dirty bitmap per guest memory region and sync generation, from every source. Generation 1
 * (the first sync after {@link #start}) is "everything dirty": the destination has nothing yet. The
 * bitmaps are allocated once and reused; a generation's bitmaps are valid until the next sync.
 */
public final class DirtyTracker implements AutoCloseable {

    /** What one source contributed to the last sync. */
    public record SourceStats(String name, boolean reportsEverything, long lastSyncNanos, long totalSyncNanos, long syncs) {}

    private final GuestMemory memory;
    private final List<DirtySource> sources;
    private final DirtyBitmap[] bitmaps;
    private final long[] lastNanos, totalNanos;
    private final boolean firstIsEverything;
    private long generation;
    private boolean started;

    public DirtyTracker(GuestMemory memory, List<DirtySource> sources) {
        this(memory, sources, true);
    }

    /**
     * A tracker for memory the destination maps itself (a local live upgrade passes the memfds): no source,
     * and no generation, the first included, has a dirty page, so no page is sent.
     */
    public static DirtyTracker nothingToSend(GuestMemory memory) {
        return new DirtyTracker(memory, List.of(), false);
    }

    private DirtyTracker(GuestMemory memory, List<DirtySource> sources, boolean firstIsEverything) {
        this.firstIsEverything = firstIsEverything;
        this.memory = memory;
        this.sources = List.copyOf(sources);
        this.bitmaps = new DirtyBitmap[memory.regions().size()];
        for (GuestRegion r : memory.regions()) bitmaps[r.index()] = new DirtyBitmap(r.size() / GuestMemory.PAGE_SIZE);
        this.lastNanos = new long[sources.size()];
        this.totalNanos = new long[sources.size()];
    }

    /** Starts every source; if one fails, those already started are stopped again. */
    public void start() {
        List<DirtySource> started = new ArrayList<>();
        try {
            for (DirtySource s : sources) {
                s.start();
                started.add(s);
            }
        } catch (RuntimeException e) {
            for (DirtySource s : started) {
                try {
                    s.stop();
                } catch (RuntimeException suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        generation = 0;
        this.started = true;
    }

    /** Takes the next generation from every source; returns its number (1 for the first). */
    public long sync() {
        if (!started) throw new IllegalStateException("dirty tracking is not started");
        generation++;
        for (GuestRegion r : memory.regions()) {
            DirtyBitmap b = bitmaps[r.index()];
            b.clear();
            for (int i = 0; i < sources.size(); i++) {
                long t0 = System.nanoTime();
                sources.get(i).sync(r, b);
                long took = System.nanoTime() - t0;
                lastNanos[i] = r.index() == 0 ? took : lastNanos[i] + took;
                totalNanos[i] += took;
            }
            if (generation == 1 && firstIsEverything) b.setAll();
        }
        return generation;
    }

    public long generation() {
        return generation;
    }

    /** The merged bitmap of a region for the current generation. */
    public DirtyBitmap bitmap(GuestRegion region) {
        return bitmaps[region.index()];
    }

    /** Dirty pages of the current generation, over all regions. */
    public long dirtyPages() {
        long n = 0;
        for (DirtyBitmap b : bitmaps) n += b.count();
        return n;
    }

    /** Whether any source reports every page because it cannot track (statistics must say so). */
    public boolean anySourceReportsEverything() {
        for (DirtySource s : sources) if (s.reportsEverything()) return true;
        return false;
    }

    public List<SourceStats> stats() {
        List<SourceStats> out = new ArrayList<>();
        for (int i = 0; i < sources.size(); i++) {
            DirtySource s = sources.get(i);
            out.add(new SourceStats(s.name(), s.reportsEverything(), lastNanos[i], totalNanos[i], generation));
        }
        return out;
    }

    /** Stops every source (all are tried; the first failure is thrown with the rest suppressed). */
    public void stop() {
        if (!started) return;
        started = false;
        RuntimeException first = null;
        for (DirtySource s : sources) {
            try {
                s.stop();
            } catch (RuntimeException e) {
                if (first == null) first = e;
                else first.addSuppressed(e);
            }
        }
        if (first != null) throw first;
    }

    @Override
    public void close() {
        try {
            stop();
        } finally {
            for (DirtyBitmap b : bitmaps) b.close();
        }
    }
}
