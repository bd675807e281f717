package org.vmmkit.vmm;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.CountDownLatch;

import com.google.gson.JsonObject;
import org.vmmkit.core.config.ConfigException;
import org.vmmkit.migration.MigrationStatus;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** The {@code vmm} command line: run, incoming, migrate, migrate-set-parameters, demo. */
@Command(name = "vmm", mixinStandardHelpOptions = true, version = Main.VERSION,
        description = "A Java VMM with live migration of guest memory, vCPU state and VFIO device state.",
        subcommands = {Main.Run.class, Main.Incoming.class, Main.Migrate.class, Main.MigrateSetParameters.class, Demo.class,
                CommandLine.HelpCommand.class})
public final class Main {
    /**
     * Exit codes beyond 0 (success): 1 a failed check or migration, or a command the VM refused; 2 a usage or
     * config error (picocli's); 3 an environment problem (an endpoint that cannot be reached, a control endpoint
     * another process serves, a --listen address that cannot be bound, no KVM). A signal ends the JVM with 128 + its
     * number instead (see {@link CancelOnShutdown}).
     */
    static final int FAILED = 1, USAGE = 2, ENVIRONMENT = 3;
    /** The handover's outcome is unknown: the source VM stays paused, since it may run at the destination (migrate-resolve). */
    static final int OUTCOME_UNKNOWN = 4;

    /** What {@code -V} prints, for vmm and each subcommand (each takes picocli's standard -h and -V). */
    static final String VERSION = "vmm 0.1.0";

    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs the command line and returns the exit code (tests call this). */
    public static int run(String... args) {
        CommandLine cli = new CommandLine(new Main());
        cli.setExecutionExceptionHandler((e, command, parsed) -> {
            if (e instanceof ConfigException || e instanceof IllegalArgumentException) {
                command.getErr().println("vmm: " + e.getMessage());
                return USAGE;
            }
            command.getErr().println("vmm: " + (e.getMessage() == null ? e.toString() : e.getMessage()));
            return e instanceof IOException && !(e instanceof ControlClient.ControlException) ? ENVIRONMENT : FAILED;
        });
        return cli.execute(args);
    }

    static Path defaultControl(String name) {
        return Path.of(System.getProperty("java.io.tmpdir"), name);
    }

    /** Options every VM-starting command shares. */
    static class VmOptions {
        @Option(names = "--config", paramLabel = "FILE", description = "Config file (key = value lines; README lists the keys). Default: every key at its default.")
        Path config;

        @Option(names = "--set", paramLabel = "KEY=VALUE", description = "Overrides one config key; repeatable.")
        List<String> overrides = new ArrayList<>();

        @Option(names = {"-v", "--verbose"}, description = "A log line per phase on stderr.")
        boolean verbose;

        VmmSettings settings() {
            return VmmSettings.load(config, overrides);
        }
    }

    @Command(name = "run", mixinStandardHelpOptions = true, version = Main.VERSION, description = "Starts a VM (a KVM guest running the built-in workload, with the configured devices) and serves its control endpoint.")
    static final class Run implements Callable<Integer> {
        @CommandLine.Mixin VmOptions vm;

        @Option(names = "--control", paramLabel = "SOCKET", description = "Control endpoint (Unix socket). Default: ${java.io.tmpdir}/vmm.sock.")
        Path control = defaultControl("vmm.sock");

        @Override
        public Integer call() throws Exception {
            Logs.configure(vm.verbose, "run");
            org.vmmkit.migration.Rehearsal.inBackground(); // a cold JVM's first migration costs, paid now (see Rehearsal)
            VmmSettings settings = vm.settings();
            CountDownLatch quit = new CountDownLatch(1);
            try (Machine machine = Machine.source(settings); ControlServer server = new ControlServer(control, machine, quit::countDown)) {
                System.out.println("vmm: " + (machine.accelerator().equals("kvm") ? "KVM guest" : "SOFTWARE guest (a Java thread; no /dev/kvm)")
                        + " running; control endpoint " + control);
                for (String leftOut : machine.devicesLeftOut()) System.out.println("vmm: device " + leftOut);
                Runtime.getRuntime().addShutdownHook(new Thread(quit::countDown));
                quit.await();
            }
            return 0;
        }
    }

    @Command(name = "incoming", mixinStandardHelpOptions = true, version = Main.VERSION, description = "Starts a destination VM of the same shape that waits for a migration stream, then runs it.")
    static final class Incoming implements Callable<Integer> {
        @CommandLine.Mixin VmOptions vm;

