package org.vmmkit.migration;

import java.io.IOException;
import java.net.SocketAddress;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.MemoryProducer;
import org.vmmkit.migration.pipeline.SectionProducer;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.StreamHeader;

/**
 * The source side of a live migration, the pre-copy coordinator. In order: the handshake (the destination's
 * HELLO and nonce, the stream header, the further channels, READY); setup (dirty tracking, sections to
 * pre-copy, the ring); the {@link PrecopyRounds}; stop-and-copy (vCPUs paused, sections stopped, the final
 * sync — after the sections stopped, so a device's last DMA is in it —, the rest of memory, every section
 * until nothing is pending, vCPU state, COMPLETE); the handover (PREPARED, then COMMIT, the decision point,
 * then ACK_COMPLETE). Any failure before COMMIT is begun rolls back (sections cancelled in reverse order,
 * vCPUs resumed, tracking stopped); after it the source never resumes on its own ({@link SourceHandover}).
 * Statistics live in {@link LiveStats}, readable from any thread.
 */
public final class MigrationSource {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    /** How long the source waits for HELLO and READY (nothing has started on either side before them). */
    public static final Duration READY_TIMEOUT = Duration.ofSeconds(30);
    /**
     * How long the source, its vCPUs paused, waits for PREPARED once the whole stream is sent. Rolling back is
     * safe until COMMIT, so a destination that stopped answering (stopped, hung) is given up on rather than
     * holding the guest paused without limit; the bound is the destination's own for its further channels.
     */
    public static final Duration PREPARED_TIMEOUT = Duration.ofSeconds(60);
    /**
     * How long the source waits, once a pre-copy round is all written, for the destination's ROUND_ACK of it; the
     * guest runs on at the source meanwhile, and a silent destination is given up on (rolled back) after it.
     */
    static final Duration ROUND_ACK_TIMEOUT = Duration.ofSeconds(60);
    /** How long the source waits for an outcome query's connection, and again for its answer. */
    public static final Duration OUTCOME_QUERY_TIMEOUT = Duration.ofSeconds(5);
    /** How long the source waits for each TCP connection to the destination to be made. */
    public static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(10);

