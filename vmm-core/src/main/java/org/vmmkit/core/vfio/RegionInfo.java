package org.vmmkit.core.vfio;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * What {@code VFIO_DEVICE_GET_REGION_INFO} says of one region: flags, size, its offset in the device fd,
 * and the parsed capabilities (type/subtype; sparse mmap areas).
 */
public record RegionInfo(int index, int flags, long size, long fdOffset, Optional<Type> type, List<SparseArea> sparseAreas) {

    /** {@code VFIO_REGION_INFO_CAP_TYPE}. */
    public record Type(int type, int subtype) {}

    /** One mmappable area of a region ({@code VFIO_REGION_INFO_CAP_SPARSE_MMAP}). */
    public record SparseArea(long offset, long size) {
        public boolean contains(long from, long length) {
            return from >= offset && length >= 0 && from - offset <= size - length;
        }
    }

    public RegionInfo {
        sparseAreas = List.copyOf(sparseAreas);
    }

    public boolean readable() {
        return (flags & VfioAbi.REGION_INFO_FLAG_READ) != 0;
    }

    public boolean writable() {
        return (flags & VfioAbi.REGION_INFO_FLAG_WRITE) != 0;
    }

    public boolean mmappable() {
        return (flags & VfioAbi.REGION_INFO_FLAG_MMAP) != 0;
    }

    /** The sparse area holding {@code [offset, offset + length)} whole, if the region can be mmap'd there. */
    public Optional<SparseArea> mmappableArea(long offset, long length) {
        if (!mmappable()) return Optional.empty();
        for (SparseArea a : sparseAreas) if (a.contains(offset, length)) return Optional.of(a);
        return Optional.empty();
    }

    /**
     * Parses a {@code struct vfio_region_info} as the kernel filled it, with its capability chain (offsets
     * from the start of the struct). A capability pointing outside {@code info} is an error.
     */
    public static RegionInfo parse(MemorySegment info) {
        int flags = info.get(JAVA_INT, 4);
        int index = info.get(JAVA_INT, 8);
        long capOffset = Integer.toUnsignedLong(info.get(JAVA_INT, 12));
        long size = info.get(JAVA_LONG, 16);
        long offset = info.get(JAVA_LONG, 24);
        Optional<Type> type = Optional.empty();
        List<SparseArea> areas = new ArrayList<>();
        if ((flags & VfioAbi.REGION_INFO_FLAG_CAPS) != 0) {
            int hops = 0;
            for (long next = capOffset; next != 0; ) {
                if (++hops > 64 || next < VfioAbi.REGION_INFO.byteSize() || next + 8 > info.byteSize()) {
                    throw new IllegalStateException("region " + index + ": capability offset " + next + " is outside the "
                            + info.byteSize() + "-byte info");
                }
                int id = Short.toUnsignedInt(info.get(JAVA_SHORT, next));
                if (id == VfioAbi.REGION_INFO_CAP_TYPE) {
                    type = Optional.of(new Type(info.get(JAVA_INT, next + 8), info.get(JAVA_INT, next + 12)));
                } else if (id == VfioAbi.REGION_INFO_CAP_SPARSE_MMAP) {
                    long n = Integer.toUnsignedLong(info.get(JAVA_INT, next + 8));
                    if (next + 16 + 16 * n > info.byteSize()) {
                        throw new IllegalStateException("region " + index + ": " + n + " sparse areas overrun the info");
                    }
                    for (long i = 0; i < n; i++) areas.add(new SparseArea(info.get(JAVA_LONG, next + 16 + 16 * i),
                            info.get(JAVA_LONG, next + 24 + 16 * i)));
                }
                next = Integer.toUnsignedLong(info.get(JAVA_INT, next + 4));
            }
        }
        return new RegionInfo(index, flags, size, offset, type, areas);
    }
}
