package org.vmmkit.vmm;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Predicate;
import java.util.stream.Stream;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.vmmkit.core.kvm.RequiresKvm;
import org.vmmkit.migration.testing.FrameProxy;
import org.vmmkit.migration.testing.FrameProxy.Action;
import org.vmmkit.migration.testing.FrameProxy.Direction;
import org.vmmkit.migration.wire.FrameType;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The fault matrix across two real vmm processes with a {@link FrameProxy} between them: every fault (kill -9
 * of either end, one direction of the first connection ended, the destination stopped with SIGSTOP) struck at
 * an exact frame of every phase (setup at READY, round 1 and round 3 at their END_OF_ROUND, stop-and-copy at
 * COMPLETE, and the handover at PREPARED, COMMIT and ACK_COMPLETE), and what both ends do after it, checked
 * through their control endpoints. The rules: before the source begins to write COMMIT, the source rolls back
 * and its guest runs on; after it, exactly one copy runs and the other is paused and says why; the destination
 * never starts from a partial stream, and one left waiting takes the next genuine migration (run after every
 * such case and checked page by page). README's fault matrix table lists the outcomes.
 *
 * <p>How a fault strikes at frame F, which the proxy holds: kill -9 is sent and awaited, then F is lost if the
 * killed process sent it (it never left) and delivered otherwise (to a dead process). A cut ends one direction
 * of the first connection ({@link Action#END_TO_DESTINATION}/{@link Action#END_TO_SOURCE}: its receiver reads
 * the end of its input; F is lost if it travels that way). SIGSTOP is sent and awaited (the process in state
 * T); F is delivered if it travels to the destination (it lies unread) and held until SIGCONT if the
 * destination sent it (a stopped process sends nothing). A stopped destination is ended by an event: the test
 * cancels the migration (the source would otherwise wait up to 30 s for READY, a blocked send up to 60 s, and
 * for PREPARED or the answer to COMMIT without limit) or continues the destination with SIGCONT.
 *
 * <p>Processes are reused: the destination of a completed migration runs the guest and is the next case's
 * source, a source that rolled back is reused, and a fresh destination is started in the background while a
 * case runs. Every faulted migration uses two channels, a downtime limit of 0 (never met) and four rounds.
 */
@RequiresKvm
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class FaultMatrixAcrossProcessesTest {
    static final List<String> CONFIG = List.of(
            "vm.memory = 64M",
            "workload.size = 16M",
            "workload.pages-per-second = 20000",
            "device.gpu0.memory = 2M",
            "device.gpu0.dma-address = 32M",
            "device.gpu0.dma-size = 1M");
    private static final Duration WAIT = Duration.ofSeconds(60);

    enum Fault { KILL_DESTINATION, KILL_SOURCE, CUT_SOURCE_TO_DESTINATION, CUT_DESTINATION_TO_SOURCE, STOP_DESTINATION }

    /** Where a fault strikes: the {@code nth} frame of {@code frame} on the first connection, travelling {@code direction}. */
    enum Phase {
        SETUP(Direction.TO_SOURCE, FrameType.READY, 1),
        ROUND_1(Direction.TO_DESTINATION, FrameType.END_OF_ROUND, 1),
        ROUND_3(Direction.TO_DESTINATION, FrameType.END_OF_ROUND, 3),
        STOP_AND_COPY(Direction.TO_DESTINATION, FrameType.COMPLETE, 1),
        PREPARED(Direction.TO_SOURCE, FrameType.PREPARED, 1),
        COMMIT(Direction.TO_DESTINATION, FrameType.COMMIT, 1),
        ACK_COMPLETE(Direction.TO_SOURCE, FrameType.ACK_COMPLETE, 1);

        final Direction direction;
        final FrameType frame;
        final int nth;

        Phase(Direction direction, FrameType frame, int nth) {
            this.direction = direction;
            this.frame = frame;
            this.nth = nth;
        }

        /** Whether the source has begun to write COMMIT when the fault strikes here. */
        boolean afterDecision() {
            return this == COMMIT || this == ACK_COMPLETE;
        }
    }

    enum SourceEnd {
        /** {@code failed}, "rolled back" in error-desc, runs, its pass counter rises. */
        ROLLED_BACK,
        /** The test cancelled while the destination was stopped: {@code cancelled}, rolled back, runs. */
        CANCELLED,
        /** {@code completed}, run state {@code postmigrate}, paused for good. */
        COMPLETED,
        /** {@code unknown}, {@code postmigrate-unknown}, paused; asking fails (the destination is dead); the operator's {@code destination=stopped} resumes it. */
        UNKNOWN_THEN_RESUMED,
        /** {@code unknown}, {@code postmigrate-unknown}, paused; once the destination answers, migrate-resolve learns it runs: {@code completed}. */
        UNKNOWN_THEN_COMPLETED,
        KILLED
    }

    enum DestinationEnd {
        /** {@code inmigrate}, the stream's outcome {@code not-started}; takes the next migration. */
        WAITING,
        /** {@code running}, outcome {@code started}, its pass counter rises from where the source paused. */
        RUNNING,
        KILLED
    }

    record Expected(SourceEnd source, DestinationEnd destination) {
    }

    /** The matrix: what each fault at each phase must leave. */
    static Expected expected(Fault fault, Phase phase) {
        return switch (fault) {
            case KILL_DESTINATION -> new Expected(phase.afterDecision() ? SourceEnd.UNKNOWN_THEN_RESUMED : SourceEnd.ROLLED_BACK, DestinationEnd.KILLED);
            case KILL_SOURCE -> new Expected(SourceEnd.KILLED, phase == Phase.ACK_COMPLETE ? DestinationEnd.RUNNING : DestinationEnd.WAITING);
            case CUT_SOURCE_TO_DESTINATION -> phase == Phase.ACK_COMPLETE ? new Expected(SourceEnd.COMPLETED, DestinationEnd.RUNNING)
                    : new Expected(SourceEnd.ROLLED_BACK, DestinationEnd.WAITING);
            case CUT_DESTINATION_TO_SOURCE -> phase.afterDecision() ? new Expected(SourceEnd.COMPLETED, DestinationEnd.RUNNING)
                    : new Expected(SourceEnd.ROLLED_BACK, DestinationEnd.WAITING);
            case STOP_DESTINATION -> switch (phase) {
                case ROUND_3, COMMIT -> new Expected(SourceEnd.COMPLETED, DestinationEnd.RUNNING); // continued: the source only waited
                case ACK_COMPLETE -> new Expected(SourceEnd.UNKNOWN_THEN_COMPLETED, DestinationEnd.RUNNING); // cancelled after COMMIT
                default -> new Expected(SourceEnd.CANCELLED, DestinationEnd.WAITING);
            };
        };
    }

    /** A stopped destination: continued with SIGCONT only (the migration goes on), or the migration cancelled first. */
    private static boolean continuesWithoutCancel(Phase phase) {
        return phase == Phase.ROUND_3 || phase == Phase.COMMIT;
    }

    static Stream<Arguments> cases() {
        List<Arguments> out = new ArrayList<>();
        for (Fault f : Fault.values()) for (Phase p : Phase.values()) out.add(Arguments.of(f, p));
        return out.stream();
    }

    // ---- the processes ----

    @TempDir static Path dir;
    private Path config;
    private final AtomicInteger started = new AtomicInteger();
    private final ExecutorService background = Executors.newThreadPerTaskExecutor(Thread.ofPlatform().name("vmm-starter").factory());
    private final List<CompletableFuture<?>> retiring = new ArrayList<>();
    private final List<String> report = new ArrayList<>();
    private CompletableFuture<Vmm> spareDestination;
    private Vmm running; // a VM whose guest runs: the next case's source
    private long matrixStart;

    /** One vmm process: {@code run} (a source) or {@code incoming} (a destination, then a VM that runs and may migrate on). */
    static final class Vmm {
        final String name;
        final Demo.Child child;
        final Path control;
        final int port; // where it listens for a stream; -1 for `run`

        Vmm(String name, Demo.Child child, Path control, int port) {
            this.name = name;
            this.child = child;
            this.control = control;
            this.port = port;
        }

        JsonElement execute(String command, Map<String, ?> arguments) throws IOException {
            try (ControlClient c = ControlClient.connect(control)) {
                return c.execute(command, arguments);
            }
        }

        JsonObject query(String command) throws IOException {
            return execute(command, null).getAsJsonObject();
        }

        String status() throws IOException {
            return query("query-status").get("status").getAsString();
        }

        long passes() throws IOException {
            return query("query-guest").get("passes").getAsLong();
        }

        boolean alive() {
            return child.process.isAlive();
        }

        long pid() {
            return child.process.pid();
        }

        void kill() throws InterruptedException {
            child.process.destroyForcibly();
            if (!child.process.waitFor(30, TimeUnit.SECONDS)) throw new IllegalStateException("kill -9 of " + name + " (pid " + pid() + ") did not end it in 30 s");
        }

        void signal(String signal) throws IOException, InterruptedException {
            Process kill = new ProcessBuilder("kill", "-" + signal, Long.toString(pid())).redirectErrorStream(true).start();
            if (kill.waitFor() != 0) throw new IOException("kill -" + signal + " " + pid() + " (" + name + ") failed: " + new String(kill.getInputStream().readAllBytes()));
        }

        /** The process's scheduler state from /proc (R, S, T for stopped, ...). */
        char state() throws IOException {
            String stat = Files.readString(Path.of("/proc", Long.toString(pid()), "stat"));
            return stat.charAt(stat.lastIndexOf(')') + 2);
        }

        /** SIGSTOP, and returns once the kernel shows the process stopped. */
        void stop() throws IOException, InterruptedException {
            signal("STOP");
            long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while (state() != 'T') {
                if (System.nanoTime() > deadline) throw new IllegalStateException(name + " (pid " + pid() + ") not stopped 10 s after SIGSTOP: state " + state());
                Thread.onSpinWait();
            }
        }

        @Override
        public String toString() {
            return name;
        }
    }

    @BeforeAll
    void startFirstPair() throws Exception {
        matrixStart = System.nanoTime();
        config = dir.resolve("vm.conf");
        Files.write(config, CONFIG);
        spareDestination = startAsync(true);
        running = start(false);
    }

    @AfterAll
    void stopAll() throws Exception {
        if (running != null) retire(running);
        if (spareDestination != null) retire(spareDestination.get(60, TimeUnit.SECONDS));
        CompletableFuture.allOf(retiring.toArray(CompletableFuture[]::new)).get(60, TimeUnit.SECONDS);
        background.shutdown();
        System.out.println("fault matrix: " + report.size() + " cases, " + started.get() + " vmm processes, "
                + (System.nanoTime() - matrixStart) / 1_000_000 + " ms");
        for (String line : report) System.out.println(line);
    }

    private Vmm start(boolean incoming) throws Exception {
        String name = (incoming ? "destination-" : "source-") + started.incrementAndGet();
        Path control = dir.resolve(name + ".sock");
        Demo.Child child = incoming
                ? Demo.Child.start(name, dir, false, "incoming", "--config", config.toString(), "--listen", "127.0.0.1:0",
                        "--control", control.toString(), "--record-digest")
                : Demo.Child.start(name, dir, false, "run", "--config", config.toString(), "--control", control.toString());
        try (ControlClient c = ControlClient.await(control, Duration.ofSeconds(30), child.process.toHandle())) {
            JsonObject status = c.query("query-status");
            int port = incoming ? Integer.parseInt(status.get("listen").getAsString().split(":")[1]) : -1;
            Vmm vmm = new Vmm(name, child, control, port);
            if (!incoming) awaitPasses(vmm, 1);
            return vmm;
        }
    }

    private CompletableFuture<Vmm> startAsync(boolean incoming) {
        return CompletableFuture.supplyAsync(() -> {
            try {
                return start(incoming);
            } catch (Exception e) {
                throw new IllegalStateException("starting a vmm " + (incoming ? "incoming" : "run") + " process failed: " + e.getMessage(), e);
            }
        }, background);
    }

    private Vmm takeDestination() throws Exception {
        Vmm d = spareDestination.get(60, TimeUnit.SECONDS);
        spareDestination = startAsync(true);
        return d;
    }

    /** Quits {@code v} (or reaps it, if dead) in the background. */
    private void retire(Vmm v) {
        retiring.add(CompletableFuture.runAsync(() -> v.child.stop(v.control), background));
    }

    // ---- waiting for events ----

    /** Polls {@code read} until {@code until} holds, at most {@link #WAIT}; the assertion names {@code what}. */
    private static JsonObject await(String what, IOCall<JsonObject> read, Predicate<JsonObject> until) throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            JsonObject now = read.call();
            if (until.test(now)) return now;
            if (System.nanoTime() > deadline) fail(what + " did not happen in " + WAIT.toSeconds() + " s; last: " + now);
            Thread.sleep(10);
        }
    }

    @FunctionalInterface
    interface IOCall<T> {
        T call() throws Exception;
    }

    private static long awaitPasses(Vmm v, long passes) throws Exception {
        return await(v + " reaching guest pass " + passes, () -> v.query("query-guest"), g -> g.get("passes").getAsLong() >= passes)
                .get("passes").getAsLong();
    }

    private static boolean ended(JsonObject m) {
        return List.of("completed", "failed", "cancelled", "unknown").contains(m.get("status").getAsString());
    }

    private static JsonObject awaitMigrationEnd(Vmm source) throws Exception {
        return await("the migration from " + source + " ending", () -> source.query("query-migrate"), FaultMatrixAcrossProcessesTest::ended);
    }

    private static String text(JsonElement e) {
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }

    private static String streamOf(Vmm destination) throws IOException {
        JsonElement s = destination.query("query-status").get("incoming-stream");
        return s == null || s.isJsonNull() ? null : s.getAsJsonObject().get("stream").getAsString();
    }

    /** The destination's record of the stream after {@code before}, once it is settled (not in progress). */
    private static JsonObject awaitStreamSettled(Vmm destination, String before) throws Exception {
        return await(destination + " settling the faulted stream", () -> destination.query("query-status"), s -> {
            JsonElement stream = s.get("incoming-stream");
            if (stream == null || stream.isJsonNull()) return false;
            JsonObject o = stream.getAsJsonObject();
            return !o.get("stream").getAsString().equals(before) && !o.get("outcome").getAsString().equals("in-progress");
        });
    }

    /** The guest does not run: two reports (each hashing all of guest memory) agree on the pass counter and every page. */
    private static void assertPaused(Vmm v) throws IOException {
        JsonObject first = v.query("query-guest"), second = v.query("query-guest");
        assertNotNull(text(first.get("memory-digest")), v + " reports no memory digest: its guest runs");
        assertEquals(first.get("passes").getAsLong(), second.get("passes").getAsLong(), v + "'s guest ran on");
        assertEquals(text(first.get("memory-digest")), text(second.get("memory-digest")), v + "'s guest memory changed");
        assertFalse(v.query("query-status").get("running").getAsBoolean());
    }

    private static void assertRunsOn(Vmm v) throws Exception {
        JsonObject status = v.query("query-status");
        assertEquals("running", status.get("status").getAsString(), v + ": " + status);
        awaitPasses(v, v.passes() + 2);
    }

    /** {@code destination} runs what {@code source} paused: every page, the device's state, the pass counter. */
    private static void assertTookOver(Vmm source, Vmm destination) throws Exception {
        JsonObject src = source.query("query-guest"), dst = destination.query("query-guest");
        assertNotNull(text(src.get("memory-digest")));
        assertEquals(text(src.get("memory-digest")), text(dst.get("incoming-memory-digest")), "memory at resume = source at pause");
        JsonObject gpuSrc = src.getAsJsonArray("devices").get(0).getAsJsonObject();
        JsonObject gpuDst = dst.getAsJsonArray("devices").get(0).getAsJsonObject();
        assertEquals(text(gpuSrc.get("state-digest")), text(gpuDst.get("incoming-state-digest")), "device state at resume = at stop");
        assertTrue(gpuSrc.getAsJsonArray("misuse").isEmpty() && gpuDst.getAsJsonArray("misuse").isEmpty(), "device protocol misuse: " + gpuSrc + gpuDst);
        assertEquals(src.get("passes").getAsLong(), dst.get("incoming-passes").getAsLong());
        assertRunsOn(destination);
        assertEquals(src.get("passes").getAsLong(), source.passes(), "the source's guest ran on after the destination took over");
    }

    /** A migration without faults from {@code source} straight to {@code destination}: it completes and the destination runs the guest. */
    private static void genuineMigration(Vmm source, Vmm destination) throws Exception {
        source.execute("migrate", Map.of("uri", "tcp:127.0.0.1:" + destination.port));
        JsonObject end = awaitMigrationEnd(source);
        assertEquals("completed", end.get("status").getAsString(), "the migration after the fault: " + end);
        assertEquals("postmigrate", source.status());
        assertTookOver(source, destination);
    }

    // ---- the fault ----

    /** The proxy's rule: forwards everything until the phase's frame, strikes there once, and says what becomes of that frame. */
    private static final class FaultAt implements FrameProxy.Rule {
        final Fault fault;
        final Phase phase;
        final Vmm source, destination;
        final CountDownLatch struck = new CountDownLatch(1);
        /** Released when a stopped destination is continued: a frame it sent is held until then. */
        final CountDownLatch continued = new CountDownLatch(1);
        volatile Throwable failure;
        private int seen; // frames of the phase's type seen; only the pump of the phase's direction touches it
        private boolean done;

        FaultAt(Fault fault, Phase phase, Vmm source, Vmm destination) {
            this.fault = fault;
            this.phase = phase;
            this.source = source;
            this.destination = destination;
        }

        @Override
        public Action on(int connection, Direction direction, long index, int type) {
            if (done || connection != 0 || direction != phase.direction || type != phase.frame.code() || ++seen < phase.nth) return Action.FORWARD;
            done = true;
            try {
                switch (fault) {
                    case KILL_DESTINATION -> {
                        destination.kill();
                        struck.countDown();
                        return direction == Direction.TO_SOURCE ? Action.END_TO_SOURCE : Action.FORWARD;
                    }
                    case KILL_SOURCE -> {
                        source.kill();
                        struck.countDown();
                        return direction == Direction.TO_DESTINATION ? Action.END_TO_DESTINATION : Action.FORWARD;
                    }
                    case CUT_SOURCE_TO_DESTINATION -> {
                        struck.countDown();
                        return Action.END_TO_DESTINATION;
                    }
                    case CUT_DESTINATION_TO_SOURCE -> {
                        struck.countDown();
                        return Action.END_TO_SOURCE;
                    }
                    case STOP_DESTINATION -> {
                        destination.stop();
                        struck.countDown();
                        if (direction == Direction.TO_SOURCE && !continued.await(120, TimeUnit.SECONDS)) {
                            throw new IllegalStateException("the stopped destination was not continued in 120 s");
                        }
                        return Action.FORWARD;
                    }
                }
                throw new AssertionError(fault);
            } catch (Throwable t) {
                failure = t;
                struck.countDown();
                return Action.CUT;
            }
        }
    }

    @ParameterizedTest(name = "{0} at {1}")
    @MethodSource("cases")
    @Timeout(120)
    void aFaultAtAnyFrameLeavesExactlyOneRunningCopyAndNeverAPartialStart(Fault fault, Phase phase) throws Exception {
        long caseStart = System.nanoTime();
        Expected want = expected(fault, phase);
        Vmm src = running != null ? running : start(false);
        running = null;
        Vmm dst = takeDestination();
        String before = streamOf(dst);
        FaultAt rule = new FaultAt(fault, phase, src, dst);
        boolean clean = false;
        JsonObject end = null;
        String dstOutcome = "-";
        CompletableFuture<Vmm> nextSource = null;
        try (FrameProxy proxy = new FrameProxy(new InetSocketAddress("127.0.0.1", dst.port), rule, false)) {
            int via = ((InetSocketAddress) proxy.address()).getPort();
            Map<String, Object> migrate = new HashMap<>(Map.of("uri", "tcp:127.0.0.1:" + via, "channels", 2, "downtime-limit", "0ms", "max-iterations", 4,
                    "convergence", "force"));
            long passesBefore = src.passes();
            src.execute("migrate", migrate);
            assertTrue(rule.struck.await(WAIT.toSeconds(), TimeUnit.SECONDS), "the migration never reached " + phase.frame + " #" + phase.nth);
            if (rule.failure != null) throw new AssertionError("striking " + fault + " at " + phase + " failed", rule.failure);
            if (fault == Fault.KILL_SOURCE && want.destination() == DestinationEnd.WAITING) nextSource = startAsync(false);

            if (fault == Fault.STOP_DESTINATION) {
                String now = src.query("query-migrate").get("status").getAsString();
                assertTrue(List.of("setup", "active", "device").contains(now), "the source gave up on the stopped destination at once: " + now);
                if (continuesWithoutCancel(phase)) {
                    dst.signal("CONT");
                    rule.continued.countDown();
                } else {
                    src.execute("migrate-cancel", null);
                    end = awaitMigrationEnd(src);
                    dst.signal("CONT");
                    rule.continued.countDown();
                }
            }

            switch (want.source()) {
                case KILLED -> assertFalse(src.alive(), "the source survived kill -9");
                case ROLLED_BACK, CANCELLED -> {
                    end = awaitMigrationEnd(src);
                    assertEquals(want.source() == SourceEnd.CANCELLED ? "cancelled" : "failed", end.get("status").getAsString(), end.toString());
                    assertTrue(text(end.get("error-desc")).contains("rolled back"), end.toString());
                    assertRunsOn(src);
                    assertTrue(src.passes() > passesBefore);
                }
                case COMPLETED -> {
                    end = awaitMigrationEnd(src);
                    assertEquals("completed", end.get("status").getAsString(), end.toString());
                    assertEquals("postmigrate", src.status());
                    assertPaused(src);
                }
                case UNKNOWN_THEN_RESUMED, UNKNOWN_THEN_COMPLETED -> {
                    end = awaitMigrationEnd(src);
                    assertEquals("unknown", end.get("status").getAsString(), end.toString());
                    assertEquals("postmigrate-unknown", src.status());
                    assertPaused(src);
                }
            }

            switch (want.destination()) {
                case KILLED -> assertFalse(dst.alive());
                case WAITING -> {
                    JsonObject s = awaitStreamSettled(dst, before);
                    dstOutcome = s.getAsJsonObject("incoming-stream").get("outcome").getAsString();
                    assertEquals("not-started", dstOutcome, "the destination started from a stream cut at " + phase + ": " + s);
                    assertEquals("inmigrate", s.get("status").getAsString());
                    assertFalse(s.get("running").getAsBoolean());
                }
                case RUNNING -> {
                    JsonObject s = awaitStreamSettled(dst, before);
                    dstOutcome = s.getAsJsonObject("incoming-stream").get("outcome").getAsString();
                    assertEquals("started", dstOutcome, s.toString());
                    assertRunsOn(dst);
                }
            }

            // An unknown outcome, settled as an operator would.
            if (want.source() == SourceEnd.UNKNOWN_THEN_RESUMED) {
                ControlClient.ControlException e = assertThrows(ControlClient.ControlException.class, () -> src.execute("migrate-resolve", null),
                        "a dead destination cannot say");
                assertTrue(e.getMessage().contains("migrate-resolve"), e.getMessage());
                assertEquals("postmigrate-unknown", src.status());
                JsonObject resolved = src.execute("migrate-resolve", Map.of("destination", "stopped")).getAsJsonObject();
                assertEquals("failed", resolved.get("status").getAsString());
                assertRunsOn(src);
            } else if (want.source() == SourceEnd.UNKNOWN_THEN_COMPLETED) {
                JsonObject resolved = src.execute("migrate-resolve", null).getAsJsonObject();
                assertEquals("completed", resolved.get("status").getAsString(), resolved.toString());
                assertEquals("postmigrate", src.status());
            }
            if (want.destination() == DestinationEnd.RUNNING && src.alive()) assertTookOver(src, dst);
            clean = true;
        } finally {
            if (fault == Fault.STOP_DESTINATION && dst.alive()) dst.signal("CONT");
            rule.continued.countDown();
            if (!clean) {
                src.child.printLogTail();
                dst.child.printLogTail();
                retire(src);
                retire(dst);
                if (nextSource != null) retire(nextSource.get(60, TimeUnit.SECONDS));
            }
        }

        // What is left: a destination left waiting takes the next genuine migration; the VM that runs is the next case's source.
        switch (want.destination()) {
            case WAITING -> {
                Vmm from = want.source() == SourceEnd.KILLED ? nextSource.get(60, TimeUnit.SECONDS) : src;
                genuineMigration(from, dst);
                retire(from);
                if (from != src) retire(src); // killed: reaped
                running = dst;
            }
            case RUNNING -> {
                retire(src);
                running = dst;
            }
            case KILLED -> {
                retire(dst);
                running = src;
            }
        }
        String desc = end == null ? "-" : text(end.get("error-desc"));
        report.add(String.format("%-26s %-13s source %-9s destination %-11s %5d ms  %s", fault, phase,
                end == null ? "killed" : end.get("status").getAsString(), want.destination() == DestinationEnd.KILLED ? "killed" : dstOutcome,
                (System.nanoTime() - caseStart) / 1_000_000, desc == null ? "" : desc));
    }
}
