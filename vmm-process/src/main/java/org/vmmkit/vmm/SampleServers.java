package org.vmmkit.vmm;

import java.io.IOException;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * For {@code vmm demo --device vfio-user} (and {@code vfio-user-v2}): libvfio-user's v1 (or v2) sample server
 * (third-party, kept beside the project in {@code ../shared/peers} only to test and show interoperability), built
 * with the peers' {@code build-libvfio-user} script into the project's {@code target/libvfio-user-v1} (or
 * {@code -v2}; a no-op once built), and
 * two of its processes, one per vmm process; each serves one client and exits when that client goes.
 */
final class SampleServers implements AutoCloseable {
    private final Process a, b;
    private final Path socketA, socketB;

    private SampleServers(Process a, Path socketA, Process b, Path socketB) {
        this.a = a;
        this.socketA = socketA;
        this.b = b;
        this.socketB = socketB;
    }

    /**
     * {@code given}, or the sample server of {@code era} ({@code v1} or {@code v2}) built from the peer tree
     * ({@code VMMKIT_PEERS_DIR} or {@code ../shared/peers} of the project).
     */
    static Path server(Path given, String era) throws IOException {
        if (given != null) {
            if (!Files.isExecutable(given)) throw new IOException("--vfio-user-server " + given + " is not an executable");
            return given;
        }
        Path root = projectRoot();
        String env = System.getenv("VMMKIT_PEERS_DIR");
        Path peers = env != null ? Path.of(env) : root.resolveSibling("shared").resolve("peers").normalize();
        Path script = peers.resolve("build-libvfio-user");
        if (!Files.isExecutable(script)) {
            throw new IOException("no libvfio-user peer to build the sample server from (" + script + " is missing); give one with --vfio-user-server PATH");
        }
        Path out = root.resolve("target").resolve("libvfio-user-" + era);
        Path log = root.resolve("target").resolve("libvfio-user-" + era + ".build.log");
        Files.createDirectories(out.getParent());
        Process p = new ProcessBuilder(script.toString(), era, out.toString()).redirectError(log.toFile()).start();
        String stdout = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        try {
            if (!p.waitFor(10, TimeUnit.MINUTES)) {
                p.destroyForcibly();
                throw new IOException(script + " " + era + " " + out + " did not finish in 10 minutes (log: " + log + ")");
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted building the sample server", e);
        }
        List<String> lines = stdout.lines().toList();
        if (p.exitValue() != 0 || lines.isEmpty() || !Files.isExecutable(Path.of(lines.get(0)))) {
            throw new IOException(script + " " + era + " " + out + " failed (exit " + p.exitValue() + "; log: " + log + ")");
        }
        return Path.of(lines.get(0));
    }

    /** The project root: the nearest ancestor of this code's jar or classes directory with the parent pom and vmm-core. */
    private static Path projectRoot() throws IOException {
        try {
            Path at = Path.of(SampleServers.class.getProtectionDomain().getCodeSource().getLocation().toURI()).toAbsolutePath();
            for (Path p = at; p != null; p = p.getParent()) {
                if (Files.isRegularFile(p.resolve("pom.xml")) && Files.isDirectory(p.resolve("vmm-core"))) return p;
            }
        } catch (URISyntaxException | SecurityException e) {
            // fall through to the working directory
        }
        return Path.of("").toAbsolutePath();
    }

    /** Starts servers A and B ({@code server -v SOCK}, logs in {@code dir}) and waits until both sockets exist. */
    static SampleServers start(Path server, Path dir) throws IOException {
        Path sa = dir.resolve("sampleA.sock"), sb = dir.resolve("sampleB.sock");
        Process a = new ProcessBuilder(server.toString(), "-v", sa.toString()).redirectErrorStream(true).redirectOutput(dir.resolve("sampleA.log").toFile()).start();
        Process b = new ProcessBuilder(server.toString(), "-v", sb.toString()).redirectErrorStream(true).redirectOutput(dir.resolve("sampleB.log").toFile()).start();
        SampleServers s = new SampleServers(a, sa, b, sb);
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        try {
            while (!Files.exists(sa) || !Files.exists(sb)) {
                if (!a.isAlive() || !b.isAlive()) throw new IOException("a sample server exited before creating its socket (logs in " + dir + ")");
                if (System.nanoTime() > deadline) throw new IOException("the sample servers did not create their sockets in 10 s (logs in " + dir + ")");
                Thread.sleep(5);
            }
        } catch (IOException | InterruptedException e) {
            s.close();
            if (e instanceof InterruptedException) Thread.currentThread().interrupt();
            throw e instanceof IOException io ? io : new IOException(e);
        }
        return s;
    }

    Path a() {
        return socketA;
    }

    Path b() {
        return socketB;
    }

    String describe() {
        return "A (pid " + a.pid() + ", " + socketA + ") for the source, B (pid " + b.pid() + ", " + socketB + ") for the destination";
    }

    /** Each exits once its vmm process let its device go; any still running is killed. */
    @Override
    public void close() {
        for (Process p : List.of(a, b)) {
            try {
                if (!p.waitFor(5, TimeUnit.SECONDS)) {
                    p.destroyForcibly();
                    p.waitFor(5, TimeUnit.SECONDS);
                }
            } catch (InterruptedException e) {
                p.destroyForcibly();
                Thread.currentThread().interrupt();
            }
        }
    }
}
