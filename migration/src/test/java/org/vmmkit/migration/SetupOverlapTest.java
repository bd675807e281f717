package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.SoftwareGuest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue #12: the source's dirty tracking is made and started on another thread while the handshake waits on the
 * network. A handshake that fails still leaves no tracking on, a tracking that fails to start fails the migration in
 * setup with its reason, and a destination never starts from such a stream.
 */
@Timeout(60)
class SetupOverlapTest {
    private static final long MIB = 1 << 20;

    @Test
    void aRefusalBeforeReadyStopsTheTrackingThatBeganWithTheHandshake() throws Exception {
        try (GuestMemory ram = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            SoftwareGuest guest = new SoftwareGuest(ram, DirtyingWorkload.Settings.range(MIB, 4 * MIB, 0, 0));
            CountDownLatch trackingOn = new CountDownLatch(1);
            DirtySource witness = new Witness(trackingOn, null);
            Thread destination = Thread.ofPlatform().start(() -> {
                try (SocketChannel in = server.accept()) {
                    in.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
                    FrameCodec back = new FrameCodec(1 << 20);
                    back.write(in, FrameType.HELLO, 1, 2, null, null);
                    StreamHeader.read(in);
                    trackingOn.await(); // refuse only once the tracking begun with the handshake is on
                    back.write(in, FrameType.ERROR, 0, 0, ByteBuffer.wrap("no room for this VM".getBytes(StandardCharsets.UTF_8)), null);
                    in.read(ByteBuffer.allocate(1)); // until the source closes
                } catch (Exception e) {
                    // the assertions below say what the source reported
                }
            });
            MigrationSource source = new MigrationSource(guest, List.of(guest, witness), List.of(), MigrationSettings.DEFAULT);
            MigrationException failure = assertThrows(MigrationException.class, () -> source.migrate(server.getLocalAddress()));
            destination.join(30_000);
            assertTrue(failure.getMessage().contains("the destination refused in setup: no room for this VM"), failure.getMessage());
            assertTrue(failure.getMessage().contains("dirty tracking stopped"), failure.getMessage());
            assertFalse(guest.logging(), "the guest's write log is off again");
            assertFalse(((Witness) witness).on, "every dirty source is stopped");
        }
    }

    @Test
    void aDirtySourceThatFailsToStartFailsTheMigrationInSetupAndTheDestinationNeverStarts() throws Exception {
        try (FakeGuest from = FakeGuest.source(8 * MIB, 7); FakeGuest to = FakeGuest.destination(8 * MIB);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            Witness first = new Witness(new CountDownLatch(1), null);
            Witness failing = new Witness(new CountDownLatch(1), "ioctl(KVM_SET_USER_MEMORY_REGION) on vm-fd 5 failed: ENOMEM");
            MigrationDestination destination = new MigrationDestination(to, List.of(), null);
            Exception[] refused = new Exception[1];
            Thread receiver = Thread.ofPlatform().start(() -> {
                try {
                    destination.receive(server, Duration.ofSeconds(30));
                } catch (MigrationException e) {
                    refused[0] = e;
                }
            });
            MigrationSource source = new MigrationSource(from, List.of(first, failing), List.of(), MigrationSettings.DEFAULT);
            MigrationException failure = assertThrows(MigrationException.class, () -> source.migrate(server.getLocalAddress()));
            receiver.join(30_000);
            assertTrue(failure.getMessage().contains("migration failed in setup")
                    && failure.getMessage().contains("KVM_SET_USER_MEMORY_REGION) on vm-fd 5 failed: ENOMEM"), failure.getMessage());
            assertFalse(first.on, "the source that started is stopped again");
            assertTrue(refused[0] != null, "the destination saw the stream end unfinished");
            assertEquals(0, to.starts(), "the destination never started");
        }
    }

    /** A dirty source that says when it is on (and can fail to start with {@code failure}); it finds no dirty page. */
    private static final class Witness implements DirtySource {
        private final CountDownLatch started;
        private final String failure;
        volatile boolean on;

        Witness(CountDownLatch started, String failure) {
            this.started = started;
            this.failure = failure;
        }

        @Override
        public String name() {
            return "witness";
        }

        @Override
        public void start() {
            if (failure != null) throw new IllegalStateException(failure);
            on = true;
            started.countDown();
        }

        @Override
        public void sync(GuestRegion region, DirtyBitmap into) {}

        @Override
        public void stop() {
            on = false;
        }
    }
}
