package org.vmmkit.bench;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
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
import org.vmmkit.migration.testing.TestCertificates;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.TlsTransport;
import org.vmmkit.migration.transport.Transport;

/**
 * What TLS costs the RAM pipeline: 1 GiB of random guest RAM through the {@link TransferRing} over loopback,
 * the connections plain TCP or TLS 1.3 with mutual authentication (an EC P-256 certificate on each end;
 * the JDK's default cipher suite, AES-GCM), checksums on or off, and applied by a receiver thread per
 * connection. Compare {@code transport=tls} with {@code transport=plain} of the same channels and checksums.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
@Warmup(iterations = 2)
@Measurement(iterations = 5)
public class TlsPipelineBenchmark {
    private static final long SIZE = 1L << 30, FRAME_PAGES = 256;

    @Param({"plain", "tls"})
    public String transport;

    @Param({"1", "2"})
    public int channels;

    @Param({"true", "false"})
    public boolean checksums;

    private GuestMemory source, destination;
    private ServerSocketChannel server;
    private final List<Connection> outs = new ArrayList<>();
    private final Semaphore done = new Semaphore(0);
    private TransferRing ring;
    private volatile Throwable receiverFailure;
    private Path keys;

    @Setup(Level.Trial)
    public void setUp() throws Exception {
        Transport client = Transport.PLAIN, serverSide = Transport.PLAIN;
        if (transport.equals("tls")) {
            keys = Files.createTempDirectory("vmmkit-tls-bench");
            TestCertificates certs = new TestCertificates(keys);
            Path ca = certs.ca("ca");
            certs.peer("src", "ca");
            certs.peer("dst", "ca");
            client = TlsTransport.load(certs.keystoreSettings("src", ca, "dst"));
            serverSide = TlsTransport.load(certs.keystoreSettings("dst", ca, "src"));
        }
        source = LoopbackRam.randomGuest(SIZE);
        destination = GuestMemory.create(List.of(new GuestMemory.Range(0, SIZE)));
        server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        for (int i = 0; i < channels; i++) {
            SocketChannel out = SocketChannel.open(server.getLocalAddress());
            SocketChannel in = server.accept();
            Transport s = serverSide, c = client;
            CompletableFuture<Connection> accepted = CompletableFuture.supplyAsync(() -> {
                try {
                    return s.server(in);
                } catch (IOException e) {
                    throw new IllegalStateException(e);
                }
            });
            outs.add(c.client(out));
            Connection receiving = accepted.get(30, TimeUnit.SECONDS);
            Thread.ofPlatform().daemon().name("receiver-" + i)
                    .start(() -> LoopbackRam.receiveFramed(receiving, destination, checksums, done, t -> receiverFailure = t));
        }
        ring = new TransferRing(1024, outs, new MemoryViews(source), FRAME_PAGES, new com.lmax.disruptor.BlockingWaitStrategy(), 0, checksums);
    }

    @Benchmark
    public long pipeline() throws Exception {
        return LoopbackRam.sendAll(ring, source, FRAME_PAGES, done, channels, () -> receiverFailure);
    }

    @TearDown(Level.Trial)
    public void tearDown() throws IOException {
        ring.close();
        for (Connection c : outs) c.close();
        server.close();
        source.close();
        destination.close();
    }
}
