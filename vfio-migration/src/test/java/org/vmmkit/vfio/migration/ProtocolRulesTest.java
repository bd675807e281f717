package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.HeaderProbe;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V1Abi;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.Config;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.DataSection;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** One test per rule of the reference thread, on the VMM side and on the emulated driver's side. */
@Timeout(30)
class ProtocolRulesTest {
    private static final int R = EmulatedMigratableDevice.MIGRATION_REGION;
    private EmulatedMigratableDevice device;
    private V1DeviceMigration migration;
    private Arena arena;

    @BeforeEach
    void setUp() {
        // No background workload: each test dirties device state when it wants to (operateOnce).
        device = new EmulatedMigratableDevice(Config.defaults("dev0").withMemory(4L << 20).withOpsPerSecond(0), 7);
        migration = V1DeviceMigration.open(device, 0, new V1DeviceMigration.Options(100, Duration.ofSeconds(5)));
        arena = Arena.ofConfined();
    }

    @AfterEach
    void tearDown() {
        migration.close();
        device.close();
        arena.close();
    }

    private MigrationRegion region() {
        return migration.region();
    }

    @Test
    void migrationInfoIsPacked32BytesWithFieldsAt0_4_8_16_24() {
        new HeaderProbe("linux/types.h").declare(V1Abi.C_DECLARATION)
                .expectLayout(V1Abi.MIGRATION_INFO, "struct vfio_device_migration_info")
                .verify();
        new HeaderProbe("linux/vfio.h")
                .expectValue("VFIO_DEVICE_STATE_V1_STOP", V1Abi.STATE_STOP)
                .expectValue("VFIO_DEVICE_STATE_V1_RUNNING", V1Abi.STATE_RUNNING)
                .expectValue("VFIO_DEVICE_STATE_V1_SAVING", V1Abi.STATE_SAVING)
                .expectValue("VFIO_DEVICE_STATE_V1_RESUMING", V1Abi.STATE_RESUMING)
                .expectValue("VFIO_DEVICE_STATE_MASK", V1Abi.STATE_MASK)
                .verify();
        assertEquals(32, V1Abi.MIGRATION_INFO.byteSize());
        assertEquals(V1Abi.HEADER_SIZE, V1Abi.MIGRATION_INFO.byteSize());
    }

    @Test
    void validityAndErrorFollowTheHeaderMacros() {
        for (int bits = 0; bits < 8; bits++) {
            DeviceState s = new DeviceState(bits | 0x100);
            boolean resuming = (bits & 4) != 0;
            assertEquals(!resuming || bits == 4, s.valid(), "VALID(" + bits + ")");
            assertEquals(bits == 6, s.isError(), "IS_ERROR(" + bits + ")");
        }
    }

    @Test
    void theVmmNeverAsksForInvalidOrErrorStates() {
        for (int from = 0; from < 8; from++) {
            for (int to : new int[] {0b101, 0b110, 0b111}) assertFalse(new DeviceState(from).canGoTo(new DeviceState(to)));
        }
        SysException e = assertThrows(SysException.class, () -> device.writeInt(R, 0, 0b101 | 0x100));
        assertEquals("EINVAL", e.errnoName());
        assertTrue(device.misuse().get(0).contains("never writes 101b"), device.misuse().toString());
    }

    @Test
    void stateWritesKeepReservedBits() {
        assertEquals(0x100, device.currentState().raw() & ~V1Abi.STATE_MASK);
        migration.startPrecopy();
        assertEquals(0x101 | V1Abi.STATE_SAVING, device.currentState().raw());
        assertEquals(List.of(), device.misuse());
        assertThrows(SysException.class, () -> device.writeInt(R, 0, V1Abi.STATE_RUNNING)); // clobbers bit 8
        assertTrue(device.misuse().get(0).contains("reserved bits"), device.misuse().toString());
    }

