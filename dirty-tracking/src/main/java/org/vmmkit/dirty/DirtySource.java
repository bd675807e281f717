package org.vmmkit.dirty;

import org.vmmkit.core.memory.GuestRegion;

/**
 * Something that knows which guest pages were written: KVM's dirty log for vCPU writes, the VFIO IOMMU
 * for device DMA. Bitmaps are in guest pages ({@link org.vmmkit.core.memory.GuestMemory#PAGE_SIZE}),
 * bit 0 being the region's first page.
 */
public interface DirtySource {

    /** For statistics and errors: {@code kvm-dirty-log}, {@code vfio-iommu(emulated-container)}. */
    String name();

    /** Starts tracking every region. */
    void start();

    /**
     * ORs into {@code into} every page of {@code region} written since the previous sync of that region
     * (since {@link #start} for the first), and clears them at the source.
     */
    void sync(GuestRegion region, DirtyBitmap into);

    /** Stops tracking; safe to call when not started. */
    void stop();

    /** True when the source cannot tell and reports every page it covers on every sync. */
    default boolean reportsEverything() {
        return false;
    }
}
