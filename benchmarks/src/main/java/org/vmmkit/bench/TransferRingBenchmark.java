package org.vmmkit.bench;

import java.nio.ByteBuffer;
import java.nio.channels.GatheringByteChannel;
import java.util.List;
import java.util.concurrent.TimeUnit;

import com.lmax.disruptor.BlockingWaitStrategy;
import com.lmax.disruptor.WaitStrategy;
import com.lmax.disruptor.YieldingWaitStrategy;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Threads;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.wire.FrameType;

/**
 * The transfer ring alone: three producer threads publish descriptors (payload-less control frames, so
 * nothing but the ring and the 40-byte frame header is measured) to the one sender, which writes them to a
 * channel that discards the bytes. Throughput = descriptors per second through the ring, bounded by the
 * sender (a full ring holds the producers back); {@code -prof gc} shows the bytes allocated per descriptor.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.Throughput)
@OutputTimeUnit(TimeUnit.SECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 2)
@Measurement(iterations = 5, time = 2)
@Threads(3)
public class TransferRingBenchmark {
    @Param({"blocking", "yielding"})
    public String wait;

    private GuestMemory memory;
    private TransferRing ring;

    /** Counts and drops what is written: the sink of the ring benchmark. */
    static final class Discard implements GatheringByteChannel {
        long bytes;

        @Override
        public long write(ByteBuffer[] srcs, int offset, int length) {
            long n = 0;
            for (int i = offset; i < offset + length; i++) {
                n += srcs[i].remaining();
                srcs[i].position(srcs[i].limit());
            }
            bytes += n;
            return n;
        }

        @Override
        public long write(ByteBuffer[] srcs) {
            return write(srcs, 0, srcs.length);
        }

        @Override
        public int write(ByteBuffer src) {
            int n = src.remaining();
            src.position(src.limit());
            bytes += n;
            return n;
        }

        @Override
        public boolean isOpen() {
            return true;
        }

        @Override
        public void close() {}
    }

    @Setup
    public void setUp() {
        memory = GuestMemory.create(GuestMemory.standardLayout(16L << 20));
        WaitStrategy strategy = wait.equals("blocking") ? new BlockingWaitStrategy() : new YieldingWaitStrategy();
        ring = new TransferRing(1024, List.of(new Discard()), new MemoryViews(memory), 256, strategy, 0);
    }

    @Benchmark
    public void publish() {
        ring.publishControl(FrameType.END_OF_ROUND, 1, 0);
    }

    @TearDown
    public void tearDown() {
        ring.awaitSent(10, TimeUnit.SECONDS);
        ring.close();
        memory.close();
    }
}
