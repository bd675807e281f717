package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.migration.MigrationDestination.Acceptor;
import org.vmmkit.migration.MigrationDestination.SectionRefusedException;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.PopulateAhead;
import org.vmmkit.migration.ram.RamReceiver;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;

import static org.vmmkit.migration.ConnectionOpening.answer;

/**
 * One incoming stream, from its header to the VM running (or to a refusal that leaves it unstarted): checks
 * the header, takes the further channels, applies every frame of the first channel, and at COMPLETE does the
 * destination's half of the handover (PREPARED, COMMIT, start, ACK_COMPLETE).
 */
final class IncomingStream {
    static final long MAX_CHUNK = 64L << 20;
    private static final Duration EXTRA_CHANNEL_WAIT = Duration.ofSeconds(60);
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    /**
     * What the destination fixes for every stream it takes; {@code populateWindow} is how far guest RAM is
     * populated ahead of the receivers (0: not at all), {@code beforeLoading} runs at READY (it stops a
     * preallocation), {@code memfdPassing} whether a local source's guest-memory memfds are taken, {@code quiet}
     * whether the stream's INFO line is left out (the start-up rehearsal).
     */
    record Setup(MigratableVm vm, List<SectionLoader> sections, Runnable beforeStart, Transport transport,
                 Duration channelWait, Duration commitWait, OutcomeRegistry outcomes, long populateWindow, Runnable beforeLoading,
                 boolean memfdPassing, DestinationIdentity identity, boolean quiet) {}

    private final Setup setup;
    private final MigratableVm vm;
    private final Connection channel;
    private final FrameCodec back;
    private final Nonce nonce;
    private final FrameCodec codec = new FrameCodec(MAX_CHUNK + 64);
    private final MigrationEvents.Incoming event = new MigrationEvents.Incoming();
    private final List<IncomingRamChannel> extras = new ArrayList<>();
    private SectionLoader[] loaders = new SectionLoader[0];
    private boolean loading;
    private PopulateAhead ahead;
    private List<org.vmmkit.core.sys.Fd> memfds; // the source's guest memory, taken at READY, mapped at COMPLETE; null: RAM is copied
    private boolean adopted; // memfds mapped over guest memory (undone if the stream is refused)
    private java.util.UUID source = StreamHeader.NO_IDENTITY; // the VM the stream moves, from its header

    IncomingStream(Setup setup, Connection channel, FrameCodec back, Nonce nonce) {
        this.setup = setup;
        this.vm = setup.vm();
        this.channel = channel;
        this.back = back;
        this.nonce = nonce;
    }

    /**
     * Receives the stream whose header follows the magic {@code opened} read, its further channels from {@code more}
     * (each must begin with a CHANNEL frame naming this stream; all are closed at the end). Returns once the VM runs.
     */
    void receive(ConnectionOpening.Opened opened, Acceptor more) throws MigrationException {
        event.begin();
        event.stream = nonce.toString();
        long magic = opened.magic();
        long magicRead = System.nanoTime();
        try {
            if (magic != StreamHeader.MAGIC) throw new WireFormatException("not a vmmkit migration stream: magic 0x" + Long.toHexString(magic));
            StreamHeader header = StreamHeader.readAfterMagic(channel);
            long headerRead = System.nanoTime();
            if (!header.nonce().equals(nonce)) {
                throw new WireFormatException("the stream header carries nonce " + header.nonce() + ", not " + nonce
                        + " of this connection's HELLO: a replayed or misdirected stream");
            }
            setup.outcomes().began(nonce);
            setup.identity().check(header.vm()); // before the layout: another VM is the first thing to say
            source = header.vm();
            header.checkCompatibleWith(MigrationSource.headerOf(vm.memory(), List.of(), vm.vcpuCount()));
            loaders = SectionMatch.match(setup.sections(), header.sections());
            long checked = System.nanoTime();
            openChannels(header, more);
            long channelsOpen = System.nanoTime();
            if (header.memfdOffer() && setup.memfdPassing() && Transport.isUnix(channel.socket())) {
                takeMemfds();
            } else {
                answer(channel, back, FrameType.READY, "");
            }
            long ready = System.nanoTime();
            // The destination's share of the source's setup: its own work is HELLO, the header's checks and the channels;
            // the wait for the magic is the source's (its HELLO read, its header written) and the network's.
            if (!setup.quiet()) LOG.log(System.Logger.Level.INFO, "stream {0} set up: READY {1} us after the connection was accepted: HELLO {2} us, "
                            + "waiting for the header {3} us, header read {4} us, checked {5} us, further channels {6} us, READY {7} us{8}",
                    nonce, (ready - opened.begunNanos()) / 1000, (opened.helloNanos() - opened.begunNanos()) / 1000,
                    (magicRead - opened.helloNanos()) / 1000, (headerRead - magicRead) / 1000, (checked - headerRead) / 1000,
                    (channelsOpen - checked) / 1000, (ready - channelsOpen) / 1000, memfds != null ? " (memfds taken)" : "");
            for (int i = 0; i < loaders.length; i++) loaders[i].startLoad(header.sections().get(i).version());
            loading = true;
            setup.beforeLoading().run();
            if (setup.populateWindow() > 0 && memfds == null && PopulateAhead.helps(vm.memory())) ahead = new PopulateAhead(vm.memory(), setup.populateWindow());
            for (IncomingRamChannel e : extras) e.start(ahead, memfds != null);
            applyUntilComplete(header);
        } catch (Throwable failure) {
            throw refuse(failure);
        } finally {
            if (ahead != null) ahead.close();
            for (IncomingRamChannel x : extras) x.close();
        }
    }

