package org.vmmkit.migration;

import java.io.IOException;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.List;
import java.util.function.Supplier;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.migration.ConnectionOpening.Opened;
import org.vmmkit.migration.ram.PopulateAhead;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.OutcomeQuery;

/**
 * The destination side. On every connection it accepts it first says HELLO with a fresh nonce; the stream
 * header that follows must carry that nonce back (a recorded stream, replayed, is refused before anything
 * changes), and be compatible with its own VM. It answers READY, applies every frame (RAM straight into guest
 * memory, on every channel; each section's chunks straight into the memory its loader names, in the source's
 * order; vCPU state), checking each frame's sequence on its connection, and at COMPLETE — with every
 * channel's frame count matching, no page left torn, every vCPU's state present — restores the vCPUs and
 * answers PREPARED. It starts the VM only when it reads the source's COMMIT (then ACK_COMPLETE); a
 * connection lost before COMMIT leaves the VM unstarted. Any failure is answered with ERROR. What became of
 * each stream (by nonce) is kept and answered to outcome queries, on the same listening socket, also after
 * the VM runs ({@link #serveOutcomeQueries}).
 *
 * <p>This class takes connections and tells streams from outcome queries; {@link IncomingStream} receives a
 * stream, {@link ConnectionOpening} opens connections, {@link OutcomeRegistry} keeps the outcomes.
 */
public final class MigrationDestination {
    /** How long the destination waits for a stream's further channels to connect after its header. */
    public static final Duration CHANNEL_WAIT = Duration.ofSeconds(30);
    /** How long a prepared destination waits for COMMIT before it gives the stream up (unstarted). */
    public static final Duration COMMIT_WAIT = Duration.ofSeconds(60);
    /** How long a connection may take from being accepted to its stream header or query (the TLS handshake included). */
    public static final Duration OPENING_WAIT = Duration.ofSeconds(30);
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");
    private static final Nonce NO_STREAM = new Nonce(0, 0);

    private final MigratableVm vm;
    private final List<SectionLoader> sections;
    private final Runnable beforeStart;
    private final OutcomeRegistry outcomes = new OutcomeRegistry();
    private Duration channelWait = CHANNEL_WAIT, commitWait = COMMIT_WAIT;
    private Supplier<Nonce> nonces = Nonce::random;
    private Transport transport = Transport.PLAIN;
    private long populateWindow = PopulateAhead.DEFAULT_WINDOW; // 0: no populating ahead
    private volatile PopulateAhead prealloc; // populating all guest RAM while no stream has come yet; null when off or done
    private boolean memfdPassing; // take a local source's guest-memory memfds (a local live upgrade)
    private DestinationIdentity identity = new DestinationIdentity(null);
    private boolean quiet; // no INFO lines (the start-up rehearsal)

    /** {@code beforeStart} runs when everything is loaded and nothing runs yet (for a digest, a log line). */
    public MigrationDestination(Vm vm, List<? extends SectionLoader> sections, ExitHandler handler, Runnable beforeStart) {
        this(new KvmGuest(vm, handler), sections, beforeStart);
    }

    /** For any {@link MigratableVm}; {@code beforeStart} as above. */
    public MigrationDestination(MigratableVm vm, List<? extends SectionLoader> sections, Runnable beforeStart) {
        this.vm = vm;
        this.sections = VcpuSection.loaders(sections, vm);
        this.beforeStart = beforeStart;
    }

    /** Other waits for further channels and for COMMIT than the defaults (tests). */
    MigrationDestination withWaits(Duration channels, Duration commit) {
        this.channelWait = channels;
        this.commitWait = commit;
        return this;
    }

    /** Logs no line per stream (the start-up {@link Rehearsal}: its migration is no operator's business). */
    MigrationDestination quiet() {
        this.quiet = true;
        return this;
    }

