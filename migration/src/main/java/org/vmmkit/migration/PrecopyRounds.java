package org.vmmkit.migration;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.MemoryProducer;
import org.vmmkit.migration.pipeline.SectionProducer;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.wire.FrameType;

/**
 * The pre-copy rounds: each syncs and merges the dirty bitmaps, queues the dirty memory while one thread per
 * section drains up to its chunk budget, ends with END_OF_ROUND once all is sent, then asks the
 * {@link DowntimeEstimator} what stopping now would cost. They end when that is under the downtime limit, or
 * at the round cap (the stats say so).
 */
final class PrecopyRounds {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    private final MigrationSettings settings;
    private final DirtyTracker tracker;
    private final TransferRing ring;
    private final MemoryProducer memory;
    private final List<SectionProducer> sections;
    private final LiveStats stats;

    PrecopyRounds(MigrationSettings settings, DirtyTracker tracker, TransferRing ring, MemoryProducer memory, List<SectionProducer> sections,
                  LiveStats stats) {
        this.settings = settings;
        this.tracker = tracker;
        this.ring = ring;
        this.memory = memory;
        this.sections = sections;
        this.stats = stats;
    }

    /** What every section would still send if stopped now, summed (no chunk is out when it is called). */
    long pendingSectionBytes() {
        long sum = 0;
        for (SectionProducer p : sections) sum += p.section().downtimeBytes();
        return sum;
    }

    /**
     * Runs rounds until the estimate is under the limit or the cap is reached; {@code roundTripMicros} is the
     * handover's floor, {@code cancelled} is checked before each round. Returns whether the cap ended them.
     */
    boolean run(long roundTripMicros, Runnable checkCancelled) throws Throwable {
        DowntimeEstimator estimator = new DowntimeEstimator(PAGE, roundTripMicros);
        long pendingSections = pendingSectionBytes();
        while (true) {
            checkCancelled.run();
            long round = stats.rounds + 1;
            MigrationEvents.Round event = new MigrationEvents.Round();
            event.begin();
            long roundStart = System.nanoTime();
            long bytesBefore = ring.bytesWritten();
            tracker.sync();
            long syncedAt = System.nanoTime(); // this sync's pages were dirtied since the previous sync
            long dirty = tracker.dirtyPages();
            stats.roundSentAtStart = bytesBefore;
            stats.roundRemaining = dirty * PAGE + pendingSections; // as the previous round (or setup) left the sections
            stats.rounds = round;
            drainSectionsWhile(() -> memory.publish(tracker));
            ring.publishControl(FrameType.END_OF_ROUND, round, 0);
            ring.awaitSent(60, TimeUnit.SECONDS);
            long now = System.nanoTime();
            long bytes = ring.bytesWritten() - bytesBefore;
            pendingSections = pendingSectionBytes();
            long micros = estimator.round(syncedAt, dirty, roundStart, now, bytes, ring.bytesWritten(), pendingSections);
            stats.dirtyRate = estimator.dirtyRate();
            stats.expectedMicros = micros;
            event.round = round;
            event.dirtyPages = dirty;
            event.bytes = bytes;
            event.devicePending = pendingSections;
            event.expectedDowntime = micros;
            event.commit();
            LOG.log(System.Logger.Level.DEBUG, "round {0}: {1} dirty pages, {2} bytes in {3} us, {4} bytes pending in sections, expected downtime {5} us",
                    round, dirty, bytes, Math.max(1, now - roundStart) / 1000, pendingSections, micros);
            if (micros <= settings.downtimeLimit().toNanos() / 1000) return false;
            if (round >= settings.maxIterations()) {
                stats.capped = true;
                return true;
            }
        }
    }

    /** Runs {@code publishMemory} on this thread while each section drains its round's budget on its own. */
    private void drainSectionsWhile(Runnable publishMemory) throws Throwable {
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = new CopyOnWriteArrayList<>();
        for (SectionProducer p : sections) {
            threads.add(Thread.ofPlatform().name("section-producer").start(() -> {
                try {
                    p.drain(settings.deviceChunksPerRound());
                } catch (Throwable t) {
                    errors.add(t);
                }
            }));
        }
        try {
            publishMemory.run();
        } finally {
            // Joined whatever happened: a rollback must not cancel a section that a producer thread is still
            // asking for a chunk (the soak caught it under load: data_size read after the cancel). A failed
            // sender keeps consuming the ring without writing and fails each producer, so the joins end.
            for (Thread t : threads) t.join();
        }
        if (!errors.isEmpty()) throw errors.get(0);
    }
}
