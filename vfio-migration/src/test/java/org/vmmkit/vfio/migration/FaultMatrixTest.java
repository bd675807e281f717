package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.Config;
import org.vmmkit.testbed.vfio.Faults;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Every injected fault at every phase where it can strike: a clear error naming the device, a state and
 * (for a failed call) the errno; the source device running again (reset where it fell into ERROR); no
 * hang. And the same on the destination: a failed resume leaves no device running with partial state.
 */
@Timeout(20)
class FaultMatrixTest {

    enum Phase {
        START_PRECOPY(DeviceState.PRECOPY), PRECOPY_CHUNKS(null), ENTER_STOP_COPY(DeviceState.STOP_COPY),
        STOP_COPY_CHUNKS(null), STOP(DeviceState.STOP);

        final DeviceState target;

        Phase(DeviceState target) {
            this.target = target;
        }

        boolean transition() {
            return target != null;
        }
    }

    /** A fault: how to inject it for a phase, and the errno the error must name (null: a bound, no call failed). */
    record Fault(String name, BiConsumer<Faults, Phase> inject, boolean forTransitions, boolean forChunks, boolean stopCopyOnly,
                 String errno) {
        @Override
        public String toString() {
            return name;
        }
    }

    static final List<Fault> FAULTS = List.of(
            new Fault("state write EBUSY", (f, p) -> f.failStateWrite(p.target.bits(), Errno.EBUSY), true, false, false, "EBUSY"),
            new Fault("state write EIO", (f, p) -> f.failStateWrite(p.target.bits(), Errno.EIO), true, false, false, "EIO"),
            new Fault("fall into ERROR", (f, p) -> f.errorOnStateWrite(p.target.bits()), true, false, false, "EIO"),
            new Fault("pending_bytes EIO", (f, p) -> f.failRead("pending_bytes", Errno.EIO), false, true, false, "EIO"),
            new Fault("data_offset ENODEV", (f, p) -> f.failRead("data_offset", Errno.ENODEV), false, true, false, "ENODEV"),
            new Fault("data_size EFAULT", (f, p) -> f.failRead("data_size", Errno.EFAULT), false, true, false, "EFAULT"),
            new Fault("staging fails", (f, p) -> f.failStagingAfter(0), false, true, false, "EIO"),
            new Fault("data_offset in the header", (f, p) -> f.badDataOffset(16), false, true, false, null),
            new Fault("data_offset past the region", (f, p) -> f.badDataOffset(1L << 40), false, true, false, null),
            new Fault("data_size past the region", (f, p) -> f.badDataSize(Long.MAX_VALUE / 2), false, true, false, null),
            new Fault("pending never drains", (f, p) -> f.pendingNeverDrains(), false, true, true, null),
            new Fault("slow data", (f, p) -> f.slowData(Duration.ofMillis(150)), false, true, true, null));

    static Stream<Arguments> sourceCases() {
        List<Arguments> cases = new ArrayList<>();
        for (Fault f : FAULTS) {
            for (Phase p : Phase.values()) {
                boolean fits = p.transition() ? f.forTransitions : f.forChunks && (!f.stopCopyOnly || p == Phase.STOP_COPY_CHUNKS);
                if (fits) cases.add(Arguments.of(f, p));
            }
        }
        return cases.stream();
    }

    private static final Pattern STATE = Pattern.compile("[01]{3}b \\(");

