package org.vmmkit.core.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.ConcurrentHashMap;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A kernel VFIO device fd: region accesses are pread/pwrite at the region's offset in the fd, native
 * width for registers; mmap of sparse areas; {@code VFIO_DEVICE_RESET}. Register accesses use a
 * per-thread 8-byte buffer, so they allocate nothing.
 */
public final class KernelVfioDevice implements VfioDevice {
    private final Fd fd;
    private final int regionCount;
    private final boolean resettable;
    private final ConcurrentHashMap<Integer, RegionInfo> regions = new ConcurrentHashMap<>();
    private static final ThreadLocal<MemorySegment> SCRATCH = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(8, 8));

    KernelVfioDevice(Fd fd) {
        this.fd = fd;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(VfioAbi.DEVICE_INFO);
            info.set(JAVA_INT, 0, (int) VfioAbi.DEVICE_INFO.byteSize());
            fd.ioctl(VfioAbi.VFIO_DEVICE_GET_INFO, info);
            this.resettable = (info.get(JAVA_INT, 4) & VfioAbi.DEVICE_FLAGS_RESET) != 0;
            this.regionCount = info.get(JAVA_INT, 8);
        }
    }

    @Override
    public String name() {
        return fd.describe();
    }

    @Override
    public int regionCount() {
        return regionCount;
    }

    @Override
    public boolean resettable() {
        return resettable;
    }

    /** {@code VFIO_DEVICE_GET_REGION_INFO}, asked again with the larger {@code argsz} the kernel wants for caps. */
    @Override
    public RegionInfo regionInfo(int region) {
        return regions.computeIfAbsent(region, index -> {
            try (Arena arena = Arena.ofConfined()) {
                long argsz = VfioAbi.REGION_INFO.byteSize();
                while (true) {
                    MemorySegment info = arena.allocate(argsz, 8);
                    info.set(JAVA_INT, 0, (int) argsz);
                    info.set(JAVA_INT, 8, index);
                    try {
                        fd.ioctl(VfioAbi.VFIO_DEVICE_GET_REGION_INFO, info);
                    } catch (SysException e) {
                        throw new SysException("ioctl(VFIO_DEVICE_GET_REGION_INFO(index=" + index + "))", e.errno(), fd.describe());
                    }
                    long wanted = Integer.toUnsignedLong(info.get(JAVA_INT, 0));
                    if (wanted > argsz) {
                        argsz = wanted;
                        continue;
                    }
                    return RegionInfo.parse(info);
                }
            }
        });
    }

    private long at(int region, long offset, long length) {
        RegionInfo r = regionInfo(region);
        if (offset < 0 || length < 0 || offset > r.size() - length) {
            throw new SysException("access(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + length
                    + " bytes) outside the " + r.size() + "-byte region", Errno.EINVAL, fd.describe());
        }
        return r.fdOffset() + offset;
    }

    private String what(String op, int region, long offset, long length) {
        return op + "(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + length + " bytes)";
    }

    private MemorySegment exact(String op, int region, long offset, long length, boolean write, MemorySegment buf) {
        long r = write ? Libc.pwriteRaw(fd.raw(), buf, at(region, offset, length)) : Libc.preadRaw(fd.raw(), buf, at(region, offset, length));
        if (r < 0) throw new SysException(what(op, region, offset, length), (int) -r, fd.describe());
        if (r != length) throw new SysException(what(op, region, offset, length) + " moved " + r + " bytes", Errno.EIO, fd.describe());
        return buf;
    }

    @Override
    public int readInt(int region, long offset) {
        return exact("pread", region, offset, 4, false, SCRATCH.get().asSlice(0, 4)).get(JAVA_INT, 0);
    }

    @Override
    public long readLong(int region, long offset) {
        return exact("pread", region, offset, 8, false, SCRATCH.get()).get(JAVA_LONG, 0);
    }

    @Override
    public void writeInt(int region, long offset, int value) {
        MemorySegment b = SCRATCH.get().asSlice(0, 4);
        b.set(JAVA_INT, 0, value);
        exact("pwrite", region, offset, 4, true, b);
    }

    @Override
    public void writeLong(int region, long offset, long value) {
        MemorySegment b = SCRATCH.get();
        b.set(JAVA_LONG, 0, value);
        exact("pwrite", region, offset, 8, true, b);
    }

    @Override
    public void read(int region, long offset, MemorySegment dst) {
        long base = at(region, offset, dst.byteSize());
        long done = 0;
        while (done < dst.byteSize()) {
            long r = Libc.preadRaw(fd.raw(), dst.asSlice(done), base + done);
            if (r == -Errno.EINTR) continue;
            if (r <= 0) throw new SysException(what("pread", region, offset + done, dst.byteSize() - done), r == 0 ? Errno.EIO : (int) -r, fd.describe());
            done += r;
        }
    }

    @Override
    public void write(int region, long offset, MemorySegment src) {
        long base = at(region, offset, src.byteSize());
        long done = 0;
        while (done < src.byteSize()) {
            long r = Libc.pwriteRaw(fd.raw(), src.asSlice(done), base + done);
            if (r == -Errno.EINTR) continue;
            if (r <= 0) throw new SysException(what("pwrite", region, offset + done, src.byteSize() - done), r == 0 ? Errno.EIO : (int) -r, fd.describe());
            done += r;
        }
    }

    @Override
    public MemorySegment mmap(int region, long offset, long size) {
        RegionInfo r = regionInfo(region);
        if (r.mmappableArea(offset, size).isEmpty()) {
            throw new SysException("mmap(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + size
                    + " bytes) outside every sparse mmap area", Errno.EINVAL, fd.describe());
        }
        int prot = (r.readable() ? Libc.PROT_READ : 0) | (r.writable() ? Libc.PROT_WRITE : 0);
        return fd.mmap(size, prot, Libc.MAP_SHARED, r.fdOffset() + offset);
    }

    @Override
    public void unmap(MemorySegment mapping) {
        Libc.munmap(mapping, fd.describe());
    }

    /** {@code VFIO_DEVICE_FEATURE}: the 8-byte header and the data in one per-thread scratch buffer (no allocation for the uapi's small features). */
    @Override
    public void feature(int flags, MemorySegment data) {
        long argsz = V2Abi.FEATURE_HEADER_BYTES + data.byteSize();
        MemorySegment arg = argsz <= FEATURE_SCRATCH_BYTES ? FEATURE_SCRATCH.get().asSlice(0, argsz) : Arena.ofAuto().allocate(argsz, 8);
        arg.set(JAVA_INT, 0, (int) argsz);
        arg.set(JAVA_INT, 4, flags);
        MemorySegment.copy(data, 0, arg, V2Abi.FEATURE_HEADER_BYTES, data.byteSize());
        int r = Libc.ioctlRaw(fd.raw(), V2Abi.VFIO_DEVICE_FEATURE.number(), arg);
        if (r < 0) throw new SysException(DeviceFeatures.describe(flags), -r, fd.describe());
        if ((flags & V2Abi.FEATURE_GET) != 0 || (flags & V2Abi.FEATURE_MASK) == V2Abi.FEATURE_MIG_DEVICE_STATE) {
            MemorySegment.copy(arg, V2Abi.FEATURE_HEADER_BYTES, data, 0, data.byteSize()); // GET, and SET of MIG_DEVICE_STATE (data_fd)
        }
    }

    private static final long FEATURE_SCRATCH_BYTES = 64;
    private static final ThreadLocal<MemorySegment> FEATURE_SCRATCH = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(FEATURE_SCRATCH_BYTES, 8));

    @Override
    public void reset() {
        fd.ioctl(VfioAbi.VFIO_DEVICE_RESET, 0L);
    }

    @Override
    public void close() {
        fd.close();
    }
}
