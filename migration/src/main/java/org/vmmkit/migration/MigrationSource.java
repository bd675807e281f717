package org.vmmkit.migration;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.net.SocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.SectionProducer;
import org.vmmkit.migration.pipeline.MemoryProducer;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.OutcomeQuery;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionSaver;

/**
 * The source side of a live migration, the pre-copy coordinator: setup (header, READY, dirty tracking,
 * devices to pre-copy), rounds that sync and merge the dirty bitmaps, queue dirty memory and drain device
 * pre-copy data together through the ring, then measure bandwidth and estimate the downtime of stopping
 * now; stop-and-copy once that estimate is under the limit or at the round cap (pause vCPUs, devices to
 * stop-and-copy, the final sync, the rest of memory and every device until pending is 0, vCPU state,
 * COMPLETE); and the handover: the destination answers PREPARED once the stream is whole and loaded, the
 * source decides with COMMIT, and the destination starts its VM only after reading it (ACK_COMPLETE). Any
 * failure before the source begins to write COMMIT rolls it back: devices running, vCPUs resumed, dirty
 * tracking stopped. After that point the source never resumes on its own: a lost answer leaves the outcome
 * unknown, the source asks the destination on a fresh connection, and where no answer comes its VM stays
 * paused with status {@code unknown} until {@link #resolve} or {@link #resolveByAsking} settles it.
 */
public final class MigrationSource {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    private final MigratableVm vm;
    private final GuestMemory memory;
    private final List<DirtySource> dirtySources;
    private final List<SectionSaver> sections;
    private final MigrationSettings settings;

    /** Migrates a KVM VM. */
    public MigrationSource(Vm vm, List<DirtySource> dirtySources, List<? extends SectionSaver> sections, MigrationSettings settings) {
        this(new KvmGuest(vm, null), dirtySources, sections, settings);
    }

    /**
     * Migrates any {@link MigratableVm} (a KVM VM, a software guest, a host VMM's own) with its guest RAM, vCPU
     * state, and {@code sections}: every other component, iterated without the coordinator knowing what it is
     * (a VFIO device, a host device, platform state), each with an id unique in the VM.
     */
    public MigrationSource(MigratableVm vm, List<DirtySource> dirtySources, List<? extends SectionSaver> sections, MigrationSettings settings) {
        this.vm = vm;
        this.memory = vm.memory();
        this.dirtySources = List.copyOf(dirtySources);
        this.sections = List.copyOf(sections);
        this.settings = settings;
        java.util.Set<String> ids = new java.util.HashSet<>();
        for (SectionSaver x : this.sections) {
            if (!ids.add(x.info().id())) throw new IllegalArgumentException("two sections have the id " + x.info().id());
        }
        if (this.sections.size() > StreamHeader.MAX_SECTIONS) throw new IllegalArgumentException(this.sections.size() + " sections; a stream carries at most " + StreamHeader.MAX_SECTIONS);
    }

    /** The stream header of a VM: its layout, sections (in this order, which their frames' indexes follow) and vCPUs. */
    public static StreamHeader headerOf(GuestMemory memory, List<SectionInfo> sections, int vcpus) {
        List<StreamHeader.Range> ranges = new ArrayList<>();
        for (GuestRegion r : memory.regions()) ranges.add(new StreamHeader.Range(r.guestAddress(), r.size()));
        return new StreamHeader(StreamHeader.VERSION, (int) PAGE, ranges, sections, vcpus);
    }

    private List<SectionInfo> sectionInfos() {
        List<SectionInfo> out = new ArrayList<>();
        for (SectionSaver x : sections) out.add(x.info());
        return out;
    }

    /** How long the source waits for the destination's READY (nothing has started before it). */
    public static final java.time.Duration READY_TIMEOUT = java.time.Duration.ofSeconds(30);
    private java.time.Duration readyTimeout = READY_TIMEOUT;

    /** Another wait for READY than {@link #READY_TIMEOUT} (tests). */
    MigrationSource withReadyTimeout(java.time.Duration timeout) {
        this.readyTimeout = timeout;
        return this;
    }

