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
 * section drains up to its chunk budget, ends with END_OF_ROUND once all is sent and the destination's ROUND_ACK
 * of it (so nothing of the round waits in a socket buffer: on a 1 Gbit/s link a full buffer is ~35 ms that an
 * estimate taken at the last write would miss), then asks the
 * {@link DowntimeEstimator} what stopping now would cost. They end when that is under the downtime limit;
 * when it is not, the {@link ConvergencePolicy} decides: throttle the guest harder each round from round 2
 * (cancelling at the round cap if even that does not fit), cancel at the round cap, or — only when asked —
 * stop and copy at the round cap over the limit. The stats say which.
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
    private final Throttle throttle;
    private final java.util.function.LongSupplier downtimeLimitMicros;
    private final RoundAcks acks;

    /** Waits for the destination's acknowledgement that it read a round's END_OF_ROUND. */
    @FunctionalInterface
    interface RoundAcks {
        void await(long round) throws java.io.IOException;
    }

    /** Pre-copy did not meet the downtime limit and the policy gives it up: the guest runs on at the source. */
    static final class NotConvergingException extends Exception {
        NotConvergingException(String message) {
            super(message);
        }
    }

    PrecopyRounds(MigrationSettings settings, DirtyTracker tracker, TransferRing ring, MemoryProducer memory, List<SectionProducer> sections,
                  LiveStats stats, Throttle throttle, java.util.function.LongSupplier downtimeLimitMicros, RoundAcks acks) {
        this.acks = acks;
        this.throttle = throttle;
        this.downtimeLimitMicros = downtimeLimitMicros;
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
     * Runs rounds until the estimate is under the limit, or the policy ends them at the cap; {@code
     * roundTripMicros} is the handover's floor, {@code cancelled} is checked before each round. Returns whether
     * the cap ended them over the limit (force); throws {@link NotConvergingException} where the policy cancels.
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
            stats.beginRound(dirty, pendingSections); // the sections as the previous round (or setup) left them
            stats.rounds = round;
            drainSectionsWhile(() -> memory.publish(tracker));
            ring.publishControl(FrameType.END_OF_ROUND, round, 0);
            ring.awaitSent(60, TimeUnit.SECONDS);
            acks.await(round);
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
            long limit = downtimeLimitMicros.getAsLong(); // read each round: migrate-set-parameters may have changed it
            stats.tell(new MigrationEvent.Pass(round, bytes, dirty, micros, throttle.percent(), ring.bytesWritten(), pendingSections, limit,
                    Math.max(1, now - roundStart) / 1000));
            if (micros <= limit) {
                stats.convergence = throttle.percent() > 0 ? "converged under a " + throttle.percent() + " % throttle" : "converged";
                return false;
            }
            if (round >= settings.maxIterations()) {
                stats.capped = true;
                String why = "pre-copy did not converge in " + round + " rounds: expected downtime " + micros / 1000 + " ms over the "
                        + limit / 1000 + " ms limit";
                switch (settings.convergence()) {
                    case FORCE -> {
                        stats.convergence = "forced over the limit (" + micros / 1000 + " ms expected, " + limit / 1000 + " ms allowed)";
                        LOG.log(System.Logger.Level.WARNING, why + "; stopping anyway, as migration.convergence = force asks");
                        return true;
                    }
                    case THROTTLE -> {
                        stats.convergence = "cancelled: did not converge under a " + throttle.percent() + " % throttle";
                        throw new NotConvergingException(why + (throttle.percent() > 0 ? " even with the guest throttled to " + throttle.percent() + " %"
                                : " before throttling began (it starts after round 2)") + " (migration.convergence = throttle); cancelled, so the limit holds");
                    }
                    case CANCEL -> {
                        stats.convergence = "cancelled: did not converge";
                        throw new NotConvergingException(why + " (migration.convergence = cancel); cancelled, so the limit holds");
                    }
                }
            }
            if (settings.convergence() == ConvergencePolicy.THROTTLE && round >= 2 && !throttle.atMaximum()) {
                int percent = throttle.raise(); // round 1 sends everything; from round 2 the dirty rate is what is left
                estimator.throttleChanged();
                stats.throttlePercent = percent;
                LOG.log(System.Logger.Level.INFO, "round {0}: expected downtime {1} ms over the {2} ms limit; guest throttled to {3} %",
                        round, micros / 1000, limit / 1000, percent);
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