    @ParameterizedTest(name = "{0} at {1}")
    @MethodSource("sourceCases")
    void aFaultAtTheSourceEndsInAClearErrorWithTheDeviceRunning(Fault fault, Phase phase) {
        // 16 MiB of device memory: stop-and-copy takes a dozen chunks, so a slow device outlasts the bound.
        try (EmulatedMigratableDevice device = new EmulatedMigratableDevice(Config.defaults("gpu0").withMemory(16L << 20)
                .withOpsPerSecond(5000), 11);
             V1DeviceMigration m = V1DeviceMigration.open(device, 0, new V1DeviceMigration.Options(200, Duration.ofMillis(400)))) {
            DeviceMigrationException error = null;
            try {
                save(m, device, fault, phase);
                fail("the save succeeded despite " + fault + " at " + phase);
            } catch (DeviceMigrationException e) {
                error = e;
            }
            String message = error.getMessage();
            assertTrue(message.contains("gpu0"), "names the device: " + message);
            assertTrue(STATE.matcher(message).find(), "names a state: " + message);
            if (fault.errno != null) assertTrue(message.contains(fault.errno), "names " + fault.errno + ": " + message);
            String rollback = m.cancelSave();
            assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits(), "after " + rollback);
            long ops = device.operations();
            long deadline = System.nanoTime() + 2_000_000_000L;
            while (device.operations() == ops && System.nanoTime() < deadline) Thread.onSpinWait();
            assertTrue(device.operations() > ops, "the source device runs again");
            assertEquals(List.of(), device.misuse(), "no protocol misuse while failing");
        }
    }

    /** The save sequence, injecting the fault just before {@code phase}. */
    private static void save(V1DeviceMigration m, EmulatedMigratableDevice device, Fault fault, Phase phase) {
        if (phase == Phase.START_PRECOPY) fault.inject.accept(device.faults(), phase);
        m.startPrecopy();
        if (phase == Phase.PRECOPY_CHUNKS) fault.inject.accept(device.faults(), phase);
        int budget = 3;
        for (long p = m.pendingBytes(); p > 0 && budget-- > 0; p = m.pendingBytes()) m.nextChunk().release();
        if (phase == Phase.ENTER_STOP_COPY) fault.inject.accept(device.faults(), phase);
        m.enterStopAndCopy();
        if (phase == Phase.STOP_COPY_CHUNKS) fault.inject.accept(device.faults(), phase);
        if (phase == Phase.STOP) {
            // The drain ends with 010b -> 000b: inject after the last chunk.
            while (m.pendingBytes() > 0) m.nextChunk().release();
            fault.inject.accept(device.faults(), phase);
        }
        m.drainStopAndCopy(DeviceChunk::release);
    }

    static Stream<Arguments> destinationCases() {
        return Stream.of(Arguments.of("resume write EIO"), Arguments.of("resume data_offset in the header"),
                Arguments.of("resume data_offset EIO"), Arguments.of("state write to running EIO"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("destinationCases")
    void aFaultAtTheDestinationLeavesNoDeviceRunningWithPartialState(String fault) {
        try (EmulatedMigratableDevice a = new EmulatedMigratableDevice(Config.defaults("gpu0").withMemory(4L << 20).withOpsPerSecond(0), 1);
             EmulatedMigratableDevice b = new EmulatedMigratableDevice(Config.defaults("gpu1").withMemory(4L << 20).withOpsPerSecond(0), 2);
             V1DeviceMigration src = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT);
             Arena arena = Arena.ofConfined()) {
            List<MemorySegment> stream = new ArrayList<>();
            src.startPrecopy();
            src.enterStopAndCopy();
            src.drainStopAndCopy(c -> {
                stream.add(arena.allocate(c.data().byteSize()).copyFrom(c.data()));
                c.release();
            });
            byte[] before = b.stateDigest();
            dst.startResume();
            switch (fault) {
                case "resume write EIO" -> b.faults().failResume(Errno.EIO);
                case "resume data_offset in the header" -> b.faults().badDataOffset(0);
                case "resume data_offset EIO" -> b.faults().failRead("data_offset", Errno.EIO);
                case "state write to running EIO" -> b.faults().failStateWrite(DeviceState.RUNNING.bits(), Errno.EIO);
                default -> throw new IllegalArgumentException(fault);
            }
            DeviceMigrationException error = null;
            try {
                for (MemorySegment chunk : stream) dst.loadChunk(chunk);
                dst.completeResume();
                fail("the resume succeeded despite " + fault);
            } catch (DeviceMigrationException e) {
                error = e;
            }
            assertTrue(error.getMessage().contains("gpu1") && STATE.matcher(error.getMessage()).find(), error.getMessage());
            b.faults().clear();
            dst.abortResume();
            assertEquals(DeviceState.RUNNING.bits(), b.currentState().bits(), "reset, not resumed");
            if (fault.startsWith("resume data_offset in")) {
                assertTrue(java.util.Arrays.equals(before, b.stateDigest()), "nothing was written outside the data section");
            }
        }
    }
}