    /**
     * How long the source, its vCPUs paused, waits for PREPARED once the whole stream is sent. Rolling back is
     * safe until COMMIT, so a destination that stopped answering (stopped, hung) is given up on rather than
     * holding the guest paused without limit; the bound is the destination's own for its further channels.
     */
    public static final java.time.Duration PREPARED_TIMEOUT = java.time.Duration.ofSeconds(60);
    private java.time.Duration preparedTimeout = PREPARED_TIMEOUT;

    /** Another wait for PREPARED than {@link #PREPARED_TIMEOUT} (tests). */
    MigrationSource withPreparedTimeout(java.time.Duration timeout) {
        this.preparedTimeout = timeout;
        return this;
    }

    /** How long the source waits for an outcome query's connection, and again for its answer. */
    public static final java.time.Duration OUTCOME_QUERY_TIMEOUT = java.time.Duration.ofSeconds(5);

    private volatile boolean cancelled;
    private volatile List<Connection> active = List.of();
    private Transport transport = Transport.PLAIN;
    private volatile SocketAddress destinationAddress; // where outcome queries go; null when given connections
    private volatile Nonce streamNonce; // the destination's HELLO, naming this attempt
    private java.util.function.Supplier<String> unresolvedRollback; // set while the handover's outcome is unknown; guarded by this

    // Live statistics: written by the migrating thread, read by stats() from any thread.
    private volatile String status = "none";
    private volatile long startNanos, setupNanos, expectedMicros, rounds, dirtyRate, roundRemaining, roundSentAtStart;
    private volatile boolean capped;
    private volatile TransferRing liveRing;
    private volatile MigrationStats finalStats;
    private volatile String error;

    /** Why the migration failed or was cancelled and what the rollback did; null while it runs or once it completed. Set before {@link #stats()} shows the end. */
    public String error() {
        return error;
    }

    /**
     * Cancels the migration from any thread: it is rolled back like a failure. The connections are closed,
     * which ends a blocked write or read at once (a destination that stopped answering cannot hold the
     * source); no ABANDON is written, since a sender thread may be in the middle of a frame, and the
     * destination treats the cut stream as incomplete and does not start.
     */
    public void cancel() {
        cancelled = true;
        for (Connection channel : active) {
            try {
                channel.close();
            } catch (IOException ignored) {
                // closing is all that is needed; a failure to close changes nothing here
            }
        }
    }

    private void checkCancelled() {
        if (cancelled) throw new java.util.concurrent.CancellationException("cancelled");
    }

    /**
     * The statistics now, from any thread: live while the migration runs (its status, rounds, bytes sent,
     * what the current round still has to send, the expected downtime), final once it ended.
     */
    public MigrationStats stats() {
        MigrationStats done = finalStats;
        if (done != null) return done;
        String now = status;
        if (now.equals("none")) return MigrationStats.none();
        TransferRing ring = liveRing;
        long total = System.nanoTime() - startNanos;
        long sent = ring == null ? 0 : ring.bytesWritten();
        long remaining = Math.max(0, roundRemaining - (sent - roundSentAtStart));
        return new MigrationStats(now, total / 1_000_000, setupNanos / 1_000_000, 0, expectedMicros / 1000, sent, remaining, rounds,
                ring == null ? 0 : ring.ramPages(), ring == null ? 0 : ring.zeroPages(), ring == null ? 0 : ring.sectionBytes(), dirtyRate,
                sent * 8 / 1e6 / Math.max(total / 1e9, 1e-9), capped, sectionStats());
    }

    /** This migration's bytes and chunks per section (counted by the ring: nothing of an earlier attempt). */
    private List<MigrationStats.SectionStats> sectionStats() {
        TransferRing ring = liveRing;
        List<MigrationStats.SectionStats> out = new ArrayList<>();
        for (int i = 0; i < sections.size(); i++) {
            SectionInfo info = sections.get(i).info();
            out.add(new MigrationStats.SectionStats(info.id(), info.kind(), ring == null ? 0 : ring.sectionBytes(i), ring == null ? 0 : ring.sectionChunks(i)));
        }
        return out;
    }

    /** How long the source waits for each TCP connection to the destination to be made. */
    public static final java.time.Duration CONNECT_TIMEOUT = java.time.Duration.ofSeconds(10);

    /** The transport every connection uses (plain TCP by default; {@link org.vmmkit.migration.transport.TlsTransport}). */
    public MigrationSource withTransport(Transport transport) {
        this.transport = transport;
        return this;
    }

