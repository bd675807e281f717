package org.vmmkit.migration;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.testing.FrameProxy;
import org.vmmkit.migration.testing.FrameProxy.Action;
import org.vmmkit.migration.testing.FrameProxy.Direction;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.StreamHeader;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The handover and the stream's integrity against an outside judge, a frame-aware proxy between the two
 * ends: whatever it drops, repeats or cuts, exactly one copy of the VM runs afterwards, and the destination
 * never starts from a stream it cannot prove whole. No KVM: {@link FakeGuest}s on both ends.
 */
@Timeout(120)
class HandoverTest {
    static final long SIZE = 8 << 20;

    /** A destination that, like the vmm process, takes attempt after attempt until one runs, then answers outcome queries. */
    static final class Destination implements AutoCloseable {
        final FakeGuest guest;
        final MigrationDestination destination;
        final ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        final List<String> failures = new CopyOnWriteArrayList<>();
        final CompletableFuture<Void> started = new CompletableFuture<>();
        final java.util.concurrent.Semaphore attemptsEnded = new java.util.concurrent.Semaphore(0);

        Destination(java.util.function.UnaryOperator<MigrationDestination> configure) throws IOException {
            this(List.of(), configure);
        }

        /** With the VM's sections: their loaders. */
        Destination(List<? extends org.vmmkit.core.migration.SectionLoader> loaders, java.util.function.UnaryOperator<MigrationDestination> configure)
                throws IOException {
            this(FakeGuest.destination(SIZE), loaders, configure);
        }

        /** With its own guest and the VM's sections. */
        Destination(FakeGuest guest, List<? extends org.vmmkit.core.migration.SectionLoader> loaders,
                    java.util.function.UnaryOperator<MigrationDestination> configure) throws IOException {
            this.guest = guest;
            destination = configure.apply(new MigrationDestination(guest, loaders, null));
            Thread.ofPlatform().name("test-destination").daemon().start(() -> {
                while (server.isOpen()) {
                    try {
                        destination.receive(server, Duration.ofSeconds(60));
                        started.complete(null);
                        attemptsEnded.release();
                        destination.serveOutcomeQueries(server);
                        return;
                    } catch (MigrationException e) {
                        failures.add(e.getMessage());
                        attemptsEnded.release();
                    }
                }
            });
        }

        Destination() throws IOException {
            this(d -> d);
        }

        InetSocketAddress address() throws IOException {
            return (InetSocketAddress) server.getLocalAddress();
        }

        @Override
        public void close() throws IOException {
            server.close();
            guest.close();
        }
    }

    private static MigrationSource sourceOf(FakeGuest guest, int channels) {
        return new MigrationSource(guest, List.of(), List.of(), MigrationSettings.DEFAULT.withChannels(channels));
    }