    private final MigratableVm vm;
    private final GuestMemory memory;
    private final List<DirtySource> dirtySources;
    private final List<SectionSaver> sections;
    private final MigrationSettings settings;
    private final LiveStats stats;
    private Transport transport = Transport.PLAIN;
    private java.util.UUID identity = StreamHeader.NO_IDENTITY;
    private SourceHandover handover;
    private Duration readyTimeout = READY_TIMEOUT, preparedTimeout = PREPARED_TIMEOUT;
    private volatile boolean cancelled;
    /** The downtime limit each round is judged against (migrate-set-parameters changes it while pre-copy runs). */
    private volatile long downtimeLimitMicros;
    /** The bandwidth cap now (bytes per second, 0: none); applied to the ring when it exists and on every change. */
    private volatile long maxBandwidth;
    private volatile List<Connection> active = List.of();
    private volatile SocketAddress destinationAddress; // where outcome queries go; null when given connections
    private boolean quiet; // no INFO lines (the start-up rehearsal)
    private boolean memfdPassing = true; // offer the guest-memory memfds over a Unix socket (a local live upgrade)
    private long connectMicros; // the first connection's TCP connect (a round trip the kernels answer); 0 when given connections

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
        this.sections = VcpuSection.savers(sections, vm);
        this.settings = settings;
        java.util.Set<String> ids = new java.util.HashSet<>();
        for (SectionSaver x : this.sections) {
            if (!ids.add(x.info().id())) throw new IllegalArgumentException("two sections have the id " + x.info().id());
        }
        if (this.sections.size() > StreamHeader.MAX_SECTIONS) {
            throw new IllegalArgumentException(this.sections.size() + " sections; a stream carries at most " + StreamHeader.MAX_SECTIONS);
        }
        this.stats = new LiveStats(this.sections);
        this.downtimeLimitMicros = settings.downtimeLimit().toNanos() / 1000;
        this.maxBandwidth = settings.maxBandwidth();
        this.handover = new SourceHandover(transport, OUTCOME_QUERY_TIMEOUT, stats);
    }

    /** The stream header of a VM: its layout, sections (in this order, which their frames' indexes follow) and vCPUs. */
    public static StreamHeader headerOf(GuestMemory memory, List<SectionInfo> sections, int vcpus) {
        List<StreamHeader.Range> ranges = new ArrayList<>();
        for (GuestRegion r : memory.regions()) ranges.add(new StreamHeader.Range(r.guestAddress(), r.size()));
        return new StreamHeader(StreamHeader.VERSION, (int) PAGE, ranges, sections, vcpus);
    }

    /** The transport every connection uses (plain TCP by default; {@link org.vmmkit.migration.transport.TlsTransport}). */
    public MigrationSource withTransport(Transport transport) {
        this.transport = transport;
        this.handover = new SourceHandover(transport, OUTCOME_QUERY_TIMEOUT, stats);
        return this;
    }

    /**
     * Whether to offer the guest-memory memfds to a destination reached over a Unix socket (on by default): a
     * destination that takes them maps the same memory (a local live upgrade), and no page is copied. Over TCP
     * nothing is offered.
     */
    public MigrationSource withMemfdPassing(boolean on) {
        this.memfdPassing = on;
        return this;
    }

    /**
     * Who is told of the migration's state changes and rounds ({@link MigrationEvent}): called on the migrating
     * thread, one event at a time, so it must return at once (hand the event on, never block on a client).
     */
    public MigrationSource withListener(java.util.function.Consumer<MigrationEvent> listener) {
        stats.listener(listener);
        return this;
    }

    /**
     * Changes the downtime limit and the bandwidth cap (bytes per second, 0: none) of this migration while it
     * runs (QEMU's migrate-set-parameters): the limit judges the next round's estimate, the cap holds from the
     * next frame each sender writes. The caller has checked the values (MigrationConfig's checks).
     */
    public void setParameters(Duration downtimeLimit, long bytesPerSecond) {
        if (downtimeLimit.isNegative() || bytesPerSecond < 0) {
            throw new IllegalArgumentException("downtime limit " + downtimeLimit + ", max bandwidth " + bytesPerSecond + ": neither may be negative");
        }
        downtimeLimitMicros = downtimeLimit.toNanos() / 1000;
        maxBandwidth = bytesPerSecond;
        TransferRing r = stats.ring;
        if (r != null) r.maxBandwidth(bytesPerSecond);
    }

    /** The VM's identity, which the header carries for the destination to check or take ({@link StreamHeader#NO_IDENTITY}: none). */
    public MigrationSource withIdentity(java.util.UUID vm) {
        this.identity = java.util.Objects.requireNonNull(vm);
        return this;
    }

    /** Logs no line per phase (the start-up {@link Rehearsal}: its migration is no operator's business). */
    MigrationSource quiet() {
        this.quiet = true;
        return this;
    }

    /** Another wait for READY than {@link #READY_TIMEOUT} (tests). */
    MigrationSource withReadyTimeout(Duration timeout) {
        this.readyTimeout = timeout;
        return this;
    }

    /** Another wait for PREPARED than {@link #PREPARED_TIMEOUT} (tests). */
    MigrationSource withPreparedTimeout(Duration timeout) {
        this.preparedTimeout = timeout;
        return this;
    }

    /** The statistics now, from any thread: live while the migration runs, final once it ended. */
    public MigrationStats stats() {
        return stats.snapshot();
    }

    /** Why the migration failed, was cancelled or is unknown, and what was done; null while it runs or once it completed by acknowledgement. */
    public String error() {
        return stats.error();
    }

    /**
     * Cancels the migration from any thread. Before COMMIT it is rolled back like a failure: the connections are
     * closed, which ends a blocked write or read at once, and the destination treats the cut stream as
     * incomplete. After COMMIT it only ends the wait for the answer: the outcome is then asked for, never assumed.
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

    /** Whether the last migration's outcome is unknown (its VM paused, waiting for {@link #resolve}). */
    public boolean unresolved() {
        return handover.unresolved();
    }

    /** Settles an unknown outcome by asking the destination at {@code where} (null: the address migrated to). */
    public MigrationStats resolveByAsking(SocketAddress where) throws IOException {
        return handover.resolveByAsking(where);
    }

    /**
     * Settles an unknown outcome on an operator's word: the destination runs the VM (this one stays paused for
     * good, completed) or never will (this one is rolled back and resumes). Only the operator, who asked the
     * destination, can know the second; resuming while the destination runs would leave two copies.
     */
    public MigrationStats resolve(boolean destinationRuns, String why) {
        return handover.resolve(destinationRuns, why);
    }

    /**
     * Connects to {@code destination} (each connection with the transport's handshake: the first, then the
     * further channels once the destination has the header and accepts them), migrates, and closes the
     * connections.
     */
    public MigrationStats migrate(SocketAddress destination) throws MigrationException {
        destinationAddress = destination;
        SourceHandshake.Connected first;
        try {
            first = SourceHandshake.connect(destination, transport, CONNECT_TIMEOUT);
        } catch (IOException | RuntimeException e) {
            throw notConnected("connecting to " + destination + " (" + transport.kind() + ")", e);
        }
        connectMicros = first.connectMicros();
        return migrateOver(first.connection(), i -> transport.connect(destination, CONNECT_TIMEOUT));
    }

    /** Migrates over one connection (settings with one channel). */
    public MigrationStats migrate(SocketChannel channel) throws MigrationException {
        return migrate(List.of(channel));
    }

    /**
     * Migrates over {@code channels}, TCP connections already made (as many as the settings say; the first
     * carries the header, section data, control and the return path), each given the transport's handshake
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

    private MigrationException notConnected(String what, Exception e) {
        stats.notStarted(what + " failed: " + (e.getMessage() == null ? e.toString() : e.getMessage()) + "; nothing was changed");
        return new MigrationException(stats.error(), e);
    }

    /** Migrates over {@code first} and the further connections; closes them all. */
    private MigrationStats migrateOver(Connection first, SourceHandshake.FurtherChannels further) throws MigrationException {
        List<Connection> channels = new CopyOnWriteArrayList<>(List.of(first));
        try {
            return run(channels, further);
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

    /** What has been done so far, for the rollback. */
    private static final class Progress {
        String phase = "setup";
        boolean saving, paused, committed;
    }

    private MigrationStats run(List<Connection> channels, SourceHandshake.FurtherChannels further) throws MigrationException {
        Connection channel = channels.get(0);
        active = channels;
        noDelay(channel.socket());
        if (cancelled) cancel();
        long start = System.nanoTime();
        stats.startNanos = start;
        // Dirty tracking starts on another thread while the handshake waits on the network: enabling a dirty log
        // (write-protecting guest memory, an IOMMU's bitmaps, a device's first call) is the source's own work and
        // needs nothing from the destination. A tracking that starts before READY changes nothing the destination
        // or the guest can see; the rollback stops it like any other (after waiting for its start to end).
        // Not where the memfds may be handed over (a local live upgrade tracks nothing): there it starts after READY, if at all.
        boolean mayHandOver = memfdPassing && Transport.isUnix(channel.socket()) && MemfdHandoff.possible(memory);
        PhaseLog phases = new PhaseLog(quiet, stats, start);
        stats.enter(MigrationStatus.SETUP, "setup");
        Progress done = new Progress();
        MigrationEvents.Phase phaseEvent = phases.begin();
        ReturnPath back = new ReturnPath(channel);
        Nonce[] nonce = new Nonce[1];
        DirtyTracker tracker = null; // made (and started) by trackingStart, or after READY where the memfds may be handed over
        Throttle throttle = new Throttle(vm);
        stats.throttle = throttle;
        stats.policy = settings.convergence();
        TransferRing ring = null;
        // The last thing before the try: its catch is what settles a tracking start, whatever fails after it.
        TrackingStart trackingStart = mayHandOver ? null : new TrackingStart(memory, dirtySources);
        long prepared = System.nanoTime();
        try {
            SourceHandshake.Opened opened = new SourceHandshake(settings, sections, vm, transport, identity, readyTimeout)
                    .open(channels, further, back, memfdPassing, connectMicros, () -> cancelled);
            nonce[0] = opened.nonce();
            long roundTripMicros = opened.floorMicros();
            String memfdsTo = opened.memfdsTo();
            long handshakeDone = System.nanoTime();
            if (trackingStart != null) tracker = trackingStart.await();
            long trackingAwaited = System.nanoTime();
            if (memfdsTo != null) { // where the destination takes the memfds; null: RAM is copied
                // A local live upgrade: the destination maps these very memfds, so there is no page to send and
                // no dirty page to track. It maps them only once the stream is complete and starts on them only
                // at COMMIT: until then this side alone runs on them, and a rollback is as always.
                MemfdHandoff.send(memfdsTo, nonce[0], memory, readyTimeout);
                if (tracker != null) tracker.close();
                tracker = DirtyTracker.nothingToSend(memory);
                tracker.start();
                stats.memfdsPassed = true;
                if (!quiet) LOG.log(System.Logger.Level.INFO, "guest memory handed over as {0} memfd(s): no RAM is copied", memory.regions().size());
            } else if (trackingStart == null) {
                tracker = new DirtyTracker(memory, dirtySources); // the memfds were offered and declined
                tracker.start();
            }
            long trackingDone = System.nanoTime();
            done.saving = true;
            for (SectionSaver x : sections) x.startSave();
            long sectionsDone = System.nanoTime();
            ring = new TransferRing(settings.ringSize(), channels, new MemoryViews(memory), settings.maxFramePages(),
                    new com.lmax.disruptor.BlockingWaitStrategy(), settings.maxBandwidth(), settings.ramChecksums());
            stats.ring = ring;
            if (maxBandwidth != settings.maxBandwidth()) ring.maxBandwidth(maxBandwidth); // changed before the ring existed
            MemoryProducer producer = new MemoryProducer(ring, memory, settings.maxFramePages());
            List<SectionProducer> producers = new ArrayList<>();
            for (int i = 0; i < sections.size(); i++) producers.add(new SectionProducer(sections.get(i), i, ring));
            long end = System.nanoTime();
            stats.setupNanos = end - start;
            if (!quiet) {
                String tracking = trackingStart != null
                        ? "dirty tracking " + trackingStart.micros() + " us (begun with the handshake, " + (trackingAwaited - handshakeDone) / 1000 + " us of it after READY)"
                        : memfdsTo != null ? "memfds handed over " + (trackingDone - trackingAwaited) / 1000 + " us"
                        : "dirty tracking " + (trackingDone - trackingAwaited) / 1000 + " us";
                LOG.log(System.Logger.Level.INFO, "migration setup: {0} us: preparing {1} us, HELLO {2} us, header {3} us, READY {4} us, {5}, "
                                + "sections {6} us, ring {7} us; downtime floor {8} us", (end - start) / 1000, (prepared - start) / 1000,
                        opened.helloMicros(), opened.headerMicros(), opened.readyMicros(), tracking, (sectionsDone - trackingDone) / 1000,
                        (end - sectionsDone) / 1000, roundTripMicros);
            }
            phaseEvent = phases.end(phaseEvent, done.phase, "done");
            done.phase = "pre-copy";
            stats.enter(MigrationStatus.ACTIVE, "pre-copy");

            boolean capped;
            try {
                capped = new PrecopyRounds(settings, tracker, ring, producer, producers, stats, throttle, () -> downtimeLimitMicros,
                        round -> back.roundAck(round, ROUND_ACK_TIMEOUT, channels))
                        .run(roundTripMicros, this::checkCancelled);
            } finally {
                throttle.stop(); // the guest runs unthrottled again before stop-and-copy pauses it, or the rollback resumes it
            }
            checkCancelled();
            phaseEvent = phases.end(phaseEvent, done.phase, capped ? "iteration cap" : "converged");
            done.phase = "stop-and-copy";
            stats.enter(MigrationStatus.DEVICE, "stop-and-copy");
            stats.pauseNanos = System.nanoTime();
            done.paused = true; // before the pause: a rollback resumes whatever paused
            StopAndCopy.run(vm, sections, tracker, ring, producer, producers, stats);

            phaseEvent = phases.end(phaseEvent, done.phase, "sent");
            done.phase = "handover";
            stats.enter(MigrationStatus.DEVICE, "handover");
            // The destination never starts without COMMIT: until it is written, rolling back is safe, and a
            // destination that does not answer is given up on (the watchdog closes the connections).
            ReturnPath.within(preparedTimeout, channels, "PREPARED", () -> back.expect(FrameType.PREPARED, "handover"));
            checkCancelled();
            // The decision point. From here the destination may run the VM, so the source never resumes on its
            // own: an answer lost from now on leaves the outcome unknown (see the catch below).
            done.committed = true;
            ring.publishControl(FrameType.COMMIT, 0, 0);
            ring.awaitSent(60, TimeUnit.SECONDS);
            back.expect(FrameType.ACK_COMPLETE, "handover");
            stats.destinationResident = back.lastA();
            tracker.stop();
            phases.end(phaseEvent, done.phase, "acknowledged");
            return stats.completed(null);
        } catch (Throwable failure) {
            if (trackingStart != null && tracker == null) { // the rollback stops tracking only once its start has ended
                trackingStart.settle();
                tracker = trackingStart.tracker();
            }
            if (done.committed && !(failure instanceof ReturnPath.RefusedByDestination)) {
                phases.end(phaseEvent, done.phase, "outcome unknown");
                SourceRollback.stopTracking(tracker);
                String lost = cancelled ? "cancelled after COMMIT was sent (too late to roll back)" : "the answer to COMMIT was lost: " + failure.getMessage();
                return handover.settle(lost, failure, destinationAddress, nonce[0], () -> SourceRollback.rollBack(sections, vm, true, true, null));
            }
            // The guest resumes first; only then is the destination's ERROR (sent before its reset) waited for, at most 1 s.
            String rollback = SourceRollback.rollBack(sections, vm, done.saving, done.paused, tracker);
            if (!cancelled) failure = back.reasonFor(failure, Duration.ofSeconds(1), channels, done.phase);
            long rounds = stats.rounds;
            String where = done.phase + (rounds > 0 ? " after " + rounds + " round" + (rounds == 1 ? "" : "s")
                    + (stats.expectedMicros > 0 ? " (expected downtime " + stats.expectedMicros / 1000 + " ms)" : " (no downtime estimate yet)") : "");
            phases.end(phaseEvent, done.phase, cancelled ? "cancelled" : "failed");
            stats.end(cancelled ? MigrationStatus.CANCELLED : MigrationStatus.FAILED, cancelled ? "migration cancelled in " + where + "; " + rollback
                    : "migration failed in " + where + ": " + failure.getMessage() + "; " + rollback); // the live figures at the failure
            throw new MigrationException(stats.error(), failure);
        } finally {
            if (ring != null) ring.close();
            if (tracker != null) tracker.close();
        }
    }

    /** TCP_NODELAY: frames are written as separate writes, and a small one (COMPLETE) must not wait for an ACK. */
    static void noDelay(SocketChannel c) {
        try {
            c.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
        } catch (IOException | UnsupportedOperationException e) {
            // not a TCP socket (a test's pipe) or already closed: the migration reports any real problem
        }
    }
}
