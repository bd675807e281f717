package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;

/**
 * libvfio-user, the third-party peer our vfio-user client is tested against (BSD-3-Clause, kept beside the
 * project in {@code ../shared/peers}, see the README there): where its source tree is, building its sample
 * server once per JVM with the peers' {@code build-libvfio-user} script, and running sample servers.
 *
 * <p>Without the peer (no tree, no gcc/meson, packages that cannot be installed) tests skip with one loud
 * line naming why, unless {@code CI} is set or {@code VMMKIT_REQUIRE_VFIO_USER=1}: then they fail.
 */
public final class VfioUserPeer {
    private VfioUserPeer() {}

    public static final String REQUIRE_ENV = "VMMKIT_REQUIRE_VFIO_USER";
    /** The v1 tree (migration region protocol). */
    public static final String V1_TREE = "libvfio-user-v1-1569a37";

    /** The v2 tree (DEVICE_FEATURE, MIG_DATA_READ/WRITE). */
    public static final String V2_TREE = "libvfio-user-v2-7e7a0a6";

    /** A peer tree's migration era: which sample server is built and run. */
    public enum Era {
        V1("v1"), V2("v2");

        final String arg;

        Era(String arg) {
            this.arg = arg;
        }
    }

    private static final Path ROOT = repoRoot();
    private static final java.util.Map<Era, String> buildFailure = new java.util.EnumMap<>(Era.class);
    private static final java.util.Map<Era, Path> server = new java.util.EnumMap<>(Era.class);

    /** Whether a missing peer must fail the test instead of skipping it: {@code CI} set (other than false or 0), or {@code VMMKIT_REQUIRE_VFIO_USER=1}. */
    public static boolean required() {
        String ci = System.getenv("CI");
        return (ci != null && !ci.isEmpty() && !ci.equalsIgnoreCase("false") && !ci.equals("0")) || "1".equals(System.getenv(REQUIRE_ENV));
    }

