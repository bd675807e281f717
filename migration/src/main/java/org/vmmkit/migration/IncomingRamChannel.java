package org.vmmkit.migration;

import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.PopulateAhead;
import org.vmmkit.migration.ram.RamReceiver;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.WireFormatException;

/**
 * One further channel of an incoming stream: a thread applying its RAM and ZERO_RUN frames (its own
 * torn-page record: a page always travels on the same channel) until its COMPLETE. A failure ends the first
 * channel's input, so the first channel's reader stops and reports it.
 */
final class IncomingRamChannel {
    private final Connection in;
    private final MigratableVm vm;
    private final Connection first;
    private final boolean ramChecksums;
    private final long maxFrame;
    private final CountDownLatch done = new CountDownLatch(1);
    private volatile Throwable failure;

    IncomingRamChannel(Connection in, MigratableVm vm, Connection first, boolean ramChecksums, long maxFrame) {
        this.in = in;
        this.vm = vm;
        this.first = first;
        this.ramChecksums = ramChecksums;
        this.maxFrame = maxFrame;
    }

    /** Starts its thread; {@code ahead} (or null) populates guest RAM ahead of it. */
    void start(PopulateAhead ahead) {
        Thread.ofPlatform().name("migration-receiver-ram").daemon().start(() -> run(ahead));
    }

    private void run(PopulateAhead ahead) {
        try {
            FrameCodec codec = new FrameCodec(maxFrame); // its frames after the CHANNEL frame that opened it
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

    /** COMPLETE's {@code a} is the frames its channel carried before it: all of them arrived, each once. */
    static void checkFrameCount(FrameCodec codec, String channel) {
        if (codec.a() != codec.framesRead() - 1) {
            throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (COMPLETE) on " + channel + " says " + codec.a()
                    + " frames came before it; " + (codec.framesRead() - 1) + " did");
        }
    }

    void throwIfFailed() throws IOException {
        Throwable t = failure;
        if (t != null) throw new IOException("a RAM channel failed: " + t.getMessage(), t);
    }

    void awaitComplete(Duration timeout) throws IOException, InterruptedException {
        if (!done.await(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
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
