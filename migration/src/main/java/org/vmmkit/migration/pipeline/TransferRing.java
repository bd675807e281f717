package org.vmmkit.migration.pipeline;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.IdentityHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import com.lmax.disruptor.BatchEventProcessor;
import com.lmax.disruptor.BatchEventProcessorBuilder;
import com.lmax.disruptor.BlockingWaitStrategy;
import com.lmax.disruptor.EventHandler;
import com.lmax.disruptor.ExceptionHandler;
import com.lmax.disruptor.RingBuffer;
import com.lmax.disruptor.WaitStrategy;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.RamSender;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.vfio.migration.DeviceChunk;

/**
 * The transfer ring: a Disruptor ring of pre-allocated {@link ChunkDescriptor}s with several producers
 * (the memory scanner, one per device) and one sender thread that writes each descriptor as frames, straight
 * from guest RAM or a device's data section, with gathering writes. A device chunk is released right after
 * its frame is written (or at once, if the sender has failed), which lets its producer read
 * {@code pending_bytes} again.
 *
 * <p>Memory ordering: a producer fills a claimed slot and {@code publish}es it (the Disruptor's release
 * store of the sequence); the sender reads the slot after its barrier saw that sequence (acquire). The
 * sender's failure is a volatile field written before any pending chunk is released, so a producer that
 * sees its chunk released and then reads {@link #failure()} sees the failure.
 */
public final class TransferRing implements AutoCloseable {
    private static final long RAM_PAGE = org.vmmkit.core.memory.GuestMemory.PAGE_SIZE;
    private final RingBuffer<ChunkDescriptor> ring;
    private final BatchEventProcessor<ChunkDescriptor> processor;
    private final Thread sender;
    private volatile Throwable failure;
    private long framesWritten, deviceBytes, deviceChunks;

    public TransferRing(int size, GatheringByteChannel out, MemoryViews views, long maxFramePages, WaitStrategy wait,
                        long maxBandwidth) {
        this.ring = RingBuffer.createMultiProducer(ChunkDescriptor::new, size, wait);
        Sender handler = new Sender(out, views, maxFramePages, maxBandwidth);
        this.processor = new BatchEventProcessorBuilder().build(ring, ring.newBarrier(), handler);
        processor.setExceptionHandler(new ExceptionHandler<>() {
            public void handleEventException(Throwable ex, long sequence, ChunkDescriptor event) {
                fail(ex);
            }

            public void handleOnStartException(Throwable ex) {
                fail(ex);
            }

            public void handleOnShutdownException(Throwable ex) {
                fail(ex);
            }
        });
        ring.addGatingSequences(processor.getSequence());
        this.sender = Thread.ofPlatform().name("migration-sender").daemon().start(processor);
    }

    /** With a blocking wait strategy: on 2 cores a spinning sender would take the producers' core. */
    public TransferRing(int size, GatheringByteChannel out, MemoryViews views, long maxFramePages) {
        this(size, out, views, maxFramePages, new BlockingWaitStrategy(), 0);
    }

    /** As above, with a bandwidth cap in bytes per second (0 = unlimited). */
    public TransferRing(int size, GatheringByteChannel out, MemoryViews views, long maxFramePages, long maxBandwidth) {
        this(size, out, views, maxFramePages, new BlockingWaitStrategy(), maxBandwidth);
    }

    private void fail(Throwable t) {
        if (failure == null) failure = t;
    }

    /** The sender's failure (the stream is then broken), or null. */
    public Throwable failure() {
        return failure;
    }

    private void check() {
        if (failure != null) throw new IllegalStateException("the migration sender failed: " + failure, failure);
    }

    /** Queues pages {@code [firstPage, firstPage + pages)} of a region. */
    public void publishRam(GuestRegion region, long firstPage, long pages) {
        check();
        long seq = ring.next();
        try {
            ring.get(seq).ram(region, firstPage, pages);
        } finally {
            ring.publish(seq);
        }
    }

    /** Queues a device chunk; the sender releases it after writing it. */
    public void publishDevice(DeviceChunk chunk) {
        if (failure != null) {
            chunk.release();
            check();
        }
        long seq = ring.next();
        try {
            ring.get(seq).device(chunk);
        } finally {
            ring.publish(seq);
        }
    }

    /** Queues a frame without payload (END_OF_ROUND, COMPLETE, ...). */
    public void publishControl(FrameType type, long a, long b) {
        publishControl(type, a, b, null);
    }

