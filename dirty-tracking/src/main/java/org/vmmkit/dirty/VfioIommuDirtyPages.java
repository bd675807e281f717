package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.vfio.DirtyPageCapability;
import org.vmmkit.core.vfio.DmaMapping;
import org.vmmkit.core.vfio.VfioContainer;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The pages devices wrote by DMA, from a VFIO container's IOMMU ({@code VFIO_IOMMU_DIRTY_PAGES}). DMA
 * addresses are guest physical addresses (no vIOMMU): the mapping at IOVA {@code x} is guest RAM at
 * {@code x}. The IOMMU's page size (the capability's smallest) may differ from the guest page size; bits
 * are converted both ways. A range larger than one call may report is fetched in pieces that never split
 * a mapping. A container without the capability reports every mapped page dirty on every sync, as QEMU
 * does, and {@link #reportsEverything()} says so. {@link #unmap} collects the dirty bits of what it
 * unmaps, so a mapping removed during migration loses no page.
 */
public final class VfioIommuDirtyPages implements DirtySource {
    private final VfioContainer container;
    private final GuestMemory memory;
    private final Optional<DirtyPageCapability> capability;
    private final DirtyBitmap[] unmapped;
    private Arena arena;
    private MemorySegment scratch;
    private boolean started;

    public VfioIommuDirtyPages(VfioContainer container, GuestMemory memory) {
        this.container = container;
        this.memory = memory;
        this.capability = container.dirtyPageCapability();
        this.unmapped = new DirtyBitmap[memory.regions().size()];
    }

    @Override
    public String name() {
        return "vfio-iommu(" + container.name() + ")";
    }

    @Override
    public boolean reportsEverything() {
        return capability.isEmpty();
    }

    @Override
    public void start() {
        if (started) return;
        if (capability.isPresent()) {
            long largest = 0;
            for (GuestRegion r : memory.regions()) largest = Math.max(largest, r.size());
            long iommuPages = Math.min(largest / capability.get().pageSize() + 1, capability.get().maxBitmapBytes() * 8);
            arena = Arena.ofShared();
            scratch = arena.allocate(DirtyBitmap.wordsFor(iommuPages) * 8, 64);
            for (GuestRegion r : memory.regions()) unmapped[r.index()] = new DirtyBitmap(r.size() / GuestMemory.PAGE_SIZE);
            container.startDirtyTracking();
        }
        started = true;
    }

    @Override
    public void sync(GuestRegion region, DirtyBitmap into) {
        if (!started) throw new IllegalStateException(name() + " is not started");
        List<DmaMapping> inRegion = new ArrayList<>();
        for (DmaMapping m : container.mappings()) {
            if (m.iova() >= region.guestAddress() && m.end() <= region.end()) inRegion.add(m);
            else if (m.iova() < region.end() && m.end() > region.guestAddress()) {
                throw new IllegalStateException("DMA mapping [0x" + Long.toHexString(m.iova()) + ", 0x" + Long.toHexString(m.end())
                        + ") of " + container.name() + " crosses the edge of " + region);
            }
        }
        if (capability.isEmpty()) {
            for (DmaMapping m : inRegion) {
                into.setRange((m.iova() - region.guestAddress()) / GuestMemory.PAGE_SIZE, pagesCovering(m.iova(), m.size()));
            }
            return;
        }
        long pageSize = capability.get().pageSize();
        long maxRange = capability.get().maxRangeBytes();
        int i = 0;
        while (i < inRegion.size()) {
            // A piece: consecutive mappings whose span fits one call.
            long pieceStart = inRegion.get(i).iova();
            long pieceEnd = inRegion.get(i).end();
            if (pieceEnd - pieceStart > maxRange) {
                throw new IllegalStateException("DMA mapping at iova 0x" + Long.toHexString(pieceStart) + " of "
                        + (pieceEnd - pieceStart) + " bytes is larger than one VFIO_IOMMU_DIRTY_PAGES call can report ("
                        + maxRange + ") on " + container.name());
            }
            int j = i + 1;
            while (j < inRegion.size() && inRegion.get(j).end() - pieceStart <= maxRange) pieceEnd = inRegion.get(j++).end();
            MemorySegment bits = scratch.asSlice(0, DirtyBitmap.wordsFor((pieceEnd - pieceStart) / pageSize) * 8);
            container.getDirtyBitmap(pieceStart, pieceEnd - pieceStart, pageSize, bits);
            mergeIommuBits(bits, pieceStart, pageSize, region, into);
            i = j;
        }
        DirtyBitmap pending = unmapped[region.index()];
        if (pending != null) pending.moveTo(into);
    }

    private static long pagesCovering(long address, long size) {
        long first = address / GuestMemory.PAGE_SIZE;
        long end = (address + size + GuestMemory.PAGE_SIZE - 1) / GuestMemory.PAGE_SIZE;
        return end - first;
    }

    /**
     * ORs IOMMU bits (bit {@code b} = IOVA {@code base + b * pageSize}) into a guest-page bitmap of
     * {@code region}: an IOMMU page larger than a guest page marks all guest pages it covers, a smaller
     * one marks the guest page holding it. Equal sizes with a word-aligned start OR whole words.
     */
    static void mergeIommuBits(MemorySegment bits, long base, long pageSize, GuestRegion region, DirtyBitmap into) {
        long words = bits.byteSize() / 8;
        long firstGuestPage = (base - region.guestAddress()) / GuestMemory.PAGE_SIZE;
        if (pageSize == GuestMemory.PAGE_SIZE && (firstGuestPage & 63) == 0) {
            MemorySegment target = into.segment();
            long targetWord = firstGuestPage >>> 6;
            long maxWords = Math.min(words, into.words() - targetWord);
            for (long w = 0; w < maxWords; w++) {
                long v = bits.get(JAVA_LONG, w << 3);
                if (v == 0) continue;
                if (targetWord + w == into.words() - 1) {
                    long used = into.pages() & 63;
                    if (used != 0) v &= (1L << used) - 1;
                }
                long at = (targetWord + w) << 3;
                target.set(JAVA_LONG, at, target.get(JAVA_LONG, at) | v);
            }
            return;
        }
        for (long w = 0; w < words; w++) {
            for (long v = bits.get(JAVA_LONG, w << 3); v != 0; v &= v - 1) {
                long iova = base + ((w << 6) + Long.numberOfTrailingZeros(v)) * pageSize;
                long first = (iova - region.guestAddress()) / GuestMemory.PAGE_SIZE;
                long count = pagesCovering(iova, pageSize);
                if (first + count > into.pages()) count = into.pages() - first;
                if (count > 0) into.setRange(first, count);
            }
        }
    }

    /**
     * Unmaps {@code [iova, iova + size)}; while tracking with the capability, with
     * {@code VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP}, keeping the bits for the next sync of the region.
     */
    public long unmap(long iova, long size) {
        if (!started || capability.isEmpty()) return container.unmapDma(iova, size);
        GuestRegion region = memory.regionOf(iova);
        long pageSize = capability.get().pageSize();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment bits = a.allocate(DirtyBitmap.wordsFor(size / pageSize) * 8, 8);
            long done = container.unmapDmaAndGetDirty(iova, size, pageSize, bits);
            mergeIommuBits(bits, iova, pageSize, region, unmapped[region.index()]);
            return done;
        }
    }

    @Override
    public void stop() {
        if (!started) return;
        started = false;
        if (capability.isPresent()) {
            container.stopDirtyTracking();
            for (int i = 0; i < unmapped.length; i++) {
                if (unmapped[i] != null) unmapped[i].close();
                unmapped[i] = null;
            }
            arena.close();
            arena = null;
        }
    }
}
