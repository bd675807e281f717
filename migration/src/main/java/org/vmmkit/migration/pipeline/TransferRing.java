package org.vmmkit.migration.pipeline;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
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
import org.vmmkit.core.migration.SectionChunk;

/**
 * The transfer ring: a Disruptor ring of pre-allocated {@link ChunkDescriptor}s with several producers
 * (the memory scanner, one per device) and one sender thread per channel that writes the descriptors of its
 * channel as frames, straight from guest RAM or the memory a section's chunk is in, without a copy (every
 * sender sees every slot and skips the others' — the ring is gated by all of them). A section's chunk is
 * released right after its frame is written (or at once, if the sender has failed), which lets its producer
 * ask the section for more.
 *
 * <p>Memory ordering: a producer fills a claimed slot and {@code publish}es it (the Disruptor's release
 * store of the sequence); the sender reads the slot after its barrier saw that sequence (acquire). The
 * sender's failure is a volatile field written before any pending chunk is released, so a producer that
 * sees its chunk released and then reads {@link #failure()} sees the failure.
 */
public final class TransferRing implements AutoCloseable {
    private static final long RAM_PAGE = org.vmmkit.core.memory.GuestMemory.PAGE_SIZE;
    /** RAM is spread over the channels in blocks of this many bytes of guest physical address space. */
    public static final long CHANNEL_BLOCK = 1L << 20;
    static final int ALL_CHANNELS = -1;

    private final RingBuffer<ChunkDescriptor> ring;
    private final List<BatchEventProcessor<ChunkDescriptor>> processors = new ArrayList<>();
    private final List<Sender> senders = new ArrayList<>();
    private final List<java.util.concurrent.Future<?>> threads = new ArrayList<>(); // each sender's run on a MigrationThreads thread
    private final int channels;
    private volatile Throwable failure;

    /**
     * A ring writing to {@code channels}: RAM spread over all of them by guest address (a block of
     * {@link #CHANNEL_BLOCK} always on the same channel, so a page's copies arrive in order), device chunks
     * and control frames in order on the first; one sender thread per channel, each paced at its share of
     * {@code maxBandwidth} (bytes per second, 0 = unlimited).
     */
    public TransferRing(int size, List<? extends GatheringByteChannel> channels, MemoryViews views, long maxFramePages, WaitStrategy wait,
                        long maxBandwidth) {
        this(size, channels, views, maxFramePages, wait, maxBandwidth, true);
    }

    /** As above; {@code ramChecksums} false sends RAM frames without their per-page CRC table. */
    public TransferRing(int size, List<? extends GatheringByteChannel> channels, MemoryViews views, long maxFramePages, WaitStrategy wait,
                        long maxBandwidth, boolean ramChecksums) {
        if (channels.isEmpty()) throw new IllegalArgumentException("a transfer ring needs a channel");
        this.channels = channels.size();
        this.ring = RingBuffer.createMultiProducer(ChunkDescriptor::new, size, wait);
        ExceptionHandler<ChunkDescriptor> onFailure = new ExceptionHandler<>() {
            public void handleEventException(Throwable ex, long sequence, ChunkDescriptor event) {
                fail(ex);
            }

            public void handleOnStartException(Throwable ex) {
                fail(ex);
            }

            public void handleOnShutdownException(Throwable ex) {
                fail(ex);
            }
        };
        for (int i = 0; i < channels.size(); i++) {
            // MemoryViews are stateful: one per sender thread.
            MemoryViews own = i == 0 ? views : new MemoryViews(views.memory());
            Sender handler = new Sender(i, channels.get(i), own, maxFramePages, maxBandwidth / channels.size(), ramChecksums);
            BatchEventProcessor<ChunkDescriptor> processor = new BatchEventProcessorBuilder().build(ring, ring.newBarrier(), handler);
            processor.setExceptionHandler(onFailure);
            ring.addGatingSequences(processor.getSequence());
            senders.add(handler);
            processors.add(processor);
        }
        for (int i = 0; i < processors.size(); i++) {
            threads.add(MigrationThreads.start("migration-sender-" + i, processors.get(i)));
        }
    }

    /**
     * A new bandwidth cap over all channels (bytes per second, 0 = unlimited), from any thread: each sender
     * takes its share from the next frame it writes, its pacing schedule restarted at the new rate.
     */
    public void maxBandwidth(long bytesPerSecond) {
        if (bytesPerSecond < 0) throw new IllegalArgumentException("max bandwidth " + bytesPerSecond + " is negative");
        for (Sender s : senders) s.nanosPerByte100 = Sender.rate(bytesPerSecond / channels);
    }

    /** One channel, a blocking wait strategy (on 2 cores a spinning sender would take the producers' core), no cap. */
    public TransferRing(int size, GatheringByteChannel out, MemoryViews views, long maxFramePages) {
        this(size, List.of(out), views, maxFramePages, new BlockingWaitStrategy(), 0);
    }