    /** Where this destination's HELLO nonces come from (a test that replays a recorded stream fixes them). */
    MigrationDestination withNonces(Supplier<Nonce> source) {
        this.nonces = source;
        return this;
    }

    /** The transport every connection must use (plain TCP by default; {@link org.vmmkit.migration.transport.TlsTransport}). */
    public MigrationDestination withTransport(Transport transport) {
        this.transport = transport;
        return this;
    }

    /**
     * Whether a thread populates guest RAM ahead of the receivers ({@link PopulateAhead}; on by default): the
     * first write to a fresh page then does not happen inside a socket read, which costs several times more.
     */
    public MigrationDestination withPopulateAhead(boolean on) {
        this.populateWindow = on ? PopulateAhead.DEFAULT_WINDOW : 0;
        return this;
    }

    /**
     * Populates all guest RAM now, on its own thread, while the destination waits for a stream (QEMU's
     * {@code -mem-prealloc}, as a toggle, off by default): the whole guest then costs host memory from the
     * start (a ZERO_RUN frees its pages again once the stream comes), and every page is ready before the
     * first frame if the wait is long enough (about 0.5 s per GiB on these hosts). A stream that arrives
     * first stops it at READY; its own {@link #withPopulateAhead populating ahead} takes over.
     */
    public MigrationDestination withPrealloc(boolean on) {
        if (on && prealloc == null) prealloc = new PopulateAhead(vm.memory(), Long.MAX_VALUE / 4);
        return this;
    }

    /** Stops preallocating (a stream is about to load): never populate after a receiver punched a zero run, it would stay resident. */
    private void stopPrealloc() {
        PopulateAhead preallocating = prealloc;
        if (preallocating != null) {
            preallocating.close();
            prealloc = null;
        }
    }

    /**
     * Whether to take the guest-memory memfds a source offers over a Unix socket (off by default): the VM then
     * runs on the source's very memory, mapped at the same addresses once the stream is complete, and no page
     * is copied (a local live upgrade). Only for a VM whose memory nothing else maps (a device process given
     * the destination's own memfds would not follow).
     */
    public MigrationDestination withMemfdPassing(boolean on) {
        this.memfdPassing = on;
        return this;
    }

    /**
     * The VM this destination is ({@link DestinationIdentity}): {@code configured}, and then only a stream of
     * that VM is taken; or null (the default), and it takes the identity of the stream it starts from.
     */
    public MigrationDestination withIdentity(java.util.UUID configured) {
        this.identity = new DestinationIdentity(configured);
        return this;
    }

    /** This destination's VM identity: configured, or taken from the stream it started from; null before either. */
    public java.util.UUID identity() {
        return identity.get();
    }

    /** What became of the stream with {@code nonce} here. */
    public HandoverOutcome outcomeOf(Nonce nonce) {
        return outcomes.outcomeOf(nonce);
    }

    /** The nonce of the last stream that got past its header here (null before any), for a status display. */
    public Nonce lastStream() {
        return outcomes.lastStream();
    }

    /** Where the connections after the first come from. */
    @FunctionalInterface
    public interface Acceptor {
        /** The next connection (as accepted, before any handshake); fails if {@code first} closes or {@code deadlineNanos} passes first. */
        SocketChannel accept(SocketChannel first, long deadlineNanos) throws IOException;
    }

    /** A section refused what the stream brought it (a chunk, or running with the loaded state). */
    public static final class SectionRefusedException extends IllegalStateException {
        SectionRefusedException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * Accepts connections on {@code server} (each within {@code acceptTimeout}) until one carries a stream:
     * outcome queries are answered on the way. Receives that stream (its further channels from the same
     * socket), closes its connections, and returns once the VM runs and the source has been told.
     */
    public void receive(ServerSocketChannel server, Duration acceptTimeout) throws MigrationException {
        while (true) {
            SocketChannel raw;
            try {
                raw = ConnectionOpening.acceptWithin(server, acceptTimeout);
            } catch (IOException e) {
                throw new MigrationException("incoming migration failed: accepting a connection: " + (e.getMessage() == null ? e.toString() : e.getMessage()) + "; the VM was not started", e);
            }
            try (raw) {
                if (receiveOrAnswer(raw, (c, deadline) -> acceptWhileWatching(server, c, deadline))) return;
            } catch (IOException e) {
                // closing a connection after its outcome was decided
            }
        }
    }