        @Option(names = "--listen", paramLabel = "URI", required = true, description = "Where to accept the stream: tcp:HOST:PORT, HOST:PORT"
                + " (port 0: any free port, shown by query-status; IPv6 in brackets: [::1]:4444) or unix:PATH (a local live upgrade: a source on this"
                + " host hands its guest memory over instead of copying it).")
        String listen;

        @Option(names = "--control", paramLabel = "SOCKET", description = "Control endpoint (Unix socket). Default: ${java.io.tmpdir}/vmm-incoming.sock.")
        Path control = defaultControl("vmm-incoming.sock");

        @Option(names = "--record-digest", description = "Take a SHA-256 of guest memory when the stream is loaded, before the guest runs"
                + " (query-guest shows it; it lengthens the downtime by the time it takes, which query-guest also shows).")
        boolean recordDigest;

        @Override
        public Integer call() throws Exception {
            Logs.configure(vm.verbose, "incoming");
            org.vmmkit.migration.Rehearsal.inBackground(); // a cold JVM's first migration costs, paid now (see Rehearsal)
            MigrationUri at = MigrationUri.parse(listen);
            VmmSettings settings = vm.settings();
            CountDownLatch quit = new CountDownLatch(1);
            try (Machine machine = Machine.destination(settings, recordDigest); ControlServer server = new ControlServer(control, machine, quit::countDown);
                 Listening socket = listen(at)) {
                server.listening(socket.where());
                System.out.println("vmm: waiting for a migration on " + socket.where() + "; control endpoint " + control);
                Runtime.getRuntime().addShutdownHook(new Thread(quit::countDown));
                Thread receiver = Thread.ofPlatform().name("incoming").daemon().start(() -> {
                    try {
                        machine.receive(socket.channel());
                        System.out.println("vmm: migration received; guest running");
                        // One VM, one incoming migration: the socket stays open only to answer outcome queries
                        // (a source whose acknowledgement was lost asks whether the VM runs here) and refuses streams.
                        machine.serveOutcomeQueries(socket.channel());
                    } catch (IOException e) {
                        System.err.println("vmm: " + e.getMessage());
                    }
                });
                quit.await();
                receiver.interrupt();
            }
            return 0;
        }

        /** The listening socket and where it listens (the port bound, for port 0); a Unix socket's file is deleted on close. */
        record Listening(ServerSocketChannel channel, String where, SocketFile file) implements AutoCloseable {
            @Override
            public void close() throws IOException {
                try (channel) {
                    if (file != null) file.deleteIfOwn(); // first: another process may have bound this path since (see SocketFile)
                }
            }
        }

