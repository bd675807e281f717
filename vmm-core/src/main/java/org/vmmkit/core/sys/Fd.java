package org.vmmkit.core.sys;

import java.lang.foreign.MemorySegment;

/**
 * An open file descriptor with a name for error messages (a path, {@code kvm-vm}, {@code vcpu 0}):
 * the typed wrapper the rest of the VMM uses instead of raw {@link Libc} calls.
 */
public final class Fd implements AutoCloseable {
    private final int fd;
    private final String name;
    private volatile boolean closed;

    public Fd(int fd, String name) {
        this.fd = fd;
        this.name = name;
    }

    public int raw() {
        return fd;
    }

    public String name() {
        return name;
    }

    /** How this fd is named in errors: {@code /dev/kvm (fd 5)}. */
    public String describe() {
        return name + " (fd " + fd + ")";
    }

    /** ioctl with a pointer argument; throws {@link SysException} naming the ioctl and this fd. */
    public int ioctl(Ioctl request, MemorySegment arg) {
        int r = Libc.ioctlRaw(fd, request.number(), arg);
        if (r < 0) throw new SysException("ioctl(" + request.name() + ")", -r, describe());
        return r;
    }

    /** ioctl with an integer argument. */
    public int ioctl(Ioctl request, long arg) {
        int r = Libc.ioctlRaw(fd, request.number(), arg);
        if (r < 0) throw new SysException("ioctl(" + request.name() + ")", -r, describe());
        return r;
    }

    /** Reads exactly {@code buffer.byteSize()} bytes at {@code offset}, or throws. */
    public void preadFully(MemorySegment buffer, long offset) {
        long done = 0;
        while (done < buffer.byteSize()) {
            long r = Libc.preadRaw(fd, buffer.asSlice(done), offset + done);
            if (r == -Errno.EINTR) continue;
            if (r < 0) throw new SysException("pread(offset=0x" + Long.toHexString(offset + done) + ")", (int) -r, describe());
            if (r == 0) throw new SysException("pread(offset=0x" + Long.toHexString(offset + done) + ") hit end of file", Errno.EIO, describe());
            done += r;
        }
    }

    /** Writes exactly {@code buffer.byteSize()} bytes at {@code offset}, or throws. */
    public void pwriteFully(MemorySegment buffer, long offset) {
        long done = 0;
        while (done < buffer.byteSize()) {
            long r = Libc.pwriteRaw(fd, buffer.asSlice(done), offset + done);
            if (r == -Errno.EINTR) continue;
            if (r < 0) throw new SysException("pwrite(offset=0x" + Long.toHexString(offset + done) + ")", (int) -r, describe());
            done += r;
        }
    }

    public void truncate(long length) {
        int r = Libc.ftruncateRaw(fd, length);
        if (r < 0) throw new SysException("ftruncate(length=" + length + ")", -r, describe());
    }

    /** Maps {@code length} bytes of this fd at {@code offset}. */
    public MemorySegment mmap(long length, int prot, int flags, long offset) {
        return Libc.mmap(length, prot, flags, fd, offset, describe());
    }

    public boolean isClosed() {
        return closed;
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        int r = Libc.closeRaw(fd);
        if (r < 0) throw new SysException("close", -r, describe());
    }

    @Override
    public String toString() {
        return describe();
    }
}
