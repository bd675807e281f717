package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.v2.DeviceFeatures;

/**
 * The pages one device wrote by DMA, from the device's own log ({@code VFIO_DEVICE_FEATURE_DMA_LOGGING_*}, migration
 * v2): for IOMMUs without dirty tracking, where the device can tell. As for {@link VfioIommuDirtyPages}, DMA
 * addresses are guest physical addresses (no vIOMMU), so a region's IOVA range is its guest range; logging covers
 * every region, at the guest page size. A report only sets bits (the header: it "will never clear or perform any
 * initialization of the user provided bitmap"), so it goes into a zeroed scratch per region, then is ORed in. A
 * failed report means the log is corrupted (the header): that region is reported all dirty, and counted in
 * {@link #failedReports()}. Goes through {@link VfioDevice#feature}, so a kernel device, a vfio-user device and
 * the emulated one are all sources.
 */
public final class DeviceDmaLog implements DirtySource {
    private final VfioDevice device;
    private final GuestMemory memory;
    private Arena arena;
    private MemorySegment scratch;
    private boolean started;
    private long failedReports;

    public DeviceDmaLog(VfioDevice device, GuestMemory memory) {
        this.device = device;
        this.memory = memory;
    }

    /** Whether {@code device} logs its DMA writes (a PROBE of DMA_LOGGING_START). */
    public static boolean supported(VfioDevice device) {
        return DeviceFeatures.dmaLoggingSupported(device);
    }

    @Override
    public String name() {
        return "device-dma-log(" + device.name() + ")";
    }

    public long failedReports() {
        return failedReports;
    }

    @Override
    public void start() {
        if (started) return;
        List<GuestRegion> regions = memory.regions();
        long[] iovas = new long[regions.size()], lengths = new long[regions.size()];
        long largest = 0;
        for (int i = 0; i < regions.size(); i++) {
            iovas[i] = regions.get(i).guestAddress();
            lengths[i] = regions.get(i).size();
            largest = Math.max(largest, regions.get(i).size());
        }
        arena = Arena.ofShared();
        scratch = arena.allocate(DirtyBitmap.wordsFor(largest / GuestMemory.PAGE_SIZE) * 8, 64);
        try {
            DeviceFeatures.dmaLoggingStart(device, GuestMemory.PAGE_SIZE, iovas, lengths);
        } catch (RuntimeException e) {
            arena.close();
            arena = null;
            throw e;
        }
        started = true;
    }

    @Override
    public void sync(GuestRegion region, DirtyBitmap into) {
        if (!started) throw new IllegalStateException(name() + " is not started");
        MemorySegment bits = scratch.asSlice(0, into.words() * 8);
        bits.fill((byte) 0);
        try {
            DeviceFeatures.dmaLoggingReport(device, region.guestAddress(), region.size(), GuestMemory.PAGE_SIZE, bits);
        } catch (SysException e) {
            failedReports++;
            into.setAll(); // the log is corrupted: every page of the region may have been written
            return;
        }
        into.orWords(bits);
    }

    @Override
    public void stop() {
        if (!started) return;
        started = false;
        try {
            DeviceFeatures.dmaLoggingStop(device);
        } finally {
            arena.close();
            arena = null;
        }
    }
}
