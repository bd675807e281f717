package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.migration.SectionChunk;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.testbed.vfio.EmulatedV2Device;
import org.vmmkit.testbed.vfio.EmulatedV2Device.Config;
import org.vmmkit.testbed.vfio.P2pFabric;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The v2 section against the emulated v2 device, driven as the coordinator drives a section (startSave, rounds of
 * pending/nextChunk, stop, the rest, finishSave; startLoad, placeChunk/commitChunk, finishLoad, start), with the
 * chunks handed straight from the source's section to the destination's.
 */
@Timeout(30)
class V2DeviceMigrationTest {
    static final V2DeviceMigration.Options SMALL_CHUNKS = new V2DeviceMigration.Options(64 << 10, 1L << 40, java.time.Duration.ofSeconds(20));

    /** Moves chunks while the source has one, at most {@code budget} (0: no limit); returns how many. */
    static int transfer(V2DeviceMigration src, V2DeviceMigration dst, int budget) {
        int n = 0;
        while ((budget == 0 || n < budget) && src.pending() > 0) {
            SectionChunk c = src.nextChunk();
            long at = dst.placeChunk(c.length());
            MemorySegment.copy(c.base(), c.offset(), dst.targetSegment(), at, c.length());
            dst.commitChunk(c.length());
            c.release();
            n++;
        }
        return n;
    }

    /** A whole migration of matched pairs, in group order; returns the source digests taken once stopped. */
    static List<byte[]> migrate(List<V2DeviceMigration> src, List<V2DeviceMigration> dst, List<EmulatedV2Device> srcDevices, int rounds) {
        for (V2DeviceMigration s : src) s.startSave();
        for (V2DeviceMigration d : dst) d.startLoad(1);
        for (int r = 0; r < rounds; r++) for (int i = 0; i < src.size(); i++) transfer(src.get(i), dst.get(i), 8);
        for (V2DeviceMigration s : src) s.stop();
        List<byte[]> digests = new ArrayList<>();
        for (int i = 0; i < src.size(); i++) {
            transfer(src.get(i), dst.get(i), 0);
            src.get(i).finishSave();
            digests.add(srcDevices.get(i).stateDigest());
        }
        for (V2DeviceMigration d : dst) d.finishLoad();
        for (V2DeviceMigration d : dst) d.start();
        return digests;
    }

