package org.vmmkit.core.vfio.v2;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.vfio.abi.V2Abi;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/** A kernel {@code data_fd}: read/write on the fd, {@code VFIO_MIG_GET_PRECOPY_INFO} as an ioctl on it. Owns the fd. */
public final class KernelMigrationData implements MigrationData {
    private final Fd fd;

    public KernelMigrationData(int dataFd, String device) {
        this.fd = new Fd(dataFd, device + " data_fd");
    }

    @Override
    public String name() {
        return fd.describe();
    }

    @Override
    public long readRaw(MemorySegment dst) {
        long r;
        do r = Libc.readRaw(fd.raw(), dst); while (r == -Errno.EINTR);
        return r;
    }

    @Override
    public long writeRaw(MemorySegment src) {
        long r;
        do r = Libc.writeRaw(fd.raw(), src); while (r == -Errno.EINTR);
        return r;
    }

    @Override
    public int precopyInfoRaw(MemorySegment info) {
        info.set(JAVA_INT, V2Abi.PRECOPY_ARGSZ, (int) V2Abi.PRECOPY_INFO.byteSize());
        return Libc.ioctlRaw(fd.raw(), V2Abi.VFIO_MIG_GET_PRECOPY_INFO.number(), info);
    }

    @Override
    public int fd() {
        return fd.raw();
    }

    @Override
    public void close() {
        fd.close();
    }
}