    /** The project root: the nearest ancestor of the working directory (a module) with the parent pom. */
    public static Path repoRoot() {
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isRegularFile(p.resolve("pom.xml")) && Files.isDirectory(p.resolve("vmm-core"))) return p;
        }
        return Path.of("").toAbsolutePath();
    }

    /** {@code ../shared/peers} from the project root, or {@code VMMKIT_PEERS_DIR}. */
    public static Path peersDir() {
        String env = System.getenv("VMMKIT_PEERS_DIR");
        return env != null ? Path.of(env) : ROOT.resolveSibling("shared").resolve("peers").normalize();
    }

    /** The v1 source tree, for its headers; null if absent. */
    public static Path v1Tree() {
        Path t = peersDir().resolve(V1_TREE);
        return Files.isRegularFile(t.resolve("include/vfio-user.h")) ? t : null;
    }

    /** The v2 source tree, for its headers; null if absent. */
    public static Path v2Tree() {
        Path t = peersDir().resolve(V2_TREE);
        return Files.isRegularFile(t.resolve("include/vfio-user.h")) ? t : null;
    }

    /** Skips (loudly) or fails, as {@link #required()} says, when {@code reason} is not null. */
    public static void assumeAvailable(String what, String reason) {
        if (reason == null) return;
        if (required()) {
            throw new IllegalStateException((System.getenv("CI") != null ? "CI is set" : REQUIRE_ENV + "=1")
                    + " but the libvfio-user peer is unusable: " + reason);
        }
        System.err.println("!!! SKIPPED (needs the libvfio-user peer): " + what + ": " + reason);
        Assumptions.abort("needs the libvfio-user peer: " + reason);
    }

    /** Builds the v1 sample server (once per JVM); null if it is usable, else why not. */
    public static String unavailableReason() {
        return unavailableReason(Era.V1);
    }

    /** Builds the sample server of {@code era} (once per JVM); null if it is usable, else why not. */
    public static synchronized String unavailableReason(Era era) {
        if (!server.containsKey(era) && !buildFailure.containsKey(era)) build(era);
        return buildFailure.get(era);
    }

    /** The v1 sample server executable; {@link #unavailableReason()} must be null. */
    public static Path server() {
        return server(Era.V1);
    }

    /** The sample server executable of {@code era}; {@link #unavailableReason(Era)} must be null. */
    public static synchronized Path server(Era era) {
        if (unavailableReason(era) != null) throw new IllegalStateException(buildFailure.get(era));
        return server.get(era);
    }

    private static void build(Era era) {
        Path script = peersDir().resolve("build-libvfio-user");
        if (!Files.isExecutable(script)) {
            buildFailure.put(era, "no peer build script at " + script);
            return;
        }
        Path out = ROOT.resolve("target").resolve("libvfio-user-" + era.arg);
        Path log = ROOT.resolve("target").resolve("libvfio-user-" + era.arg + ".build.log");
        try {
            Files.createDirectories(out.getParent());
            Process p = new ProcessBuilder(script.toString(), era.arg, out.toString()).redirectError(log.toFile()).start();
            String stdout = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(10, TimeUnit.MINUTES)) {
                p.destroyForcibly();
                buildFailure.put(era, script + " " + era.arg + " " + out + " did not finish within 10 minutes (log: " + log + ")");
                return;
            }
            List<String> lines = stdout.lines().toList();
            if (p.exitValue() != 0 || lines.isEmpty() || !Files.isExecutable(Path.of(lines.get(0)))) {
                buildFailure.put(era, script + " " + era.arg + " " + out + " failed (exit " + p.exitValue() + "): " + tail(log, 3).replace('\n', ' ')
                        + " (log: " + log + ")");
                return;
            }
            server.put(era, Path.of(lines.get(0)));
        } catch (IOException | InterruptedException e) {
            buildFailure.put(era, "could not run " + script + " " + era.arg + ": " + e);
        }
    }

    /** The last {@code n} lines of a file, for failure messages. */
    public static String tail(Path file, int n) {
        try {
            List<String> all = Files.readAllLines(file, StandardCharsets.ISO_8859_1);
            return String.join("\n", all.subList(Math.max(0, all.size() - n), all.size()));
        } catch (IOException e) {
            return "(no log: " + e.getMessage() + ")";
        }
    }

    /**
     * One sample server process ({@code server -v SOCK}) serving one client; its stdout and stderr go to a log
     * file that failure messages quote.
     */
    public static final class SampleServer implements AutoCloseable {
        private static final Duration START = Duration.ofSeconds(10);
        private final String name;
        private final Path socket, log;
        private final Process process;

        private SampleServer(String name, Path socket, Path log, Process process) {
            this.name = name;
            this.socket = socket;
            this.log = log;
            this.process = process;
        }

        /** Starts a v1 server on {@code socketDir/name.sock} and waits (polling, with a deadline) until its socket exists. */
        public static SampleServer start(Path socketDir, Path logDir, String name) throws IOException {
            return start(socketDir, logDir, name, Era.V1);
        }

        /** Starts a server of {@code era} on {@code socketDir/name.sock} and waits (polling, with a deadline) until its socket exists. */
        public static SampleServer start(Path socketDir, Path logDir, String name, Era era) throws IOException {
            Path socket = socketDir.resolve(name + ".sock");
            Path log = logDir.resolve(name + ".log");
            Files.createDirectories(logDir);
            Files.deleteIfExists(socket);
            Process p = new ProcessBuilder(server(era).toString(), "-v", socket.toString())
                    .redirectErrorStream(true).redirectOutput(log.toFile()).start();
            SampleServer s = new SampleServer(name, socket, log, p);
            long deadline = System.nanoTime() + START.toNanos();
            while (!Files.exists(socket)) {
                if (!p.isAlive()) throw new IllegalStateException(s + " exited with " + p.exitValue() + " before creating its socket:\n" + s.logTail());
                if (System.nanoTime() - deadline > 0) {
                    s.close();
                    throw new IllegalStateException(s + " did not create its socket within " + START.toSeconds() + " s:\n" + s.logTail());
                }
                sleepBriefly();
            }
            return s;
        }

        /** Connects a client; retries while the socket exists but is not yet listening (bind before listen). */
        public VfioUserDevice connect(VfioUserDevice.Options options) {
            long deadline = System.nanoTime() + START.toNanos();
            while (true) {
                try {
                    return VfioUserDevice.connect(socket, name, options);
                } catch (SysException e) {
                    if (e.errno() != Errno.ECONNREFUSED || System.nanoTime() - deadline > 0 || !process.isAlive()) {
                        throw new IllegalStateException("connecting to " + this + " failed: " + e.getMessage() + "\n" + logTail(), e);
                    }
                    sleepBriefly();
                }
            }
        }

        public VfioUserDevice connect() {
            return connect(VfioUserDevice.Options.DEFAULT);
        }

        private static void sleepBriefly() {
            try {
                Thread.sleep(2);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted", e);
            }
        }

        public Path socket() {
            return socket;
        }

        public Path log() {
            return log;
        }

        public Process process() {
            return process;
        }

        /** SIGKILL, and wait for the process to be gone. */
        public void kill() throws InterruptedException {
            process.destroyForcibly();
            process.waitFor();
        }

        /** Waits for the server to exit on its own (it does when its client disconnects); its exit status, or -1 if it did not. */
        public int awaitExit(Duration timeout) throws InterruptedException {
            return process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS) ? process.exitValue() : -1;
        }

        public String logTail() {
            return "--- " + log + " (last 25 lines) ---\n" + tail(log, 25);
        }

        @Override
        public void close() {
            if (process.isAlive()) {
                process.destroyForcibly();
                try {
                    process.waitFor(10, TimeUnit.SECONDS);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            }
            try {
                Files.deleteIfExists(socket);
            } catch (IOException ignored) {
                // a stale socket in a temporary directory
            }
        }

        @Override
        public String toString() {
            return "sample server " + name + " (pid " + process.pid() + ", " + socket + ")";
        }
    }

    /**
     * The sample servers of one test, as a JUnit extension ({@code @RegisterExtension}): sockets in a short
     * temporary directory (UNIX socket paths are limited to 108 bytes), logs in
     * {@code target/vfio-user-logs/<test method>/}; when the test fails, every server's log tail is printed;
     * after it, every server still running is killed.
     */
    public static final class Servers implements BeforeEachCallback, AfterEachCallback {
        private final List<SampleServer> started = new ArrayList<>();
        private Path socketDir, logDir;

        @Override
        public void beforeEach(ExtensionContext context) throws IOException {
            socketDir = Files.createTempDirectory("vmmkit-vu");
            logDir = Path.of("target", "vfio-user-logs", context.getRequiredTestMethod().getName());
        }

        public SampleServer start(String name) throws IOException {
            return start(name, Era.V1);
        }

        /** Starts a sample server of {@code era} for this test. */
        public SampleServer start(String name, Era era) throws IOException {
            SampleServer s = SampleServer.start(socketDir, logDir, name, era);
            started.add(s);
            return s;
        }

        public String logs() {
            StringBuilder b = new StringBuilder();
            for (SampleServer s : started) b.append(s).append('\n').append(s.logTail()).append('\n');
            return b.toString();
        }

        @Override
        public void afterEach(ExtensionContext context) throws IOException {
            if (context.getExecutionException().isPresent()) System.err.println(context.getDisplayName() + " failed; the servers' logs:\n" + logs());
            for (SampleServer s : started) s.close();
            started.clear();
            Files.deleteIfExists(socketDir);
        }
    }
}