    @Test
    void aMigrationThroughTheProxyCompletesWithIdenticalMemory() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 1); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) -> Action.FORWARD)) {
            MigrationStats stats = sourceOf(src, 2).migrate(proxy.address());
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            assertEquals(SIZE / 4 * 3, stats.destinationResidentBytes(), "every fourth page is zero: a hole at the destination");
            dst.started.get(30, TimeUnit.SECONDS);
            assertTrue(dst.guest.equalsSource(src));
            assertFalse(src.running());
            assertTrue(dst.guest.running());
        }
    }

    @Test
    void aLostAcknowledgementLeavesTheSourcePausedNeverTwoRunningCopies() throws Exception {
        // The ACK swallowed and a partition from then on: the source cannot ask the destination through the proxy.
        try (FakeGuest src = FakeGuest.source(SIZE, 2); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_SOURCE && t == FrameType.ACK_COMPLETE.code() ? Action.PARTITION : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1);
            MigrationException e = assertThrows(MigrationException.class, () -> source.migrate(proxy.address()));
            dst.started.get(30, TimeUnit.SECONDS);
            assertEquals(MigrationStatus.UNKNOWN, source.stats().status(), e.getMessage());
            assertTrue(e.getMessage().contains("handover outcome unknown") && e.getMessage().contains("stays paused"), e.getMessage());
            assertFalse(src.running(), "the source resumed while the destination runs");
            assertEquals(0, src.resumes());
            assertTrue(dst.guest.running() && dst.guest.equalsSource(src));
            assertTrue(source.unresolved());
            // Asked directly, the destination says its VM runs: settled, and the source stays paused.
            MigrationStats settled = source.resolveByAsking(dst.address());
            assertEquals(MigrationStatus.COMPLETED, settled.status());
            assertFalse(src.running());
            assertFalse(source.unresolved());
        }
    }

    @Test
    void aSourceWhoseAcknowledgementIsLostLearnsTheOutcomeByAsking() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 3); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_SOURCE && t == FrameType.ACK_COMPLETE.code() ? Action.CUT : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1);
            MigrationStats stats = source.migrate(proxy.address());
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            assertTrue(source.error().contains("said its VM runs"), source.error());
            assertFalse(src.running());
            assertTrue(dst.guest.running());
        }
    }

    @Test
    void anOperatorWhoFindsTheDestinationDeadResumesTheSource() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 4); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_SOURCE && t == FrameType.ACK_COMPLETE.code() ? Action.PARTITION : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1);
            assertThrows(MigrationException.class, () -> source.migrate(proxy.address()));
            assertFalse(src.running());
            MigrationStats settled = source.resolve(false, "the operator found the destination host dead");
            assertEquals(MigrationStatus.FAILED, settled.status());
            assertTrue(src.running(), "resumed on the operator's word");
            assertThrows(IllegalStateException.class, () -> source.resolve(true, "twice"));
        }
    }

    @Test
    void aCutBeforeCommitRollsTheSourceBackAndTheDestinationNeverStarts() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 5); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_SOURCE && t == FrameType.PREPARED.code() ? Action.CUT : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1);
            MigrationException e = assertThrows(MigrationException.class, () -> source.migrate(proxy.address()));
            assertEquals(MigrationStatus.FAILED, source.stats().status());
            assertTrue(e.getMessage().contains("rolled back") && e.getMessage().contains("vCPUs resumed"), e.getMessage());
            assertTrue(src.running());
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS), "the destination gave the attempt up");
            assertFalse(dst.guest.running());
            assertEquals(0, dst.guest.starts());
            // The destination takes the next genuine attempt.
            assertEquals(MigrationStatus.COMPLETED, sourceOf(src, 1).migrate(dst.address()).status());
            assertTrue(dst.guest.running() && dst.guest.equalsSource(src));
        }
    }

    /** A destination that stops answering after the stream (stopped, hung) must not hold the paused source without limit. */
    @Test
    void aDestinationThatNeverAnswersPreparedIsGivenUpOnAndTheSourceResumes() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 11); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_SOURCE && t == FrameType.PREPARED.code() ? Action.DROP : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1).withPreparedTimeout(Duration.ofMillis(500));
            MigrationException e = assertThrows(MigrationException.class, () -> source.migrate(proxy.address()));
            assertTrue(e.getMessage().contains("did not answer PREPARED within 500 ms") && e.getMessage().contains("vCPUs resumed"), e.getMessage());
            assertEquals(MigrationStatus.FAILED, source.stats().status());
            assertTrue(src.running());
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS), "the destination gave the attempt up");
            assertFalse(dst.guest.running());
            assertEquals(0, dst.guest.starts());
        }
    }

    @Test
    void aPreparedDestinationWithoutCommitGivesTheStreamUpUnstarted() throws Exception {
        try (Destination dst = new Destination(d -> d.withWaits(MigrationDestination.CHANNEL_WAIT, Duration.ofMillis(300)));
             FakeGuest src = FakeGuest.source(SIZE, 6);
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                     d == Direction.TO_DESTINATION && t == FrameType.COMMIT.code() ? Action.DROP : Action.FORWARD)) {
            MigrationSource source = sourceOf(src, 1);
            MigrationException e = assertThrows(MigrationException.class, () -> source.migrate(proxy.address()));
            // The destination gave up (no COMMIT) and said so with ERROR: a decided outcome, so the source resumed.
            assertTrue(e.getMessage().contains("no COMMIT within 300 ms"), e.getMessage());
            assertEquals(MigrationStatus.FAILED, source.stats().status());
            assertTrue(src.running());
            assertFalse(dst.guest.running());
            assertEquals(0, dst.guest.starts());
        }
    }

    @Test
    void aDroppedRepeatedOrMovedFrameIsRefusedAndNothingStarts() throws Exception {
        for (Action action : new Action[] {Action.DROP, Action.REPEAT}) {
            try (FakeGuest src = FakeGuest.source(SIZE, 7); Destination dst = new Destination();
                 FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) ->
                         d == Direction.TO_DESTINATION && c == 0 && i == 3 ? action : Action.FORWARD)) {
                assertThrows(MigrationException.class, () -> sourceOf(src, 1).migrate(proxy.address()));
                assertTrue(src.running());
                assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS));
                String why = dst.failures.getLast();
                assertTrue(why.contains("a frame was dropped, repeated or moved"), action + ": " + why);
                assertEquals(0, dst.guest.starts(), action.toString());
            }
        }
    }

    @Test
    void aRecordedStreamReplayedToAFreshDestinationIsRefusedBeforeAnythingChanges() throws Exception {
        byte[] recording;
        try (FakeGuest src = FakeGuest.source(SIZE, 8); Destination dst = new Destination();
             FrameProxy proxy = new FrameProxy(dst.address(), (c, d, i, t) -> Action.FORWARD)) {
            assertEquals(MigrationStatus.COMPLETED, sourceOf(src, 1).migrate(proxy.address()).status());
            recording = proxy.recordedStream();
        }
        try (Destination fresh = new Destination(); SocketChannel replay = SocketChannel.open(fresh.address())) {
            FrameCodec back = new FrameCodec(1 << 20);
            assertEquals(FrameType.HELLO, back.readHeader(replay));
            // The recorded header (its size at offset 12): the destination answers right after it.
            int headerSize = ByteBuffer.wrap(recording).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt(12);
            ByteBuffer bytes = ByteBuffer.wrap(recording, 0, headerSize);
            while (bytes.hasRemaining()) replay.write(bytes);
            FrameType answer = back.readHeader(replay);
            ByteBuffer reason = ByteBuffer.allocate((int) back.length());
            back.readPayload(replay, reason);
            assertEquals(FrameType.ERROR, answer);
            String why = new String(reason.array());
            assertTrue(why.contains("a replayed or misdirected stream"), why);
            assertTrue(fresh.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS));
            assertEquals(0, fresh.guest.starts());
            assertTrue(fresh.guest.memory().regions().get(0).host().asByteBuffer().equals(ByteBuffer.allocate((int) SIZE)),
                    "nothing was written to the fresh destination's memory");
        }
    }

    @Test
    void aHeaderAnnouncingChannelsThatNeverConnectDoesNotWedgeTheDestination() throws Exception {
        try (Destination dst = new Destination(); FakeGuest src = FakeGuest.source(SIZE, 9)) {
            for (int channels = 2; channels <= StreamHeader.MAX_CHANNELS; channels += 7) {
                try (SocketChannel c = SocketChannel.open(dst.address())) {
                    FrameCodec back = new FrameCodec(1 << 20);
                    assertEquals(FrameType.HELLO, back.readHeader(c));
                    ByteBuffer header = MigrationSource.headerOf(dst.guest.memory(), List.of(new org.vmmkit.core.migration.SectionInfo("vcpu/0", "fake-vcpu", 1)), 1).withChannels(channels, 42)
                            .withNonce(new Nonce(back.a(), back.b())).encode();
                    while (header.hasRemaining()) c.write(header);
                } // closed: the other channels never come
                assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS), "the destination noticed the first connection closed");
                String last = dst.failures.getLast();
                assertTrue(last.contains("the first connection closed while the stream's further channels were awaited"), last);
            }
            assertEquals(MigrationStatus.COMPLETED, sourceOf(src, 2).migrate(dst.address()).status(), "the next genuine migration");
            assertTrue(dst.guest.equalsSource(src));
        }
    }

    private static HandoverOutcome ask(InetSocketAddress at, Nonce stream) throws IOException {
        try (SocketChannel c = SocketChannel.open(at)) {
            return org.vmmkit.migration.wire.OutcomeQuery.ask(c, stream);
        }
    }

    @Test
    void theDestinationAnswersOutcomeQueriesForEachStream() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 10); Destination dst = new Destination()) {
            assertEquals(HandoverOutcome.UNKNOWN_STREAM, ask(dst.address(), new Nonce(5, 6)));
            MigrationSource source = sourceOf(src, 1);
            source.migrate(dst.address());
            Nonce stream = dst.destination.lastStream();
            assertEquals(HandoverOutcome.STARTED, ask(dst.address(), stream));
        }
    }
}