    /**
     * Receives a stream (or answers a query) on {@code raw}, taking further channels from {@code more}.
     * Returns true once the VM runs, false after answering an outcome query.
     */
    public boolean receiveOrAnswer(SocketChannel raw, Acceptor more) throws MigrationException {
        Nonce nonce = nonces.get();
        Opened opened;
        try {
            opened = ConnectionOpening.open(raw, transport, nonce, OPENING_WAIT);
        } catch (IOException e) {
            throw new MigrationException("incoming migration failed before its header: " + e.getMessage() + "; the VM was not started", e);
        }
        if (opened.magic() == OutcomeQuery.MAGIC) {
            answerQuery(opened.connection(), opened.back());
            return false;
        }
        IncomingStream.Setup setup = new IncomingStream.Setup(vm, sections, beforeStart, transport, channelWait, commitWait, outcomes,
                populateWindow, this::stopPrealloc, memfdPassing, identity, quiet);
        new IncomingStream(setup, opened.connection(), opened.back(), nonce).receive(opened, more);
        return true;
    }

    /**
     * The next connection on {@code server} while watching {@code first} (see {@link ConnectionOpening#acceptWhileWatching}).
     * Package-private: a test that drives {@link #receiveOrAnswer} itself takes further channels the way
     * {@link #receive} does.
     */
    static SocketChannel acceptWhileWatching(ServerSocketChannel server, SocketChannel first, long deadlineNanos) throws IOException {
        return ConnectionOpening.acceptWhileWatching(server, first, deadlineNanos);
    }

    /**
     * After the VM runs: answers outcome queries on {@code server} (a stream is refused, since the VM runs)
     * until the socket is closed. Lets a source whose ACK_COMPLETE was lost learn that the VM runs here.
     */
    public void serveOutcomeQueries(ServerSocketChannel server) {
        while (server.isOpen()) {
            try (SocketChannel raw = ConnectionOpening.acceptWithin(server, Duration.ofDays(365))) {
                // No stream is taken: the HELLO's nonce would never be used.
                Opened opened = ConnectionOpening.open(raw, transport, NO_STREAM, OPENING_WAIT);
                if (opened.magic() == OutcomeQuery.MAGIC) {
                    answerQuery(opened.connection(), opened.back());
                } else {
                    ConnectionOpening.answer(opened.connection(), opened.back(), FrameType.ERROR,
                            "this destination's VM already runs (from stream " + outcomes.lastStream() + "); it takes no other");
                }
            } catch (IOException | RuntimeException e) {
                if (server.isOpen()) LOG.log(System.Logger.Level.DEBUG, "outcome query connection: " + e.getMessage());
            }
        }
    }

    /** Reads the query's nonce and answers its outcome; a peer that stalls midway is dropped after {@link #OPENING_WAIT}. */
    private void answerQuery(Connection channel, FrameCodec back) {
        try (Watchdog stall = new Watchdog("migration-query-watchdog", OPENING_WAIT, List.of(channel))) {
            Nonce asked = OutcomeQuery.readAfterMagic(channel);
            HandoverOutcome outcome = outcomes.outcomeOf(asked);
            LOG.log(System.Logger.Level.INFO, "outcome query for stream {0}: {1}", asked, outcome);
            back.write(channel, FrameType.OUTCOME, outcome.code(), 0, null, null);
        } catch (IOException | RuntimeException e) {
            LOG.log(System.Logger.Level.DEBUG, "outcome query failed: " + e.getMessage());
        }
    }
}
