package org.vmmkit.migration;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.migration.pipeline.TransferRing;

/**
 * A migration's statistics as it runs and once it ended: written by the migrating thread (status, times,
 * rounds, the estimate), read by {@link #snapshot} from any thread. The bytes, pages and chunks come from
 * the ring's senders, counted for this migration only. Every field is volatile: each is one writer's, and a
 * snapshot may mix figures of two moments, never a torn value. Each state change is told to the listener
 * ({@link MigrationEvent.StatusChange}) on the thread that makes it.
 */
final class LiveStats {
    private final List<SectionSaver> sections;
    volatile MigrationStatus status = MigrationStatus.NONE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");
    volatile long startNanos, setupNanos, pauseNanos, rounds, dirtyRate;
    /** The downtime expected of stopping after the last round, in microseconds; 0 before the first estimate. */
    volatile long expectedMicros;
    /** What the current round has to move: its sync's dirty pages and the sections' pending bytes, and the ring's counts when it began. */
    private volatile long roundDirtyPages, roundSectionsPending, roundPagesAtStart, roundSectionBytesAtStart;
    private volatile Consumer<MigrationEvent> listener = e -> { };
    volatile boolean capped;
    volatile String convergence = ""; // how pre-copy ended, once it did
    volatile int throttlePercent;
    volatile Throttle throttle;
    volatile long destinationResident = -1; // from ACK_COMPLETE; -1 until known
    volatile boolean memfdsPassed; // guest memory handed over as memfds (a local live upgrade): no RAM copied
    volatile TransferRing ring;
    private volatile MigrationStats finalStats;
    private volatile String error;

    LiveStats(List<SectionSaver> sections) {
        this.sections = sections;
    }

    /** The statistics now: the final ones once the migration ended, else live. */
    MigrationStats snapshot() {
        MigrationStats done = finalStats;
        if (done != null) return done;
        MigrationStatus now = status;
        if (now == MigrationStatus.NONE) return MigrationStats.none();
        return live(now, 0);
    }

    private MigrationStats live(MigrationStatus as, long downtimeNanos) {
        TransferRing r = ring;
        long total = System.nanoTime() - startNanos;
        long sent = r == null ? 0 : r.bytesWritten();
        // A page is done once sent, whatever it cost on the wire (a zero page a few bytes), as QEMU's remaining counts it.
        long pagesDone = r == null ? 0 : r.ramPages() + r.zeroPages() - roundPagesAtStart;
        long sectionDone = r == null ? 0 : r.sectionBytes() - roundSectionBytesAtStart;
        long remaining = as.ended() ? 0 : Math.max(0, roundDirtyPages - pagesDone) * GuestMemory.PAGE_SIZE
                + Math.max(0, roundSectionsPending - sectionDone);
        long expected = expectedMicros == 0 ? -1 : expectedMicros / 1000; // -1: no estimate yet (none before round 1 ends)
        return new MigrationStats(as, total / 1_000_000, setupNanos / 1_000_000, downtimeNanos / 1_000_000, expected, sent, remaining,
                rounds, r == null ? 0 : r.ramPages(), r == null ? 0 : r.zeroPages(), r == null ? 0 : r.sectionBytes(), dirtyRate,
                sent * 8 / 1e6 / Math.max(total / 1e9, 1e-9), capped, sectionStats(), destinationResident, convergenceStats(), memfdsPassed);
    }

    private MigrationStats.ConvergenceStats convergenceStats() {
        Throttle t = throttle;
        return new MigrationStats.ConvergenceStats(policy, convergence, throttlePercent, t == null ? 0 : t.throttled().toMillis());
    }

    volatile ConvergencePolicy policy = ConvergencePolicy.THROTTLE;

    /** This migration's bytes and chunks per section (counted by the ring: nothing of an earlier attempt). */
    private List<MigrationStats.SectionStats> sectionStats() {
        TransferRing r = ring;
        List<MigrationStats.SectionStats> out = new ArrayList<>();
        for (int i = 0; i < sections.size(); i++) {
            SectionInfo info = sections.get(i).info();
            out.add(new MigrationStats.SectionStats(info.id(), info.kind(), r == null ? 0 : r.sectionBytes(i), r == null ? 0 : r.sectionChunks(i)));
        }
        return out;
    }

    /** Who is told of each state change and round (one at a time, on the migrating thread; it must not block). */
    void listener(Consumer<MigrationEvent> l) {
        this.listener = l;
    }

    /** Tells the listener; a listener's failure is logged, never the migration's. */
    void tell(MigrationEvent e) {
        try {
            listener.accept(e);
        } catch (RuntimeException x) {
            LOG.log(System.Logger.Level.WARNING, "a migration event listener failed on " + e + ": " + x);
        }
    }

    /** Enters {@code as} in {@code phase} and tells the listener. */
    void enter(MigrationStatus as, String phase) {
        status = as;
        tell(new MigrationEvent.StatusChange(as, phase, null));
    }

    /** A round begins: its sync found {@code dirtyPages}, the sections have {@code sectionsPending} bytes to send. */
    void beginRound(long dirtyPages, long sectionsPending) {
        TransferRing r = ring;
        roundPagesAtStart = r.ramPages() + r.zeroPages();
        roundSectionBytesAtStart = r.sectionBytes();
        roundSectionsPending = sectionsPending;
        roundDirtyPages = dirtyPages;
    }

    /** Why it failed, was cancelled or is unknown, and what was done; how a completion was learned when not by ACK. */
    String error() {
        return error;
    }

    /** Ends the migration {@code completed}: the downtime runs from the pause to now. */
    MigrationStats completed(String note) {
        return end(MigrationStatus.COMPLETED, note, System.nanoTime() - pauseNanos);
    }

    /** Ends it with {@code as} (failed, cancelled, unknown), keeping the figures of the moment. */
    MigrationStats end(MigrationStatus as, String why) {
        return end(as, why, 0);
    }

    private MigrationStats end(MigrationStatus as, String why, long downtimeNanos) {
        error = why; // before finalStats: a reader that sees the end sees why
        MigrationStats s = live(as, downtimeNanos);
        finalStats = s;
        status = as;
        tell(new MigrationEvent.StatusChange(as, null, why));
        return s;
    }

    /** A later settlement of an ended migration (an unknown outcome resolved): the same figures, another status. */
    MigrationStats settle(MigrationStatus as, String why) {
        error = why;
        MigrationStats s = finalStats.withStatus(as);
        finalStats = s;
        status = as;
        tell(new MigrationEvent.StatusChange(as, null, why));
        return s;
    }

    /** A migration that never got a connection: nothing was sent. */
    MigrationStats notStarted(String why) {
        error = why;
        MigrationStats s = MigrationStats.none().withStatus(MigrationStatus.FAILED);
        finalStats = s;
        status = MigrationStatus.FAILED;
        tell(new MigrationEvent.StatusChange(MigrationStatus.FAILED, null, why));
        return s;
    }
}