    /**
     * A local live upgrade: READY with {@code a} = 1 and, as its payload, a fresh abstract socket name where the
     * source hands its memfds over ({@link MemfdHandoff}); they are kept, unmapped, until the stream is complete.
     */
    private void takeMemfds() throws IOException {
        String name = "@vmmkit-memfd-" + Long.toHexString(new java.security.SecureRandom().nextLong()) + "-" + ProcessHandle.current().pid();
        try (org.vmmkit.core.sys.UnixListener listener = org.vmmkit.core.sys.UnixListener.listen(name)) {
            back.write(channel, FrameType.READY, 1, 0, ByteBuffer.wrap(name.getBytes(java.nio.charset.StandardCharsets.UTF_8)), null);
            memfds = MemfdHandoff.receive(listener, nonce, vm.memory(), setup.channelWait());
        } catch (org.vmmkit.core.sys.SysException e) {
            throw new IOException("listening for the source's memfds on " + name + ": " + e.getMessage(), e);
        }
        LOG.log(System.Logger.Level.DEBUG, "stream {0}: the source handed its guest memory over as {1} memfd(s); no RAM will be copied",
                nonce, memfds.size());
    }

    /** The stream's further channels, each opened by its CHANNEL frame, within the destination's wait. */
    private void openChannels(StreamHeader header, Acceptor more) throws IOException {
        Connection[] byIndex = new Connection[header.channels()];
        long deadline = System.nanoTime() + setup.channelWait().toNanos();
        for (int i = 1; i < header.channels(); i++) {
            Connection c;
            try {
                c = setup.transport().server(more.accept(channel.socket(), deadline));
            } catch (IOException e) {
                throw new IOException("channel " + i + " of " + header.channels() + " (stream " + nonce + "): " + e.getMessage()
                        + " (waited at most " + setup.channelWait().toMillis() + " ms)", e);
            } catch (WireFormatException e) {
                throw new WireFormatException("channel " + i + " of " + header.channels() + " (stream " + nonce + "): " + e.getMessage());
            }
            FrameCodec hello = new FrameCodec(0);
            try {
                if (hello.readHeader(c) != FrameType.CHANNEL || hello.a() != header.streamId() || hello.b() < 1
                        || hello.b() >= header.channels() || byIndex[(int) hello.b()] != null) {
                    throw new WireFormatException("connection " + i + " is not channel 1.." + (header.channels() - 1) + " of stream "
                            + Long.toHexString(header.streamId()) + ": it began with " + hello.type() + " a=" + Long.toHexString(hello.a())
                            + " b=" + hello.b());
                }
                hello.verifyEmpty();
            } catch (IOException | RuntimeException e) {
                c.close(); // not a channel of this stream: nothing else closes it
                throw e;
            }
            byIndex[(int) hello.b()] = c;
            extras.add(new IncomingRamChannel(c, (int) hello.b(), vm, channel, header.ramChecksums(), MAX_CHUNK + 64));
        }
    }

