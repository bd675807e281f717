package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.PopulateAhead;
import org.vmmkit.migration.ram.RamReceiver;
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
import org.vmmkit.core.migration.SectionLoader;

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
 */
public final class MigrationDestination {
    private static final long MAX_CHUNK = 64L << 20, MAX_VCPU_STATE = 64 * 1024;
    /** How long the destination waits for a stream's further channels to connect after its header. */
    public static final Duration CHANNEL_WAIT = Duration.ofSeconds(30);
    /** How long a prepared destination waits for COMMIT before it gives the stream up (unstarted). */
    public static final Duration COMMIT_WAIT = Duration.ofSeconds(60);
    private static final int OUTCOMES_KEPT = 64;

    private final MigratableVm vm;
    private final List<SectionLoader> sections;
    private final Runnable beforeStart;
    private Duration channelWait = CHANNEL_WAIT, commitWait = COMMIT_WAIT;
    private java.util.function.Supplier<Nonce> nonces = Nonce::random;
    private Transport transport = Transport.PLAIN;
    private final java.util.LinkedHashMap<Nonce, HandoverOutcome> outcomes = new java.util.LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(java.util.Map.Entry<Nonce, HandoverOutcome> eldest) {
            return size() > OUTCOMES_KEPT;
        }
    };
    private volatile Nonce lastStream;
    private long populateWindow = PopulateAhead.DEFAULT_WINDOW; // 0: no populating ahead
    private volatile PopulateAhead prealloc; // populating all guest RAM while no stream has come yet; null when off or done

    /** {@code beforeStart} runs when everything is loaded and nothing runs yet (for a digest, a log line). */
    public MigrationDestination(Vm vm, List<? extends SectionLoader> sections, ExitHandler handler, Runnable beforeStart) {
        this(new KvmGuest(vm, handler), sections, beforeStart);
    }

    /** For any {@link MigratableVm}; {@code beforeStart} as above. */
    public MigrationDestination(MigratableVm vm, List<? extends SectionLoader> sections, Runnable beforeStart) {
        this.vm = vm;
        this.sections = List.copyOf(sections);
        this.beforeStart = beforeStart;
    }

    /** Other waits for further channels and for COMMIT than the defaults (tests). */
    MigrationDestination withWaits(Duration channels, Duration commit) {
        this.channelWait = channels;
        this.commitWait = commit;
        return this;
    }

    /** Where this destination's HELLO nonces come from (a test that replays a recorded stream fixes them). */
    MigrationDestination withNonces(java.util.function.Supplier<Nonce> source) {
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

    /** What became of the stream with {@code nonce} here. */
    public HandoverOutcome outcomeOf(Nonce nonce) {
        synchronized (outcomes) {
            return outcomes.getOrDefault(nonce, HandoverOutcome.UNKNOWN_STREAM);
        }
    }

    /** The nonce of the last stream that got past its header here (null before any), for a status display. */
    public Nonce lastStream() {
        return lastStream;
    }

    private void record(Nonce nonce, HandoverOutcome outcome) {
        synchronized (outcomes) {
            outcomes.put(nonce, outcome);
        }
    }

    /** Where the connections after the first come from. */
    @FunctionalInterface
    public interface Acceptor {
        /** The next connection (as accepted, before any handshake); fails if {@code first} closes or {@code deadlineNanos} passes first. */
        SocketChannel accept(SocketChannel first, long deadlineNanos) throws IOException;
    }

    /** How long a connection may take from being accepted to its stream header or query (the TLS handshake included). */
    public static final Duration OPENING_WAIT = Duration.ofSeconds(30);

    /**
     * Accepts connections on {@code server} (each within {@code acceptTimeout}) until one carries a stream:
     * outcome queries are answered on the way. Receives that stream (its further channels from the same
     * socket), closes its connections, and returns once the VM runs and the source has been told.
     */
    public void receive(ServerSocketChannel server, Duration acceptTimeout) throws MigrationException {
        while (true) {
            SocketChannel raw;
            try {
                raw = acceptWithin(server, acceptTimeout);
            } catch (IOException e) {
                throw new MigrationException("incoming migration failed: " + e.getMessage() + "; the VM was not started", e);
            }
            try (raw) {
                if (receiveOrAnswer(raw, (c, deadline) -> acceptWhileWatching(server, c, deadline))) return;
            } catch (IOException e) {
                // closing a connection after its outcome was decided
            }
        }
    }

    /**
     * Receives a stream (or answers a query) on {@code channel}, taking further channels from {@code more}.
     * Returns true once the VM runs, false after answering an outcome query.
     */
    public boolean receiveOrAnswer(SocketChannel raw, Acceptor more) throws MigrationException {
        Nonce nonce = nonces.get();
        FrameCodec back = new FrameCodec(0); // the return path: its own sequence
        long magic;
        Connection channel;
        // A peer that connects and then says nothing (no handshake, no header) is dropped: it must not hold the destination.
        try (Watchdog opening = new Watchdog("migration-opening-watchdog", OPENING_WAIT, List.of(raw))) {
            MigrationSource.noDelay(raw);
            try {
                channel = transport.server(raw);
            } catch (IOException e) {
                throw new IOException("the " + transport.kind() + " handshake with " + remote(raw) + " failed: " + e.getMessage(), e);
            }
            back.write(channel, FrameType.HELLO, nonce.high(), nonce.low(), null, null);
            magic = StreamHeader.readMagic(channel);
            if (!opening.disarm()) throw new IOException("no stream header within " + OPENING_WAIT.toMillis() + " ms");
        } catch (IOException e) {
            throw new MigrationException("incoming migration failed before its header: " + e.getMessage() + "; the VM was not started", e);
        }
        if (magic == OutcomeQuery.MAGIC) {
            answerQuery(channel, back);
            return false;
        }
        receiveStream(channel, back, nonce, magic, more);
        return true;
    }

    private static String remote(SocketChannel c) {
        try {
            return String.valueOf(c.getRemoteAddress());
        } catch (IOException e) {
            return "a closed connection";
        }
    }

    private static SocketChannel acceptWithin(ServerSocketChannel server, Duration timeout) throws IOException {
        server.socket().setSoTimeout((int) Math.clamp(timeout.toMillis(), 1, Integer.MAX_VALUE));
        try {
            return server.socket().accept().getChannel();
        } catch (java.net.SocketTimeoutException e) {
            throw new IOException("no connection on " + server.getLocalAddress() + " within " + timeout.toMillis() + " ms", e);
        }
    }

    /**
     * The next connection on {@code server}, while watching {@code first}: a first connection that closes (or
     * sends anything before READY) ends the wait at once, as does the deadline, so a stream that announced
     * channels it never opens cannot hold the destination. Package-private: a test that drives
     * {@link #receiveOrAnswer} itself takes further channels the way {@link #receive} does.
     */
    static SocketChannel acceptWhileWatching(ServerSocketChannel server, SocketChannel first, long deadlineNanos) throws IOException {
        server.configureBlocking(false);
        first.configureBlocking(false);
        try (java.nio.channels.Selector selector = java.nio.channels.Selector.open()) {
            server.register(selector, java.nio.channels.SelectionKey.OP_ACCEPT);
            first.register(selector, java.nio.channels.SelectionKey.OP_READ);
            ByteBuffer one = ByteBuffer.allocate(1);
            while (true) {
                SocketChannel c = server.accept(); // in blocking mode, whatever the server's mode
                if (c != null) return c;
                int n = first.read(one);
                if (n < 0) throw new java.io.EOFException("the first connection closed while the stream's further channels were awaited");
                if (n > 0) throw new WireFormatException("the source wrote on the first connection before READY");
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) throw new IOException("the stream's further channels did not all connect in time");
                selector.select(Math.max(1, left / 1_000_000));
            }
        } finally {
            // The selector is closed (its keys with it) before this runs, so both may block again.
            first.configureBlocking(true);
            server.configureBlocking(true);
        }
    }

    /**
     * After the VM runs: answers outcome queries on {@code server} (a stream is refused, since the VM runs)
     * until the socket is closed. Lets a source whose ACK_COMPLETE was lost learn that the VM runs here.
     */
    public void serveOutcomeQueries(ServerSocketChannel server) {
        while (server.isOpen()) {
            try (SocketChannel raw = acceptWithin(server, Duration.ofDays(365));
                 Watchdog opening = new Watchdog("migration-opening-watchdog", OPENING_WAIT, List.of(raw))) {
                Connection c = transport.server(raw);
                FrameCodec back = new FrameCodec(0);
                back.write(c, FrameType.HELLO, 0, 0, null, null); // no stream is taken: the nonce would never be used
                long magic = StreamHeader.readMagic(c);
                if (magic == OutcomeQuery.MAGIC) {
                    answerQuery(c, back);
                } else {
                    answer(c, back, FrameType.ERROR, "this destination's VM already runs (from stream " + lastStream + "); it takes no other");
                }
            } catch (IOException | RuntimeException e) {
                if (server.isOpen()) LOG.log(System.Logger.Level.DEBUG, "outcome query connection: " + e.getMessage());
            }
        }
    }

    private void answerQuery(Connection channel, FrameCodec back) {
        try {
            Nonce asked = OutcomeQuery.readAfterMagic(channel);
            HandoverOutcome outcome = outcomeOf(asked);
            LOG.log(System.Logger.Level.INFO, "outcome query for stream {0}: {1}", asked, outcome);
            back.write(channel, FrameType.OUTCOME, outcome.code(), 0, null, null);
        } catch (IOException | RuntimeException e) {
            LOG.log(System.Logger.Level.DEBUG, "outcome query failed: " + e.getMessage());
        }
    }

    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    /**
     * Receives a migration whose header (after {@code magic}) arrives on {@code channel}, bound to
     * {@code nonce}; the stream's further channels are taken from {@code more} (each must begin with a
     * CHANNEL frame naming this stream) and closed at the end. Returns once the VM runs.
     */
    private void receiveStream(Connection channel, FrameCodec back, Nonce nonce, long magic, Acceptor more) throws MigrationException {
        FrameCodec codec = new FrameCodec(MAX_CHUNK + 64);
        MigrationEvents.Incoming event = new MigrationEvents.Incoming();
        event.begin();
        event.stream = nonce.toString();
        boolean resuming = false;
        SectionLoader[] loaders = new SectionLoader[0];
        List<RamChannel> extras = new ArrayList<>();
        PopulateAhead ahead = null;
        try {
            if (magic != StreamHeader.MAGIC) throw new WireFormatException("not a vmmkit migration stream: magic 0x" + Long.toHexString(magic));
            StreamHeader header = StreamHeader.readAfterMagic(channel);
            if (!header.nonce().equals(nonce)) {
                throw new WireFormatException("the stream header carries nonce " + header.nonce() + ", not " + nonce
                        + " of this connection's HELLO: a replayed or misdirected stream");
            }
            lastStream = nonce;
            record(nonce, HandoverOutcome.IN_PROGRESS);
            header.checkCompatibleWith(MigrationSource.headerOf(vm.memory(), List.of(), vm.vcpuCount()));
            loaders = matchSections(header.sections());
            Connection[] byIndex = new Connection[header.channels()];
            long deadline = System.nanoTime() + channelWait.toNanos();
            for (int i = 1; i < header.channels(); i++) {
                Connection c;
                try {
                    c = transport.server(more.accept(channel.socket(), deadline));
                } catch (IOException e) {
                    throw new IOException("channel " + i + " of " + header.channels() + " (stream " + nonce + "): " + e.getMessage()
                            + " (waited at most " + channelWait.toMillis() + " ms)", e);
                } catch (WireFormatException e) {
                    throw new WireFormatException("channel " + i + " of " + header.channels() + " (stream " + nonce + "): " + e.getMessage());
                }
                extras.add(new RamChannel(c, vm, channel, header.ramChecksums()));
                FrameCodec hello = new FrameCodec(0);
                if (hello.readHeader(c) != FrameType.CHANNEL || hello.a() != header.streamId() || hello.b() < 1
                        || hello.b() >= header.channels() || byIndex[(int) hello.b()] != null) {
                    throw new WireFormatException("connection " + i + " is not channel 1.." + (header.channels() - 1) + " of stream "
                            + Long.toHexString(header.streamId()) + ": it began with " + hello.type() + " a=" + Long.toHexString(hello.a())
                            + " b=" + hello.b());
                }
                hello.verifyEmpty();
                byIndex[(int) hello.b()] = c;
            }
            answer(channel, back, FrameType.READY, "");
            for (int i = 0; i < loaders.length; i++) loaders[i].startLoad(header.sections().get(i).version());
            resuming = true;
            PopulateAhead preallocating = prealloc;
            if (preallocating != null) {
                preallocating.close(); // never populate after a receiver punched a zero run: it would stay resident
                prealloc = null;
            }
            if (populateWindow > 0) ahead = new PopulateAhead(vm.memory(), populateWindow);
            for (RamChannel e : extras) e.start(ahead);
            RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), header.ramChecksums());
            ram.populateAhead(ahead);
            ram.allowTorn(true); // the torn check at COMPLETE catches what the source did not send again
            long[] nextSequence = new long[loaders.length];
            // ByteBuffer views of the devices' data sections (or staging buffers), made once each.
            java.util.IdentityHashMap<MemorySegment, ByteBuffer> sectionViews = new java.util.IdentityHashMap<>();
            byte[][] states = new byte[vm.vcpuCount()][];
            while (true) {
                FrameType t;
                try {
                    t = codec.readHeader(channel);
                } catch (IOException e) {
                    for (RamChannel x : extras) x.throwIfFailed(); // a RAM channel's failure ends the first channel's input
                    throw e;
                }
                if (t == null) { // skippable and unknown: read past it, whole
                    codec.skipPayload(channel);
                    continue;
                }
                switch (t) {
                    case RAM, ZERO_RUN -> ram.apply(channel, codec);
                    case SECTION_CHUNK -> {
                        int id = (int) codec.a();
                        if (codec.a() < 0 || codec.a() >= loaders.length || codec.b() != nextSequence[id]) {
                            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (SECTION_CHUNK) for section " + codec.a() + " with sequence "
                                    + codec.b() + (codec.a() >= 0 && codec.a() < loaders.length ? " where " + nextSequence[id] + " was due" : ": no such section"));
                        }
                        // Straight into the memory the section names (a device's data section at data_offset),
                        // committed only once the payload's CRC holds. Where it may go is checked here too: a
                        // section's own code does not get to say where the stream writes.
                        SectionLoader section = loaders[id];
                        try {
                            long at = section.placeChunk(codec.length());
                            MemorySegment segment = section.targetSegment();
                            if (at < 0 || at > segment.byteSize() - codec.length() || at + codec.length() > Integer.MAX_VALUE) {
                                throw new IllegalStateException("section " + section.info() + " placed a chunk of " + codec.length() + " bytes at offset "
                                        + at + " of its " + segment.byteSize() + "-byte target");
                            }
                            ByteBuffer target = sectionViews.computeIfAbsent(segment, MemorySegment::asByteBuffer);
                            target.limit((int) (at + codec.length())).position((int) at);
                            codec.readPayload(channel, target);
                            codec.verify();
                            section.commitChunk(codec.length());
                        } catch (WireFormatException e) {
                            throw e;
                        } catch (RuntimeException e) {
                            throw new SectionRefusedException("frame " + (codec.framesRead() - 1) + " (SECTION_CHUNK " + codec.b() + " of section "
                                    + section.info() + ", " + codec.length() + " bytes) was refused: " + e.getMessage(), e);
                        }
                        nextSequence[id]++;
                    }
                    case VCPU_STATE -> {
                        int id = (int) codec.a();
                        if (codec.a() < 0 || codec.a() >= states.length || codec.length() > MAX_VCPU_STATE) {
                            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (VCPU_STATE) for vCPU " + codec.a() + " with "
                                    + codec.length() + " bytes: this VM has " + states.length + " vCPUs and takes at most " + MAX_VCPU_STATE + " bytes of state");
                        }
                        ByteBuffer bytes = ByteBuffer.allocate((int) codec.length());
                        codec.readPayload(channel, bytes);
                        codec.verify();
                        states[id] = bytes.array();
                    }
                    case END_OF_ROUND -> codec.verifyEmpty();
                    case COMPLETE -> {
                        codec.verifyEmpty();
                        checkFrameCount(codec, "the first channel");
                        ram.checkNoTornPages();
                        for (RamChannel x : extras) x.awaitComplete(EXTRA_CHANNEL_WAIT);
                        for (int i = 0; i < states.length; i++) {
                            if (states[i] == null) throw new WireFormatException("the stream completed without vCPU " + i + "'s state");
                        }
                        for (SectionLoader x : loaders) x.finishLoad();
                        if (ahead != null) ahead.close(); // nothing more to populate; its last madvise ends before the figure below
                        // What the loaded guest RAM costs this host (zero pages are holes), taken before beforeStart
                        // (a verification digest reads every page, and reading a hole of a shared memfd allocates it).
                        long resident = vm.memory().residentBytes();
                        for (int i = 0; i < states.length; i++) vm.restoreVcpu(i, states[i]);
                        if (beforeStart != null) beforeStart.run(); // everything is loaded, vCPU state included; nothing runs
                        answer(channel, back, FrameType.PREPARED, "");
                        awaitCommit(channel, codec);
                        for (SectionLoader x : loaders) {
                            try {
                                x.start(); // a VFIO v1 device refuses to run without its final chunk: v1 checks only at RESUMING -> RUNNING
                            } catch (RuntimeException e) {
                                throw new SectionRefusedException("at COMMIT (frame " + (codec.framesRead() - 1) + ") section " + x.info()
                                        + " would not run with the state the stream brought: " + e.getMessage(), e);
                            }
                        }
                        resuming = false;
                        vm.startLoaded();
                        record(nonce, HandoverOutcome.STARTED);
                        event.outcome = "started";
                        event.frames = codec.framesRead();
                        event.commit();
                        try {
                            back.write(channel, FrameType.ACK_COMPLETE, resident, 0, null, null); // a: the source reports it
                        } catch (IOException e) {
                            // The VM runs: a source that misses this asks (an outcome query) or waits for its operator.
                            LOG.log(System.Logger.Level.WARNING, "the VM runs, but ACK_COMPLETE could not be sent: " + e.getMessage());
                        }
                        return;
                    }
                    case ABANDON -> throw new MigrationException("frame " + (codec.framesRead() - 1) + ": the source abandoned the migration");
                    default -> throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + t + ") does not belong on the first channel of a migration stream");
                }
            }
        } catch (Throwable failure) {
            if (lastStream == nonce) record(nonce, HandoverOutcome.NOT_STARTED);
            event.outcome = "not started";
            event.reason = failure.getMessage();
            event.frames = codec.framesRead();
            event.commit();
            if (resuming) for (int i = loaders.length - 1; i >= 0; i--) abort(loaders[i]);
            try {
                answer(channel, back, FrameType.ERROR, failure.getMessage() == null ? failure.toString() : failure.getMessage());
            } catch (IOException | RuntimeException ignored) {
                // the connection may be what failed; the error is thrown below either way
            }
            throw failure instanceof MigrationException m ? m
                    : new MigrationException("incoming migration failed: " + failure.getMessage() + "; the VM was not started", failure);
        } finally {
            if (ahead != null) ahead.close();
            for (RamChannel x : extras) x.close();
        }
    }

    private static final Duration EXTRA_CHANNEL_WAIT = Duration.ofSeconds(60);

    /** A section refused what the stream brought it (a chunk, or running with the loaded state). */
    public static final class SectionRefusedException extends IllegalStateException {
        SectionRefusedException(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * This VM's loader for each section of the stream, by the stream's order: the same id, the same kind, a
     * version it can load, and no section of this VM left out. Refuses naming the first that differs, before
     * anything is loaded.
     */
    private SectionLoader[] matchSections(List<SectionInfo> stream) {
        java.util.Map<String, SectionLoader> byId = new java.util.LinkedHashMap<>();
        for (SectionLoader x : sections) byId.put(x.info().id(), x);
        SectionLoader[] out = new SectionLoader[stream.size()];
        String misfit = "the stream header does not fit this VM: ";
        for (int i = 0; i < out.length; i++) {
            SectionInfo theirs = stream.get(i);
            SectionLoader mine = byId.remove(theirs.id());
            if (mine == null) {
                throw new WireFormatException(misfit + "the source has section " + theirs + ", which this VM " + (out.length > 0 && java.util.Arrays.stream(out).anyMatch(
                        l -> l != null && l.info().id().equals(theirs.id())) ? "was given twice" : "does not have"));
            }
            if (!mine.info().kind().equals(theirs.kind())) {
                throw new WireFormatException(misfit + "section " + theirs.id() + " is of kind " + theirs.kind() + " at the source, " + mine.info().kind() + " here");
            }
            if (!mine.canLoad(theirs.version())) {
                throw new WireFormatException(misfit + "section " + theirs.id() + " (" + theirs.kind() + ") carries state version " + theirs.version()
                        + ", which this VM cannot load (it has version " + mine.info().version() + ")");
            }
            out[i] = mine;
        }
        if (!byId.isEmpty()) throw new WireFormatException(misfit + "this VM's sections " + byId.keySet() + " are not in the stream");
        return out;
    }

    private static void abort(SectionLoader x) {
        try {
            x.abortLoad();
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "section " + x.info() + ": aborting its load failed: " + e.getMessage());
        }
    }

    /** COMPLETE's {@code a} is the frames its channel carried before it: all of them arrived, each once. */
    static void checkFrameCount(FrameCodec codec, String channel) {
        if (codec.a() != codec.framesRead() - 1) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (COMPLETE) on " + channel + " says " + codec.a()
                    + " frames came before it; " + (codec.framesRead() - 1) + " did");
        }
    }

    /**
     * After PREPARED: the source's COMMIT, within {@link #commitWait}. Anything else — a cut, ABANDON, silence —
     * leaves the VM unstarted, and the stream is given up.
     */
    private void awaitCommit(Connection channel, FrameCodec codec) throws IOException {
        // The watchdog ends the read only (shutdownInput), so the ERROR that says "not started" still goes out.
        try (Watchdog watchdog = new Watchdog("migration-commit-watchdog", commitWait, List.of(channel::shutdownInput))) {
            FrameType t;
            try {
                t = codec.readHeader(channel);
                codec.skipPayload(channel);
            } catch (IOException e) {
                if (watchdog.fired()) throw new IOException("no COMMIT within " + commitWait.toMillis() + " ms of PREPARED", e);
                throw new IOException("the connection failed while waiting for COMMIT: " + e.getMessage(), e);
            }
            if (t != FrameType.COMMIT) {
                throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + (t == null ? "a skippable type this version does not know" : t)
                        + ") where COMMIT was due");
            }
            if (!watchdog.disarm()) throw new IOException("COMMIT came only after " + commitWait.toMillis() + " ms");
        }
    }

    /**
     * One further channel: a thread applying its RAM and ZERO_RUN frames (its own torn-page record: a page
     * always travels on the same channel) until its COMPLETE. A failure ends the first channel's input, so
     * the main loop stops reading and reports it.
     */
    private static final class RamChannel {
        private final Connection in;
        private final MigratableVm vm;
        private final Connection first;
        private final java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        private volatile Throwable failure;

        private final boolean ramChecksums;

        RamChannel(Connection in, MigratableVm vm, Connection first, boolean ramChecksums) {
            this.ramChecksums = ramChecksums;
            this.in = in;
            this.vm = vm;
            this.first = first;
        }

        void start(PopulateAhead ahead) {
            Thread.ofPlatform().name("migration-receiver-ram").daemon().start(() -> run(ahead));
        }

        private void run(PopulateAhead ahead) {
            try {
                FrameCodec codec = new FrameCodec(MAX_CHUNK + 64); // its frames after the CHANNEL frame that opened it
                RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), ramChecksums);
                ram.populateAhead(ahead);
                ram.allowTorn(true);
                while (true) {
                    FrameType t = codec.readHeader(in);
                    if (t == FrameType.RAM || t == FrameType.ZERO_RUN) {
                        ram.apply(in, codec);
                    } else if (t == FrameType.COMPLETE) {
                        codec.verifyEmpty();
                        checkFrameCount(codec, "a RAM channel");
                        ram.checkNoTornPages();
                        return;
                    } else {
                        throw new WireFormatException("frame " + t + " on a RAM channel, which carries RAM, ZERO_RUN and COMPLETE only");
                    }
                }
            } catch (Throwable t) {
                failure = t;
                try {
                    first.shutdownInput();
                } catch (IOException ignored) {
                    // the first channel may be gone already; its reader fails either way
                }
            } finally {
                done.countDown();
            }
        }

        void throwIfFailed() throws IOException {
            Throwable t = failure;
            if (t != null) throw new IOException("a RAM channel failed: " + t.getMessage(), t);
        }

        void awaitComplete(Duration timeout) throws IOException, InterruptedException {
            if (!done.await(timeout.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS)) {
                throw new IOException("a RAM channel did not complete within " + timeout.toMillis() + " ms of the first channel's COMPLETE");
            }
            throwIfFailed();
        }

        void close() {
            try {
                in.close();
            } catch (IOException ignored) {
                // closing ends the thread's read; nothing else depends on it
            }
        }
    }

    private static void answer(Connection channel, FrameCodec back, FrameType type, String reason) throws IOException {
        byte[] text = reason.getBytes(StandardCharsets.UTF_8);
        ByteBuffer payload = reason.isEmpty() ? null : ByteBuffer.wrap(text, 0, Math.min(text.length, 64 * 1024));
        back.write(channel, type, 0, 0, payload, null);
    }
}