        /** A socket bound to {@code at}; an IOException naming the address and the reason if it cannot be. */
        private static Listening listen(MigrationUri at) throws IOException {
            java.net.SocketAddress address;
            try {
                address = at.address();
                if (at instanceof MigrationUri.Unix unix) SocketFile.makeRoom(unix.path(), "listen socket");
            } catch (IllegalArgumentException | IOException e) {
                throw new IOException("cannot listen on " + at + ": " + e.getMessage(), e);
            }
            ServerSocketChannel socket = at instanceof MigrationUri.Unix ? ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX)
                    : ServerSocketChannel.open();
            try {
                socket.bind(address);
                if (at instanceof MigrationUri.Unix unix) return new Listening(socket, at.toString(), SocketFile.bound(unix.path()));
                MigrationUri.Tcp tcp = (MigrationUri.Tcp) at;
                return new Listening(socket, new MigrationUri.Tcp(tcp.host(), ((InetSocketAddress) socket.getLocalAddress()).getPort()).toString(), null);
            } catch (IOException e) {
                socket.close();
                throw new IOException("cannot listen on " + at + ": " + e.getMessage(), e);
            }
        }
    }

    @Command(name = "migrate", mixinStandardHelpOptions = true, version = Main.VERSION, description = "Migrates the VM behind a control endpoint to a destination, showing progress; Ctrl-C cancels.")
    static final class Migrate implements Callable<Integer> {
        @Option(names = "--to", paramLabel = "URI", required = true, description = "The destination's --listen address: tcp:HOST:PORT, HOST:PORT"
                + " (IPv6 in brackets: [::1]:4444) or unix:PATH (a destination on this host: the guest memory is handed over, not copied).")
        String to;

        @Option(names = "--control", paramLabel = "SOCKET", description = "The source VM's control endpoint. Default: ${java.io.tmpdir}/vmm.sock.")
        Path control = defaultControl("vmm.sock");

        @Option(names = "--json", description = "Print the final statistics as JSON (fields in README).")
        boolean json;

        @Option(names = "--channels", paramLabel = "N", description = "Override migration.channels for this migration.")
        Integer channels;

        @Option(names = "--max-bandwidth", paramLabel = "SIZE", description = "Override migration.max-bandwidth (bytes per second, e.g. 100M).")
        String maxBandwidth;

        @Option(names = "--downtime-limit", paramLabel = "DURATION", description = "Override migration.downtime-limit (e.g. 300ms).")
        String downtimeLimit;

        @Option(names = "--convergence", paramLabel = "POLICY",
                description = "Override migration.convergence: throttle, cancel or force (force breaks the downtime limit; only when you mean it).")
        String convergence;

        @Override
        public Integer call() throws Exception {
            MigrationUri destination = MigrationUri.parse(to);
            Map<String, Object> args = new LinkedHashMap<>();
            args.put("uri", destination.uri());
            if (channels != null) args.put("channels", channels);
            if (maxBandwidth != null) args.put("max-bandwidth", maxBandwidth);
            if (downtimeLimit != null) args.put("downtime-limit", downtimeLimit);
            if (convergence != null) args.put("convergence", convergence);
            JsonObject last;
            try {
                last = watch(control, args, Progress.onTerminal());
            } catch (IOException e) { // unreachable endpoint or refused command: the handler prints it and picks the exit code
                if (json) System.out.println(ControlServer.GSON.toJson(MigrateJson.notFollowed(e.getMessage())));
                throw e;
            }
            if (json) System.out.println(ControlServer.GSON.toJson(last));
            else System.out.println(Progress.summary(last));
            return switch (MigrationStatus.of(last.get("status").getAsString())) {
                case COMPLETED -> 0;
                case UNKNOWN -> OUTCOME_UNKNOWN;
                default -> FAILED;
            };
        }
    }

    /**
     * Starts a migration through the control endpoint at {@code control} and follows it by the endpoint's
     * events (subscribed before the migrate command, so none is missed; nothing is polled), with a progress line
     * on stderr, until its MIGRATION event says it ended; Ctrl-C or SIGTERM cancels it ({@link CancelOnShutdown}).
     * Returns the final query-migrate answer.
     */
    static JsonObject watch(Path control, Map<String, Object> migrateArgs, boolean progress) throws IOException, InterruptedException {
        try (ControlClient client = ControlClient.connect(control); CancelOnShutdown cancel = CancelOnShutdown.install(control)) {
            client.subscribe();
            cancel.start(() -> client.execute("migrate", migrateArgs));
            Progress bar = new Progress(System.err, progress);
            while (true) {
                JsonObject event = client.nextEvent();
                bar.event(event);
                if (event.get("event").getAsString().equals("MIGRATION")
                        && MigrationStatus.of(event.getAsJsonObject("data").get("status").getAsString()).ended()) {
                    JsonObject stats = client.query("query-migrate");
                    bar.finish(stats);
                    return stats;
                }
            }
        }
    }

    @Command(name = "migrate-set-parameters", mixinStandardHelpOptions = true, version = Main.VERSION,
            description = "Changes the bandwidth cap or the downtime limit of the VM behind a control endpoint: of the migration running now"
                    + " (the cap from its next frame, the limit from its next round) and of the ones to come. Prints the parameters in force.")
    static final class MigrateSetParameters implements Callable<Integer> {
        @Option(names = "--control", paramLabel = "SOCKET", description = "The VM's control endpoint. Default: ${java.io.tmpdir}/vmm.sock.")
        Path control = defaultControl("vmm.sock");

        @Option(names = "--max-bandwidth", paramLabel = "SIZE", description = "migration.max-bandwidth: bytes per second, e.g. 100M; 0 is unlimited.")
        String maxBandwidth;

        @Option(names = "--downtime-limit", paramLabel = "DURATION", description = "migration.downtime-limit, e.g. 300ms.")
        String downtimeLimit;

        @Override
        public Integer call() throws Exception {
            Map<String, Object> args = new LinkedHashMap<>();
            if (maxBandwidth != null) args.put("max-bandwidth", maxBandwidth);
            if (downtimeLimit != null) args.put("downtime-limit", downtimeLimit);
            if (args.isEmpty()) throw new IllegalArgumentException("migrate-set-parameters: give --max-bandwidth, --downtime-limit or both");
            try (ControlClient client = ControlClient.connect(control)) {
                JsonObject now = client.execute("migrate-set-parameters", args).getAsJsonObject();
                System.out.println("max-bandwidth " + now.get("max-bandwidth").getAsLong() + " B/s, downtime-limit "
                        + now.get("downtime-limit").getAsLong() + " ms");
            }
            return 0;
        }
    }
}
