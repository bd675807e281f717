package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIfSystemProperty;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.testing.StreamImage;
import org.vmmkit.migration.testing.StreamMeaning;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.WireFormatException;
import org.vmmkit.vfio.migration.DeviceMigrationException;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * A structure-aware fuzzer of the destination: mutated copies of a genuine recorded stream
 * ({@link GenuineStream}, {@link StreamMutator}) fed to a {@link MigrationDestination} in-process over
 * loopback, each to a reset destination guest and a fresh destination device. For every input, within
 * {@value #INPUT_LIMIT_SECONDS} s: either the destination refuses with a {@link MigrationException} whose
 * message names the frame, the stream header or the stream, caused by a wire, I/O or device error and
 * with the guest not started; or it starts the guest holding exactly what the stream says (its memory,
 * vCPU state and device state, by {@link StreamMeaning}). A stream changed without its CRCs, sequences and
 * counts recomputed (not a well-formed rewrite) must moreover load exactly what it said before that change:
 * the genuine stream's result, unless a later frame of the stream legitimately replaced the damaged part
 * (a torn page sent again). Never a hang, never another exception.
 *
 * <p>{@code -Dfuzz.inputs=N} (default {@value #DEFAULT_INPUTS}) and {@code -Dfuzz.seed=S} (default 1) choose the
 * inputs: seeds S to S + N − 1. A failure names the seed and the mutation; {@code -Dfuzz.seed=S -Dfuzz.inputs=1}
 * replays it.
 */
class StreamFuzzTest {
    static final int DEFAULT_INPUTS = 10_000;
    static final int INPUT_LIMIT_SECONDS = 10;
    private static final Duration INPUT_LIMIT = Duration.ofSeconds(INPUT_LIMIT_SECONDS);
    private static final int MAX_FAILURES_SHOWN = 40, PROGRESS_EVERY = 100_000;

    /** What a refusal must name: a frame (by its index), the stream header or the stream. */
    private static final Pattern CLEAR = Pattern.compile("frame \\d+|stream");

    @Test
    @EnabledIfSystemProperty(named = "fuzz.record", matches = "true")
    void recordTheGenuineStream() throws Exception {
        Path target = Path.of("src/test/resources" + GenuineStream.RESOURCE); // surefire runs in the module's directory
        Files.createDirectories(target.getParent());
        Files.write(target, GenuineStream.record());
        System.out.println("recorded " + Files.size(target) + " bytes to " + target.toAbsolutePath());
    }

    @Test
    void theGenuineStreamIsAcceptedAndLoadsItsSourceExactly() throws Exception {
        try (Rig rig = new Rig(); FakeGuest source = GenuineStream.sourceGuest(); EmulatedMigratableDevice device = GenuineStream.sourceDevice()) {
            Outcome o = rig.feed(rig.genuine);
            assertNull(o.error, () -> "the genuine stream was refused: " + o.error);
            assertTrue(rig.guest.equalsSource(source), "the destination holds the source guest's memory and vCPU state");
            assertArrayEquals(device.stateDigest(), o.deviceDigest, "the destination device holds the source device's state");
            StreamMeaning said = StreamMeaning.of(rig.genuine, GenuineStream.GUEST_SIZE);
            assertEquals(-1, source.memory().regions().get(0).host().mismatch(MemorySegment.ofArray(said.memory())),
                    "the judge reads the genuine stream as the source's memory");
            assertArrayEquals(source.saveVcpu(0), said.vcpus().get(0L));
        }
    }

    @Test
    void everyMutatedStreamIsRefusedClearlyOrLoadsExactlyWhatItSays() throws Exception {
        long inputs = Long.getLong("fuzz.inputs", DEFAULT_INPUTS), first = Long.getLong("fuzz.seed", 1);
        Map<String, Long> outcomes = new TreeMap<>();
        Map<String, List<String>> failures = new java.util.LinkedHashMap<>(); // by the problem's shape: its examples
        long slowest = 0, slowestSeed = first, start = System.nanoTime();
        try (Rig rig = new Rig()) {
            StreamMutator mutator = new StreamMutator(StreamImage.parse(rig.genuine));
            for (long seed = first; seed < first + inputs; seed++) {
                StreamMutator.Input input;
                try {
                    input = mutator.mutate(seed);
                } catch (RuntimeException e) {
                    throw new AssertionError("seed " + seed + ": the mutator itself failed (a test bug)" + replay(seed), e);
                }
                long t0 = System.nanoTime();
                Outcome o;
                try {
                    o = rig.feed(input.bytes());
                } catch (TimeoutException e) {
                    fail("seed " + seed + ": the destination took more than " + INPUT_LIMIT_SECONDS + " s (a hang); mutation: " + input.mutation()
                            + replay(seed));
                    return;
                }
                long took = System.nanoTime() - t0;
                if (took > slowest) {
                    slowest = took;
                    slowestSeed = seed;
                }
                Verdict v = rig.judge(input, o);
                if (v.problem() != null) {
                    String shape = v.problem().replaceAll("0x[0-9a-f]+|\\d+", "#");
                    failures.computeIfAbsent(shape.substring(0, Math.min(shape.length(), 160)), k -> new ArrayList<>())
                            .add("seed " + seed + ": " + v.problem() + "\n    mutation: " + input.mutation() + replay(seed));
                    outcomes.merge("FAILED", 1L, Long::sum);
                } else {
                    outcomes.merge(v.kind(), 1L, Long::sum);
                }
                long done = seed - first + 1;
                if (done % PROGRESS_EVERY == 0 && done < inputs) { // a long run says how it goes
                    System.out.printf("stream fuzz: %d of %d inputs in %.0f s, %d broke the rule%n", done, inputs,
                            (System.nanoTime() - start) / 1e9, outcomes.getOrDefault("FAILED", 0L));
                }
            }
        }
        long millis = (System.nanoTime() - start) / 1_000_000;
        StringBuilder report = new StringBuilder(String.format("stream fuzz: %d inputs (seeds %d..%d) in %.1f s, %.0f inputs/s; slowest %.1f ms (seed %d)%n",
                inputs, first, first + inputs - 1, millis / 1e3, inputs * 1e3 / Math.max(1, millis), slowest / 1e6, slowestSeed));
        outcomes.forEach((kind, n) -> report.append(String.format("  %8d  %s%n", n, kind)));
        System.out.print(report);
        if (!failures.isEmpty()) {
            StringBuilder shown = new StringBuilder();
            failures.values().stream().limit(MAX_FAILURES_SHOWN).forEach(examples -> shown.append(examples.size()).append(" like ").append(examples.get(0)).append('\n'));
            fail(outcomes.get("FAILED") + " of " + inputs + " inputs broke the rule, " + failures.size() + " kinds of failure (the first example of each):\n"
                    + shown + report);
        }
    }

    // ---- rules the fuzzer found broken: each was a failing seed once ----

    /**
     * Seed 783 (END_OF_ROUND announcing 4096 bytes, accepted): a frame of a type that carries no payload was
     * checked without its announced payload being read, so the bytes after its header were read as frames.
     * Hidden there, a frame that a reader framing by length (the proxy, a recorder) never sees was applied:
     * here a ZERO_RUN over a page the stream sent, and a COMMIT that, read as the spec frames it, is no
     * frame of the stream — the destination started without the source's decision.
     */
    @Test
    void aFrameOfATypeWithoutPayloadThatAnnouncesOneIsRefused() throws Exception {
        for (FrameType hiding : new FrameType[] {FrameType.END_OF_ROUND, FrameType.COMPLETE}) {
            StreamImage s = StreamImage.parse(GenuineStream.load());
            int at = s.indexOf(hiding);
            if (hiding == FrameType.END_OF_ROUND) {
                StreamImage.Frame zeroes = new StreamImage.Frame(FrameType.ZERO_RUN.code(), 0, 0, 1, new byte[0]); // page 0 holds data
                zeroes.seal(true);
                s.frames().add(at + 1, zeroes);
                s.renumber();
            }
            StreamImage.Frame carrier = s.frames().get(at);
            carrier.length = org.vmmkit.migration.wire.FrameCodec.HEADER; // "its payload" is the next frame's header
            carrier.sealHeader();
            try (Rig rig = new Rig()) {
                Outcome o = rig.feed(s.encode());
                assertTrue(o.error instanceof MigrationException, hiding + ": refused, not " + o);
                String expected = "frame " + at + " (" + hiding + ") announces 40 payload bytes; " + hiding + " carries none";
                assertTrue(o.error.getMessage().contains(expected), o.error.getMessage());
                assertEquals(0, rig.guest.starts(), hiding + ": nothing started");
            }
        }
    }

    /**
     * Seed 647 (the device's final chunk turned into a skippable unknown frame): v1 devices check that their
     * state is whole only at RESUMING → RUNNING, after COMMIT, and the refusal named neither the stream nor a
     * frame. It now says that the stream's device state was refused at COMMIT, and nothing starts.
     */
    @Test
    void aDeviceThatRefusesTheStreamsStateAtCommitIsNamedAndNothingStarts() throws Exception {
        StreamImage s = StreamImage.parse(GenuineStream.load());
        int last = -1;
        for (int i = 0; i < s.frames().size(); i++) if (s.frames().get(i).type == FrameType.SECTION_CHUNK.code() && s.frames().get(i).a == 0) last = i; // the device's (section 0; vcpu/0 is 1)
        StreamImage.Frame registers = s.frames().get(last);
        registers.type = 30;
        registers.flags = org.vmmkit.migration.wire.FrameCodec.FLAG_SKIPPABLE;
        registers.seal(true);
        try (Rig rig = new Rig()) {
            Outcome o = rig.feed(s.encode());
            assertTrue(o.error instanceof MigrationException, "refused, not " + o);
            String commit = "at COMMIT (frame " + s.indexOf(FrameType.COMMIT) + ") section fuzz-gpu0 (vfio-v1 v1) would not run with the state the stream brought";
            assertTrue(o.error.getMessage().contains(commit), o.error.getMessage());
            assertEquals(0, rig.guest.starts());
        }
    }

    private static String replay(long seed) {
        return "\n    replay: mvn -o -pl migration -am test -Dtest=StreamFuzzTest#everyMutatedStreamIsRefusedClearlyOrLoadsExactlyWhatItSays "
                + "-Dsurefire.failIfNoSpecifiedTests=false -Dfuzz.seed=" + seed + " -Dfuzz.inputs=1";
    }

    /** What feeding one input did: the destination's error (null: it started the guest, or answered a query), the device state if it started. */
    private record Outcome(Throwable error, boolean answeredQuery, byte[] deviceDigest) {}

    /** Whether an outcome keeps the rule: {@code problem} null, and its {@code kind} for the counts; or what broke it. */
    private record Verdict(String problem, String kind) {
        static Verdict broken(String problem) {
            return new Verdict(problem, null);
        }

        static Verdict kept(String kind) {
            return new Verdict(null, kind);
        }
    }

    /**
     * A destination that takes one input after another on one listening socket: the guest is reset and the
     * device made afresh for each; a writer thread sends the input, half-closes, and reads the return path
     * until the destination closes the connection.
     */
    private static final class Rig implements AutoCloseable {
        final FakeGuest guest = FakeGuest.destination(GenuineStream.GUEST_SIZE);
        final ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        final SocketAddress address = server.getLocalAddress();
        final ExecutorService destinationThread = Executors.newSingleThreadExecutor(r -> Thread.ofPlatform().name("fuzz-destination").daemon().unstarted(r));
        final ExecutorService writerThread = Executors.newSingleThreadExecutor(r -> Thread.ofPlatform().name("fuzz-writer").daemon().unstarted(r));
        final byte[] genuine = GenuineStream.load();
        // The genuine stream's result, against which every accepted input that is no rewrite is compared.
        final byte[] genuineMemory, genuineVcpu, genuineDigest;
        final List<byte[]> genuineChunks;
        final StreamMeaning genuineMeaning;

        Rig() throws Exception {
            Outcome o = feed(genuine);
            if (o.error != null) throw new AssertionError("the genuine stream was refused: " + o.error.getMessage(), o.error);
            genuineMemory = guest.memory().regions().get(0).host().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
            genuineVcpu = guest.restoredVcpu();
            genuineDigest = o.deviceDigest;
            genuineMeaning = StreamMeaning.of(genuine, GenuineStream.GUEST_SIZE);
            genuineChunks = genuineMeaning.deviceChunks();
        }

        Outcome feed(byte[] bytes) throws Exception {
            guest.reset();
            try (EmulatedMigratableDevice device = GenuineStream.destinationDevice();
                 V1DeviceMigration migration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT)) {
                MigrationDestination destination = new MigrationDestination(guest, List.of(migration), null)
                        .withNonces(() -> GenuineStream.NONCE).withWaits(INPUT_LIMIT, INPUT_LIMIT);
                Future<?> writer = writerThread.submit(() -> write(bytes));
                Future<Outcome> received = destinationThread.submit(() -> receive(destination));
                long deadline = System.nanoTime() + INPUT_LIMIT.toNanos();
                try {
                    Outcome o = received.get(INPUT_LIMIT.toMillis(), TimeUnit.MILLISECONDS);
                    writer.get(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
                    return o.error == null && !o.answeredQuery ? new Outcome(null, false, device.stateDigest()) : o;
                } catch (TimeoutException e) {
                    received.cancel(true);
                    writer.cancel(true);
                    throw e;
                }
            }
        }

        /** One connection, as {@link MigrationDestination#receive} takes it. */
        private Outcome receive(MigrationDestination destination) {
            try (SocketChannel first = server.accept()) {
                boolean started = destination.receiveOrAnswer(first, (c, deadline) -> MigrationDestination.acceptWhileWatching(server, c, deadline));
                return new Outcome(null, !started, null);
            } catch (Throwable t) {
                return new Outcome(t, false, null);
            }
        }

        private void write(byte[] bytes) {
            try (SocketChannel c = SocketChannel.open(address)) {
                try {
                    ByteBuffer b = ByteBuffer.wrap(bytes);
                    while (b.hasRemaining()) c.write(b);
                    c.shutdownOutput();
                } catch (IOException e) {
                    // the destination refused and closed: the rest of the input is moot
                }
                ByteBuffer sink = ByteBuffer.allocate(8192);
                try {
                    while (c.read(sink.clear()) >= 0) {
                        // the return path (HELLO, READY, PREPARED, ACK_COMPLETE or ERROR) is not judged here
                    }
                } catch (IOException e) {
                    // reset by the destination's close: the connection is over either way
                }
            } catch (IOException e) {
                throw new java.io.UncheckedIOException("the fuzz writer could not connect to " + address, e);
            }
        }

        /** Whether the outcome of {@code input} keeps the rule (see the class comment). */
        Verdict judge(StreamMutator.Input input, Outcome o) {
            if (o.answeredQuery) {
                if (guest.starts() != 0 || guest.running()) return Verdict.broken("taken as an outcome query, yet the guest started");
                return Verdict.kept("answered as an outcome query");
            }
            if (o.error != null) {
                if (!(o.error instanceof MigrationException)) return Verdict.broken("unexpected exception " + describe(o.error));
                Throwable cause = o.error.getCause();
                if (cause != null && !(cause instanceof WireFormatException || cause instanceof IOException
                        || cause instanceof DeviceMigrationException || cause instanceof MigrationDestination.SectionRefusedException
                        || cause instanceof MigrationException)) {
                    return Verdict.broken("refused with an unexpected cause " + describe(cause) + " (message: " + o.error.getMessage() + ")");
                }
                if (guest.starts() != 0 || guest.running()) return Verdict.broken("refused (" + o.error.getMessage() + "), yet the guest started");
                String message = o.error.getMessage();
                if (message == null || !CLEAR.matcher(message).find()) return Verdict.broken("refused with a message that names no frame, header or stream: " + message);
                String kind = kindOf(message);
                return Verdict.kept("refused: " + (kind.equals("other") ? "other: " + message.replaceAll("0x[0-9a-f]+|\\d+", "#") : kind));
            }
            if (guest.starts() != 1 || !guest.running()) return Verdict.broken("accepted, yet the guest did not start exactly once (" + guest.starts() + " starts)");
            StreamMeaning said = StreamMeaning.of(input.bytes(), GenuineStream.GUEST_SIZE);
            if (said == null) return Verdict.broken("accepted a stream that cannot be framed or applied as the wire format says");
            String differs = differences(said, o.deviceDigest);
            if (differs != null) return Verdict.broken("accepted, but " + differs + " from what the stream says");
            if (!input.sealed()) {
                StreamMeaning meant = input.intended() == null ? genuineMeaning : StreamMeaning.of(input.intended(), GenuineStream.GUEST_SIZE);
                differs = differences(meant, o.deviceDigest);
                if (differs != null) return Verdict.broken("accepted a corrupted stream, and " + differs + " from what it said before the corruption");
            }
            MemorySegment memory = guest.memory().regions().get(0).host();
            boolean identical = memory.mismatch(MemorySegment.ofArray(genuineMemory)) == -1 && Arrays.equals(guest.restoredVcpu(), genuineVcpu)
                    && Arrays.equals(o.deviceDigest, genuineDigest);
            if (identical) return Verdict.kept("accepted, identical to the genuine stream's result");
            return Verdict.kept(input.sealed() ? "accepted, a well-formed rewrite loaded as it says"
                    : "accepted, a well-formed rewrite whose corruption a later frame superseded");
        }

        /** How the destination's guest and device differ from what {@code m} says ("guest memory differs at ..."), or null. */
        private String differences(StreamMeaning m, byte[] deviceDigest) {
            long at = guest.memory().regions().get(0).host().mismatch(MemorySegment.ofArray(m.memory()));
            if (at >= 0) return "guest memory differs at 0x" + Long.toHexString(at);
            if (!Arrays.equals(guest.restoredVcpu(), m.vcpus().get(0L))) return "the vCPU state differs";
            byte[] expected = m.sameDeviceChunks(genuineChunks) ? genuineDigest : replayDevice(m.deviceChunks());
            if (expected == null) return "device chunks that a fresh device refuses were loaded, which differs";
            if (!Arrays.equals(expected, deviceDigest)) return "the device state differs";
            return null;
        }

        /** The device state a fresh destination device reaches from {@code chunks}, or null if it refuses them. */
        private static byte[] replayDevice(List<byte[]> chunks) {
            try (EmulatedMigratableDevice device = GenuineStream.destinationDevice();
                 V1DeviceMigration migration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT)) {
                migration.startResume();
                for (byte[] c : chunks) migration.loadChunk(MemorySegment.ofArray(c));
                migration.completeResume();
                return device.stateDigest();
            } catch (RuntimeException e) {
                return null;
            }
        }

        private static String describe(Throwable t) {
            java.io.StringWriter w = new java.io.StringWriter();
            t.printStackTrace(new java.io.PrintWriter(w));
            return w.toString();
        }

        @Override
        public void close() throws IOException {
            destinationThread.shutdownNow();
            writerThread.shutdownNow();
            server.close();
            guest.close();
        }
    }

    /** The refusal's kind, for the outcome counts: the first rule its message names. */
    static String kindOf(String message) {
        String[][] kinds = {
                {"header fails its CRC32C", "frame header CRC"},
                {"carries sequence", "frame sequence (dropped, repeated or moved)"},
                {"payload fails its CRC32C", "frame payload CRC"},
                {"pages of .* torn", "torn pages at COMPLETE"},
                {"stream header CRC32C", "stream header CRC"},
                {"wire format version -?\\d+; this destination", "stream header version"},
                {"not a vmmkit migration stream", "stream magic"},
                {"nonce", "stream header nonce (replay)"},
                {"stream header", "stream header fields"},
                {"page size|memory layout differs|vCPUs, this VM|the source has section|is of kind|which this VM cannot load|are not in the stream", "stream header incompatible with this VM"},
                {"channel", "channels"},
                {"ended inside", "stream ended inside a header or frame"},
                {"unknown to wire format", "unknown frame type, not skippable"},
                {"reserved bits", "reserved flag bits"},
                {"announces -?\\d+ bytes; the limit", "frame length over the limit"},
                {"payload bytes; \\w+ carries none", "payload announced by a type without one"},
                {"is malformed", "RAM or ZERO_RUN frame malformed"},
                {"does not have", "RAM outside this VM's memory"},
                {"COMPLETE on", "COMPLETE's frame count"},
                {"at COMMIT \\(frame \\d+\\) section", "section state refused at COMMIT"},
                {"COMMIT", "no COMMIT after PREPARED"},
                {"section|device", "section chunk refused"},
                {"vCPU", "vCPU state"},
                {"does not belong", "frame type out of place"},
                {"abandoned", "ABANDON"},
        };
        for (String[] k : kinds) if (Pattern.compile(k[0]).matcher(message).find()) return k[1];
        return "other";
    }
}
