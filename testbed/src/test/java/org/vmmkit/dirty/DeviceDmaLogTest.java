package org.vmmkit.dirty;

import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedV2Device;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer.Tracking;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(20)
class DeviceDmaLogTest {
    private static final long MIB = 1 << 20, PAGE = 4096;

    @Test
    void theDevicesOwnLogFindsExactlyThePagesItsDmaWroteWhereTheIommuCannotTell() {
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             EmulatedVfioContainer iommu = new EmulatedVfioContainer("no-dirty-tracking", PAGE, Tracking.NONE)) {
            GuestRegion region = memory.regions().get(0);
            iommu.mapDma(0, memory.slice(0, 16 * MIB), true, true);
            // Every operation DMAs one page; no background workload: the test's operations are all there are.
            EmulatedV2Device device = new EmulatedV2Device(new EmulatedV2Device.Config("nic0", 64 << 10, EmulatedV2Device.ALL_FLAGS, 0, 1, 0, true, true), 9)
                    .attachDma(iommu, 0, 16 * MIB);
            DeviceDmaLog log = new DeviceDmaLog(device, memory);
            try (DirtyTracker tracker = new DirtyTracker(memory, List.of(log))) {
                assertTrue(DeviceDmaLog.supported(device));
                tracker.start();
                tracker.sync(); // generation 1: everything
                tracker.sync();
                assertEquals(0, tracker.bitmap(region).count(), "nothing written, nothing reported");
                // Which pages the DMA hits: the guest memory tells (the device writes its own memory's pages there).
                byte[] before = digest(memory);
                for (int i = 0; i < 20; i++) device.operateOnce();
                tracker.sync();
                long reported = tracker.bitmap(region).count();
                assertTrue(reported >= 1 && reported <= 20, reported + " pages for 20 DMA writes");
                assertEquals(changedPages(before, memory), reported, "exactly the pages whose content changed");
                tracker.sync();
                assertEquals(0, tracker.bitmap(region).count(), "a report clears what it returned");
                assertEquals(0, log.failedReports());
                assertEquals(List.of(), device.misuse());
            } finally {
                device.close();
            }
        }
    }

    private static byte[] digest(GuestMemory memory) {
        return memory.slice(0, 16 * MIB).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    }

    private static long changedPages(byte[] before, GuestMemory memory) {
        byte[] now = digest(memory);
        long n = 0;
        for (int p = 0; p < before.length / PAGE; p++) {
            if (!java.util.Arrays.equals(before, (int) (p * PAGE), (int) ((p + 1) * PAGE), now, (int) (p * PAGE), (int) ((p + 1) * PAGE))) n++;
        }
        return n;
    }
}