    @Test
    void aDeviceWithPrecopyMigratesLiveWithItsStateEqual() {
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("nic0").withOpsPerSecond(5000), 1);
             EmulatedV2Device b = new EmulatedV2Device(Config.defaults("nic0").withOpsPerSecond(5000), 2).recordDigestOnResume();
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             V2DeviceMigration dst = V2DeviceMigration.open(b, new P2pGroup(), SMALL_CHUNKS)) {
            List<byte[]> digests = migrate(List.of(src), List.of(dst), List.of(a), 6);
            assertArrayEquals(digests.get(0), b.digestAtResume(), "the destination resumed with the state the source stopped with");
            assertEquals(MigState.RUNNING, b.currentState());
            assertEquals(MigState.STOP, a.currentState());
            assertEquals(List.of("RUNNING->PRE_COPY", "PRE_COPY->PRE_COPY_P2P", "PRE_COPY_P2P->STOP_COPY", "STOP_COPY->STOP"), a.arcs());
            assertEquals(List.of("RUNNING->RUNNING_P2P", "RUNNING_P2P->STOP", "STOP->RESUMING", "RESUMING->STOP", "STOP->RUNNING_P2P",
                    "RUNNING_P2P->RUNNING"), b.arcs());
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());
            assertTrue(src.chunksSaved() > 1 && src.bytesSaved() == dst.bytesLoaded(), src.chunksSaved() + " chunks");
        }
    }

    @Test
    void aDeviceWithoutPrecopyRunsUntouchedUntilStopAndCopy() {
        long flags = V2Abi.MIGRATION_STOP_COPY;
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("ssd0").withFlags(flags), 3);
             EmulatedV2Device b = new EmulatedV2Device(Config.defaults("ssd0").withFlags(flags).withOpsPerSecond(0), 4).recordDigestOnResume();
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             V2DeviceMigration dst = V2DeviceMigration.open(b, new P2pGroup(), SMALL_CHUNKS)) {
            src.startSave();
            assertEquals(MigState.RUNNING, a.currentState(), "no PRE_COPY where the device does not offer it");
            assertEquals(0, src.pending(), "nothing to send while it runs");
            assertTrue(src.downtimeBytes() >= a.config().memoryBytes(), "MIG_DATA_SIZE feeds the estimate: " + src.downtimeBytes());
            dst.startLoad(1);
            src.stop();
            transfer(src, dst, 0);
            src.finishSave();
            byte[] stopped = a.stateDigest();
            dst.finishLoad();
            dst.start();
            assertArrayEquals(stopped, b.digestAtResume());
            assertEquals(List.of("RUNNING->STOP", "STOP->STOP_COPY", "STOP_COPY->STOP"), a.arcs(), "no P2P state where none is offered");
            assertEquals(List.of("RUNNING->STOP", "STOP->RESUMING", "RESUMING->STOP", "STOP->RUNNING"), b.arcs());
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());
        }
    }

    @Test
    void precopysTemporaryEndIsNotTheEndOfTheStream() {
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("idle0").withMemory(64 << 10).withOpsPerSecond(0), 5);
             EmulatedV2Device b = new EmulatedV2Device(Config.defaults("idle0").withMemory(64 << 10).withOpsPerSecond(0), 6).recordDigestOnResume();
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             V2DeviceMigration dst = V2DeviceMigration.open(b, new P2pGroup(), SMALL_CHUNKS)) {
            src.startSave();
            dst.startLoad(1);
            long first = src.pending();
            assertTrue(first > 0, "the initial data");
            transfer(src, dst, 0);
            assertEquals(0, src.pending(), "an idle device reaches pre-copy's temporary end");
            assertTrue(src.temporaryEnds() > 0, "the read found ENOMSG");
            assertEquals(MigState.PRE_COPY, a.currentState(), "and the session goes on");
            a.operateOnce();
            assertTrue(src.pending() > 0, "a page the device changed comes after the temporary end");
            assertEquals(1, transfer(src, dst, 0));
            src.stop();
            transfer(src, dst, 0);
            src.finishSave();
            byte[] stopped = a.stateDigest();
            dst.finishLoad();
            dst.start();
            assertArrayEquals(stopped, b.digestAtResume());
            assertEquals(List.of(), a.misuse());
            assertEquals(List.of(), b.misuse());
        }
    }

    @Test
    void precopyInfoFeedsPendingAndMigDataSizeTheDowntimeEstimate() {
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("gpu0").withOpsPerSecond(0), 7);
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS)) {
            src.startSave();
            long pending = src.pending();
            long chunk = SMALL_CHUNKS.chunkBytes();
            assertTrue(pending > chunk, "a chunk read ahead plus PRECOPY_INFO's initial bytes: " + pending);
            long records = a.config().memoryBytes() / EmulatedV2Device.PAGE;
            long whole = EmulatedV2Device.RECORD_HEADER + records * EmulatedV2Device.PAGE_RECORD;
            assertEquals(whole, pending, "read ahead + initial_bytes = the whole initial stream (nothing sent yet)");
            long estimate = src.downtimeBytes();
            assertTrue(estimate > 0, "MIG_DATA_SIZE: " + estimate);
            src.cancelSave();
            assertEquals(MigState.RUNNING, a.currentState());
            assertEquals(List.of(), a.misuse());
        }
    }

    @Test
    void everyDeviceEntersItsP2pStateBeforeAnyStopsAndNoneTakesADmaAfterAPeerStopped() {
        P2pFabric fabric = new P2pFabric();
        Config cfg = new Config("x", 64 << 10, EmulatedV2Device.ALL_FLAGS, 0, 0, 1, true, true);
        List<EmulatedV2Device> srcDevices = new ArrayList<>(), dstDevices = new ArrayList<>();
        P2pGroup srcGroup = new P2pGroup(), dstGroup = new P2pGroup();
        List<V2DeviceMigration> src = new ArrayList<>(), dst = new ArrayList<>();
        P2pFabric dstFabric = new P2pFabric();
        try {
            for (int i = 0; i < 3; i++) {
                Config c = new Config("dev" + i, cfg.memoryBytes(), cfg.migrationFlags(), 0, 0, 1, true, true);
                srcDevices.add(new EmulatedV2Device(c, 10 + i).joinFabric(fabric));
                dstDevices.add(new EmulatedV2Device(c, 20 + i).joinFabric(dstFabric).recordDigestOnResume());
                src.add(V2DeviceMigration.open(srcDevices.get(i), srcGroup, SMALL_CHUNKS));
                dst.add(V2DeviceMigration.open(dstDevices.get(i), dstGroup, SMALL_CHUNKS));
            }
            assertTrue(srcGroup.orderingGuaranteed());
            for (EmulatedV2Device d : srcDevices) d.operateOnce(); // P2P writes while everything runs
            for (V2DeviceMigration s : src) s.startSave();
            for (V2DeviceMigration d : dst) d.startLoad(1);
            src.get(0).stop();
            assertEquals(MigState.STOP_COPY, srcDevices.get(0).currentState());
            assertEquals(MigState.PRE_COPY_P2P, srcDevices.get(1).currentState(), "every peer quiesced before the first stopped");
            assertEquals(MigState.PRE_COPY_P2P, srcDevices.get(2).currentState());
            long p2pBefore = srcDevices.get(1).p2pWrites() + srcDevices.get(2).p2pWrites();
            srcDevices.get(1).operateOnce(); // runs, but initiates no P2P write in PRE_COPY_P2P
            srcDevices.get(2).operateOnce();
            assertEquals(p2pBefore, srcDevices.get(1).p2pWrites() + srcDevices.get(2).p2pWrites());
            for (int i = 1; i < 3; i++) src.get(i).stop();
            List<byte[]> digests = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                transfer(src.get(i), dst.get(i), 0);
                src.get(i).finishSave();
                digests.add(srcDevices.get(i).stateDigest());
            }
            for (V2DeviceMigration d : dst) d.finishLoad();
            dst.get(0).start();
            assertEquals(MigState.RUNNING, dstDevices.get(0).currentState());
            assertEquals(MigState.RUNNING_P2P, dstDevices.get(1).currentState(), "every peer answers P2P before the first runs");
            assertEquals(MigState.RUNNING_P2P, dstDevices.get(2).currentState());
            dst.get(1).start();
            dst.get(2).start();
            for (int i = 0; i < 3; i++) {
                assertArrayEquals(digests.get(i), dstDevices.get(i).digestAtResume(), "dev" + i);
                assertEquals(List.of(), srcDevices.get(i).p2pViolations());
                assertEquals(List.of(), dstDevices.get(i).p2pViolations());
                assertEquals(List.of(), srcDevices.get(i).misuse());
                assertEquals(List.of(), dstDevices.get(i).misuse());
            }
            assertTrue(p2pBefore > 0, "the devices did write each other before the migration");
        } finally {
            src.forEach(V2DeviceMigration::close);
            dst.forEach(V2DeviceMigration::close);
            srcDevices.forEach(EmulatedV2Device::close);
            dstDevices.forEach(EmulatedV2Device::close);
        }
    }

    @Test
    void withoutTheGroupAStoppedDeviceTakesAPeersWrite() {
        // The control for the test above: stopped one by one, a peer still running writes a stopped device.
        P2pFabric fabric = new P2pFabric();
        try (EmulatedV2Device a = new EmulatedV2Device(new Config("a", 64 << 10, EmulatedV2Device.ALL_FLAGS, 0, 0, 1, true, true), 1).joinFabric(fabric);
             EmulatedV2Device b = new EmulatedV2Device(new Config("b", 64 << 10, EmulatedV2Device.ALL_FLAGS, 0, 0, 1, true, true), 2).joinFabric(fabric);
             V2DeviceMigration ma = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             V2DeviceMigration mb = V2DeviceMigration.open(b, new P2pGroup(), SMALL_CHUNKS)) {
            ma.startSave();
            mb.startSave();
            ma.stop(); // a's own group: b is not quiesced
            b.operateOnce();
            assertEquals(1, a.p2pViolations().size(), a.p2pViolations().toString());
            ma.cancelSave();
            mb.cancelSave();
        }
    }

    @Test
    void aDestinationRefusesAStreamThatEndsEarlyAndIsResetNotResumed() {
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("gpu0").withMemory(64 << 10).withOpsPerSecond(0), 1);
             EmulatedV2Device b = new EmulatedV2Device(Config.defaults("gpu0").withMemory(64 << 10).withOpsPerSecond(0), 2);
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             V2DeviceMigration dst = V2DeviceMigration.open(b, new P2pGroup(), SMALL_CHUNKS)) {
            a.faults().endStreamAfter(10_000);
            src.startSave();
            dst.startLoad(1);
            src.stop();
            transfer(src, dst, 0);
            src.finishSave(); // the source cannot tell: its stream ended
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, dst::finishLoad);
            assertTrue(e.getMessage().contains("gpu0") && e.getMessage().contains("EINVAL") && e.getMessage().contains("RESUMING -> STOP"), e.getMessage());
            assertTrue(e.getMessage().contains("ERROR") && e.getMessage().contains("VFIO_DEVICE_RESET done"), e.getMessage());
            assertEquals(MigState.RUNNING, b.currentState(), "reset, not resumed");
            assertFalse(Arrays.equals(a.stateDigest(), b.stateDigest()));
        }
    }

    /**
     * The loop's Java code allocates nothing per chunk; what the thread allocates is FFM's errno capture, 40 bytes a
     * captured downcall on JDK 25 (as docs/architecture.md notes for madvise): per chunk the VMM's read of the data
     * fd and its PRECOPY_INFO, and the emulated driver's FIONREAD of its pipe (a kernel driver's work would not be
     * on this thread's Java heap). Bounded here by three captured calls a chunk; the probe of one call is printed.
     */
    @Test
    void theSaveLoopAllocatesNothingPerChunkButFfmsErrnoCapture() {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (EmulatedV2Device a = new EmulatedV2Device(Config.defaults("gpu0").withMemory(4 << 20).withOpsPerSecond(0), 1);
             V2DeviceMigration src = V2DeviceMigration.open(a, new P2pGroup(), SMALL_CHUNKS);
             java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment sink = arena.allocate(SMALL_CHUNKS.chunkBytes());
            org.vmmkit.core.sys.Fd[] pipe = org.vmmkit.core.sys.Libc.pipe(org.vmmkit.core.sys.Libc.O_NONBLOCK, "errno-capture probe");
            MemorySegment one = arena.allocate(8);
            for (int i = 0; i < 20_000; i++) org.vmmkit.core.sys.Libc.readRaw(pipe[0].raw(), one); // warm up: EAGAIN each
            long overhead = -(threads.getCurrentThreadAllocatedBytes() - threads.getCurrentThreadAllocatedBytes());
            long t0 = threads.getCurrentThreadAllocatedBytes();
            for (int i = 0; i < 1000; i++) org.vmmkit.core.sys.Libc.readRaw(pipe[0].raw(), one);
            long perCall = (threads.getCurrentThreadAllocatedBytes() - t0 + overhead) / 1000;
            pipe[0].close();
            pipe[1].close();
            for (int round = 0; round < 5; round++) { // warm up: whole pre-copy passes
                src.startSave();
                drainInto(src, sink);
                src.cancelSave();
            }
            src.startSave();
            long start = threads.getCurrentThreadAllocatedBytes();
            long chunks = drainInto(src, sink);
            long allocated = threads.getCurrentThreadAllocatedBytes() - start + overhead;
            src.cancelSave();
            assertTrue(chunks >= 16, "chunks " + chunks);
            System.err.println("v2 save loop: " + allocated + " bytes over " + chunks + " chunks (" + allocated / chunks
                    + " per chunk); one errno-capturing downcall allocates " + perCall);
            // The probe's own figure depends on what the JIT made of its loop (40 B, or 0 once C2 scalar-replaces it), so the
            // bound is JDK 25's 40 B for each of the three captured calls a chunk can make; measured 41-86 B a chunk.
            assertTrue(allocated <= chunks * 3 * 40, allocated + " bytes over " + chunks + " chunks, more than three captured calls"
                    + " (40 B each on JDK 25) a chunk: the Java code allocates");
        }
    }

    private static long drainInto(V2DeviceMigration src, MemorySegment sink) {
        long chunks = 0;
        while (src.pending() > 0) {
            SectionChunk c = src.nextChunk();
            MemorySegment.copy(c.base(), c.offset(), sink, 0, c.length());
            c.release();
            chunks++;
        }
        return chunks;
    }
}