    /**
     * Connects to {@code destination} (each connection with the transport's handshake: the first, then the
     * further channels once the destination has the header and accepts them), migrates, and closes the
     * connections.
     */
    public MigrationStats migrate(SocketAddress destination) throws MigrationException {
        destinationAddress = destination;
        Connection first;
        try {
            first = transport.connect(destination, CONNECT_TIMEOUT);
        } catch (IOException | RuntimeException e) {
            throw notConnected("connecting to " + destination + " (" + transport.kind() + ")", e);
        }
        return migrateOver(first, i -> transport.connect(destination, CONNECT_TIMEOUT));
    }

    private MigrationException notConnected(String what, Exception e) {
        error = what + " failed: " + (e.getMessage() == null ? e.toString() : e.getMessage()) + "; nothing was changed";
        finalStats = new MigrationStats("failed", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false, sectionStats());
        return new MigrationException(error, e);
    }

    /** Migrates over one connection (settings with one channel). */
    public MigrationStats migrate(SocketChannel channel) throws MigrationException {
        return migrate(List.of(channel));
    }

    /**
     * Migrates over {@code channels}, TCP connections already made (as many as the settings say; the first
     * carries the header, device data, control and the return path), each given the transport's handshake
     * in turn; returns the statistics once the destination runs, or throws after rolling back.
     */
    public MigrationStats migrate(List<SocketChannel> channels) throws MigrationException {
        if (channels.size() != settings.channels()) {
            throw new IllegalArgumentException(channels.size() + " connections for a migration set to " + settings.channels() + " channels");
        }
        Connection first;
        try {
            first = transport.client(channels.get(0));
        } catch (IOException | RuntimeException e) {
            throw notConnected("the " + transport.kind() + " handshake on the first connection", e);
        }
        return migrateOver(first, i -> transport.client(channels.get(i)));
    }

    /** The further channels' connections, made (and handshaken) when the destination is ready to accept them. */
    @FunctionalInterface
    private interface FurtherChannels {
        Connection open(int index) throws IOException;
    }

    /** Migrates over {@code first} and {@code settings.channels() - 1} further connections; closes the further ones. */
    private MigrationStats migrateOver(Connection first, FurtherChannels further) throws MigrationException {
        List<Connection> channels = new java.util.concurrent.CopyOnWriteArrayList<>(List.of(first));
        try {
            return migrateOver(channels, further);
        } finally {
            for (Connection c : channels) {
                try {
                    c.close();
                } catch (IOException ignored) {
                    // the migration's outcome is decided; closing cannot change it
                }
            }
        }
    }

