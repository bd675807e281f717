package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice.DataSection;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Device A → a stream in memory → device B, with pre-copy while A's workload and DMA run, then stop-and-copy. */
@Timeout(60)
class DeviceMigrationTest {

    @ParameterizedTest(name = "data section {0}")
    @EnumSource(DataSection.class)
    void deviceStateArrivesByteForByteAndTheDestinationRunsOn(DataSection section) throws Exception {
        EmulatedMigratableDevice.Config config = EmulatedMigratableDevice.Config.defaults("emulated-dev0").with(section)
                .withMemory(16L << 20).withOpsPerSecond(20_000);
        try (GuestMemory guest = GuestMemory.create(GuestMemory.standardLayout(16L << 20));
             EmulatedMigratableDevice a = new EmulatedMigratableDevice(config, 1);
             EmulatedMigratableDevice b = new EmulatedMigratableDevice(config, 2).recordDigestOnResume();
             Arena arena = Arena.ofConfined()) {
            EmulatedVfioContainer container = new EmulatedVfioContainer("emulated-container", 4096, EmulatedVfioContainer.Tracking.PRECISE);
            container.mapDma(0, guest.regions().get(0).host(), true, true);
            container.startDirtyTracking();
            a.attachDma(container, 1 << 20, 8 << 20);
            List<MemorySegment> stream = new ArrayList<>();
            int mapped = 0, trapped = 0;
            try (V1DeviceMigration source = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
                 V1DeviceMigration destination = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT)) {
                source.startPrecopy();
                for (int round = 0; round < 4; round++) {
                    int budget = 6;
                    for (long pending = source.pendingBytes(); pending > 0 && budget-- > 0; pending = source.pendingBytes()) {
                        DeviceChunk c = source.nextChunk();
                        stream.add(arena.allocate(c.data().byteSize()).copyFrom(c.data()));
                        if (c.mappedView()) mapped++; else trapped++;
                        c.release();
                    }
                    Thread.sleep(15); // the workload dirties more device memory meanwhile
                }
                long opsBeforeStop = a.operations();
                source.enterStopAndCopy();
                source.drainStopAndCopy(c -> {
                    stream.add(arena.allocate(c.data().byteSize()).copyFrom(c.data()));
                    c.release();
                });
                assertEquals(DeviceState.STOP.bits(), a.currentState().bits());
                byte[] atStop = a.stateDigest();
                Thread.sleep(20);
                assertArrayEquals(atStop, a.stateDigest(), "a stopped device changes nothing");
                assertTrue(a.operations() > 0 && opsBeforeStop > 0, "the workload ran during pre-copy");
                assertTrue(a.dmaWrites() > 0, "the DMA engine wrote guest memory");

                destination.startResume();
                for (MemorySegment chunk : stream) destination.loadChunk(chunk);
                destination.completeResume();
                // B runs on at once (its workload changes memory), so compare what it held at the moment it resumed.
                assertArrayEquals(atStop, b.digestAtResume(), "device memory and registers equal A's at stop");
                assertEquals(source.chunksSaved(), destination.chunksLoaded());
                long opsAtResume = b.operations();
                Thread.sleep(50);
                assertTrue(b.operations() > opsAtResume, "B runs on");
            }
            assertEquals(List.of(), a.misuse(), "protocol misuse at the source");
            assertEquals(List.of(), b.misuse(), "protocol misuse at the destination");
            switch (section) {
                case MMAP -> assertEquals(0, trapped, "every chunk is a view of the mmap'd data section");
                case TRAPPED -> assertEquals(0, mapped, "no chunk can be mapped");
                case PARTIAL -> assertTrue(mapped > 0 && trapped > 0, "mapped " + mapped + ", trapped " + trapped);
                case DIRECT -> assertEquals(0, trapped, "headers in the mapped staging area, runs in the mapped memory window");
            }
            assertTrue(Arrays.stream(new int[] {mapped + trapped}).sum() > 0);
        }
    }

    /**
     * A chunk's bytes stay still while it is out, though the device runs on: the VMM reads them twice (for the
     * frame's CRC, then the kernel for the socket), and a DIRECT raw chunk is the device's live memory.
     */
    @ParameterizedTest(name = "data section {0}")
    @EnumSource(DataSection.class)
    void aChunkThatIsOutDoesNotChangeWhileTheDeviceRuns(DataSection section) throws Exception {
        EmulatedMigratableDevice.Config config = EmulatedMigratableDevice.Config.defaults("emulated-dev0").with(section)
                .withMemory(64 << 10).withOpsPerSecond(0); // 16 pages, written only by operateOnce below
        try (EmulatedMigratableDevice a = new EmulatedMigratableDevice(config, 3);
             V1DeviceMigration source = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT)) {
            source.startPrecopy();
            int chunks = 0;
            for (long pending = source.pendingBytes(); pending > 0 && chunks < 16; pending = source.pendingBytes(), chunks++) {
                DeviceChunk c = source.nextChunk();
                byte[] taken = c.data().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                long ops = a.operations();
                for (int i = 0; i < 64; i++) a.operateOnce();
                assertArrayEquals(taken, c.data().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), "chunk " + chunks + " changed while out");
                c.release();
                assertTrue(a.operations() > ops || section == DataSection.DIRECT, "the device ran on");
            }
            assertTrue(chunks > 0);
            source.cancelSave();
            assertEquals(List.of(), a.misuse());
        }
    }
}
