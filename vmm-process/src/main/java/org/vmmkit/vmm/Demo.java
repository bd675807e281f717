package org.vmmkit.vmm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.Callable;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code vmm demo}: a source and a destination vmm process on loopback, a KVM guest dirtying memory and an
 * emulated migratable device doing DMA, migrated live through the source's control endpoint; then a
 * verification read back through both endpoints (memory digest at resume equals the source's at pause,
 * device state equal, the guest's counter continues) and the statistics. Exits non-zero if a check fails.
 */
@Command(name = "demo", mixinStandardHelpOptions = true, version = Main.VERSION, description = "Migrates a running VM between two vmm processes on loopback and verifies the result.")
public final class Demo implements Callable<Integer> {
    static final List<String> CONFIG = List.of(
            "# vmm demo: a 256 MiB guest rewriting 64 MiB at 50k pages/s, one emulated GPU doing DMA into 8 MiB of RAM",
            "vm.memory = 256M",
            "workload.start = 1M",
            "workload.size = 64M",
            "workload.pages-per-second = 50000",
            "device.gpu0.memory = 16M",
            "device.gpu0.ops-per-second = 2000",
            "device.gpu0.dma-address = 128M",
            "device.gpu0.dma-size = 8M");

    @Option(names = "--channels", paramLabel = "N", description = "Connections for the migration (migration.channels).")
    int channels = 1;

    @Option(names = {"-v", "--verbose"}, description = "Show both processes' phase lines.")
    boolean verbose;

    @Option(names = "--accelerator", paramLabel = "kvm|software|auto", description = "kvm, software (a Java thread as the guest, as on a host without /dev/kvm) or auto.")
    String acceleratorOption = "auto";

    @Option(names = "--keep", description = "Keep the working directory (config, logs, sockets) for a look afterwards.")
    boolean keep;

    @Option(names = "--device", paramLabel = "emulated|vfio-user|vfio-user-v2", description = "The migrating device: emulated (an in-process GPU doing DMA), "
            + "vfio-user (libvfio-user's sample device, migration v1, a server per process, built from ../shared/peers beside the project or given by --vfio-user-server) "
            + "or vfio-user-v2 (the same device from libvfio-user's migration v2 era, without pre-copy).")
    String device = "emulated";

    @Option(names = "--vfio-user-server", paramLabel = "PATH", description = "With --device vfio-user or vfio-user-v2: libvfio-user's sample server of that era to run (default: build it from the peer tree).")
    Path vfioUserServer;

    /** With {@code --device vfio-user-v2}: the v2 sample's destination takes only the stop-copy stream. */
    static final String V2_SAMPLE_LINE = "device.sample0.pre-copy = false";

    /** The vfio-user variant: the sample device instead of the GPU; the socket line is each process's own. */
    static final List<String> VFIO_USER_CONFIG = List.of(
            "# vmm demo --device vfio-user: a 256 MiB guest rewriting 64 MiB at 50k pages/s, libvfio-user's sample device",
            "# (BAR1 rewritten 200 times a second) served by its own vfio-user server in each process",
            "vm.memory = 256M",
            "workload.start = 1M",
            "workload.size = 64M",
            "workload.pages-per-second = 50000",
            "device.sample0.type = vfio-user",
            "device.sample0.driver = libvfio-user-sample",
            "device.sample0.ops-per-second = 200");

    @Override
    public Integer call() throws Exception {
        String kvmProblem = switch (acceleratorOption) {
            case "auto", "kvm" -> org.vmmkit.core.kvm.Kvm.unavailableReason();
            case "software" -> "--accelerator software";
            default -> throw new IllegalArgumentException("--accelerator: expected auto, kvm or software");
        };
        if (kvmProblem != null && acceleratorOption.equals("kvm")) throw new IOException("KVM is unusable: " + kvmProblem);
        String accelerator = kvmProblem == null ? "kvm" : "software";
        if (kvmProblem != null) {
            System.out.println("vmm demo: KVM is unusable here (" + kvmProblem + "): the guest is a SOFTWARE guest, a Java thread"
                    + " rewriting the same pages, with no vCPUs; everything else (devices, dirty tracking, the stream) is the same");
        }
        String era = switch (device) {
            case "emulated" -> null;
            case "vfio-user" -> "v1";
            case "vfio-user-v2" -> "v2";
            default -> throw new IllegalArgumentException("--device: expected emulated, vfio-user or vfio-user-v2");
        };
        boolean vfioUser = era != null, v2 = "v2".equals(era);
        Path server = vfioUser ? SampleServers.server(vfioUserServer, era) : null;
        Path dir = Files.createTempDirectory("vmm-demo");
        Path config = dir.resolve("demo.conf"), destinationConfig = config;
        List<String> lines = new ArrayList<>(vfioUser ? VFIO_USER_CONFIG : CONFIG);
        lines.add("vm.accelerator = " + accelerator);
        if (v2) lines.add(V2_SAMPLE_LINE);
        SampleServers samples = null;
        if (vfioUser) {
            samples = SampleServers.start(server, dir);
            System.out.println("vmm demo: libvfio-user " + era + " sample servers " + samples.describe());
            destinationConfig = dir.resolve("destination.conf");
            List<String> dst = new ArrayList<>(lines);
            dst.add("device.sample0.socket = " + samples.b());
            Files.write(destinationConfig, dst);
            lines.add("device.sample0.socket = " + samples.a());
        }
        Files.write(config, lines);
        Path sourceControl = dir.resolve("source.sock"), destinationControl = dir.resolve("destination.sock");
        System.out.println("vmm demo: source and destination processes on loopback, " + (kvmProblem == null ? "a KVM guest"
                : "a SOFTWARE guest") + (vfioUser ? " and libvfio-user's " + era + " sample device over vfio-user" : "") + " (work directory " + dir + ")");
        List<Child> children = new ArrayList<>();
        try {
            Child destination = Child.start("destination", dir, verbose, "incoming", "--config", destinationConfig.toString(), "--listen",
                    "127.0.0.1:0", "--control", destinationControl.toString(), "--record-digest");
            children.add(destination);
            Child source = Child.start("source", dir, verbose, "run", "--config", config.toString(), "--control", sourceControl.toString());
            children.add(source);
            String listen;
            try (ControlClient d = ControlClient.await(destinationControl, Duration.ofSeconds(30), destination.process.toHandle());
                 ControlClient s = ControlClient.await(sourceControl, Duration.ofSeconds(30), source.process.toHandle())) {
                listen = d.query("query-status").get("listen").getAsString();
                long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
                while (s.query("query-guest").get("passes").getAsLong() < 2) {
                    if (System.nanoTime() > deadline) throw new IOException("the source guest did not complete 2 passes in 30 s");
                    Thread.sleep(20);
                }
            }
            System.out.println("vmm demo: guest running in the source; migrating to " + listen + " over " + channels + " channel(s)");
            Map<String, Object> args = new LinkedHashMap<>();
            args.put("uri", "tcp:" + listen);
            args.put("channels", channels);
            JsonObject stats = Main.watch(sourceControl, args, Progress.onTerminal());

            List<String[]> checks = new ArrayList<>();
            JsonObject src, dst;
            try (ControlClient s = ControlClient.connect(sourceControl); ControlClient d = ControlClient.connect(destinationControl)) {
                src = s.query("query-guest");
                dst = d.query("query-guest");
                boolean completed = stats.get("status").getAsString().equals("completed");
                checks.add(check(completed, "migration completed", stats.get("status").getAsString()
                        + (stats.get("error-desc").isJsonNull() ? "" : ": " + stats.get("error-desc").getAsString())));
                String atPause = text(src.get("memory-digest")), atResume = text(dst.get("incoming-memory-digest"));
                checks.add(check(atPause != null && atPause.equals(atResume), "memory digest equal",
                        "SHA-256 of all " + Progress.bytes(256L << 20) + " at the destination's resume " + shorten(atResume)
                                + ", the source's at pause " + shorten(atPause)));
                var srcDevices = src.getAsJsonArray("devices");
                var dstDevices = dst.getAsJsonArray("devices");
                for (int i = 0; i < srcDevices.size(); i++) {
                    JsonObject a = srcDevices.get(i).getAsJsonObject(), b = dstDevices.get(i).getAsJsonObject();
                    String stopped = text(a.get("state-digest")), resumed = text(b.get("incoming-state-digest"));
                    checks.add(check(stopped != null && stopped.equals(resumed), "device " + a.get("name").getAsString() + " state equal",
                            "at resume " + shorten(resumed) + ", at the source's stop " + shorten(stopped) + ", "
                                    + a.get("dma-writes").getAsLong() + " DMA writes on the source"));
                    checks.add(check(a.getAsJsonArray("misuse").isEmpty() && b.getAsJsonArray("misuse").isEmpty(),
                            "device " + a.get("name").getAsString() + " protocol followed", "misuse: source " + a.get("misuse") + ", destination "
                                    + b.get("misuse")));
                    if (a.has("bar1-last-written")) { // a vfio-user sample device
                        String last = text(a.get("bar1-last-written"));
                        checks.add(check(last != null && last.equals(resumed), "device " + a.get("name").getAsString() + " BAR1 moved",
                                "BAR1 at the destination's resume " + shorten(resumed) + " = the last BAR1 written on the source before its stop "
                                        + shorten(last) + " (" + a.get("bar1-writes").getAsLong() + " writes)"));
                        // v1 through pre-copy; v2 (no pre-copy) RUNNING -> STOP -> STOP_COPY -> STOP, and STOP -> RESUMING -> STOP -> RUNNING
                        String srcStates = v2 ? "[\"running\",\"stopped\",\"stop-and-copy\",\"stopped\"]" : "[\"running\",\"pre-copy\",\"stop-and-copy\",\"stopped\"]";
                        String dstStates = v2 ? "[\"running\",\"stopped\",\"resuming\",\"stopped\",\"running\"]" : "[\"running\",\"resuming\",\"running\"]";
                        checks.add(check(a.get("states").toString().equals(srcStates) && b.get("states").toString().equals(dstStates),
                                "device " + a.get("name").getAsString() + " states", "source " + a.get("states") + ", destination " + b.get("states")));
                    }
                }
                long passesAtPause = src.get("passes").getAsLong();
                long incoming = dst.get("incoming-passes").isJsonNull() ? -1 : dst.get("incoming-passes").getAsLong();
                long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
                long now = d.query("query-guest").get("passes").getAsLong();
                while (completed && now < incoming + 2 && System.nanoTime() < deadline) {
                    Thread.sleep(20);
                    now = d.query("query-guest").get("passes").getAsLong();
                }
                checks.add(check(completed && incoming == passesAtPause && now >= incoming + 2, "guest counter continued",
                        "source paused at pass " + passesAtPause + ", destination loaded pass " + incoming + " and is at pass " + now));
            }
            System.out.println();
            System.out.println("verification:");
            boolean ok = true;
            for (String[] c : checks) {
                System.out.println("  " + c[0] + "  " + c[1] + ": " + c[2]);
                ok &= c[0].equals("PASS");
            }
            System.out.println();
            System.out.println(Progress.summary(stats));
            JsonElement resident = stats.getAsJsonObject("ram").get("destination-resident");
            if (resident != null && !resident.isJsonNull()) {
                long guest = stats.getAsJsonObject("ram").get("total").getAsLong();
                System.out.printf("  destination resident memory: %s of the guest's %s (%.0f %%; zero pages cost it nothing)%n",
                        Progress.bytes(resident.getAsLong()), Progress.bytes(guest), 100.0 * resident.getAsLong() / guest);
            }
            if (!dst.get("incoming-digest-time").isJsonNull()) {
                System.out.println("  (the downtime includes " + dst.get("incoming-digest-time").getAsLong()
                        + " ms in which the destination hashed guest memory for this verification)");
            }
            System.out.println();
            System.out.println(ok ? "vmm demo: PASSED" : "vmm demo: FAILED (logs in " + dir + ")");
            if (!ok) keep = true;
            return ok ? 0 : Main.FAILED;
        } catch (IOException | RuntimeException e) {
            System.err.println("vmm demo: " + e.getMessage());
            for (Child c : children) c.printLogTail();
            keep = true;
            return Main.FAILED;
        } finally {
            for (Child c : children) c.stop(dir.resolve(c.name.equals("source") ? "source.sock" : "destination.sock"));
            if (samples != null) samples.close();
            if (!keep) {
                try (var files = Files.list(dir)) {
                    for (Path p : files.toList()) Files.deleteIfExists(p);
                }
                Files.deleteIfExists(dir);
            }
        }
    }

    private static String[] check(boolean ok, String what, String detail) {
        return new String[] {ok ? "PASS" : "FAIL", what, detail};
    }

    private static String text(JsonElement e) {
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }

    private static String shorten(String digest) {
        return digest == null ? "(none)" : digest.substring(0, 16) + "…";
    }

    /** A vmm child process: this JVM's java and class path, its output in a log file. */
    static final class Child {
        final String name;
        final Process process;
        final Path log;

        private Child(String name, Process process, Path log) {
            this.name = name;
            this.process = process;
            this.log = log;
        }

        static Child start(String name, Path dir, boolean verbose, String... args) throws IOException {
            List<String> command = new ArrayList<>(javaCommand());
            command.add(Main.class.getName());
            command.addAll(List.of(args));
            if (verbose) command.add("--verbose");
            Path log = dir.resolve(name + ".log");
            ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
            if (verbose) pb.redirectOutput(ProcessBuilder.Redirect.INHERIT);
            else pb.redirectOutput(log.toFile());
            return new Child(name, pb.start(), log);
        }

        /** The command that starts a JVM like this one: its java, its class path, native access for FFM. */
        static List<String> javaCommand() {
            String java = ProcessHandle.current().info().command()
                    .orElse(Path.of(System.getProperty("java.home"), "bin", "java").toString());
            return List.of(java, "--enable-native-access=ALL-UNNAMED", "-cp", Objects.requireNonNull(System.getProperty("java.class.path")));
        }

        void printLogTail() {
            try {
                if (!Files.exists(log)) return;
                List<String> lines = Files.readAllLines(log);
                System.err.println("--- " + name + " (" + log + ") ---");
                for (String l : lines.subList(Math.max(0, lines.size() - 20), lines.size())) System.err.println(l);
            } catch (IOException e) {
                System.err.println("--- " + name + ": " + e.getMessage());
            }
        }

        void stop(Path control) {
            if (process.isAlive()) {
                try (ControlClient c = ControlClient.connect(control)) {
                    c.execute("quit", java.util.Map.of("force", true)); // a teardown: whatever runs is cut off
                } catch (IOException e) {
                    // it may be gone or stuck; the waits below decide
                }
            }
            try {
                if (!process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) {
                    process.destroyForcibly();
                    process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                process.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
    }
}
