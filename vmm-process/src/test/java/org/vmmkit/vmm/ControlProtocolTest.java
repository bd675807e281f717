package org.vmmkit.vmm;

import java.io.BufferedReader;
import org.vmmkit.migration.MigrationStatus;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The control endpoint's protocol on a software guest (no KVM needed): answers, and a clear error for each kind of bad request. */
@Timeout(60)
class ControlProtocolTest {
    @TempDir Path dir;

    private static JsonObject raw(Path socket, String line) throws Exception {
        try (SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            c.connect(UnixDomainSocketAddress.of(socket));
            OutputStream out = Channels.newOutputStream(c);
            out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            return JsonParser.parseString(new BufferedReader(new InputStreamReader(Channels.newInputStream(c), StandardCharsets.UTF_8))
                    .readLine()).getAsJsonObject();
        }
    }

    private static String error(JsonObject answer) {
        assertTrue(answer.has("error"), answer.toString());
        assertEquals("GenericError", answer.getAsJsonObject("error").get("class").getAsString());
        return answer.getAsJsonObject("error").get("desc").getAsString();
    }

    @Test
    void answersAndRefusesClearly() throws Exception {
        VmmSettings settings = VmmSettings.load(null, CliRun.SOFTWARE_GUEST);
        Path socket = dir.resolve("control.sock");
        CountDownLatch quit = new CountDownLatch(1);
        try (Machine machine = Machine.source(settings); ControlServer server = new ControlServer(socket, machine, quit::countDown)) {
            JsonObject status = raw(socket, "{\"execute\": \"query-status\"}").getAsJsonObject("return");
            assertEquals("running", status.get("status").getAsString());
            assertEquals("software", raw(socket, "{\"execute\": \"query-guest\"}").getAsJsonObject("return").get("accelerator").getAsString());
            assertEquals("none", raw(socket, "{\"execute\": \"query-migrate\"}").getAsJsonObject("return").get("status").getAsString());

            assertTrue(error(raw(socket, "{not json")).contains("?:"), "unparsable");
            assertTrue(error(raw(socket, "{\"command\": \"quit\"}")).contains("a command is {\"execute\": NAME"));
            assertTrue(error(raw(socket, "{\"execute\": \"reboot\"}")).contains("unknown command 'reboot' (known: query-status"));
            assertTrue(error(raw(socket, "{\"execute\": \"migrate\"}")).contains("migrate: expected \"uri\": \"tcp:HOST:PORT\""));
            assertTrue(error(raw(socket, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:localhost\"}}"))
                    .contains("expected HOST:PORT"));
            String channels = error(raw(socket, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:1\", \"channels\": 99}}"));
            assertTrue(channels.contains("migration.channels") && channels.contains("between 1 and 16"), channels); // the config file's own check
            String unknown = error(raw(socket, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:127.0.0.1:1\", \"chanels\": 2}}"));
            assertTrue(unknown.contains("unknown migration setting 'chanels'"), unknown);
            assertEquals(1, quit.getCount(), "an argument or key named quit does not quit");

            // A migration to nowhere fails, says why, and the guest runs on.
            try (ControlClient client = ControlClient.connect(socket)) {
                client.execute("migrate", Map.of("uri", "tcp:127.0.0.1:1"));
                JsonObject end;
                do {
                    end = client.query("query-migrate");
                } while (!end.get("status").getAsString().equals("failed"));
                assertTrue(end.get("error-desc").getAsString().contains("connecting to") && end.get("error-desc").getAsString()
                        .contains("nothing was changed"), end.toString());
                assertEquals("running", client.query("query-status").get("status").getAsString());
                assertThrows(ControlClient.ControlException.class, () -> client.execute("nonsense", null));
            }

            assertEquals(Map.of(), ControlServer.GSON.fromJson(raw(socket, "{\"execute\": \"quit\"}").get("return"), Map.class));
            assertTrue(quit.await(5, TimeUnit.SECONDS), "quit ends the process");
        }
    }

    @Test
    void migrateToAnUnresolvableHostIsRefusedAtOnceNamingTheHost() throws Exception {
        Path socket = dir.resolve("control.sock");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST)); ControlServer server = new ControlServer(socket, machine, () -> {})) {
            assertTrue(error(raw(socket, "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"tcp:nosuchhost.invalid:4444\"}}"))
                    .contains("migrate: cannot resolve host 'nosuchhost.invalid'"));
            CliRun migrate = CliRun.of("migrate", "--to", "nosuchhost.invalid:4444", "--control", socket.toString());
            assertEquals(Main.FAILED, migrate.code(), migrate.toString());
            assertTrue(migrate.err().contains("vmm: migrate: cannot resolve host 'nosuchhost.invalid'"), migrate.toString());
            assertEquals("none", raw(socket, "{\"execute\": \"query-migrate\"}").getAsJsonObject("return").get("status").getAsString());
            assertEquals("running", raw(socket, "{\"execute\": \"query-status\"}").getAsJsonObject("return").get("status").getAsString());
        }
    }

    @Test
    void aSourceGivenAnAddressItCannotResolveEndsFailedSayingWhy() throws Exception {
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST))) {
            machine.migrate(InetSocketAddress.createUnresolved("nosuchhost.invalid", 4444), null); // the source gets an address it cannot use
            while (machine.migrationStats().status() == MigrationStatus.NONE) Thread.sleep(5); // a paced poll for the thread's end; the class's timeout bounds it
            assertEquals(MigrationStatus.FAILED, machine.migrationStats().status());
            assertTrue(machine.migrationError().contains("cannot resolve host 'nosuchhost.invalid'"), machine.migrationError());
            assertEquals(Machine.Status.RUNNING, machine.status());
        }
    }
}