    /** The first channel's frames until COMPLETE, then the handover. */
    private void applyUntilComplete(StreamHeader header) throws Exception {
        RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), header.ramChecksums());
        ram.populateAhead(ahead);
        ram.allowTorn(true); // the torn check at COMPLETE catches what the source did not send again
        long[] nextSequence = new long[loaders.length];
        // ByteBuffer views of the sections' target memory (a device's data section, a staging buffer), made once each.
        IdentityHashMap<MemorySegment, ByteBuffer> sectionViews = new IdentityHashMap<>();
        while (true) {
            FrameType t;
            try {
                t = codec.readHeader(channel);
            } catch (IOException e) {
                for (IncomingRamChannel x : extras) x.throwIfFailed(); // a RAM channel's failure ends the first channel's input
                throw e;
            }
            if (t == null) { // skippable and unknown: read past it, whole
                codec.skipPayload(channel);
                continue;
            }
            switch (t) {
                case RAM, ZERO_RUN -> {
                    if (memfds != null) throw IncomingRamChannel.ramAfterHandover("the first channel", codec);
                    ram.apply(channel, codec);
                }
                case SECTION_CHUNK -> applySectionChunk(nextSequence, sectionViews);
                case END_OF_ROUND -> {
                    codec.verifyEmpty();
                    back.write(channel, FrameType.ROUND_ACK, codec.a(), 0, null, null); // the source's estimate waits for it
                }
                case COMPLETE -> {
                    codec.verifyEmpty();
                    IncomingRamChannel.checkFrameCount(codec, "the first channel");
                    ram.checkNoTornPages();
                    for (IncomingRamChannel x : extras) x.awaitComplete(EXTRA_CHANNEL_WAIT);
                    handover();
                    return;
                }
                case ABANDON -> throw new MigrationException("frame " + (codec.framesRead() - 1) + ": the source abandoned the migration");
                default -> throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + t
                        + ") does not belong on the first channel of a migration stream");
            }
        }
    }

    private void applySectionChunk(long[] nextSequence, IdentityHashMap<MemorySegment, ByteBuffer> views) throws IOException {
        int id = (int) codec.a();
        if (codec.a() < 0 || codec.a() >= loaders.length || codec.b() != nextSequence[id]) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (SECTION_CHUNK) for section " + codec.a() + " with sequence "
                    + codec.b() + (codec.a() >= 0 && codec.a() < loaders.length ? " where " + nextSequence[id] + " was due" : ": no such section"));
        }
        // Straight into the memory the section names (a device's data section at data_offset), committed only
        // once the payload's CRC holds. Where it may go is checked here too: a section's own code does not get
        // to say where the stream writes.
        SectionLoader section = loaders[id];
        try {
            long at = section.placeChunk(codec.length());
            MemorySegment segment = section.targetSegment();
            if (at < 0 || at > segment.byteSize() - codec.length() || at + codec.length() > Integer.MAX_VALUE) {
                throw new IllegalStateException("section " + section.info() + " placed a chunk of " + codec.length() + " bytes at offset "
                        + at + " of its " + segment.byteSize() + "-byte target");
            }
            ByteBuffer target = views.computeIfAbsent(segment, MemorySegment::asByteBuffer);
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

    /**
     * Everything arrived: finish every section (the vCPUs' among them), answer PREPARED (nothing runs), and start
     * only at the source's COMMIT; then ACK_COMPLETE with this host's resident guest memory.
     */
    private void handover() throws IOException {
        for (SectionLoader x : loaders) {
            try {
                x.finishLoad();
            } catch (RuntimeException e) {
                throw new SectionRefusedException("at COMPLETE (frame " + (codec.framesRead() - 1) + ") section " + x.info()
                        + " is not whole: " + e.getMessage(), e);
            }
        }
        if (ahead != null) ahead.close(); // nothing more to populate; its last madvise ends before the figure below
        if (memfds != null) {
            // The source's memory, mapped over this VM's at the same addresses: nothing is read, written or
            // populated here; the vCPU state below and beforeStart only read it, and nothing runs before COMMIT.
            vm.memory().adoptBackings(memfds);
            adopted = true;
        }
        // What the loaded guest RAM costs this host (zero pages are holes), taken before beforeStart (a
        // verification digest reads every page, and reading a hole of a shared memfd allocates it).
        long resident = vm.memory().residentBytes();
        if (setup.beforeStart() != null) setup.beforeStart().run(); // everything is loaded, vCPU state included; nothing runs
        answer(channel, back, FrameType.PREPARED, "");
        awaitCommit();
        for (SectionLoader x : loaders) {
            try {
                x.start(); // a VFIO v1 device refuses to run without its final chunk: v1 checks only at RESUMING -> RUNNING
            } catch (RuntimeException e) {
                throw new SectionRefusedException("at COMMIT (frame " + (codec.framesRead() - 1) + ") section " + x.info()
                        + " would not run with the state the stream brought: " + e.getMessage(), e);
            }
        }
        loading = false;
        vm.startLoaded();
        if (adopted) vm.memory().releaseOwnBackings(); // this VM's own memory is never used again
        setup.identity().adopt(source); // the VM runs from this stream: it is the source's VM from now on
        setup.outcomes().record(nonce, HandoverOutcome.STARTED);
        event.outcome = "started";
        event.frames = codec.framesRead();
        event.commit();
        try {
            back.write(channel, FrameType.ACK_COMPLETE, resident, 0, null, null); // a: the source reports it
        } catch (IOException e) {
            // The VM runs: a source that misses this asks (an outcome query) or waits for its operator.
            LOG.log(System.Logger.Level.WARNING, "the VM runs, but ACK_COMPLETE could not be sent: " + e.getMessage());
        }
    }

    /**
     * After PREPARED: the source's COMMIT, within the commit wait. Anything else — a cut, ABANDON, silence —
     * leaves the VM unstarted, and the stream is given up.
     */
    private void awaitCommit() throws IOException {
        Duration wait = setup.commitWait();
        // The watchdog ends the read only (shutdownInput), so the ERROR that says "not started" still goes out.
        try (Watchdog watchdog = new Watchdog("migration-commit-watchdog", wait, List.of(channel::shutdownInput))) {
            FrameType t;
            try {
                t = codec.readHeader(channel);
                codec.skipPayload(channel);
            } catch (IOException e) {
                if (watchdog.fired()) throw new IOException("no COMMIT within " + wait.toMillis() + " ms of PREPARED", e);
                throw new IOException("the connection failed while waiting for COMMIT: " + e.getMessage(), e);
            }
            if (t != FrameType.COMMIT) {
                throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + (t == null ? "a skippable type this version does not know" : t)
                        + ") where COMMIT was due");
            }
            if (!watchdog.disarm()) throw new IOException("COMMIT came only after " + wait.toMillis() + " ms");
        }
    }

    /** Rollback: every section's load aborted in reverse order, ERROR to the source, the outcome recorded. */
    private MigrationException refuse(Throwable failure) {
        setup.outcomes().notStarted(nonce);
        event.outcome = "not started";
        event.reason = failure.getMessage();
        event.frames = codec.framesRead();
        event.commit();
        if (loading) {
            for (int i = loaders.length - 1; i >= 0; i--) abort(loaders[i]);
        }
        releaseMemfds();
        try {
            answer(channel, back, FrameType.ERROR, failure.getMessage() == null ? failure.toString() : failure.getMessage());
        } catch (IOException | RuntimeException ignored) {
            // the connection may be what failed; the error is thrown either way
        }
        return failure instanceof MigrationException m ? m
                : new MigrationException("incoming migration failed: " + failure.getMessage() + "; the VM was not started", failure);
    }

    /** A refused stream leaves the source's memory as it was: unmapped here (this VM's own back), the fds closed. */
    private void releaseMemfds() {
        try {
            if (adopted) {
                vm.memory().dropAdoptedBackings();
            } else if (memfds != null) {
                for (org.vmmkit.core.sys.Fd fd : memfds) fd.close();
            }
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "giving the source's memfds back failed: " + e.getMessage());
        }
        memfds = null;
        adopted = false;
    }

    private static void abort(SectionLoader x) {
        try {
            x.abortLoad();
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "section " + x.info() + ": aborting its load failed: " + e.getMessage());
        }
    }
}
