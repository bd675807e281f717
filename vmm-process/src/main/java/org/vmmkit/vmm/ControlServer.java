package org.vmmkit.vmm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import org.vmmkit.migration.MigrationSettings;

/**
 * The control endpoint of a vmm process, in the spirit of QMP: a Unix domain socket taking one JSON
 * object per line, {@code {"execute": NAME, "arguments": {...}}}, and answering one line,
 * {@code {"return": ...}} or {@code {"error": {"class": ..., "desc": ...}}}. Commands: query-status,
 * query-migrate, query-guest, migrate, migrate-cancel, migrate-set-parameters, migrate-resolve, subscribe, quit
 * (README lists them). After {@code subscribe} the session also receives the {@link EventHub}'s events, one
 * line each, between its answers.
 */
public final class ControlServer implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.vmm");
    static final Gson GSON = new GsonBuilder().serializeNulls().disableHtmlEscaping().create();

    /** The answer to quit, told apart by identity: the session ends and the process quits after sending it. */
    private static final Map<String, Object> QUIT = java.util.Collections.unmodifiableMap(new LinkedHashMap<>());

    private final Path path;
    private final Machine machine;
    private final Runnable onQuit;
    private final ServerSocketChannel server;
    private final SocketFile file;
    private final EventHub events;
    private volatile String listening;

    /**
     * Binds the socket at {@code path} and starts serving. A stale socket file there (its process gone) is
     * replaced; one a process answers on, or a file that is not a socket, is an IOException saying so.
     */
    public ControlServer(Path path, Machine machine, Runnable onQuit) throws IOException {
        this.path = path;
        this.machine = machine;
        this.onQuit = onQuit;
        this.events = new EventHub(this::progress);
        machine.onMigrationEvents(events::migration);
        SocketFile.makeRoom(path);
        this.server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            server.bind(UnixDomainSocketAddress.of(path));
            this.file = SocketFile.bound(path);
        } catch (IOException e) {
            server.close();
            throw new IOException("cannot serve the control endpoint " + path + ": " + e.getMessage(), e);
        }
        Thread.ofPlatform().name("control").daemon().start(this::serve);
    }

    /** Tells query-status where this process listens for an incoming migration. */
    public void listening(String address) {
        this.listening = address;
    }

    private void serve() {
        while (server.isOpen()) {
            try {
                SocketChannel client = server.accept();
                Thread.ofPlatform().name("control-client").daemon().start(() -> session(client));
            } catch (IOException e) {
                if (server.isOpen()) LOG.log(System.Logger.Level.WARNING, "control endpoint: " + e.getMessage());
            }
        }
    }

    /** One client's session: its commands answered in order; once it subscribed, events between the answers. */
    private void session(SocketChannel client) {
        EventHub.Subscriber[] subscription = new EventHub.Subscriber[1];
        try (client;
             BufferedReader in = new BufferedReader(new InputStreamReader(Channels.newInputStream(client), StandardCharsets.UTF_8));
             OutputStream out = Channels.newOutputStream(client)) {
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank()) continue;
                boolean subscribed = subscription[0] != null;
                Map<String, Object> answer = answer(line, () -> {
                    if (subscription[0] == null) subscription[0] = events.subscribe(client, out);
                });
                EventHub.write(out, GSON.toJson(answer));
                if (!subscribed && subscription[0] != null) subscription[0].start(); // subscribe's answer precedes every event
                if (answer.get("return") == QUIT) {
                    onQuit.run();
                    return;
                }
            }
        } catch (IOException e) {
            // the client went away; nothing to answer
        } finally {
            if (subscription[0] != null) subscription[0].end();
        }
    }

    /** The live figures a progress line shows, for MIGRATION_PROGRESS; null when no migration runs. */
    private Map<String, Object> progress() {
        if (!machine.migrating()) return null;
        Map<String, Object> all = MigrateJson.of(machine.migrationStats(), machine.guestRamBytes(), null);
        Map<String, Object> out = new LinkedHashMap<>();
        for (String key : List.of("status", "total-time", "expected-downtime", "transferred")) out.put(key, all.get(key));
        @SuppressWarnings("unchecked") Map<String, Object> ram = (Map<String, Object>) all.get("ram");
        out.put("remaining", ram.get("remaining"));
        out.put("mbps", ram.get("mbps"));
        out.put("pass", ram.get("dirty-sync-count"));
        return out;
    }

    private Map<String, Object> answer(String line, Runnable subscribe) {
        String command = "?";
        try {
            JsonObject request = JsonParser.parseString(line).getAsJsonObject();
            if (!request.has("execute")) return error("GenericError", "a command is {\"execute\": NAME, \"arguments\": {...}}");
            command = request.get("execute").getAsString();
            JsonObject args = request.has("arguments") ? request.getAsJsonObject("arguments") : new JsonObject();
            return Map.of("return", execute(command, args, subscribe));
        } catch (JsonParseException | IllegalArgumentException | IllegalStateException | UnsupportedOperationException | ClassCastException e) {
            return error("GenericError", command + ": " + e.getMessage());
        } catch (RuntimeException e) {
            return error("GenericError", command + ": " + e);
        }
    }

    private Object execute(String command, JsonObject args, Runnable subscribe) {
        return switch (command) {
            case "query-status" -> {
                Map<String, Object> s = new LinkedHashMap<>();
                Machine.Status status = machine.status();
                s.put("status", status.label());
                s.put("running", status == Machine.Status.RUNNING);
                s.put("uuid", machine.identity() == null ? null : machine.identity().toString());
                s.put("listen", listening);
                s.put("devices-left-out", machine.devicesLeftOut());
                s.put("incoming-stream", machine.incomingStream());
                yield s;
            }
            case "query-migrate" -> MigrateJson.of(machine.migrationStats(), machine.guestRamBytes(), machine.migrationError());
            case "query-guest" -> machine.guestReport();
            case "migrate" -> {
                String uri = args.has("uri") ? args.get("uri").getAsString() : null;
                if (uri == null) throw new IllegalArgumentException("expected \"uri\": \"tcp:HOST:PORT\" or \"unix:PATH\"");
                machine.migrate(MigrationUri.parse(uri).address(), overrides(args));
                yield Map.of();
            }
            case "migrate-cancel" -> {
                machine.cancelMigration();
                yield Map.of();
            }
            case "migrate-resolve" -> {
                Boolean destinationRuns = null;
                if (args.has("destination")) {
                    destinationRuns = switch (args.get("destination").getAsString()) {
                        case "running" -> true;
                        case "stopped" -> false;
                        default -> throw new IllegalArgumentException("expected \"destination\": \"running\" or \"stopped\" (or no argument: ask it)");
                    };
                }
                java.net.SocketAddress askAt = null;
                if (args.has("uri")) {
                    askAt = MigrationUri.parse(args.get("uri").getAsString()).address();
                }
                try {
                    yield Map.of("status", machine.resolveMigration(destinationRuns, askAt));
                } catch (IOException e) {
                    throw new IllegalStateException(e.getMessage(), e);
                }
            }
            case "migrate-set-parameters" -> {
                Map<String, String> changes = new LinkedHashMap<>();
                for (var e : args.entrySet()) changes.put(e.getKey(), e.getValue().isJsonPrimitive() ? e.getValue().getAsString() : e.getValue().toString());
                if (changes.isEmpty()) throw new IllegalArgumentException("expected at least one of \"max-bandwidth\", \"downtime-limit\"");
                MigrationSettings now = machine.setMigrationParameters(changes);
                yield Map.of("max-bandwidth", now.maxBandwidth(), "downtime-limit", now.downtimeLimit().toMillis());
            }
            case "subscribe" -> {
                if (!args.keySet().isEmpty()) throw new IllegalArgumentException("takes no arguments, not " + args.keySet());
                subscribe.run();
                yield Map.of("events", List.of("MIGRATION", "MIGRATION_PASS", "MIGRATION_PROGRESS"));
            }
            case "quit" -> {
                for (String key : args.keySet()) if (!key.equals("force")) throw new IllegalArgumentException("unknown argument '" + key + "' (quit takes \"force\")");
                boolean force = args.has("force") && args.get("force").getAsBoolean();
                if (!force && machine.migrating()) {
                    throw new IllegalStateException("a migration is running (" + machine.migrationStats().status().label()
                            + "): migrate-cancel it first, or quit with \"force\": true to cut it off");
                }
                yield QUIT;
            }
            default -> throw new IllegalArgumentException("unknown command '" + command
                    + "' (known: query-status, query-migrate, query-guest, migrate, migrate-cancel, migrate-set-parameters, migrate-resolve,"
                    + " subscribe, quit)");
        };
    }

    /**
     * The process's migration settings with what the migrate command overrides (QEMU's migrate-set-parameters),
     * through the config file's own parsing and checks; an unknown argument is an error.
     */
    private MigrationSettings overrides(JsonObject args) {
        Map<String, String> given = new LinkedHashMap<>();
        for (var e : args.entrySet()) {
            if (e.getKey().equals("uri")) continue;
            given.put(e.getKey(), e.getValue().isJsonPrimitive() ? e.getValue().getAsString() : e.getValue().toString());
        }
        try {
            return org.vmmkit.migration.MigrationConfig.override(machine.migrationSettings(), given);
        } catch (org.vmmkit.core.config.ConfigException e) {
            throw new IllegalArgumentException("migrate: " + e.getMessage(), e);
        }
    }

    private static Map<String, Object> error(String kind, String desc) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("class", kind);
        e.put("desc", desc);
        return Map.of("error", e);
    }

    @Override
    public void close() {
        try (server) {
            file.deleteIfOwn(); // first: another process may have bound this path since (see SocketFile)
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "closing the control endpoint " + path + ": " + e.getMessage());
        }
    }
}
