package org.vmmkit.migration;

import java.util.concurrent.ExecutionException;
import java.util.List;
import java.util.concurrent.Future;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.MigrationThreads;

/**
 * A migration's dirty tracker made and started on a {@link MigrationThreads} thread, so that this overlaps the
 * handshake's waits on the network (issue #12: 6–10 ms of a 2 GiB guest's setup in a vmm process: its bitmaps'
 * first touch, the IOMMU dirty source's first run), and handed back to the migrating thread.
 */
final class TrackingStart {
    private final Future<?> started;
    private volatile DirtyTracker tracker; // set on the pooled thread; read after the future ended (happens-before)
    private volatile long micros;

    /** Begins making and starting a tracker of {@code memory} over {@code sources} now, on another thread. */
    TrackingStart(GuestMemory memory, List<DirtySource> sources) {
        this.started = MigrationThreads.start("migration-tracking-start", () -> {
            long begun = System.nanoTime();
            DirtyTracker t = new DirtyTracker(memory, sources);
            tracker = t;
            t.start();
            micros = (System.nanoTime() - begun) / 1000;
        });
    }

    /** Waits for the start to end and returns the tracker, started; throws what the start threw (a source that failed, the others stopped again). */
    DirtyTracker await() throws InterruptedException {
        try {
            started.get();
            return tracker;
        } catch (ExecutionException e) {
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException r) throw r;
            if (cause instanceof Error r) throw r;
            throw new IllegalStateException("starting dirty tracking failed: " + cause, cause);
        }
    }

    /** Waits for the start to end, whatever its outcome (before a rollback stops the tracking, or the tracker is closed). */
    void settle() {
        boolean interrupted = false;
        while (!started.isDone()) {
            try {
                started.get();
            } catch (InterruptedException e) {
                interrupted = true;
            } catch (ExecutionException e) {
                break; // await() reports it, or the failure being rolled back already does
            }
        }
        if (interrupted) Thread.currentThread().interrupt();
    }

    /**
     * The tracker once {@link #settle} returned: started, or made and not started (its start failed), or null (making
     * it failed); to be stopped and closed by the caller.
     */
    DirtyTracker tracker() {
        return tracker;
    }

    /** How long making and starting it took (microseconds), once it ended. */
    long micros() {
        return micros;
    }
}
