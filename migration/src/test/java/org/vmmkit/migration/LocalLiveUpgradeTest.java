package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.Nonce;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The local live upgrade in one JVM: a source migrating over a Unix socket to a destination that takes its
 * memfds maps the same memory (no page sent); a destination that refuses after taking and mapping them gives
 * them back untouched; a source that sends RAM after handing its memory over is refused on any channel; over
 * TCP nothing is offered.
 */
@Timeout(60)
class LocalLiveUpgradeTest {
    private static final long SIZE = 8L << 20;
    @TempDir Path dir;

    /** Runs {@code incoming} on {@code server} on its own thread and migrates {@code source} to {@code at}. */
    private static MigrationStats migrate(FakeGuest source, MigrationDestination incoming, ServerSocketChannel server, java.net.SocketAddress at,
                                          AtomicReference<Throwable> destinationFailure) throws Exception {
        Thread destination = Thread.ofPlatform().name("destination").start(() -> {
            try {
                incoming.receive(server, Duration.ofSeconds(30));
            } catch (Throwable t) {
                destinationFailure.set(t);
            }
        });
        try {
            return new MigrationSource(source, List.of(), List.of(), MigrationSettings.DEFAULT).migrate(at);
        } finally {
            destination.join(30_000);
        }
    }

    /** The guest's memory read through its file (pread), which, unlike a read through the mapping, allocates no hole. */
    private static byte[] contents(FakeGuest guest) {
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            java.lang.foreign.MemorySegment buffer = arena.allocate(SIZE);
            guest.memory().regions().get(0).backing().preadFully(buffer, 0);
            return buffer.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
        }
    }

    private ServerSocketChannel unixServer() throws Exception {
        return ServerSocketChannel.open(StandardProtocolFamily.UNIX).bind(UnixDomainSocketAddress.of(dir.resolve("incoming.sock")));
    }

    @Test
    void overAUnixSocketTheDestinationMapsTheSourcesMemfdsAndNoPageIsSent() throws Exception {
        try (FakeGuest source = FakeGuest.source(SIZE, 7); FakeGuest destination = FakeGuest.destination(SIZE); ServerSocketChannel server = unixServer()) {
            long sourceResident = source.memory().residentBytes();
            byte[] before = contents(source);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            MigrationStats stats = migrate(source, new MigrationDestination(destination, List.of(), null).withMemfdPassing(true), server,
                    server.getLocalAddress(), failure);
            assertNull(failure.get());
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            assertTrue(stats.memfdsPassed(), stats.toString());
            assertEquals(0, stats.ramPages(), "no RAM page sent");
            assertEquals(0, stats.zeroPages(), "no zero run either");
            assertTrue(stats.transferredBytes() < 4096, "only control frames and the vCPU state: " + stats.transferredBytes());
            assertTrue(destination.running() && destination.memory().adoptedBackings());
            assertArrayEquals(before, contents(source));
            assertEquals(sourceResident, source.memory().residentBytes(), "the destination populated nothing");
            assertArrayEquals(before, destination.memory().read(0, (int) SIZE), "the destination sees the source's memory");
            destination.memory().writeLong(4096, 0x1234);
            assertEquals(0x1234, source.memory().readLong(4096), "the very same pages");
        }
    }

    @Test
    void aDestinationThatRefusesAfterMappingTheMemfdsLeavesTheSourceMemoryUntouchedAndRunning() throws Exception {
        try (FakeGuest source = FakeGuest.source(SIZE, 8); FakeGuest destination = FakeGuest.destination(SIZE); ServerSocketChannel server = unixServer()) {
            long sourceResident = source.memory().residentBytes();
            byte[] before = contents(source);
            AtomicReference<Long> seen = new AtomicReference<>();
            MigrationDestination incoming = new MigrationDestination(destination, List.of(), () -> {
                seen.set(destination.memory().readLong(0)); // the source's memory is mapped by now
                throw new IllegalStateException("refused by the test before COMMIT");
            }).withMemfdPassing(true);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            MigrationException e = assertThrows(MigrationException.class, () -> migrate(source, incoming, server, server.getLocalAddress(), failure));
            assertTrue(e.getMessage().contains("refused by the test") && e.getMessage().contains("rolled back"), e.getMessage());
            assertEquals(source.memory().readLong(0), seen.get(), "the destination had mapped the source's memory");
            assertTrue(source.running(), "the source runs on");
            assertFalse(destination.running());
            assertFalse(destination.memory().adoptedBackings(), "the destination maps its own memory again");
            assertEquals(0, destination.memory().readLong(0));
            assertArrayEquals(before, contents(source), "the source's memory is as it was");
            assertEquals(sourceResident, source.memory().residentBytes(), "and no hole of it was populated");
        }
    }

    /**
     * A lying source of two channels: it offers its memfds, hands them over, and then sends guest RAM anyway, on
     * its first channel or its second. Applied, the frame would fill the destination's own memory (a second copy
     * of the guest, for nothing): it is refused before any of its payload is read, naming the channel and the
     * frame; the destination's own memory stays unwritten and the source's memory is given back untouched.
     */
    @ParameterizedTest
    @CsvSource({"0, RAM", "0, ZERO_RUN", "1, RAM", "1, ZERO_RUN"})
    void everyChannelRefusesRamFramesInAStreamWhoseMemoryWasHandedOver(int channel, FrameType type) throws Exception {
        String named = channel == 0 ? "the first channel" : "channel " + channel;
        try (FakeGuest source = FakeGuest.source(SIZE, 12); FakeGuest destination = FakeGuest.destination(SIZE); ServerSocketChannel server = unixServer()) {
            long sourceResident = source.memory().residentBytes();
            byte[] before = contents(source);
            MigrationDestination incoming = new MigrationDestination(destination, List.of(), null).withMemfdPassing(true);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread receiver = Thread.ofPlatform().name("destination").start(() -> {
                try {
                    incoming.receive(server, Duration.ofSeconds(30));
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            String refusal;
            try (Connection first = Connection.plain(SocketChannel.open(server.getLocalAddress()));
                 Connection second = Connection.plain(SocketChannel.open(server.getLocalAddress()))) {
                ReturnPath back = new ReturnPath(first);
                Nonce nonce = back.hello();
                long streamId = 0x10ca1L;
                ByteBuffer header = MigrationSource.headerOf(source.memory(),
                                List.of(new SectionInfo("vcpu/0", source.vcpuStateKind(), source.vcpuStateVersion())), source.vcpuCount())
                        .withChannels(2, streamId).withRamChecksums(false).withNonce(nonce).withMemfdOffer(true).encode();
                while (header.hasRemaining()) first.write(header);
                new FrameCodec(0).write(second, FrameType.CHANNEL, streamId, 1, null, null);
                ByteBuffer ready = back.expect(FrameType.READY, "setup");
                assertEquals(1, back.lastA(), "the destination takes the memfds");
                MemfdHandoff.send(StandardCharsets.UTF_8.decode(ready).toString(), nonce, source.memory(), Duration.ofSeconds(30));
                Connection on = channel == 0 ? first : second;
                FrameCodec frames = new FrameCodec(0); // from 0 after the header, or after a further channel's CHANNEL frame
                if (type == FrameType.RAM) {
                    ByteBuffer page = ByteBuffer.allocate(4096);
                    while (page.hasRemaining()) page.put((byte) 0x5a);
                    frames.writeWithTable(on, FrameType.RAM, 0x3000, 1, page.flip(), ByteBuffer.allocate(0)); // a well-formed page: no checksums
                } else {
                    frames.write(on, FrameType.ZERO_RUN, 0, 4, null, null);
                }
                on.socket().shutdownOutput(); // without the refusal the channel reads its end instead: another reason
                ReturnPath.RefusedByDestination refused = assertThrows(ReturnPath.RefusedByDestination.class,
                        () -> back.expect(FrameType.PREPARED, "the stream"));
                refusal = refused.getMessage();
            }
            receiver.join();
            assertEquals(0, Libc.allocatedBytes(destination.memory().regions().get(0).backing()), "nothing was written into the destination's own memory");
            assertTrue(refusal.contains("frame 0 (" + type) && refusal.contains("on " + named + " in a stream whose guest memory was handed over as memfds"), refusal);
            MigrationException e = assertInstanceOf(MigrationException.class, failure.get());
            assertTrue(e.getMessage().contains("frame 0 (" + type) && e.getMessage().contains("on " + named), e.getMessage());
            assertFalse(destination.running());
            assertFalse(destination.memory().adoptedBackings(), "the memfds were given back");
            assertArrayEquals(before, contents(source), "the source's memory is as it was");
            assertEquals(sourceResident, source.memory().residentBytes(), "and no hole of it was populated");
        }
    }

    @Test
    void overTcpNoMemfdIsOfferedAndRamIsCopied() throws Exception {
        try (FakeGuest source = FakeGuest.source(SIZE, 9); FakeGuest destination = FakeGuest.destination(SIZE);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            AtomicReference<Throwable> failure = new AtomicReference<>();
            MigrationStats stats = migrate(source, new MigrationDestination(destination, List.of(), null).withMemfdPassing(true), server,
                    server.getLocalAddress(), failure);
            assertNull(failure.get());
            assertFalse(stats.memfdsPassed());
            assertTrue(stats.ramPages() > 0);
            assertFalse(destination.memory().adoptedBackings());
            assertTrue(destination.equalsSource(source));
        }
    }

    @Test
    void aDestinationThatDoesNotTakeMemfdsGetsTheRamCopiedOverTheUnixSocket() throws Exception {
        try (FakeGuest source = FakeGuest.source(SIZE, 10); FakeGuest destination = FakeGuest.destination(SIZE); ServerSocketChannel server = unixServer()) {
            AtomicReference<Throwable> failure = new AtomicReference<>();
            MigrationStats stats = migrate(source, new MigrationDestination(destination, List.of(), null), server, server.getLocalAddress(), failure);
            assertNull(failure.get());
            assertFalse(stats.memfdsPassed());
            assertTrue(stats.ramPages() > 0);
            assertTrue(destination.equalsSource(source));
            assertTrue(Libc.allocatedBytes(destination.memory().regions().get(0).backing()) > 0);
        }
    }

    @Test
    void aUnixPathNobodyListensOnIsNamedWithTheErrno() throws Exception {
        Path nobody = dir.resolve("nobody.sock");
        try (FakeGuest source = FakeGuest.source(SIZE, 11)) {
            MigrationException e = assertThrows(MigrationException.class, () -> new MigrationSource(source, List.of(), List.of(), MigrationSettings.DEFAULT)
                    .migrate(UnixDomainSocketAddress.of(nobody)));
            assertTrue(e.getMessage().contains("connect(unix:" + nobody + ") failed: ENOENT (No such file or directory)"), e.getMessage());
            assertTrue(source.running());
        }
    }
}
