package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.vmmkit.core.migration.SectionChunk;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.testbed.vfio.EmulatedV2Device;
import org.vmmkit.testbed.vfio.EmulatedV2Device.Config;
import org.vmmkit.testbed.vfio.P2pFabric;
import org.vmmkit.testbed.vfio.V2Faults;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Every injected v2 fault at every phase where it can strike, on a VM of two v2 devices on one P2P fabric (the
 * faulted one and a peer): a clear error naming the device, a state and the errno; a rollback (every section
 * cancelled in reverse order, as the coordinator does) that leaves both devices running; no misuse and no P2P
 * write into a stopped device on the way. And on the destination: no device runs with partial state.
 */
@Timeout(30)
class V2FaultMatrixTest {
    enum Phase {
        START_SAVE(MigState.PRE_COPY), PRECOPY_CHUNKS(null), QUIESCE(MigState.PRE_COPY_P2P), STOP(MigState.STOP_COPY),
        STOP_COPY_CHUNKS(null), FINISH(MigState.STOP);

        final MigState arcInto;

        Phase(MigState arcInto) {
            this.arcInto = arcInto;
        }
    }

    record Fault(String name, BiConsumer<V2Faults, Phase> inject, boolean forArcs, boolean forChunks, boolean precopyOnly, String errno) {
        @Override
        public String toString() {
            return name;
        }
    }

    static final List<Fault> FAULTS = List.of(
            new Fault("arc fails EBUSY", (f, p) -> f.failArc(p.arcInto, Errno.EBUSY), true, false, false, "EBUSY"),
            new Fault("arc fails EIO", (f, p) -> f.failArc(p.arcInto, Errno.EIO), true, false, false, "EIO"),
            new Fault("arc falls into ERROR", (f, p) -> f.errorOnArc(p.arcInto), true, false, false, "EIO"),
            new Fault("data_fd read EIO", (f, p) -> f.failReads(Errno.EIO, 0), false, true, false, "EIO"),
            new Fault("data_fd read ENODEV mid-stream", (f, p) -> f.failReads(Errno.ENODEV, 100_000), false, true, false, "ENODEV"),
            new Fault("PRECOPY_INFO EIO", (f, p) -> f.failPrecopyInfo(Errno.EIO), false, true, true, "EIO"));

    static Stream<Arguments> sourceCases() {
        List<Arguments> cases = new ArrayList<>();
        for (Fault f : FAULTS) {
            for (Phase p : Phase.values()) {
                boolean fits = p.arcInto != null ? f.forArcs : f.forChunks && (!f.precopyOnly || p == Phase.PRECOPY_CHUNKS);
                if (fits) cases.add(Arguments.of(f, p));
            }
        }
        return cases.stream();
    }

    private static final Pattern STATE = Pattern.compile("RUNNING|PRE_COPY|STOP|ERROR|RESUMING");

    static Config config(String name) {
        return new Config(name, 256 << 10, EmulatedV2Device.ALL_FLAGS, 0, 0, 1, true, true);
    }

    @ParameterizedTest(name = "{0} at {1}")
    @MethodSource("sourceCases")
    void aFaultAtTheSourceEndsInAClearErrorWithEveryDeviceRunning(Fault fault, Phase phase) {
        P2pFabric fabric = new P2pFabric();
        P2pGroup group = new P2pGroup();
        try (EmulatedV2Device faulty = new EmulatedV2Device(config("gpu0"), 1).joinFabric(fabric);
             EmulatedV2Device peer = new EmulatedV2Device(config("nic1"), 2).joinFabric(fabric);
             V2DeviceMigration m0 = V2DeviceMigration.open(faulty, group, V2DeviceMigrationTest.SMALL_CHUNKS);
             V2DeviceMigration m1 = V2DeviceMigration.open(peer, group, V2DeviceMigrationTest.SMALL_CHUNKS)) {
            DeviceMigrationException error = null;
            try {
                save(List.of(m0, m1), faulty, fault, phase);
                fail("the save succeeded despite " + fault + " at " + phase);
            } catch (DeviceMigrationException e) {
                error = e;
            }
            String message = error.getMessage();
            assertTrue(message.contains("gpu0"), "names the device: " + message);
            assertTrue(STATE.matcher(message).find(), "names a state: " + message);
            assertTrue(message.contains(fault.errno), "names " + fault.errno + ": " + message);
            faulty.faults().clear();
            String rollback = m1.cancelSave() + "; " + m0.cancelSave(); // reverse order, as the coordinator
            for (EmulatedV2Device d : List.of(faulty, peer)) {
                assertEquals(MigState.RUNNING, d.currentState(), d.name() + " after " + rollback);
                long ops = d.operations();
                d.operateOnce();
                assertEquals(ops + 1, d.operations(), d.name() + " runs again");
                assertEquals(List.of(), d.misuse(), "no protocol misuse while failing");
                assertEquals(List.of(), d.p2pViolations());
            }
        }
    }

