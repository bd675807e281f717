package org.vmmkit.vmm;

import java.net.InetSocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Path;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The migration URI forms QEMU takes, and the bad ones refused with the input named. */
class MigrationUriTest {
    @TempDir Path dir;

    @Test
    void tcpUnixAndPlainHostPortAreTaken() {
        assertEquals(new MigrationUri.Tcp("10.0.0.2", 4444), MigrationUri.parse("tcp:10.0.0.2:4444"));
        assertEquals(new MigrationUri.Tcp("dst.example", 4444), MigrationUri.parse("dst.example:4444"));
        assertEquals(new MigrationUri.Tcp("localhost", 0), MigrationUri.parse("localhost:0"));
        assertEquals(new MigrationUri.Unix(Path.of("/run/vm1.sock")), MigrationUri.parse("unix:/run/vm1.sock"));
        assertEquals(new MigrationUri.Unix(Path.of("relative.sock")), MigrationUri.parse("unix:relative.sock"));
    }

    @Test
    void ipv6LiteralsAreWrittenInBrackets() {
        assertEquals(new MigrationUri.Tcp("::1", 4444), MigrationUri.parse("tcp:[::1]:4444"));
        assertEquals(new MigrationUri.Tcp("fe80::1:2", 80), MigrationUri.parse("[fe80::1:2]:80"));
        assertEquals("[::1]:4444", MigrationUri.parse("[::1]:4444").toString());
        assertEquals("tcp:[::1]:4444", MigrationUri.parse("[::1]:4444").uri());
        InetSocketAddress a = (InetSocketAddress) MigrationUri.parse("tcp:[::1]:4444").address();
        assertTrue(a.getAddress() instanceof java.net.Inet6Address && a.getAddress().isLoopbackAddress(), a.toString());
    }

    @Test
    void theCanonicalFormParsesBackToTheSameUri() {
        for (String text : new String[] {"tcp:127.0.0.1:1", "tcp:[::1]:4444", "unix:/tmp/x.sock", "tcp:host.example:65535"}) {
            MigrationUri u = MigrationUri.parse(text);
            assertEquals(text, u.uri());
            assertEquals(u, MigrationUri.parse(u.uri()));
        }
        assertEquals(UnixDomainSocketAddress.of("/tmp/x.sock"), MigrationUri.parse("unix:/tmp/x.sock").address());
    }

    @Test
    void badFormsAreRefusedNamingTheInput() {
        String[][] cases = {
            {"nowhere", "expected HOST:PORT, got 'nowhere'"},
            {"tcp:nowhere", "expected HOST:PORT, got 'tcp:nowhere'"},
            {"host:", "expected HOST:PORT, got 'host:'"},
            {":4444", "expected HOST:PORT, got ':4444'"},
            {"host:port", "numeric port, got 'host:port'"},
            {"tcp:host:44x", "numeric port, got 'tcp:host:44x'"},
            {"host:70000", "port 70000 is out of range in 'host:70000'"},
            {"::1:4444", "an IPv6 address takes brackets: [::1]:4444, got '::1:4444'"},
            {"tcp:[::1]4444", "expected [IPv6]:PORT, got 'tcp:[::1]4444'"},
            {"[::1", "expected [IPv6]:PORT, got '[::1'"},
            {"[]:1", "expected an IPv6 address in brackets, got '[]:1'"},
            {"unix:", "expected unix:PATH, got 'unix:' (no path)"},
            {"exec:cat > /tmp/x", "unsupported migration URI 'exec:cat > /tmp/x'"},
            {"rdma:host:4444", "unsupported migration URI 'rdma:host:4444'"},
            {"", "got ''"},
        };
        for (String[] c : cases) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> MigrationUri.parse(c[0]), c[0]);
            assertTrue(e.getMessage().contains(c[1]), c[0] + ": " + e.getMessage());
        }
    }

    @Test
    void aHostThatDoesNotResolveIsNamedWhenTheAddressIsAskedFor() {
        MigrationUri u = MigrationUri.parse("nosuchhost.invalid:4444");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, u::address);
        assertEquals("cannot resolve host 'nosuchhost.invalid'", e.getMessage());
    }

    @Test
    void incomingListensOnAUnixPathAndRefusesOneThatIsNotASocket() throws Exception {
        Path file = dir.resolve("not-a-socket");
        java.nio.file.Files.writeString(file, "x");
        CliRun run = CliRun.of(CliRun.softwareGuest("incoming", "--listen", "unix:" + file, "--control", dir.resolve("c.sock").toString()));
        assertEquals(Main.ENVIRONMENT, run.code(), run.toString());
        assertTrue(run.err().contains("cannot listen on unix:" + file + ": listen socket " + file + " exists and is not a socket"), run.toString());
        CliRun bad = CliRun.of(CliRun.softwareGuest("incoming", "--listen", "tcp:[::1", "--control", dir.resolve("c.sock").toString()));
        assertEquals(Main.USAGE, bad.code(), bad.toString());
        assertTrue(bad.err().contains("expected [IPv6]:PORT, got 'tcp:[::1'"), bad.toString());
    }
}
