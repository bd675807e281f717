package org.vmmkit.bench;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
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
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.RamSender;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;

/**
 * Guest RAM over loopback TCP, end to end (the op returns when the receiver has everything): 4 GiB of
 * random content sent as wire-format frames by {@link RamSender} and applied by {@link RamReceiver}
 * (CRC32C both ways, every range checked), versus the baseline {@code rawBlast}: the same bytes from the
 * same memory written to a socket and read into the same destination memory with no framing at all.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
@Warmup(iterations = 2)
@Measurement(iterations = 5)
public class MemoryMigrationBenchmark {
    private static final long SIZE = 4L << 30, PAGE = 4096;

    /** Pages per RAM frame: 256 = 1 MiB. */
    @org.openjdk.jmh.annotations.Param({"256", "1024", "4096"})
    public long framePages;

    private GuestMemory source, destination;
    private ServerSocketChannel server;
    private SocketChannel framedOut, rawOut;
    private final Semaphore framedDone = new Semaphore(0), rawDone = new Semaphore(0);
    private Thread framedReceiver, rawReceiver;
    private RamSender sender;
    private FrameCodec codec;
    private DirtyBitmap all;
    private MemoryViews sourceViews;
    private volatile Throwable receiverFailure;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        source = LoopbackRam.randomGuest(SIZE);
        destination = GuestMemory.create(List.of(new GuestMemory.Range(0, SIZE)));
        server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        framedOut = SocketChannel.open(server.getLocalAddress());
        SocketChannel framedIn = server.accept();
        rawOut = SocketChannel.open(server.getLocalAddress());
        SocketChannel rawIn = server.accept();
        framedReceiver = Thread.ofPlatform().daemon().name("framed-receiver")
                .start(() -> LoopbackRam.receiveFramed(framedIn, destination, true, framedDone, t -> receiverFailure = t));
        rawReceiver = Thread.ofPlatform().daemon().name("raw-receiver")
                .start(() -> LoopbackRam.receiveRaw(rawIn, destination, SIZE, rawDone, t -> receiverFailure = t));
        sourceViews = new MemoryViews(source);
        codec = new FrameCodec(64L << 20);
        sender = new RamSender(sourceViews, codec, framePages);
        all = new DirtyBitmap(SIZE / PAGE);
        all.setAll();
    }

    @Benchmark
    public long framed() throws Exception {
        sender.send(framedOut, source.regions().get(0), all);
        codec.write(framedOut, FrameType.COMPLETE, sender.frames(), 0, null, null);
        framedDone.acquire();
        if (receiverFailure != null) throw new IllegalStateException(receiverFailure);
        return sender.ramPages();
    }

    @Benchmark
    public long rawBlast() throws Exception {
        LoopbackRam.blast(rawOut, sourceViews, source, SIZE, MemoryViews.VIEW_BYTES);
        rawDone.acquire();
        if (receiverFailure != null) throw new IllegalStateException(receiverFailure);
        return SIZE;
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        framedOut.close();
        rawOut.close();
        server.close();
        all.close();
    }
}
