package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.Test;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** SCM_RIGHTS through FFM sendmsg/recvmsg, over a socketpair: the layouts checked by SysLayerTest, in use. */
class UnixSocketTest {

    @Test
    void aMemfdSentWithTheMessageArrivesAsAnotherFdOfTheSameFile() {
        Fd[] pair = Libc.socketpair("pair");
        try (UnixSocket a = UnixSocket.of(pair[0]); UnixSocket b = UnixSocket.of(pair[1]); Fd memfd = Libc.memfdCreate("sent");
             Arena arena = Arena.ofConfined()) {
            memfd.truncate(4096);
            MemorySegment word = arena.allocate(8);
            word.set(JAVA_LONG, 0, 0x1122334455667788L);
            memfd.pwriteFully(word, 512);
            MemorySegment header = arena.allocate(16), body = arena.allocate(100);
            header.fill((byte) 1);
            body.fill((byte) 2);
            assertEquals(116, a.send(header, 0, 16, body, 0, 100, new int[] {memfd.raw()}, 1), "header and body in one sendmsg");

            MemorySegment in = arena.allocate(116);
            assertEquals(16, b.receive(in, 0, 16, true), "the header's receive");
            assertEquals(1, b.receivedFdCount(), "the fd arrived with the header's bytes");
            assertEquals(100, b.receive(in, 16, 100, true));
            assertEquals(1, b.receivedFdCount(), "and only once");
            assertEquals(-1, in.asSlice(0, 16).mismatch(header));
            assertEquals(-1, in.asSlice(16).mismatch(body));
            try (Fd received = new Fd(b.takeFd(0), "received")) {
                assertNotEquals(memfd.raw(), received.raw());
                MemorySegment back = arena.allocate(8);
                received.preadFully(back, 512);
                assertEquals(0x1122334455667788L, back.get(JAVA_LONG, 0));
            }
        }
    }

    @Test
    void aReceiveWithoutDataIsEagainAndAClosedPeerIsTheEndOfTheStream() {
        Fd[] pair = Libc.socketpair("pair");
        try (UnixSocket a = UnixSocket.of(pair[0]); Arena arena = Arena.ofConfined()) {
            MemorySegment in = arena.allocate(16);
            assertEquals(-Errno.EAGAIN, a.receive(in, 0, 16, true));
            assertEquals(0, a.await(Libc.POLLIN, 1), "nothing to read: the wait times out");
            pair[1].close();
            assertTrue((a.await(Libc.POLLIN, 1000) & (Libc.POLLIN | Libc.POLLHUP)) != 0);
            assertEquals(0, a.receive(in, 0, 16, true));
        }
    }

    @Test
    void aWakeUpEndsAWatchFromAnotherThreadAndAShutdownIsSeenByThePeer() throws Exception {
        Fd[] pair = Libc.socketpair("pair");
        try (UnixSocket a = UnixSocket.of(pair[0]); UnixSocket b = UnixSocket.of(pair[1]); Arena arena = Arena.ofConfined()) {
            Thread t = Thread.ofPlatform().start(a::wake);
            t.join();
            assertEquals(0, a.watch(), "woken, not readable");
            b.shutdown();
            assertTrue((a.watch() & (Libc.POLLIN | Libc.POLLHUP)) != 0, "the peer's shutdown wakes the watch");
            assertEquals(0, a.receive(arena.allocate(4), 0, 4, true), "and reads as the end of the stream");
        }
    }

    @Test
    void unreceivedFdsAreClosed() {
        Fd[] pair = Libc.socketpair("pair");
        try (UnixSocket a = UnixSocket.of(pair[0]); UnixSocket b = UnixSocket.of(pair[1]); Fd memfd = Libc.memfdCreate("sent");
             Arena arena = Arena.ofConfined()) {
            MemorySegment m = arena.allocate(4);
            a.send(m, 0, 4, null, 0, 0, new int[] {memfd.raw(), memfd.raw()}, 2);
            assertEquals(4, b.receive(m, 0, 4, true));
            assertEquals(2, b.receivedFdCount());
            int raw = b.takeFd(1);
            int other = b.takeFd(0);
            Libc.closeFdRaw(raw);
            assertEquals(0, Libc.closeFdRaw(other), "taken fds are the caller's");
            b.closeReceivedFds(); // closes none: both were taken
            a.send(m, 0, 4, null, 0, 0, new int[] {memfd.raw()}, 1);
            assertEquals(4, b.receive(m, 0, 4, true));
            int kept = b.receivedFdCount();
            assertEquals(1, kept);
            b.closeReceivedFds();
            assertEquals(0, b.receivedFdCount());
        }
    }
}
