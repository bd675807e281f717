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
 * torn-page record: a page always travels on the same channel) until its COMPLETE, or refusing them when the
 * guest memory was handed over as memfds. A failure ends the first channel's input, so the first channel's
 * reader stops and reports it.
 */
final class IncomingRamChannel {
    private final Connection in;
    private final int index;
    private final MigratableVm vm;
    private final Connection first;
    private final boolean ramChecksums;
    private final long maxFrame;
    private final CountDownLatch done = new CountDownLatch(1);
    private volatile Throwable failure;

    /** Channel {@code index} of its stream (1, 2, …, as its CHANNEL frame said), read from {@code in}. */
    IncomingRamChannel(Connection in, int index, MigratableVm vm, Connection first, boolean ramChecksums, long maxFrame) {
        this.in = in;
        this.index = index;
        this.vm = vm;
        this.first = first;
        this.ramChecksums = ramChecksums;
        this.maxFrame = maxFrame;
    }

    /**
     * Starts its thread; {@code ahead} (or null) populates guest RAM ahead of it. With {@code memoryHandedOver}
     * (the source's memfds were taken) a RAM or ZERO_RUN frame is refused: it would only write this VM's own
     * memory, which is dropped at COMMIT, and cost this host that memory meanwhile.
     */
    void start(PopulateAhead ahead, boolean memoryHandedOver) {
        Thread.ofPlatform().name("migration-receiver-ram-" + index).daemon().start(() -> run(ahead, memoryHandedOver));
    }

    private void run(PopulateAhead ahead, boolean memoryHandedOver) {
        try {
            FrameCodec codec = new FrameCodec(maxFrame); // its frames after the CHANNEL frame that opened it
            RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), ramChecksums);
            ram.populateAhead(ahead);
            ram.allowTorn(true);
            while (true) {
                FrameType t = codec.readHeader(in);
                if (t == FrameType.RAM || t == FrameType.ZERO_RUN) {
                    if (memoryHandedOver) throw ramAfterHandover("channel " + index, codec);
                    ram.apply(in, codec);
                } else if (t == FrameType.COMPLETE) {
                    codec.verifyEmpty();
                    checkFrameCount(codec, "channel " + index);
                    ram.checkNoTornPages();
                    return;
                } else {
                    throw new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + t + ") on channel " + index
                            + ", a RAM channel, which carries RAM, ZERO_RUN and COMPLETE only");
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

    /**
     * The refusal of the RAM or ZERO_RUN frame {@code codec} just read (its header only: nothing of it was
     * applied) on {@code channel}, in a stream whose guest memory was handed over as memfds.
     */
    static WireFormatException ramAfterHandover(String channel, FrameCodec codec) {
        return new WireFormatException("frame " + (codec.framesRead() - 1) + " (" + codec.type() + " a=0x" + Long.toHexString(codec.a())
                + " b=" + codec.b() + ") on " + channel + " in a stream whose guest memory was handed over as memfds: no RAM is copied in such a stream");
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
        if (t != null) throw new IOException("channel " + index + " failed: " + t.getMessage(), t);
    }

    void awaitComplete(Duration timeout) throws IOException, InterruptedException {
        if (!done.await(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            throw new IOException("channel " + index + " did not complete within " + timeout.toMillis() + " ms of the first channel's COMPLETE");
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
