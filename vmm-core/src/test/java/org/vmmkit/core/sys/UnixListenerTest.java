package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;

import org.junit.jupiter.api.Test;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** A listening UNIX socket in the abstract namespace whose connections carry fds. */
class UnixListenerTest {

    @Test
    void aConnectionToAnAbstractNameCarriesAnFd() {
        String name = "@vmmkit-test-" + Long.toHexString(System.nanoTime());
        try (UnixListener listener = UnixListener.listen(name); UnixSocket client = UnixSocket.connect(name, "client");
             UnixSocket server = listener.accept(Duration.ofSeconds(5)); Fd memfd = Libc.memfdCreate("sent"); Arena arena = Arena.ofConfined()) {
            memfd.truncate(8192);
            MemorySegment word = arena.allocate(8);
            word.set(JAVA_LONG, 0, 42);
            assertEquals(8, client.send(word, 0, 8, null, 0, 0, new int[] {memfd.raw()}, 1));
            assertTrue(server.await(Libc.POLLIN, 5000) > 0);
            MemorySegment in = arena.allocate(8);
            assertEquals(8, server.receive(in, 0, 8, true));
            assertEquals(42, in.get(JAVA_LONG, 0));
            try (Fd received = new Fd(server.takeFd(0), "received")) {
                assertEquals(8192, Libc.fileSize(received), "the same file");
            }
        }
    }

    @Test
    void noConnectionWithinTheWaitIsAnErrorNamingTheAddress() {
        String name = "@vmmkit-test-idle-" + Long.toHexString(System.nanoTime());
        try (UnixListener listener = UnixListener.listen(name)) {
            SysException e = assertThrows(SysException.class, () -> listener.accept(Duration.ofMillis(50)));
            assertTrue(e.getMessage().contains(name) && e.getMessage().contains("ETIMEDOUT"), e.getMessage());
        }
    }

    @Test
    void connectingToNothingNamesTheAddressAndTheErrno() {
        SysException e = assertThrows(SysException.class, () -> UnixSocket.connect("@vmmkit-nobody-" + System.nanoTime(), "client"));
        assertTrue(e.getMessage().contains("connect(@vmmkit-nobody-") && e.getMessage().contains("ECONNREFUSED"), e.getMessage());
    }
}
