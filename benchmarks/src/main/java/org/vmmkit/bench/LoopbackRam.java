package org.vmmkit.bench;

import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.Semaphore;
import java.util.function.Consumer;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.RamReceiver;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;

/** What the RAM-over-loopback benchmarks share: a random-content guest, and the receivers of framed RAM and of a raw blast. */
final class LoopbackRam {
    private LoopbackRam() {}

    /** One region of {@code size} bytes of random content (no zero pages). */
    static GuestMemory randomGuest(long size) {
        GuestMemory memory = GuestMemory.create(List.of(new GuestMemory.Range(0, size)));
        GuestRegion r = memory.regions().get(0);
        SplittableRandom random = new SplittableRandom(1);
        for (long o = 0; o < size; o += 8) r.host().set(java.lang.foreign.ValueLayout.JAVA_LONG, o, random.nextLong());
        return memory;
    }

    /** Applies RAM frames into {@code destination}, releasing {@code done} at each COMPLETE; a failure goes to {@code onFailure}. */
    static void receiveFramed(java.nio.channels.ReadableByteChannel in, GuestMemory destination, boolean checksums, Semaphore done, Consumer<Throwable> onFailure) {
        try {
            FrameCodec codec = new FrameCodec(64L << 20);
            RamReceiver receiver = new RamReceiver(new MemoryViews(destination), checksums);
            while (true) {
                if (codec.readHeader(in) == FrameType.COMPLETE) {
                    codec.verify();
                    done.release();
                } else {
                    receiver.apply(in, codec);
                }
            }
        } catch (Throwable t) {
            onFailure.accept(t);
            done.release(Integer.MAX_VALUE / 2);
        }
    }

    /** Reads {@code size} raw bytes at a time straight into {@code destination}, releasing {@code done} after each. */
    static void receiveRaw(SocketChannel in, GuestMemory destination, long size, Semaphore done, Consumer<Throwable> onFailure) {
        try {
            MemoryViews views = new MemoryViews(destination);
            GuestRegion r = destination.regions().get(0);
            while (true) {
                for (long o = 0; o < size; o += MemoryViews.VIEW_BYTES) {
                    ByteBuffer v = views.view(r, o, MemoryViews.VIEW_BYTES);
                    while (v.hasRemaining()) if (in.read(v) < 0) return;
                }
                done.release();
            }
        } catch (Throwable t) {
            onFailure.accept(t);
            done.release();
        }
    }

    /** Writes {@code size} bytes of {@code source} to {@code out} in writes of {@code writeSize}, no framing. */
    static void blast(SocketChannel out, MemoryViews views, GuestMemory source, long size, long writeSize) throws java.io.IOException {
        GuestRegion r = source.regions().get(0);
        for (long o = 0; o < size; o += writeSize) {
            ByteBuffer v = views.view(r, o, writeSize);
            while (v.hasRemaining()) out.write(v);
        }
    }

    /**
     * One pass of the pipeline benchmarks: all of {@code source}'s first region published on {@code ring} in
     * frames of {@code framePages}, COMPLETE, sent, and every receiver's COMPLETE seen ({@code done}, one
     * permit per channel); a receiver's failure is thrown. Returns the RAM pages sent so far.
     */
    static long sendAll(org.vmmkit.migration.pipeline.TransferRing ring, GuestMemory source, long framePages, Semaphore done, int channels,
                        java.util.function.Supplier<Throwable> failure) throws InterruptedException {
        GuestRegion r = source.regions().get(0);
        for (long page = 0; page < r.size() / GuestMemory.PAGE_SIZE; page += framePages) ring.publishRam(r, page, framePages);
        ring.publishComplete();
        ring.awaitSent(120, java.util.concurrent.TimeUnit.SECONDS);
        done.acquire(channels);
        if (failure.get() != null) throw new IllegalStateException(failure.get());
        return ring.ramPages();
    }
}
