package org.vmmkit.vmm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The control endpoint's events (issue 16): a scripted client on a plain socket follows a whole migration by
 * what the endpoint pushes, never asking; migrate-set-parameters changes a running migration, seen in its
 * events; a subscriber that does not read never holds anything up; the destination says completed; quit
 * waits for a running migration; a second attempt's per-device figures are its own (item 6). Software guests in this JVM (no KVM needed), a destination on loopback.
 */
@Timeout(120)
class ControlEventsTest {
    @TempDir Path dir;

    /** A source VM with its endpoint and a destination VM receiving on loopback, in this JVM. */
    private final class Pair implements AutoCloseable {
        final Machine source = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST));
        final Machine destination = Machine.destination(VmmSettings.load(null, CliRun.SOFTWARE_GUEST), false);
        final Path socket = dir.resolve("source.sock");
        final ControlServer server = new ControlServer(socket, source, () -> { });
        final ServerSocketChannel listen = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
        final CompletableFuture<Void> received = new CompletableFuture<>();

        Pair() throws IOException {
            Thread.ofPlatform().daemon().start(() -> {
                try {
                    destination.receive(listen);
                    received.complete(null);
                } catch (Throwable t) {
                    received.completeExceptionally(t);
                }
            });
        }

        String uri() throws IOException {
            return "tcp:127.0.0.1:" + ((InetSocketAddress) listen.getLocalAddress()).getPort();
        }

        @Override
        public void close() throws IOException {
            server.close();
            listen.close();
            source.close();
            destination.close();
        }
    }

    /** A client that is only a socket and lines: what a script in any language would do. */
    private static final class ScriptedClient implements AutoCloseable {
        final SocketChannel channel = SocketChannel.open(StandardProtocolFamily.UNIX);
        final BufferedReader in;
        final OutputStream out;

        ScriptedClient(Path socket) throws IOException {
            channel.connect(UnixDomainSocketAddress.of(socket));
            in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
            out = Channels.newOutputStream(channel);
        }

        void send(String line) throws IOException {
            out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
        }

        JsonObject read() throws IOException {
            String line = in.readLine();
            assertTrue(line != null, "the endpoint closed the connection");
            return JsonParser.parseString(line).getAsJsonObject();
        }

        @Override
        public void close() throws IOException {
            channel.close();
        }
    }

    private static String status(JsonObject event) {
        return event.getAsJsonObject("data").get("status").getAsString();
    }

    private static boolean ends(JsonObject event) {
        return event.get("event").getAsString().equals("MIGRATION")
                && org.vmmkit.migration.MigrationStatus.of(status(event)).ended();
    }

    @Test
    void aScriptedClientFollowsAWholeMigrationByEventsInOrderEndingWithItsTerminalState() throws Exception {
        try (Pair p = new Pair(); ScriptedClient c = new ScriptedClient(p.socket)) {
            c.send("{\"execute\": \"subscribe\"}");
            assertTrue(c.read().has("return"), "subscribe is answered before any event");
            c.send("{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"" + p.uri() + "\"}}");
            List<JsonObject> events = new ArrayList<>();
            boolean answered = false;
            while (events.isEmpty() || !ends(events.getLast())) {
                JsonObject line = c.read();
                if (line.has("return")) {
                    answered = true;
                    continue;
                }
                assertTrue(line.has("event") && line.has("timestamp") && line.has("data"), line.toString());
                events.add(line);
            }
            assertTrue(answered, "the migrate command was answered");
            List<String> transitions = new ArrayList<>();
            long lastPass = 0;
            for (JsonObject e : events) {
                switch (e.get("event").getAsString()) {
                    case "MIGRATION" -> {
                        JsonObject d = e.getAsJsonObject("data");
                        transitions.add(d.get("status").getAsString() + (d.has("phase") ? "/" + d.get("phase").getAsString() : ""));
                    }
                    case "MIGRATION_PASS" -> {
                        JsonObject d = e.getAsJsonObject("data");
                        assertEquals(lastPass + 1, d.get("pass").getAsLong(), "passes in order, none missed: " + events);
                        lastPass = d.get("pass").getAsLong();
                        assertTrue(d.get("bytes").getAsLong() > 0 && d.has("dirty-pages") && d.has("expected-downtime")
                                && d.has("throttle-percent") && d.has("downtime-limit"), d.toString());
                        assertEquals("active/pre-copy", transitions.getLast(), "a pass belongs to pre-copy");
                    }
                    default -> { } // MIGRATION_PROGRESS may come between them on a slow machine
                }
            }
            assertEquals(List.of("setup/setup", "active/pre-copy", "device/stop-and-copy", "device/handover", "completed"), transitions);
            assertTrue(lastPass >= 1, "at least one pass: " + events);
            p.received.get(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void aDestinationsQueryMigrateSaysCompletedOnceItsIncomingMigrationRan() throws Exception {
        try (Pair p = new Pair()) {
            assertEquals("none", MigrateJson.of(p.destination.migrationStats(), 0, null).get("status"));
            try (ControlClient c = ControlClient.connect(p.socket)) {
                JsonObject end = Main.watch(p.socket, Map.of("uri", p.uri()), false);
                assertEquals("completed", end.get("status").getAsString(), end.toString());
            }
            p.received.get(30, TimeUnit.SECONDS);
            assertEquals("completed", MigrateJson.of(p.destination.migrationStats(), 0, null).get("status"), "QEMU's destination says completed");
        }
    }

    @Test
    void raisingTheDowntimeLimitMidMigrationLetsItConvergeWhereItWouldNot() throws Exception {
        try (Pair p = new Pair(); ControlClient c = ControlClient.connect(p.socket)) {
            c.subscribe();
            // A 0 ms limit no estimate meets; cancel would end it only after 100000 rounds.
            c.execute("migrate", Map.of("uri", p.uri(), "downtime-limit", "0ms", "convergence", "cancel", "max-iterations", 100000));
            boolean changed = false;
            List<Long> limits = new ArrayList<>(); // each pass's limit, in order
            JsonObject e;
            do {
                e = c.nextEvent();
                if (!e.get("event").getAsString().equals("MIGRATION_PASS")) continue;
                JsonObject pass = e.getAsJsonObject("data");
                limits.add(pass.get("downtime-limit").getAsLong());
                if (!changed && pass.get("pass").getAsLong() >= 3) {
                    try (ControlClient other = ControlClient.connect(p.socket)) {
                        JsonObject now = other.execute("migrate-set-parameters", Map.of("downtime-limit", "60s")).getAsJsonObject();
                        assertEquals(60_000, now.get("downtime-limit").getAsLong());
                    }
                    changed = true;
                }
            } while (!ends(e));
            assertEquals("completed", status(e), e.toString());
            // Passes judged against 0 ms until the change reached the migration (passes already under way may still say 0), then 60 s.
            int firstNew = limits.indexOf(60_000L);
            assertTrue(firstNew >= 3, "at least 3 passes under the 0 ms limit: " + limits);
            assertEquals(List.of(0L), limits.subList(0, firstNew).stream().distinct().toList(), limits.toString());
            assertEquals(List.of(60_000L), limits.subList(firstNew, limits.size()).stream().distinct().toList(), limits.toString());
            JsonObject stats = c.query("query-migrate");
            assertEquals("converged", stats.getAsJsonObject("convergence").get("outcome").getAsString(), stats.toString());
        }
    }

    @Test
    void perDeviceFiguresCountOneAttemptOnlyAndAFailedSetupShowsNoDeviceBytes() throws Exception {
        try (Pair p = new Pair(); ServerSocketChannel nobody = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
             ControlClient c = ControlClient.connect(p.socket)) {
            int closed = ((InetSocketAddress) nobody.getLocalAddress()).getPort();
            nobody.close(); // a port nothing listens on: the attempt fails in setup
            c.subscribe();
            c.execute("migrate", Map.of("uri", "tcp:127.0.0.1:" + closed));
            JsonObject e;
            do {
                e = c.nextEvent();
            } while (!ends(e));
            JsonObject failed = c.query("query-migrate");
            assertEquals("failed", failed.get("status").getAsString(), failed.toString());
            assertEquals(0, failed.getAsJsonObject("vfio").get("transferred").getAsLong(), failed.toString());
            failed.getAsJsonObject("vfio").getAsJsonArray("devices")
                    .forEach(d -> assertEquals(0, d.getAsJsonObject().get("transferred").getAsLong(), "a device with bytes sent: " + failed));

            // Attempt 2 never converges (0 ms limit) and is cancelled after 2 passes, having sent device state.
            c.execute("migrate", Map.of("uri", p.uri(), "downtime-limit", "0ms", "convergence", "cancel", "max-iterations", 100000));
            boolean asked = false;
            do {
                e = c.nextEvent();
                if (!asked && e.get("event").getAsString().equals("MIGRATION_PASS") && e.getAsJsonObject("data").get("pass").getAsLong() >= 2) {
                    try (ControlClient other = ControlClient.connect(p.socket)) {
                        other.execute("migrate-cancel", null);
                    }
                    asked = true;
                }
            } while (!ends(e));
            assertEquals("cancelled", status(e), e.toString());
            long cancelledDeviceBytes = c.query("query-migrate").getAsJsonObject("vfio").get("transferred").getAsLong();
            assertTrue(cancelledDeviceBytes > 0, "the cancelled attempt sent device state");

            JsonObject done = Main.watch(p.socket, Map.of("uri", p.uri()), false); // attempt 3 completes
            assertEquals("completed", done.get("status").getAsString(), done.toString());
            long total = done.getAsJsonObject("vfio").get("transferred").getAsLong(), perDevice = 0;
            for (var d : done.getAsJsonObject("vfio").getAsJsonArray("devices")) perDevice += d.getAsJsonObject().get("transferred").getAsLong();
            assertEquals(total, perDevice, "the devices' figures add up to this attempt's total, nothing of the earlier ones: " + done);
            assertTrue(total <= done.get("transferred").getAsLong(), done.toString());
            p.received.get(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void migrateSetParametersChecksLikeTheConfigFileAndNamesAnUnknownParameter() throws Exception {
        try (Pair p = new Pair(); ControlClient c = ControlClient.connect(p.socket)) {
            String low = assertThrowsControl(() -> c.execute("migrate-set-parameters", Map.of("max-bandwidth", "1")));
            assertTrue(low.contains("migration.max-bandwidth") && low.contains("at least 1M"), low);
            String unknown = assertThrowsControl(() -> c.execute("migrate-set-parameters", Map.of("channels", "2")));
            assertTrue(unknown.contains("unknown parameter 'channels'") && unknown.contains("max-bandwidth and downtime-limit"), unknown);
            CliRun set = CliRun.of("migrate-set-parameters", "--control", p.socket.toString(), "--max-bandwidth", "64M", "--downtime-limit", "250ms");
            assertEquals(0, set.code(), set.toString());
            assertTrue(set.out().contains("max-bandwidth 67108864 B/s, downtime-limit 250 ms"), set.toString());
            assertEquals(64L << 20, p.source.migrationSettings().maxBandwidth(), "kept for the migrations to come");
            CliRun bad = CliRun.of("migrate-set-parameters", "--control", p.socket.toString(), "--downtime-limit", "soon");
            assertEquals(Main.FAILED, bad.code(), bad.toString());
            assertTrue(bad.err().contains("migration.downtime-limit"), bad.toString());
        }
    }

    @Test
    void quitDuringAMigrationIsRefusedUntilItEndsOrIsForced() throws Exception {
        try (Pair p = new Pair(); ServerSocketChannel silent = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0));
             ControlClient c = ControlClient.connect(p.socket)) {
            c.subscribe();
            // A listener that never says HELLO: the migration waits in setup.
            c.execute("migrate", Map.of("uri", "tcp:127.0.0.1:" + ((InetSocketAddress) silent.getLocalAddress()).getPort()));
            JsonObject e = c.nextEvent();
            assertEquals("setup", status(e), e.toString());
            String refused = assertThrowsControl(() -> c.execute("quit", null));
            assertTrue(refused.contains("quit: a migration is running (setup): migrate-cancel it first"), refused);
            c.execute("migrate-cancel", null);
            do {
                e = c.nextEvent();
            } while (!ends(e));
            assertEquals("cancelled", status(e), e.toString());
            assertTrue(e.getAsJsonObject("data").get("reason").getAsString().contains("migration cancelled in setup"), e.toString());
            assertEquals(Map.of(), ControlServer.GSON.fromJson(c.execute("quit", null), Map.class), "quit once nothing runs");
        }
    }

    @Test
    void aSubscriberThatDoesNotReadIsDroppedAndNeverHoldsUpPublishing() throws Exception {
        try (ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX)) {
            server.bind(UnixDomainSocketAddress.of(dir.resolve("hub.sock")));
            try (SocketChannel reader = SocketChannel.open(server.getLocalAddress()); SocketChannel endpointSide = server.accept()) {
                EventHub hub = new EventHub(() -> null);
                hub.subscribe(endpointSide, Channels.newOutputStream(endpointSide)).start();
                String filler = "x".repeat(1024);
                int published = 20_000; // 20 MB: far beyond a socket buffer and the queue
                for (int i = 0; i < published; i++) { // never blocks
                    hub.migration(new org.vmmkit.migration.MigrationEvent.StatusChange(org.vmmkit.migration.MigrationStatus.ACTIVE, "pre-copy", filler + i));
                }
                // Now read: what the socket held, then the end of the connection, the drop.
                BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(reader), StandardCharsets.UTF_8));
                int lines = 0;
                while (in.readLine() != null) lines++;
                assertTrue(lines < published, "the slow subscriber was dropped, not waited for: it got " + lines + " of " + published);
                hub.migration(new org.vmmkit.migration.MigrationEvent.StatusChange(org.vmmkit.migration.MigrationStatus.COMPLETED, null, null)); // nobody left: a no-op
            }
        }
    }

    private static String assertThrowsControl(org.junit.jupiter.api.function.Executable call) {
        return org.junit.jupiter.api.Assertions.assertThrows(ControlClient.ControlException.class, call).getMessage();
    }
}
