package org.vmmkit.vfio.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.vfio.VfioDevice;

/**
 * A VFIO device's configuration as its stream section carries it ({@code SectionInfo.config}), for the
 * destination to compare with its own device before anything moves: the protocol, the size of each region
 * the device has (BARs, config space, ... — the migration region itself left out, since how the state moves
 * is no part of the device), and whatever the VMM adds of its own settings for it.
 */
final class DeviceShape {
    private DeviceShape() {}

    /**
     * {@code protocol=v1;regions=0:4K,7:256;memory=16M}: {@code protocol}, the sizes of the regions of
     * {@code device} other than {@code leaveOut} (-1: none), then {@code vmm} ({@code key=value;...}, may be empty).
     */
    static String of(VfioDevice device, String protocol, int leaveOut, String vmm) {
        List<String> regions = new ArrayList<>();
        for (int i = 0; i < device.regionCount(); i++) {
            if (i == leaveOut) continue;
            long size;
            try {
                size = device.regionInfo(i).size();
            } catch (RuntimeException absent) { // an index the device does not implement (a non-VGA device's VGA region)
                continue;
            }
            if (size > 0) regions.add(i + ":" + size(size));
        }
        return "protocol=" + protocol + ";regions=" + String.join(",", regions) + (vmm.isEmpty() ? "" : ";" + vmm);
    }

    private static String size(long bytes) {
        if (bytes % (1L << 30) == 0) return (bytes >> 30) + "G";
        if (bytes % (1L << 20) == 0) return (bytes >> 20) + "M";
        if (bytes % (1L << 10) == 0) return (bytes >> 10) + "K";
        return Long.toString(bytes);
    }
}