    /** {@code channels} holds the first connection; the further ones are added as they are opened. */
    private MigrationStats migrateOver(List<Connection> channels, FurtherChannels further) throws MigrationException {
        Connection channel = channels.get(0);
        active = channels;
        noDelay(channel.socket());
        if (cancelled) cancel();
        long start = System.nanoTime();
        startNanos = start;
        phaseStartNanos = start;
        status = "setup";
        String phase = "setup";
        MigrationEvents.Phase phaseEvent = new MigrationEvents.Phase();
        phaseEvent.begin();
        boolean paused = false, saving = false, committed = false;
        long pauseStart = 0;
        FrameCodec back = new FrameCodec(1 << 20);
        DirtyTracker tracker = new DirtyTracker(memory, dirtySources);
        TransferRing ring = null;
        try {
            long streamId = new java.security.SecureRandom().nextLong();
            long helloSent;
            // Nothing has changed on either side before READY, so a destination that accepted the
            // connection but does not answer (a stuck or foreign listener) is given up on: the watchdog
            // closes the connections, which ends the read.
            try (Watchdog watchdog = new Watchdog("migration-setup-watchdog", readyTimeout, channels)) {
                try {
                    streamNonce = readHello(channel, back);
                    ByteBuffer header = headerOf(memory, sectionInfos(), vm.vcpuCount()).withChannels(settings.channels(), streamId)
                            .withRamChecksums(settings.ramChecksums()).withNonce(streamNonce).encode();
                    while (header.hasRemaining()) channel.write(header);
                    // The destination accepts further channels once it has the header (their handshakes with them).
                    for (int i = 1; i < settings.channels(); i++) {
                        Connection c;
                        try {
                            c = further.open(i);
                        } catch (IOException e) {
                            throw new IOException("opening channel " + i + " of " + settings.channels() + " (" + transport.kind() + "): " + e.getMessage(), e);
                        }
                        channels.add(c);
                        noDelay(c.socket());
                        if (cancelled) c.close();
                        new FrameCodec(0).write(c, FrameType.CHANNEL, streamId, i, null, null);
                    }
                    helloSent = System.nanoTime();
                    expectFromDestination(channel, back, FrameType.READY, "setup");
                } catch (IOException e) {
                    if (watchdog.fired()) throw new IOException("the destination did not answer READY within " + readyTimeout.toMillis() + " ms", e);
                    throw e;
                }
                if (!watchdog.disarm()) throw new IOException("the destination answered READY only after " + readyTimeout.toMillis() + " ms");
            }
            // The handover costs at least one round trip (COMPLETE out, ACK_COMPLETE back): the floor of
            // every downtime estimate, measured here as header-to-READY (an upper bound: it includes the
            // destination's header check).
            long roundTripMicros = Math.max(1, (System.nanoTime() - helloSent) / 1000);
            tracker.start();
            saving = true;
            for (SectionSaver x : sections) x.startSave();
            long pendingDevices = pendingSectionBytes();
            ring = new TransferRing(settings.ringSize(), channels, new MemoryViews(memory), settings.maxFramePages(),
                    new com.lmax.disruptor.BlockingWaitStrategy(), settings.maxBandwidth(), settings.ramChecksums());
            liveRing = ring;
            MemoryProducer producer = new MemoryProducer(ring, memory, settings.maxFramePages());
            List<SectionProducer> deviceProducers = new ArrayList<>();
            for (int i = 0; i < sections.size(); i++) deviceProducers.add(new SectionProducer(sections.get(i), i, ring));
            setupNanos = System.nanoTime() - start;
            phaseEvent = endPhase(phaseEvent, phase, "done");
            phase = "pre-copy";
            status = "active";

            DowntimeEstimator estimator = new DowntimeEstimator(PAGE, roundTripMicros);
            while (true) {
                checkCancelled();
                long round = rounds + 1;
                MigrationEvents.Round roundEvent = new MigrationEvents.Round();
                roundEvent.begin();
                long roundStart = System.nanoTime();
                long bytesBefore = ring.bytesWritten();
                tracker.sync();
                long syncedAt = System.nanoTime(); // this sync's pages were dirtied since the previous sync
                long dirty = tracker.dirtyPages();
                roundSentAtStart = bytesBefore;
                roundRemaining = dirty * PAGE + pendingDevices; // as the previous round (or setup) left the devices
                rounds = round;
                List<Thread> threads = new ArrayList<>();
                List<Throwable> deviceErrors = new java.util.concurrent.CopyOnWriteArrayList<>();
                for (SectionProducer p : deviceProducers) {
                    threads.add(Thread.ofPlatform().name("device-producer").start(() -> {
                        try {
                            p.drain(settings.deviceChunksPerRound());
                        } catch (Throwable t) {
                            deviceErrors.add(t);
                        }
                    }));
                }
                producer.publish(tracker);
                for (Thread t : threads) t.join();
                if (!deviceErrors.isEmpty()) throw deviceErrors.get(0);
                ring.publishControl(FrameType.END_OF_ROUND, round, 0);
                ring.awaitSent(60, TimeUnit.SECONDS);
                long now = System.nanoTime();
                long roundNanos = Math.max(1, now - roundStart);
                long bytes = ring.bytesWritten() - bytesBefore;
                pendingDevices = pendingSectionBytes();
                long micros = estimator.round(syncedAt, dirty, roundStart, now, bytes, ring.bytesWritten(), pendingDevices);
                dirtyRate = estimator.dirtyRate();
                expectedMicros = micros;
                roundEvent.round = round;
                roundEvent.dirtyPages = dirty;
                roundEvent.bytes = bytes;
                roundEvent.devicePending = pendingDevices;
                roundEvent.expectedDowntime = micros;
                roundEvent.commit();
                LOG.log(System.Logger.Level.DEBUG, "round {0}: {1} dirty pages, {2} bytes in {3} us, {4} bytes pending on devices, expected downtime {5} us",
                        round, dirty, bytes, roundNanos / 1000, pendingDevices, micros);
                if (micros <= settings.downtimeLimit().toNanos() / 1000) break;
                if (round >= settings.maxIterations()) {
                    capped = true;
                    break;
                }
            }

            checkCancelled();
            phaseEvent = endPhase(phaseEvent, phase, capped ? "iteration cap" : "converged");
            phase = "stop-and-copy";
            status = "device";
            pauseStart = System.nanoTime();
            vm.pause();
            paused = true;
            for (SectionSaver x : sections) x.stop();
            tracker.sync();
            roundSentAtStart = ring.bytesWritten();
            roundRemaining = tracker.dirtyPages() * PAGE;
            producer.publish(tracker);
            for (SectionProducer p : deviceProducers) {
                if (p.drain(0) != 0) throw new IllegalStateException("section " + p.section().info() + " still has data after stop-and-copy");
                p.awaitRelease();
                p.section().finishSave();
            }
            for (int i = 0; i < vm.vcpuCount(); i++) ring.publishControl(FrameType.VCPU_STATE, i, 0, ByteBuffer.wrap(vm.saveVcpu(i)));
            ring.publishComplete();
            ring.awaitSent(60, TimeUnit.SECONDS);

            phaseEvent = endPhase(phaseEvent, phase, "sent");
            phase = "handover";
            // The destination never starts without COMMIT: until it is written, rolling back is safe, and a
            // destination that does not answer is given up on (the watchdog closes the connections).
            try (Watchdog watchdog = new Watchdog("migration-prepared-watchdog", preparedTimeout, channels)) {
                try {
                    expectFromDestination(channel, back, FrameType.PREPARED, "handover");
                } catch (IOException e) {
                    if (watchdog.fired()) {
                        throw new IOException("the destination did not answer PREPARED within " + preparedTimeout.toMillis() + " ms of COMPLETE", e);
                    }
                    throw e;
                }
                if (!watchdog.disarm()) throw new IOException("the destination answered PREPARED only after " + preparedTimeout.toMillis() + " ms");
            }
            checkCancelled();
            // The decision point. From here the destination may run the VM, so the source never resumes on its
            // own: an answer lost from now on leaves the outcome unknown (see the catch below).
            committed = true;
            ring.publishControl(FrameType.COMMIT, 0, 0);
            ring.awaitSent(60, TimeUnit.SECONDS);
            expectFromDestination(channel, back, FrameType.ACK_COMPLETE, "handover");
            tracker.stop();
            endPhase(phaseEvent, phase, "acknowledged");
            return completed(start, pauseStart, null);
        } catch (Throwable failure) {
            if (committed && !(failure instanceof RefusedByDestination)) {
                endPhase(phaseEvent, phase, "outcome unknown");
                return settleUnknownOutcome(failure, start, pauseStart, tracker);
            }
            String rollback = rollBack(saving, paused, tracker);
            long done = rounds;
            String where = phase + (done > 0 ? " after " + done + " round" + (done == 1 ? "" : "s") + " (expected downtime "
                    + expectedMicros / 1000 + " ms)" : "");
            endPhase(phaseEvent, phase, cancelled ? "cancelled" : "failed");
            error = cancelled ? "migration cancelled in " + where + "; " + rollback
                    : "migration failed in " + where + ": " + failure.getMessage() + "; " + rollback;
            finalStats = stats().withStatus(cancelled ? "cancelled" : "failed"); // the live figures at the failure
            throw new MigrationException(error, failure);
        } finally {
            if (ring != null) ring.close();
            tracker.close();
        }
    }