    /** Queues a frame with a small payload the caller hands over (vCPU state); may be null. */
    public void publishControl(FrameType type, long a, long b, ByteBuffer payload) {
        check();
        long seq = ring.next();
        try {
            ring.get(seq).control(type, a, b, payload);
        } finally {
            ring.publish(seq);
        }
    }

    /** Waits until everything published so far is written (or the sender failed, which is thrown). */
    public void awaitSent(long timeout, TimeUnit unit) {
        long target = ring.getCursor();
        long deadline = System.nanoTime() + unit.toNanos(timeout);
        while (processor.getSequence().get() < target) {
            check();
            if (System.nanoTime() > deadline) throw new IllegalStateException("the sender did not drain the ring within " + timeout + " " + unit);
            LockSupport.parkNanos(50_000);
        }
        check();
    }

    /** RAM and zero pages written; read after {@link #awaitSent} (its barrier makes them visible). */
    public long ramPages() {
        return ramPagesSent;
    }

    public long zeroPages() {
        return zeroPagesSent;
    }

    private volatile long ramPagesSent, zeroPagesSent;

    public long framesWritten() {
        return framesWritten;
    }

    public long deviceBytes() {
        return deviceBytes;
    }

    public long deviceChunks() {
        return deviceChunks;
    }

    @Override
    public void close() {
        processor.halt();
        try {
            sender.join(TimeUnit.SECONDS.toMillis(10));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** The one thread that writes to the channel. */
    private final class Sender implements EventHandler<ChunkDescriptor> {
        private final GatheringByteChannel out;
        private final FrameCodec codec = new FrameCodec(Long.MAX_VALUE);
        private final RamSender ram;
        /** ByteBuffer views of device data sections, made once per segment (a few per device). */
        private final IdentityHashMap<MemorySegment, ByteBuffer> deviceViews = new IdentityHashMap<>();

        private final long nanosPerByte100; // 100 x nanoseconds per byte at the cap; 0 = no cap
        private long paceStart, paceBytes;

        Sender(GatheringByteChannel out, MemoryViews views, long maxFramePages, long maxBandwidth) {
            this.out = out;
            this.ram = new RamSender(views, codec, maxFramePages);
            this.nanosPerByte100 = maxBandwidth == 0 ? 0 : Math.max(1, 100_000_000_000L / maxBandwidth);
        }

        /**
         * Holds the send rate under the cap: after {@code bytes} more, waits until the schedule of the cap
         * catches up. A sender that fell more than 100 ms behind (a stall) restarts the schedule rather than
         * bursting to catch up.
         */
        private void pace(long bytes) {
            if (nanosPerByte100 == 0) return;
            long now = System.nanoTime();
            if (paceStart == 0) paceStart = now;
            paceBytes += bytes;
            long due = paceStart + paceBytes * nanosPerByte100 / 100;
            if (now - due > 100_000_000L) {
                paceStart = now;
                paceBytes = 0;
            } else if (due > now) {
                LockSupport.parkNanos(due - now);
            }
        }

        @Override
        public void onEvent(ChunkDescriptor d, long sequence, boolean endOfBatch) throws IOException {
            switch (d.kind) {
                case RAM -> {
                    if (failure == null) {
                        long before = ram.frames();
                        long pagesBefore = ram.ramPages();
                        ram.sendRun(out, d.region, d.firstPage, d.pages);
                        framesWritten += ram.frames() - before;
                        ramPagesSent = ram.ramPages();
                        zeroPagesSent = ram.zeroPages();
                        pace((ram.ramPages() - pagesBefore) * (RAM_PAGE + 4) + (ram.frames() - before) * FrameCodec.HEADER);
                    }
                    d.region = null;
                }
                case DEVICE -> {
                    DeviceChunk c = d.chunk;
                    d.chunk = null;
                    try {
                        if (failure == null) {
                            ByteBuffer view = deviceViews.computeIfAbsent(c.base(), MemorySegment::asByteBuffer);
                            view.limit((int) (c.offset() + c.length())).position((int) c.offset());
                            codec.write(out, FrameType.DEVICE_CHUNK, c.deviceId(), c.sequence(), view, null);
                            framesWritten++;
                            deviceBytes += c.length();
                            deviceChunks++;
                            pace(c.length() + FrameCodec.HEADER);
                        }
                    } catch (IOException | RuntimeException e) {
                        fail(e); // recorded before the release below
                        throw e;
                    } finally {
                        c.release();
                    }
                }
                case CONTROL -> {
                    if (failure == null) {
                        codec.write(out, d.control, d.a, d.b, d.payload, null);
                        framesWritten++;
                    }
                    d.payload = null;
                }
            }
        }
    }
}