    /** The save of both devices with no destination (chunks released as sent), the fault injected just before {@code phase}. */
    private static void save(List<V2DeviceMigration> ms, EmulatedV2Device faulty, Fault fault, Phase phase) {
        if (phase == Phase.START_SAVE) fault.inject.accept(faulty.faults(), phase);
        for (V2DeviceMigration m : ms) m.startSave();
        if (phase == Phase.PRECOPY_CHUNKS) fault.inject.accept(faulty.faults(), phase);
        for (V2DeviceMigration m : ms) drain(m, 4);
        if (phase == Phase.QUIESCE || phase == Phase.STOP) fault.inject.accept(faulty.faults(), phase);
        for (V2DeviceMigration m : ms) m.stop();
        if (phase == Phase.STOP_COPY_CHUNKS) fault.inject.accept(faulty.faults(), phase);
        for (V2DeviceMigration m : ms) drain(m, 0);
        if (phase == Phase.FINISH) fault.inject.accept(faulty.faults(), phase);
        for (V2DeviceMigration m : ms) m.finishSave();
    }

    private static void drain(V2DeviceMigration m, int budget) {
        int n = 0;
        while ((budget == 0 || n++ < budget) && m.pending() > 0) m.nextChunk().release();
    }

    static Stream<Arguments> destinationCases() {
        return Stream.of(Arguments.of("arc into RESUMING EIO"), Arguments.of("stream refused"), Arguments.of("stream ends early"),
                Arguments.of("stream corrupted in transit"), Arguments.of("RESUMING -> STOP into ERROR"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("destinationCases")
    void aFaultAtTheDestinationLeavesNoDeviceRunningWithPartialState(String fault) {
        try (EmulatedV2Device a = new EmulatedV2Device(config("gpu0"), 1);
             EmulatedV2Device b = new EmulatedV2Device(config("gpu0"), 2);
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), V2DeviceMigrationTest.SMALL_CHUNKS);
             V2DeviceMigration dst = V2DeviceMigration.open(b, new P2pGroup(), V2DeviceMigrationTest.SMALL_CHUNKS)) {
            switch (fault) {
                case "arc into RESUMING EIO" -> b.faults().failArc(MigState.RESUMING, Errno.EIO);
                case "stream refused" -> b.faults().refuseStream();
                case "stream ends early" -> a.faults().endStreamAfter(50_000);
                default -> { }
            }
            DeviceMigrationException error = null;
            try {
                src.startSave();
                dst.startLoad(1);
                if (fault.equals("RESUMING -> STOP into ERROR")) b.faults().errorOnArc(MigState.STOP);
                src.stop();
                int n = 0;
                while (src.pending() > 0) {
                    SectionChunk c = src.nextChunk();
                    long at = dst.placeChunk(c.length());
                    MemorySegment target = dst.targetSegment();
                    MemorySegment.copy(c.base(), c.offset(), target, at, c.length());
                    if (fault.equals("stream corrupted in transit") && n++ == 2) target.set(java.lang.foreign.ValueLayout.JAVA_BYTE, at + 100, (byte) ~target.get(java.lang.foreign.ValueLayout.JAVA_BYTE, at + 100));
                    dst.commitChunk(c.length());
                    c.release();
                }
                src.finishSave();
                dst.finishLoad();
                fail("the resume succeeded despite " + fault);
            } catch (DeviceMigrationException e) {
                error = e;
            }
            assertTrue(error.getMessage().contains("gpu0") && STATE.matcher(error.getMessage()).find(), error.getMessage());
            b.faults().clear();
            String abort = dst.abortLoad();
            assertEquals(MigState.RUNNING_P2P, b.currentState(), "reset, not resumed, and writing no peer that may still resume: " + abort);
            if (!fault.startsWith("arc into")) {
                assertTrue(b.operations() == 0, "the reset device holds no partial state (its registers were dropped)");
            }
            src.cancelSave();
            assertEquals(MigState.RUNNING, a.currentState(), "the source runs on");
            assertEquals(List.of(), a.misuse());
        }
    }
}
