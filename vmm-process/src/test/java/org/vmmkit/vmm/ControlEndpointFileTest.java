package org.vmmkit.vmm;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The control endpoint's socket file: a live one is never taken over, a stale one is replaced, and a process deletes only its own. */
@Timeout(60)
class ControlEndpointFileTest {
    @TempDir Path dir;

    private static ServerSocketChannel bindRaw(Path path) throws IOException {
        return ServerSocketChannel.open(StandardProtocolFamily.UNIX).bind(UnixDomainSocketAddress.of(path));
    }

    private static String status(Path control) throws IOException {
        try (ControlClient c = ControlClient.connect(control)) {
            return c.query("query-status").get("status").getAsString();
        }
    }

    @Test
    void aLiveControlEndpointIsNotTakenOver() throws Exception {
        Path socket = dir.resolve("vmm.sock");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST)); ControlServer live = new ControlServer(socket, machine, () -> {})) {
            Object before = Files.readAttributes(socket, BasicFileAttributes.class).fileKey();
            CliRun second = CliRun.of(CliRun.softwareGuest("run", "--control", socket.toString()));
            assertEquals(Main.ENVIRONMENT, second.code(), second.toString());
            assertTrue(second.err().contains("vmm: control endpoint " + socket + " is in use by another process"), second.toString());
            assertEquals(before, Files.readAttributes(socket, BasicFileAttributes.class).fileKey(), "the file is the first one's");
            assertEquals("running", status(socket), "the first VM still answers");
        }
    }

    @Test
    void aStaleSocketFileIsReplaced() throws Exception {
        Path socket = dir.resolve("vmm.sock");
        bindRaw(socket).close(); // a process that died without deleting its socket file
        assertTrue(Files.exists(socket));
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST)); ControlServer server = new ControlServer(socket, machine, () -> {})) {
            assertEquals("running", status(socket));
        }
        assertFalse(Files.exists(socket), "closing deletes its own socket file");
    }

    @Test
    void aFileThatIsNotASocketIsLeftAlone() throws Exception {
        Path notASocket = dir.resolve("notes.txt");
        Files.writeString(notASocket, "keep me");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST))) {
            IOException e = assertThrows(IOException.class, () -> new ControlServer(notASocket, machine, () -> {}));
            assertTrue(e.getMessage().contains("control endpoint " + notASocket + " exists and is not a socket"), e.getMessage());
        }
        assertEquals("keep me", Files.readString(notASocket));
    }

    @Test
    void aProcessDeletesTheSocketFileOnlyWhileItIsItsOwn() throws Exception {
        Path socket = dir.resolve("vmm.sock");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST))) {
            ControlServer first = new ControlServer(socket, machine, () -> {});
            Files.delete(socket); // someone else removed it and bound the path anew
            try (ServerSocketChannel other = bindRaw(socket)) {
                first.close();
                assertTrue(Files.exists(socket), "the other process's socket file is still there");
                try (SocketChannel c = SocketChannel.open(UnixDomainSocketAddress.of(socket))) {
                    assertTrue(c.isConnected(), "and still reaches it");
                }
            }
        }
    }
}
