package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.SoftwareGuest;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 16 item 7: a destination that refuses mid-stream says why (ERROR) and closes, which resets the
 * source's writes; the source reports the destination's reason, not "Connection reset by peer".
 */
@Timeout(60)
class DestinationReasonTest {
    private static final long MIB = 1 << 20;

    @Test
    void aDestinationsRefusalMidStreamIsReportedByTheSourceNotTheResetItCauses() throws Exception {
        try (GuestMemory ram = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            SoftwareGuest guest = new SoftwareGuest(ram, DirtyingWorkload.Settings.range(MIB, 48 * MIB, 0, 0));
            try {
                guest.install();
                guest.boot();
                assertTrue(guest.awaitPasses(1, Duration.ofSeconds(30)), "the guest runs");
                Thread destination = Thread.ofPlatform().start(() -> {
                    try (SocketChannel in = server.accept()) {
                        // As a real destination's (ConnectionOpening): without it, Nagle holds the ERROR's payload
                        // (a second small write) until its header is acknowledged, and the close discards it.
                        in.setOption(java.net.StandardSocketOptions.TCP_NODELAY, true);
                        FrameCodec back = RollbackTest.handshake(in);
                        FrameCodec codec = new FrameCodec(1L << 30);
                        ByteBuffer scratch = ByteBuffer.allocateDirect(8 << 20);
                        for (int frames = 0; frames < 3; frames++) { // a few frames of round 1, then a refusal
                            codec.readHeader(in);
                            for (long left = codec.length(); left > 0; left -= scratch.position()) {
                                scratch.clear().limit((int) Math.min(left, scratch.capacity()));
                                codec.readPayloadUnchecked(in, scratch);
                            }
                        }
                        back.write(in, FrameType.ERROR, 0, 0, ByteBuffer.wrap("frame 3 was refused: no room here".getBytes(StandardCharsets.UTF_8)), null);
                    } catch (Exception e) {
                        // the source may fail first; the assertion below says what it reported
                    } // closed with the rest of round 1 unread: the source's next write is reset
                });
                MigrationSource source = new MigrationSource(guest, List.of(guest), List.of(), MigrationSettings.DEFAULT);
                MigrationException failure = assertThrows(MigrationException.class, () -> source.migrate(server.getLocalAddress()));
                destination.join(30_000);
                assertTrue(failure.getMessage().contains("the destination refused in pre-copy: frame 3 was refused: no room here"), failure.getMessage());
                assertFalse(failure.getMessage().toLowerCase().contains("reset"), failure.getMessage());
                assertTrue(failure.getMessage().contains("rolled back"), failure.getMessage());
            } finally {
                guest.shutdown();
            }
        }
    }
}
