package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;

import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.abi.V1Abi;

/**
 * A device's v1 migration region: the {@code vfio_device_migration_info} registers at offset 0, each
 * read and written at its native width, and the data section behind them, mmap'd where the sparse-mmap
 * capability allows (mapped once, at open) and otherwise reached with pread/pwrite.
 */
public final class MigrationRegion implements AutoCloseable {
    private record Mapped(long offset, MemorySegment segment) {}

    private final VfioDevice device;
    private final RegionInfo info;
    private final List<Mapped> mapped = new ArrayList<>();

    private MigrationRegion(VfioDevice device, RegionInfo info) {
        this.device = device;
        this.info = info;
        try {
            for (RegionInfo.SparseArea a : info.sparseAreas()) {
                if (!info.mmappable() || a.size() == 0) continue;
                if (a.offset() < V1Abi.HEADER_SIZE) continue; // the registers stay trapped
                mapped.add(new Mapped(a.offset(), device.mmap(info.index(), a.offset(), a.size())));
            }
        } catch (RuntimeException e) {
            close();
            throw e;
        }
    }

    /** The region of type 3 ({@code VFIO_REGION_TYPE_MIGRATION_DEPRECATED}), subtype 1, readable and writable. */
    public static Optional<MigrationRegion> find(VfioDevice device) {
        for (int i = 0; i < device.regionCount(); i++) {
            RegionInfo r = device.regionInfo(i);
            if (r.type().isPresent() && r.type().get().type() == VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED
                    && r.type().get().subtype() == VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED && r.readable() && r.writable()
                    && r.size() > V1Abi.HEADER_SIZE) {
                return Optional.of(new MigrationRegion(device, r));
            }
        }
        return Optional.empty();
    }

    public String deviceName() {
        return device.name();
    }

    public VfioDevice device() {
        return device;
    }

    public int index() {
        return info.index();
    }

    public long size() {
        return info.size();
    }

    /** Bytes of the data section that are mmap'd. */
    public long mappedBytes() {
        long n = 0;
        for (Mapped m : mapped) n += m.segment.byteSize();
        return n;
    }

    public DeviceState readState() {
        return new DeviceState(device.readInt(info.index(), V1Abi.DEVICE_STATE));
    }

    public void writeState(DeviceState state) {
        device.writeInt(info.index(), V1Abi.DEVICE_STATE, state.raw());
    }

    public long readPendingBytes() {
        return device.readLong(info.index(), V1Abi.PENDING_BYTES);
    }

    public long readDataOffset() {
        return device.readLong(info.index(), V1Abi.DATA_OFFSET);
    }

    public long readDataSize() {
        return device.readLong(info.index(), V1Abi.DATA_SIZE);
    }

    public void writeDataSize(long size) {
        device.writeLong(info.index(), V1Abi.DATA_SIZE, size);
    }

    /** The mapped view of {@code [offset, offset + size)} if one mmap'd area holds all of it, else null. */
    public MemorySegment mapped(long offset, long size) {
        for (Mapped m : mapped) {
            if (offset >= m.offset && size >= 0 && offset - m.offset <= m.segment.byteSize() - size) {
                return m.segment.asSlice(offset - m.offset, size);
            }
        }
        return null;
    }

    /** Index of the mmap'd area holding {@code [offset, offset + size)} whole, or -1. Allocates nothing. */
    public int mappedArea(long offset, long size) {
        for (int i = 0; i < mapped.size(); i++) {
            Mapped m = mapped.get(i);
            if (offset >= m.offset && size >= 0 && offset - m.offset <= m.segment.byteSize() - size) return i;
        }
        return -1;
    }

    /** The whole mapping of area {@code i} (mapped once, at open). */
    public MemorySegment mappedSegment(int i) {
        return mapped.get(i).segment;
    }

    /** The region offset where mapped area {@code i} begins. */
    public long mappedOffset(int i) {
        return mapped.get(i).offset;
    }

    /** pread of the data section. */
    public void read(long offset, MemorySegment dst) {
        device.read(info.index(), offset, dst);
    }

    /** pwrite of the data section. */
    public void write(long offset, MemorySegment src) {
        device.write(info.index(), offset, src);
    }

    @Override
    public void close() {
        for (Mapped m : mapped) device.unmap(m.segment);
        mapped.clear();
    }
}