    @Test
    void transitionsOffTheDiagramAreRefusedBeforeTheDeviceIsTouched() {
        migration.startResume();
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> migration.transition(DeviceState.PRECOPY));
        assertTrue(e.getMessage().contains("no transition from 100b (resuming)") && e.getMessage().contains("to 011b (pre-copy)"),
                e.getMessage());
        assertEquals(List.of(), device.misuse());
    }

    @Test
    void pendingBytesMayBePolledWithoutSideEffectsUntilDataOffsetIsRead() {
        migration.startPrecopy();
        long first = migration.pendingBytes();
        for (int i = 0; i < 5; i++) assertEquals(first, migration.pendingBytes());
        assertTrue(first > 0);
    }

    @Test
    void dataOffsetAndDataSizeRepeatTheSameChunkUntilPendingIsRead() {
        migration.startPrecopy();
        region().readPendingBytes();
        long offset = region().readDataOffset(), size = region().readDataSize();
        for (int i = 0; i < 3; i++) {
            assertEquals(offset, region().readDataOffset());
            assertEquals(size, region().readDataSize());
        }
    }

    @Test
    void readingPendingAfterDataOffsetMarksTheChunkConsumed() {
        migration.startPrecopy();
        long before = migration.pendingBytes();
        DeviceChunk c = migration.nextChunk();
        c.release();
        long after = migration.pendingBytes();
        assertTrue(after < before, before + " -> " + after);
    }

    @Test
    void pendingIsRefusedWhileAChunkIsOut() {
        migration.startPrecopy();
        migration.pendingBytes();
        DeviceChunk c = migration.nextChunk();
        IllegalStateException e = assertThrows(IllegalStateException.class, migration::pendingBytes);
        assertTrue(e.getMessage().contains("before chunk 0 is released"), e.getMessage());
        c.release();
        migration.pendingBytes();
        assertEquals(List.of(), device.misuse());
    }

    @Test
    void theNextPendingValueIsReadNeverComputed() {
        migration.startPrecopy();
        long before = migration.pendingBytes();
        DeviceChunk c = migration.nextChunk();
        long chunk = c.data().byteSize();
        for (int i = 0; i < 50; i++) device.operateOnce(); // the device generates state meanwhile
        c.release();
        long after = migration.pendingBytes();
        assertNotEquals(before - chunk, after, "pending must be what the device says");
    }

    @Test
    void dataSizeBeforeDataOffsetIsMisuse() {
        migration.startPrecopy();
        region().readPendingBytes();
        assertThrows(SysException.class, () -> region().readDataSize());
        assertTrue(device.misuse().get(0).contains("data_size read before data_offset"), device.misuse().toString());
    }

    @Test
    void dataOffsetWithNothingPendingIsMisuse() throws Exception {
        migration.startPrecopy();
        List<MemorySegment> sink = new ArrayList<>();
        for (long p = migration.pendingBytes(); p > 0; p = migration.pendingBytes()) {
            DeviceChunk c = migration.nextChunk();
            sink.add(c.data());
            c.release();
        }
        assertThrows(SysException.class, () -> region().readDataOffset());
        assertTrue(device.misuse().get(0).contains("pending_bytes 0"), device.misuse().toString());
    }

    @Test
    void registersAreAccessedOnlyAtTheirNativeWidth() {
        assertThrows(SysException.class, () -> device.readInt(R, V1Abi.PENDING_BYTES));
        assertThrows(SysException.class, () -> device.readLong(R, V1Abi.DEVICE_STATE));
        assertThrows(SysException.class, () -> device.writeLong(R, V1Abi.PENDING_BYTES, 1));
        assertEquals(3, device.misuse().size(), device.misuse().toString());
        assertEquals(0, device.readInt(R, V1Abi.RESERVED), "reserved reads as zero");
    }

    @Test
    void precopyMayMoveToStopAndCopyWithDataPending() {
        migration.startPrecopy();
        assertTrue(migration.pendingBytes() > 0);
        migration.enterStopAndCopy();
        assertEquals(DeviceState.STOP_COPY.bits(), device.currentState().bits());
    }

    @Test
    void stopAndCopyIteratesUntilPendingIsZeroThenStops() {
        migration.startPrecopy();
        migration.enterStopAndCopy();
        long[] chunks = {0};
        migration.drainStopAndCopy(c -> {
            chunks[0]++;
            c.release();
        });
        assertEquals(DeviceState.STOP.bits(), device.currentState().bits());
        assertTrue(chunks[0] > 1, "memory and registers come in several chunks");
        assertEquals(List.of(), device.misuse());
    }

    @Test
    void aDataOffsetInsideTheHeaderIsRejectedBeforeAnyRead() {
        migration.startPrecopy();
        migration.pendingBytes();
        device.faults().badDataOffset(8);
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, migration::nextChunk);
        assertTrue(e.getMessage().contains("dev0") && e.getMessage().contains("data_offset 0x8") && e.getMessage().contains("header"),
                e.getMessage());
    }

    @Test
    void aChunkReachingPastTheRegionIsRejected() {
        migration.startPrecopy();
        migration.pendingBytes();
        device.faults().badDataSize(region().size());
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, migration::nextChunk);
        assertTrue(e.getMessage().contains("does not lie in the"), e.getMessage());
        device.faults().clear().badDataOffset(region().size() + 4096);
        assertThrows(DeviceMigrationException.class, migration::nextChunk);
    }

    @Test
    void pendingThatNeverDrainsEndsWithAnErrorAfterTheChunkBound() {
        migration.startPrecopy();
        migration.enterStopAndCopy();
        device.faults().pendingNeverDrains();
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> migration.drainStopAndCopy(DeviceChunk::release));
        assertTrue(e.getMessage().contains("pending_bytes is still") && e.getMessage().contains("after 100 chunks"), e.getMessage());
        migration.cancelSave();
        assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits());
    }

    @Test
    void slowDataEndsWithAnErrorAfterTheTimeBound() {
        try (V1DeviceMigration bounded = V1DeviceMigration.open(device, 0, new V1DeviceMigration.Options(1_000_000, Duration.ofMillis(200)))) {
            bounded.startPrecopy();
            bounded.enterStopAndCopy();
            device.faults().slowData(Duration.ofMillis(100)); // 5+ chunks of 100 ms against a 200 ms bound
            long t0 = System.nanoTime();
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> bounded.drainStopAndCopy(DeviceChunk::release));
            assertTrue(e.getMessage().contains("200 ms"), e.getMessage());
            assertTrue(System.nanoTime() - t0 < 2_000_000_000L, "no hang");
        }
    }

    @Test
    void cancelDuringPrecopyPutsTheDeviceBackToRunning() {
        migration.startPrecopy();
        migration.pendingBytes();
        migration.nextChunk(); // even with a chunk out
        migration.cancelSave();
        assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits());
        assertEquals(List.of(), device.misuse());
    }

    @Test
    void aFailedStateWriteReportsTheStateTheDeviceStaysIn() {
        device.faults().failStateWrite(DeviceState.PRECOPY.bits(), Errno.EBUSY);
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, migration::startPrecopy);
        assertTrue(e.getMessage().contains("dev0") && e.getMessage().contains("EBUSY")
                && e.getMessage().contains("remains in 001b (running)"), e.getMessage());
    }

    @Test
    void errorStateIsResetBeforeAnythingElse() {
        migration.startPrecopy();
        device.faults().errorOnStateWrite(DeviceState.STOP_COPY.bits());
        DeviceMigrationException e = assertThrows(DeviceMigrationException.class, migration::enterStopAndCopy);
        assertTrue(e.getMessage().contains("110b (error)") && e.getMessage().contains("VFIO_DEVICE_RESET done")
                && e.getMessage().contains("001b (running)"), e.getMessage());
        assertEquals(DeviceState.RUNNING.bits(), device.currentState().bits());
    }

    @Test
    void resumeDataSizeWithoutDataOffsetIsMisuse() {
        migration.startResume();
        assertThrows(SysException.class, () -> region().writeDataSize(64));
        assertTrue(device.misuse().get(0).contains("before data_offset"), device.misuse().toString());
    }

    @Test
    void resumeRefusesChunksOutOfOrder() throws Exception {
        List<MemorySegment> stream = saveEverything(device, migration);
        try (EmulatedMigratableDevice b = new EmulatedMigratableDevice(Config.defaults("dev1").withMemory(4L << 20).withOpsPerSecond(0), 8);
             V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
            dst.startResume();
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> dst.loadChunk(stream.get(1)));
            assertTrue(b.misuse().get(0).contains("chunk 1 written where chunk 0 was due"), b.misuse().toString());
            assertTrue(e.getMessage().contains("dev1") && e.getMessage().contains("EINVAL"), e.getMessage());
        }
    }

    @Test
    void aReceiverFillsTheMappedDataSectionInPlaceOrAStagingBufferOtherwise() throws Exception {
        List<MemorySegment> stream = saveEverything(device, migration);
        byte[] expected = device.stateDigest();
        for (DataSection section : new DataSection[] {DataSection.MMAP, DataSection.TRAPPED}) {
            try (EmulatedMigratableDevice b = new EmulatedMigratableDevice(Config.defaults("dev1").withMemory(4L << 20).withOpsPerSecond(0)
                    .with(section), 8);
                 V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
                dst.startResume();
                for (MemorySegment chunk : stream) {
                    MemorySegment target = dst.chunkTarget(chunk.byteSize());
                    MemorySegment inSection = dst.region().mapped(dst.region().readDataOffset(), chunk.byteSize());
                    if (section == DataSection.MMAP) {
                        assertEquals(inSection.address(), target.address(), "the target is the mmap'd data section at data_offset");
                    } else {
                        assertEquals(null, inSection, "a trapped section has no mapping: the target is a staging buffer");
                    }
                    assertThrows(IllegalStateException.class, () -> dst.chunkTarget(1), "one chunk at a time");
                    target.copyFrom(chunk);
                    dst.commitChunk(chunk.byteSize());
                }
                dst.completeResume();
                assertTrue(java.util.Arrays.equals(expected, b.stateDigest()), section + ": state equal after resume");
                assertEquals(List.of(), b.misuse());
            }
        }
    }

    @Test
    void aResumeWithoutItsFinalChunkDoesNotRunAndIsReset() throws Exception {
        List<MemorySegment> stream = saveEverything(device, migration);
        try (EmulatedMigratableDevice b = new EmulatedMigratableDevice(Config.defaults("dev1").withMemory(4L << 20).withOpsPerSecond(0), 8);
             V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
            dst.startResume();
            for (MemorySegment chunk : stream.subList(0, stream.size() - 1)) dst.loadChunk(chunk);
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, dst::completeResume);
            assertTrue(e.getMessage().contains("EIO") && e.getMessage().contains("remains in 100b (resuming)"), e.getMessage());
            dst.abortResume();
            assertEquals(DeviceState.RUNNING.bits(), b.currentState().bits());
        }
    }

    @Test
    void aChunkUsedAfterPendingWasReadIsCaughtAtTheDestination() throws Exception {
        // A buggy VMM: reads data_offset/data_size, then pending_bytes (step f), and only then the data.
        migration.startPrecopy();
        migration.enterStopAndCopy();
        List<MemorySegment> stream = new ArrayList<>();
        while (region().readPendingBytes() > 0) {
            long offset = region().readDataOffset(), size = region().readDataSize();
            region().readPendingBytes();
            MemorySegment late = arena.allocate(size);
            region().read(offset, late);
            stream.add(late);
            break;
        }
        try (EmulatedMigratableDevice b = new EmulatedMigratableDevice(Config.defaults("dev1").withMemory(4L << 20).withOpsPerSecond(0), 8);
             V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
            dst.startResume();
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> dst.loadChunk(stream.get(0)));
            assertTrue(e.getMessage().contains("after reading pending_bytes"), e.getMessage());
        }
    }

    @Test
    void aDeviceWithoutAMigrationRegionIsAMigrationBlocker() {
        try (EmulatedMigratableDevice plain = new EmulatedMigratableDevice(Config.defaults("nic0").withOpsPerSecond(0), 1)
                .withoutMigrationRegion()) {
            MigrationBlockedException e = assertThrows(MigrationBlockedException.class,
                    () -> V1DeviceMigration.open(plain, 0, V1DeviceMigration.Options.DEFAULT));
            assertTrue(e.getMessage().contains("nic0 has no VFIO migration region"), e.getMessage());
        }
    }

    @Test
    void aDeviceMarkedNonMigratableIsLeftOutInsteadOfBlocking() {
        try (EmulatedMigratableDevice plain = new EmulatedMigratableDevice(Config.defaults("nic0").withOpsPerSecond(0), 1)
                .withoutMigrationRegion();
             EmulatedMigratableDevice other = new EmulatedMigratableDevice(Config.defaults("nic1").withOpsPerSecond(0), 2)
                     .withoutMigrationRegion()) {
            MigrationBlockedException e = assertThrows(MigrationBlockedException.class, () -> DeviceMigrationPlan.open(List.of(
                    new DeviceMigrationPlan.Entry(device, true), new DeviceMigrationPlan.Entry(plain, true),
                    new DeviceMigrationPlan.Entry(other, true)), V1DeviceMigration.Options.DEFAULT));
            assertTrue(e.getMessage().contains("nic0 has no VFIO migration region") && e.getMessage().contains("nic1"), e.getMessage());
            try (DeviceMigrationPlan plan = DeviceMigrationPlan.open(List.of(new DeviceMigrationPlan.Entry(device, true),
                    new DeviceMigrationPlan.Entry(plain, false)), V1DeviceMigration.Options.DEFAULT)) {
                assertEquals(1, plan.devices().size());
                assertEquals("dev0", plan.devices().get(0).deviceName());
                assertTrue(plan.leftOut().get(0).startsWith("nic0 (marked non-migratable"), plan.leftOut().toString());
            }
        }
    }

    @Test
    void chunksAreViewsOfTheMappedDataSectionOrPreadWhereTrapped() {
        migration.startPrecopy();
        migration.pendingBytes();
        DeviceChunk c = migration.nextChunk();
        assertTrue(c.mappedView());
        assertEquals(region().mapped(EmulatedMigratableDevice.DATA_START, c.data().byteSize()).address(), c.data().address(),
                "zero copy: the chunk is the data section itself");
        c.release();
        try (EmulatedMigratableDevice trapped = new EmulatedMigratableDevice(Config.defaults("dev2").with(DataSection.TRAPPED)
                .withMemory(4L << 20).withOpsPerSecond(0), 3);
             V1DeviceMigration m = V1DeviceMigration.open(trapped, 0, V1DeviceMigration.Options.DEFAULT)) {
            m.startPrecopy();
            m.pendingBytes();
            DeviceChunk t = m.nextChunk();
            assertFalse(t.mappedView());
            assertEquals(0, m.region().mappedBytes());
            t.release();
        }
    }

    @Test
    void theSaveLoopAllocatesNothingPerChunkInSteadyState() {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        MemorySegment sink = arena.allocate(2L << 20);
        long chunks = 0;
        for (int round = 0; round < 30; round++) { // warm up
            migration.startPrecopy();
            for (long p = migration.pendingBytes(); p > 0; p = migration.pendingBytes()) {
                DeviceChunk c = migration.nextChunk();
                MemorySegment.copy(c.base(), c.offset(), sink, 0, c.length());
                c.release();
            }
            migration.cancelSave();
        }
        migration.startPrecopy();
        long overhead = -(threads.getCurrentThreadAllocatedBytes() - threads.getCurrentThreadAllocatedBytes());
        long start = threads.getCurrentThreadAllocatedBytes();
        for (long p = migration.pendingBytes(); p > 0; p = migration.pendingBytes()) {
            DeviceChunk c = migration.nextChunk();
            MemorySegment.copy(c.base(), c.offset(), sink, 0, c.length());
            c.release();
            chunks++;
        }
        long allocated = threads.getCurrentThreadAllocatedBytes() - start + overhead;
        assertTrue(chunks >= 4, "chunks " + chunks);
        assertEquals(0, allocated, "bytes allocated over " + chunks + " chunks (pending, data_offset, data_size, release)");
    }

    static List<MemorySegment> saveEverything(EmulatedMigratableDevice device, V1DeviceMigration migration) {
        List<MemorySegment> stream = new ArrayList<>();
        Arena arena = Arena.ofAuto();
        migration.startPrecopy();
        migration.enterStopAndCopy();
        migration.drainStopAndCopy(c -> {
            stream.add(arena.allocate(c.data().byteSize()).copyFrom(c.data()));
            c.release();
        });
        return stream;
    }
}