    private long phaseStartNanos;

    /** The destination's first frame on the first connection: the nonce this attempt's header must carry. */
    private static Nonce readHello(Connection channel, FrameCodec back) throws IOException {
        FrameType t = back.readHeader(channel);
        back.skipPayload(channel);
        if (t != FrameType.HELLO) throw new WireFormatException("the destination opened with " + t + ", not HELLO: not a vmmkit destination of wire format " + StreamHeader.VERSION);
        return new Nonce(back.a(), back.b());
    }

    /** The final statistics of a migration whose destination runs; {@code note} says how that was learned when not by ACK_COMPLETE. */
    private MigrationStats completed(long start, long pauseStart, String note) {
        long now = System.nanoTime();
        long total = now - start;
        TransferRing ring = liveRing;
        long transferred = ring.bytesWritten();
        MigrationStats stats = new MigrationStats("completed", total / 1_000_000, setupNanos / 1_000_000, (now - pauseStart) / 1_000_000,
                expectedMicros / 1000, transferred, 0, rounds, ring.ramPages(), ring.zeroPages(), ring.sectionBytes(), dirtyRate,
                transferred * 8 / 1e6 / Math.max(total / 1e9, 1e-9), capped, sectionStats());
        error = note;
        finalStats = stats;
        return stats;
    }

