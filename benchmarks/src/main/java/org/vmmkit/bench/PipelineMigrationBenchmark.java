package org.vmmkit.bench;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.ram.MemoryViews;

/**
 * Guest RAM through the whole send pipeline over loopback TCP, end to end: 4 GiB of random content
 * published as descriptors on the {@link TransferRing}, written by its sender thread(s) over
 * {@code channels} connections (RAM spread by 1 MiB block, as in a migration) and applied by one
 * {@link RamReceiver} thread per connection; the op returns when every receiver has its COMPLETE. Baseline
 * in the same run: {@code rawBlast}, the same bytes from the same memory written to one socket and read
 * into the same destination memory with no framing, in 1 GiB writes ({@code rawBlast}) and in 1 MiB writes
 * ({@code rawBlast1M}).
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
@Warmup(iterations = 2)
@Measurement(iterations = 5)
public class PipelineMigrationBenchmark {
    private static final long SIZE = 4L << 30;

    @Param({"1", "2"})
    public int channels;

    /** Pages per descriptor and per RAM frame: 256 = 1 MiB (the default of `MigrationSettings`). */
    @Param({"256"})
    public long framePages;

    /** RAM frames with a CRC32C per page (the default) or without (trusting TCP, as QEMU does). */
    @Param({"true", "false"})
    public boolean checksums;

    private GuestMemory source, destination;
    private ServerSocketChannel server;
    private final List<SocketChannel> outs = new ArrayList<>();
    private SocketChannel rawOut;
    private final Semaphore pipelineDone = new Semaphore(0), rawDone = new Semaphore(0);
    private TransferRing ring;
    private MemoryViews sourceViews;
    private volatile Throwable receiverFailure;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        source = LoopbackRam.randomGuest(SIZE);
        destination = GuestMemory.create(List.of(new GuestMemory.Range(0, SIZE)));
        server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        for (int i = 0; i < channels; i++) {
            outs.add(SocketChannel.open(server.getLocalAddress()));
            SocketChannel in = server.accept();
            Thread.ofPlatform().daemon().name("receiver-" + i)
                    .start(() -> LoopbackRam.receiveFramed(in, destination, checksums, pipelineDone, t -> receiverFailure = t));
        }
        rawOut = SocketChannel.open(server.getLocalAddress());
        SocketChannel rawIn = server.accept();
        Thread.ofPlatform().daemon().name("raw-receiver").start(() -> LoopbackRam.receiveRaw(rawIn, destination, SIZE, rawDone,
                t -> receiverFailure = t));
        sourceViews = new MemoryViews(source);
        ring = new TransferRing(1024, outs, new MemoryViews(source), framePages, new com.lmax.disruptor.BlockingWaitStrategy(), 0, checksums);
    }

    @Benchmark
    public long pipeline() throws Exception {
        return LoopbackRam.sendAll(ring, source, framePages, pipelineDone, channels, () -> receiverFailure);
    }

    /** The baseline: 1 GiB writes. */
    @Benchmark
    public long rawBlast() throws Exception {
        return blast(MemoryViews.VIEW_BYTES);
    }

    /** The baseline in 1 MiB writes, the size of the pipeline's frames. */
    @Benchmark
    public long rawBlast1M() throws Exception {
        return blast(1L << 20);
    }

    private long blast(long writeSize) throws Exception {
        LoopbackRam.blast(rawOut, sourceViews, source, SIZE, writeSize);
        rawDone.acquire();
        if (receiverFailure != null) throw new IllegalStateException(receiverFailure);
        return SIZE;
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        ring.close();
        for (SocketChannel c : outs) c.close();
        rawOut.close();
        server.close();
    }
}