    /** Blocking wait strategy; a bandwidth cap in bytes per second over all channels (0 = unlimited). */
    public TransferRing(int size, List<? extends GatheringByteChannel> channels, MemoryViews views, long maxFramePages, long maxBandwidth) {
        this(size, channels, views, maxFramePages, new BlockingWaitStrategy(), maxBandwidth);
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

    /** The channel that carries the page at {@code guestAddress}. */
    public int channelOf(long guestAddress) {
        return channels == 1 ? 0 : (int) ((guestAddress / CHANNEL_BLOCK) % channels);
    }

    /** Queues pages {@code [firstPage, firstPage + pages)} of a region, cut where the channel changes. */
    public void publishRam(GuestRegion region, long firstPage, long pages) {
        check();
        long page = firstPage, end = firstPage + pages;
        while (page < end) {
            long gpa = region.guestAddress() + page * RAM_PAGE;
            long stop = channels == 1 ? end : Math.min(end, page + (CHANNEL_BLOCK - gpa % CHANNEL_BLOCK) / RAM_PAGE);
            long seq = ring.next();
            try {
                ring.get(seq).ram(region, page, stop - page, channelOf(gpa));
            } finally {
                ring.publish(seq);
            }
            page = stop;
        }
    }

    /** Queues a chunk of section {@code section} (its index in the stream header) on the first channel; its sender releases it after writing it. */
    public void publishSection(int section, SectionChunk chunk) {
        if (failure != null) {
            chunk.release();
            check();
        }
        long seq = ring.next();
        try {
            ring.get(seq).section(section, chunk);
        } finally {
            ring.publish(seq);
        }
    }

    /** Queues a frame without payload (END_OF_ROUND, ...) on the first channel. */
    public void publishControl(FrameType type, long a, long b) {
        publishControl(type, a, b, null);
    }

    /** Queues a frame with a small payload the caller hands over (vCPU state; may be null) on the first channel. */
    public void publishControl(FrameType type, long a, long b, ByteBuffer payload) {
        publish(type, a, b, payload, 0);
    }

    /**
     * Queues COMPLETE on every channel, each with {@code a} = the frames that channel carried before it (after
     * its opening), which the destination checks against the frames it read; the
     * first channel's goes last in its order, so the destination can wait for the others when it reads it.
     */
    public void publishComplete() {
        publish(FrameType.COMPLETE, 0, 0, null, ALL_CHANNELS);
    }

    private void publish(FrameType type, long a, long b, ByteBuffer payload, int channel) {
        check();
        long seq = ring.next();
        try {
            ring.get(seq).control(type, a, b, payload, channel);
        } finally {
            ring.publish(seq);
        }
    }

    /** Waits until everything published so far is written on every channel (or a sender failed, which is thrown). */
    public void awaitSent(long timeout, TimeUnit unit) {
        long target = ring.getCursor();
        long deadline = System.nanoTime() + unit.toNanos(timeout);
        for (BatchEventProcessor<ChunkDescriptor> p : processors) {
            while (p.getSequence().get() < target) {
                check();
                if (System.nanoTime() > deadline) throw new IllegalStateException("the sender did not drain the ring within " + timeout + " " + unit);
                LockSupport.parkNanos(50_000);
            }
        }
        check();
    }

    public int channels() {
        return channels;
    }

    /** RAM pages written so far, on every channel (readable from any thread, as are the counters below). */
    public long ramPages() {
        long n = 0;
        for (Sender s : senders) n += s.ramPages;
        return n;
    }

    public long zeroPages() {
        long n = 0;
        for (Sender s : senders) n += s.zeroPages;
        return n;
    }

    public long framesWritten() {
        long n = 0;
        for (Sender s : senders) n += s.frames;
        return n;
    }

    /** Bytes written to the channels so far: frame headers, RAM pages with their CRCs, device chunks, control payloads. */
    public long bytesWritten() {
        long n = 0;
        for (Sender s : senders) n += s.bytes;
        return n;
    }

    /** Bytes of section state written so far, over all sections. */
    public long sectionBytes() {
        return senders.get(0).sectionBytes;
    }

    public long sectionChunks() {
        return senders.get(0).sectionChunks;
    }

    /** Bytes of section {@code index}'s state written so far in this ring's migration. */
    public long sectionBytes(int index) {
        return senders.get(0).perSection.get(2 * index);
    }

    /** Chunks of section {@code index} written so far. */
    public long sectionChunks(int index) {
        return senders.get(0).perSection.get(2 * index + 1);
    }

    @Override
    public void close() {
        for (BatchEventProcessor<ChunkDescriptor> p : processors) p.halt();
        for (java.util.concurrent.Future<?> t : threads) {
            try {
                t.get(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                // as with a join: a sender's failure is already recorded (failure()), and one still running after 10 s is left
            }
        }
    }

    /** The one thread that writes to one channel; it skips the descriptors of the other channels. */
    private final class Sender implements EventHandler<ChunkDescriptor> {
        private final int index;
        private final GatheringByteChannel out;
        private final FrameCodec codec = new FrameCodec(Long.MAX_VALUE);
        private final RamSender ram;
        /** ByteBuffer views of the segments sections' chunks are in, made once per segment (a few per section). */
        private final IdentityHashMap<MemorySegment, ByteBuffer> sectionViews = new IdentityHashMap<>();
        /** Bytes and chunks per section index (2 × index, 2 × index + 1), written by this sender, read by stats. */
        final java.util.concurrent.atomic.AtomicLongArray perSection = new java.util.concurrent.atomic.AtomicLongArray(2 * org.vmmkit.migration.wire.StreamHeader.MAX_SECTIONS);
        /** 100 x nanoseconds per byte at the cap; 0 = no cap. Written by {@link #maxBandwidth} from any thread. */
        volatile long nanosPerByte100;
        private long pacedRate, paceStart, paceBytes; // this sender's own: the rate its schedule was started at

        // Written by this sender only; volatile so that stats can be read live from any thread.
        volatile long ramPages, zeroPages, frames, bytes, sectionBytes, sectionChunks;

        private final long pageBytes;

        Sender(int index, GatheringByteChannel out, MemoryViews views, long maxFramePages, long maxBandwidth, boolean ramChecksums) {
            this.index = index;
            this.out = out;
            this.ram = new RamSender(views, codec, maxFramePages, ramChecksums);
            this.pageBytes = RAM_PAGE + (ramChecksums ? 4 : 0);
            this.nanosPerByte100 = rate(maxBandwidth);
            this.pacedRate = nanosPerByte100;
        }

        static long rate(long bytesPerSecond) {
            return bytesPerSecond <= 0 ? 0 : Math.max(1, 100_000_000_000L / bytesPerSecond);
        }

        /**
         * Holds the send rate under the cap: after {@code bytes} more, waits until the schedule of the cap
         * catches up. A sender that fell more than 100 ms behind (a stall) restarts the schedule rather than
         * bursting to catch up.
         */
        private void pace(long bytes) {
            long rate = nanosPerByte100;
            if (rate != pacedRate) { // the cap changed: a schedule at the new rate from now
                pacedRate = rate;
                paceStart = 0;
                paceBytes = 0;
            }
            if (rate == 0) return;
            long now = System.nanoTime();
            if (paceStart == 0) paceStart = now;
            paceBytes += bytes;
            long due = paceStart + paceBytes * rate / 100;
            if (now - due > 100_000_000L) {
                paceStart = now;
                paceBytes = 0;
            } else if (due > now) {
                LockSupport.parkNanos(due - now);
            }
        }

        @Override
        public void onEvent(ChunkDescriptor d, long sequence, boolean endOfBatch) throws IOException {
            if (d.channel != index && d.channel != ALL_CHANNELS) return;
            switch (d.kind) {
                case RAM -> {
                    if (failure == null) {
                        long framesBefore = ram.frames(), pagesBefore = ram.ramPages();
                        ram.sendRun(out, d.region, d.firstPage, d.pages);
                        long sent = (ram.ramPages() - pagesBefore) * pageBytes + (ram.frames() - framesBefore) * FrameCodec.HEADER;
                        frames += ram.frames() - framesBefore;
                        ramPages = ram.ramPages();
                        zeroPages = ram.zeroPages();
                        bytes += sent;
                        pace(sent);
                    }
                    d.region = null;
                }
                case SECTION -> {
                    SectionChunk c = d.chunk;
                    d.chunk = null;
                    try {
                        if (failure == null) {
                            ByteBuffer view = sectionViews.computeIfAbsent(c.base(), MemorySegment::asByteBuffer);
                            view.limit((int) (c.offset() + c.length())).position((int) c.offset());
                            codec.write(out, FrameType.SECTION_CHUNK, d.section, c.sequence(), view, null);
                            frames++;
                            sectionBytes += c.length();
                            sectionChunks++;
                            perSection.setRelease(2 * d.section, perSection.getPlain(2 * d.section) + c.length());
                            perSection.setRelease(2 * d.section + 1, perSection.getPlain(2 * d.section + 1) + 1);
                            bytes += c.length() + FrameCodec.HEADER;
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
                        long length = d.payload == null ? 0 : d.payload.remaining();
                        codec.write(out, d.control, d.control == FrameType.COMPLETE ? codec.framesWritten() : d.a, d.b,
                                d.channel == ALL_CHANNELS ? null : d.payload, null);
                        frames++;
                        bytes += length + FrameCodec.HEADER;
                    }
                    if (d.channel != ALL_CHANNELS) d.payload = null;
                }
            }
        }
    }
}