    /**
     * The connection failed after COMMIT was begun and no ERROR came: the destination may run the VM. The
     * source asks it on a fresh connection; a decided answer settles it (completed, or rolled back), any other
     * leaves the VM paused with status {@code unknown} until {@link #resolve} or {@link #resolveByAsking}.
     */
    private MigrationStats settleUnknownOutcome(Throwable failure, long start, long pauseStart, DirtyTracker tracker) throws MigrationException {
        try {
            tracker.stop();
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "stopping dirty tracking after the handover failed: " + e.getMessage());
        }
        String lost = (cancelled ? "cancelled after COMMIT was sent (too late to roll back)" : "the answer to COMMIT was lost: " + failure.getMessage());
        synchronized (this) {
            String asked;
            try {
                HandoverOutcome outcome = ask(destinationAddress);
                if (outcome == HandoverOutcome.STARTED) {
                    return completed(start, pauseStart, lost + "; the destination, asked, said its VM runs");
                }
                if (outcome == HandoverOutcome.NOT_STARTED) {
                    error = "migration failed in handover: " + lost + "; the destination, asked, said it did not start; " + rollBack(true, true, null);
                    finalStats = stats().withStatus("failed");
                    throw new MigrationException(error, failure);
                }
                asked = "the destination answered " + outcome;
            } catch (IOException | RuntimeException e) {
                asked = "asking the destination failed: " + e.getMessage();
            }
            unresolvedRollback = () -> rollBack(true, true, null);
            error = "handover outcome unknown: " + lost + "; " + asked + ". The VM stays paused here, since it may run at the destination"
                    + " (stream " + streamNonce + "): ask again with migrate-resolve, or settle it with migrate-resolve destination=running|stopped";
            finalStats = stats().withStatus("unknown");
            throw new MigrationException(error, failure);
        }
    }

    /** Asks the destination at {@code where}, on a fresh connection of this migration's transport, what became of this stream. */
    private HandoverOutcome ask(SocketAddress where) throws IOException {
        if (where == null) throw new IOException("no destination address to ask (the migration was given its connections)");
        try (Connection c = transport.connect(where, OUTCOME_QUERY_TIMEOUT);
             Watchdog silent = new Watchdog("migration-outcome-query-watchdog", OUTCOME_QUERY_TIMEOUT, List.of(c))) {
            try {
                return OutcomeQuery.ask(c, streamNonce);
            } catch (IOException e) {
                if (silent.fired()) throw new IOException("the destination did not answer within " + OUTCOME_QUERY_TIMEOUT.toMillis() + " ms", e);
                throw e;
            }
        }
    }

    /** Whether the last migration's outcome is unknown (its VM paused, waiting for {@link #resolve}). */
    public synchronized boolean unresolved() {
        return unresolvedRollback != null;
    }

    /**
     * Settles an unknown outcome by asking the destination at {@code where} (null: the address migrated to);
     * a decided answer is acted on (completed, or rolled back and resumed); any other leaves it unknown.
     * Returns the statistics after.
     */
    public synchronized MigrationStats resolveByAsking(SocketAddress where) throws IOException {
        if (unresolvedRollback == null) throw new IllegalStateException("no migration outcome is unknown (status " + stats().status() + ")");
        HandoverOutcome outcome = ask(where != null ? where : destinationAddress);
        if (!outcome.decided()) throw new IOException("the destination answered " + outcome + " for stream " + streamNonce + "; the outcome stays unknown");
        return resolve(outcome == HandoverOutcome.STARTED, "the destination, asked, said " + outcome);
    }

    /**
     * Settles an unknown outcome on an operator's word: the destination runs the VM (this one stays paused for
     * good, completed) or never will (this one is rolled back and resumes). Only the operator, who asked the
     * destination, can know the second; resuming while the destination runs would leave two copies.
     */
    public synchronized MigrationStats resolve(boolean destinationRuns, String why) {
        if (unresolvedRollback == null) throw new IllegalStateException("no migration outcome is unknown (status " + stats().status() + ")");
        java.util.function.Supplier<String> rollback = unresolvedRollback;
        unresolvedRollback = null;
        MigrationStats before = finalStats;
        if (destinationRuns) {
            error = "resolved: " + why + "; this VM stays paused";
            finalStats = before.withStatus("completed");
        } else {
            error = "resolved: " + why + "; " + rollback.get() + ": the VM runs here again";
            finalStats = before.withStatus("failed");
        }
        return finalStats;
    }

    /** Every section's pending bytes, summed (no chunk is out when it is called). */
    private long pendingSectionBytes() {
        long sum = 0;
        for (SectionSaver x : sections) sum += x.pending();
        return sum;
    }

    /** TCP_NODELAY: frames are written as separate writes, and a small one (COMPLETE) must not wait for an ACK. */
    static void noDelay(SocketChannel c) {
        try {
            c.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
        } catch (IOException | UnsupportedOperationException e) {
            // not a TCP socket (a test's pipe) or already closed: the migration reports any real problem
        }
    }

    /** Commits the event of the phase that ends and logs it (INFO: a line per phase); returns the next phase's event, begun. */
    private MigrationEvents.Phase endPhase(MigrationEvents.Phase event, String phase, String outcome) {
        event.phase = phase;
        event.outcome = outcome;
        event.commit();
        long now = System.nanoTime();
        TransferRing ring = liveRing;
        LOG.log(System.Logger.Level.INFO, "migration {0}: {1} in {2} ms (round {3}, {4} bytes sent, expected downtime {5} us)", phase, outcome,
                (now - phaseStartNanos) / 1_000_000, rounds, ring == null ? 0 : ring.bytesWritten(), expectedMicros);
        phaseStartNanos = now;
        MigrationEvents.Phase next = new MigrationEvents.Phase();
        next.begin();
        return next;
    }

    /** The destination's ERROR: it says its VM does not run and will not from this stream. */
    static final class RefusedByDestination extends IOException {
        RefusedByDestination(String message) {
            super(message);
        }
    }

    /** Reads the destination's answer: the expected type, or an ERROR whose reason is thrown. */
    private static void expectFromDestination(Connection channel, FrameCodec back, FrameType expected, String phase) throws IOException {
        FrameType t = back.readHeader(channel);
        ByteBuffer payload = ByteBuffer.allocate((int) back.length()); // the return path's limit bounds it
        back.readPayload(channel, payload);
        back.verify();
        if (t == expected) return;
        if (t == FrameType.ERROR) {
            throw new RefusedByDestination("the destination refused in " + phase + ": " + new String(payload.array(), 0, payload.position(), StandardCharsets.UTF_8));
        }
        throw new IOException("the destination answered " + t + " in " + phase + " where " + expected + " was due");
    }

    /** Puts the source back as it was: devices running, vCPUs resumed, tracking stopped. Says what it did. */
    private String rollBack(boolean saving, boolean paused, DirtyTracker tracker) {
        List<String> done = new ArrayList<>();
        if (saving) { // every section cancelled, in reverse order
            for (int i = sections.size() - 1; i >= 0; i--) {
                SectionSaver x = sections.get(i);
                try {
                    done.add(x.cancelSave());
                } catch (RuntimeException e) {
                    done.add("section " + x.info().id() + " could not be put back: " + e.getMessage());
                }
            }
        }
        if (paused) {
            vm.resume();
            done.add("vCPUs resumed");
        }
        if (tracker != null) {
            try {
                tracker.stop();
                done.add("dirty tracking stopped");
            } catch (RuntimeException e) {
                done.add("stopping dirty tracking failed: " + e.getMessage());
            }
        }
        return "rolled back: " + String.join(", ", done);
    }
}
