package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.lang.foreign.ValueLayout;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The one binding class for the libc calls the VMM makes. Every call captures errno right after the
 * call returns (FFM {@code captureCallState}), so no other native call can clobber it. Methods come in
 * two forms: the plain one throws {@link SysException}; the {@code *Raw} one returns {@code -errno} and
 * allocates nothing, for hot paths such as {@code KVM_RUN} where EINTR is expected.
 */
public final class Libc {
    private Libc() {}

    public static final int O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_CLOEXEC = 0x80000;
    public static final int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2;
    public static final int MAP_SHARED = 0x01, MAP_PRIVATE = 0x02, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    public static final int MADV_DONTNEED = 4, MADV_REMOVE = 9, MADV_DONTFORK = 10, MADV_HUGEPAGE = 14,
            MADV_NOHUGEPAGE = 15, MADV_POPULATE_WRITE = 23;
    public static final int MFD_CLOEXEC = 1;
    /**
     * {@code memfd_create} flags for a hugetlbfs-backed memfd: {@code MFD_HUGETLB}, and the page size in the bits
     * from {@code MFD_HUGE_SHIFT} (log2 of the size): {@code MFD_HUGE_2MB} = 21 there. Such a file's size and every
     * mapping of it must be whole huge pages; a shared mapping reserves its pages from the pool at {@code mmap}
     * (ENOMEM when the pool is short), so a later first touch cannot fail (no SIGBUS).
     */
    public static final int MFD_HUGETLB = 4, MFD_HUGE_SHIFT = 26, MFD_HUGE_2MB = 21 << MFD_HUGE_SHIFT;
    public static final int SEEK_DATA = 3, SEEK_HOLE = 4;
    public static final int EFD_CLOEXEC = 0x80000, EFD_NONBLOCK = 0x800;
    public static final int SIG_BLOCK = 0, SIG_UNBLOCK = 1, SIG_SETMASK = 2;
    /** glibc's {@code sigset_t}: 1024 bits. The kernel's own sigset is the first 8 bytes. */
    public static final long SIGSET_BYTES = 128, KERNEL_SIGSET_BYTES = 8;

    private static final Linker LINKER = Linker.nativeLinker();
    private static final SymbolLookup LIBC = LINKER.defaultLookup();
    private static final StructLayout CAPTURE = Linker.Option.captureStateLayout();
    private static final VarHandle ERRNO = CAPTURE.varHandle(MemoryLayout.PathElement.groupElement("errno"));
    private static final Linker.Option CAPTURE_ERRNO = Linker.Option.captureCallState("errno");

    /** One capture buffer per thread: no allocation per call. */
    private static final ThreadLocal<MemorySegment> CAPTURE_BUFFER =
            ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(CAPTURE));

    private static MethodHandle bind(String name, FunctionDescriptor fd, Linker.Option... options) {
        MemorySegment symbol = LIBC.find(name)
                .orElseThrow(() -> new UnsatisfiedLinkError("libc has no symbol " + name));
        return LINKER.downcallHandle(symbol, fd, options);
    }

    private static MethodHandle bindErrno(String name, FunctionDescriptor fd) {
        return bind(name, fd, CAPTURE_ERRNO);
    }

    private static final MethodHandle OPEN = bind("open", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT),
            CAPTURE_ERRNO, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle CLOSE = bindErrno("close", FunctionDescriptor.of(JAVA_INT, JAVA_INT));
    private static final MethodHandle IOCTL_PTR = bind("ioctl",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, ADDRESS), CAPTURE_ERRNO, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle IOCTL_LONG = bind("ioctl",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG), CAPTURE_ERRNO, Linker.Option.firstVariadicArg(2));
    private static final MethodHandle MMAP = bindErrno("mmap",
            FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG));
    private static final MethodHandle MUNMAP = bindErrno("munmap", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG));
    private static final MethodHandle MADVISE = bindErrno("madvise",
            FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    // The same call with the address as a plain 64-bit integer (the x86-64 and AArch64 ABIs pass both alike),
    // and without capturing errno: a per-frame caller needs no MemorySegment object, and capturing errno
    // acquires the capture buffer's scope, which allocates 40 bytes a call (measured on JDK 25).
    private static final MethodHandle MADVISE_AT = bind("madvise", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT));
    private static final MethodHandle LSEEK = bindErrno("lseek", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT));
    private static final MethodHandle LSEEK_AT = bind("lseek", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT));
    private static final MethodHandle MINCORE_AT = bind("mincore", FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, ADDRESS));
    private static final MethodHandle FSTAT = bindErrno("fstat", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS));
    /** glibc's {@code struct stat} on x86-64 (sys/stat.h): its size and the two members read here; checked by SysLayerTest. */
    public static final long STAT_BYTES = 144, STAT_ST_SIZE = 48, STAT_ST_BLKSIZE = 56, STAT_ST_BLOCKS = 64;
    private static final ThreadLocal<MemorySegment> STAT_BUFFER = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(STAT_BYTES, 8));
    private static final MethodHandle PREAD = bindErrno("pread",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle PREAD_AT = bind("pread", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle PWRITE = bindErrno("pwrite",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG));
    private static final MethodHandle READ = bindErrno("read", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    private static final MethodHandle WRITE = bindErrno("write", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG));
    private static final MethodHandle MEMFD_CREATE = bindErrno("memfd_create",
            FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle FTRUNCATE = bindErrno("ftruncate", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_LONG));
    private static final MethodHandle EVENTFD = bindErrno("eventfd", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle GETPID = bind("getpid", FunctionDescriptor.of(JAVA_INT));
    private static final MethodHandle GETTID = bind("gettid", FunctionDescriptor.of(JAVA_INT));
    private static final MethodHandle TGKILL = bindErrno("tgkill", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
    // pthread_sigmask returns the error number instead of setting errno.
    private static final MethodHandle PTHREAD_SIGMASK = bind("pthread_sigmask",
            FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS));
    private static final MethodHandle SIGTIMEDWAIT = bindErrno("sigtimedwait",
            FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS));

    private static final MethodHandle PIPE2 = bindErrno("pipe2", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle SPLICE = bindErrno("splice",
            FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    private static final MethodHandle FCNTL_INT = bind("fcntl", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT),
            CAPTURE_ERRNO, Linker.Option.firstVariadicArg(2));

    public static final int O_NONBLOCK = 0x800;
    public static final int SPLICE_F_MOVE = 1, SPLICE_F_NONBLOCK = 2, SPLICE_F_MORE = 4;
    public static final int F_SETPIPE_SZ = 1031, F_GETPIPE_SZ = 1032;

    // UNIX stream sockets with SCM_RIGHTS (vfio-user). Layouts as glibc declares them on x86-64 and AArch64
    // (sys/socket.h, sys/un.h, bits/uio.h, poll.h); SysLayerTest checks every member against the headers.
    public static final int AF_UNIX = 1, SOCK_STREAM = 1, SOCK_CLOEXEC = 0x80000, SOL_SOCKET = 1, SCM_RIGHTS = 1;
    public static final int SHUT_RDWR = 2;
    public static final int MSG_CTRUNC = 0x8, MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000, MSG_CMSG_CLOEXEC = 0x40000000;
    public static final short POLLIN = 0x1, POLLOUT = 0x4, POLLERR = 0x8, POLLHUP = 0x10, POLLNVAL = 0x20;

    /** {@code struct iovec}. */
    public static final StructLayout IOVEC = MemoryLayout.structLayout(
            ADDRESS.withName("iov_base"),
            JAVA_LONG.withName("iov_len")).withName("iovec");
    /** {@code struct msghdr}. */
    public static final StructLayout MSGHDR = MemoryLayout.structLayout(
            ADDRESS.withName("msg_name"),
            JAVA_INT.withName("msg_namelen"),
            MemoryLayout.paddingLayout(4),
            ADDRESS.withName("msg_iov"),
            JAVA_LONG.withName("msg_iovlen"),
            ADDRESS.withName("msg_control"),
            JAVA_LONG.withName("msg_controllen"),
            JAVA_INT.withName("msg_flags"),
            MemoryLayout.paddingLayout(4)).withName("msghdr");
    /** {@code struct cmsghdr}; the data ({@code CMSG_DATA}) follows it at {@link #cmsgLen}{@code (0)}. */
    public static final StructLayout CMSGHDR = MemoryLayout.structLayout(
            JAVA_LONG.withName("cmsg_len"),
            JAVA_INT.withName("cmsg_level"),
            JAVA_INT.withName("cmsg_type")).withName("cmsghdr");
    /** {@code struct sockaddr_un}: the family, then a path of at most 107 bytes and its NUL. */
    public static final StructLayout SOCKADDR_UN = MemoryLayout.structLayout(
            ValueLayout.JAVA_SHORT.withName("sun_family"),
            MemoryLayout.sequenceLayout(108, ValueLayout.JAVA_BYTE).withName("sun_path")).withName("sockaddr_un");
    /** {@code struct pollfd}. */
    public static final StructLayout POLLFD = MemoryLayout.structLayout(
            JAVA_INT.withName("fd"),
            ValueLayout.JAVA_SHORT.withName("events"),
            ValueLayout.JAVA_SHORT.withName("revents")).withName("pollfd");

    public static final long IOV_BASE = offsetOf(IOVEC, "iov_base"), IOV_LEN = offsetOf(IOVEC, "iov_len");
    public static final long MSG_NAME = offsetOf(MSGHDR, "msg_name"), MSG_NAMELEN = offsetOf(MSGHDR, "msg_namelen"),
            MSG_IOV = offsetOf(MSGHDR, "msg_iov"), MSG_IOVLEN = offsetOf(MSGHDR, "msg_iovlen"),
            MSG_CONTROL = offsetOf(MSGHDR, "msg_control"), MSG_CONTROLLEN = offsetOf(MSGHDR, "msg_controllen"),
            MSG_FLAGS = offsetOf(MSGHDR, "msg_flags");
    public static final long CMSG_LEN_AT = offsetOf(CMSGHDR, "cmsg_len"), CMSG_LEVEL = offsetOf(CMSGHDR, "cmsg_level"),
            CMSG_TYPE = offsetOf(CMSGHDR, "cmsg_type");
    public static final long SUN_FAMILY = offsetOf(SOCKADDR_UN, "sun_family"), SUN_PATH = offsetOf(SOCKADDR_UN, "sun_path");
    public static final long POLL_FD = offsetOf(POLLFD, "fd"), POLL_EVENTS = offsetOf(POLLFD, "events"),
            POLL_REVENTS = offsetOf(POLLFD, "revents");

    private static long offsetOf(StructLayout layout, String member) {
        return layout.byteOffset(MemoryLayout.PathElement.groupElement(member));
    }

    /** {@code CMSG_ALIGN}: control data is aligned to {@code size_t}. */
    public static long cmsgAlign(long length) {
        return (length + 7) & ~7L;
    }

    /** {@code CMSG_LEN(dataBytes)}: the {@code cmsg_len} of a control message carrying that much data. */
    public static long cmsgLen(long dataBytes) {
        return cmsgAlign(CMSGHDR.byteSize()) + dataBytes;
    }

    /** {@code CMSG_SPACE(dataBytes)}: the buffer room a control message carrying that much data takes. */
    public static long cmsgSpace(long dataBytes) {
        return cmsgAlign(CMSGHDR.byteSize()) + cmsgAlign(dataBytes);
    }

    private static final MethodHandle SOCKET = bindErrno("socket", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle CONNECT = bindErrno("connect", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle SENDMSG = bindErrno("sendmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle RECVMSG = bindErrno("recvmsg", FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle SHUTDOWN = bindErrno("shutdown", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle SOCKETPAIR = bindErrno("socketpair", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS));
    private static final MethodHandle POLL = bindErrno("poll", FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT));
    private static final MethodHandle BIND = bindErrno("bind", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, JAVA_INT));
    private static final MethodHandle LISTEN = bindErrno("listen", FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT));
    private static final MethodHandle ACCEPT4 = bindErrno("accept4", FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, JAVA_INT));

    /**
     * A {@code sockaddr_un} for {@code address}: a path, or, where it begins with {@code @}, a name in Linux's
     * abstract namespace (no file; gone with the last socket bound to it). Returns the address length to pass.
     */
    private static int sockaddrUn(MemorySegment addr, String address, String call, String name) {
        boolean abstractName = address.startsWith("@");
        byte[] p = (abstractName ? address.substring(1) : address).getBytes(java.nio.charset.StandardCharsets.UTF_8);
        long room = SOCKADDR_UN.byteSize() - SUN_PATH - 1;
        if (p.length > room || p.length == 0) {
            throw new SysException(call + "(" + address + ")", Errno.ENAMETOOLONG, name, "a UNIX socket address has 1 to " + room + " bytes");
        }
        addr.set(ValueLayout.JAVA_SHORT, SUN_FAMILY, (short) AF_UNIX);
        MemorySegment.copy(p, 0, addr, ValueLayout.JAVA_BYTE, SUN_PATH + (abstractName ? 1 : 0), p.length);
        // An abstract name is exactly its bytes after the NUL (no terminator counted); a path is NUL-terminated.
        return (int) (abstractName ? SUN_PATH + 1 + p.length : SOCKADDR_UN.byteSize());
    }

    /**
     * A connected UNIX stream socket to {@code address} (a path, or {@code @name} in the abstract namespace);
     * blocking. The fd is named {@code name}; a failure names the address and carries connect's errno.
     */
    public static Fd connectUnix(String address, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment addr = arena.allocate(SOCKADDR_UN);
            int length = sockaddrUn(addr, address, "connect", name);
            int fd = (int) SOCKET.invokeExact(CAPTURE_BUFFER.get(), AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) throw new SysException("socket(AF_UNIX, SOCK_STREAM)", errno(), name);
            int r = (int) CONNECT.invokeExact(CAPTURE_BUFFER.get(), fd, addr, length);
            if (r < 0) {
                int e = errno();
                closeRaw(fd);
                throw new SysException("connect(" + address + ")", e, name);
            }
            return new Fd(fd, name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * A non-blocking UNIX stream socket bound to {@code address} (a path, or {@code @name} in the abstract
     * namespace) and listening ({@code socket}, {@code bind}, {@code listen}); failures name the call, the errno and the address.
     */
    public static Fd listenUnix(String address, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment addr = arena.allocate(SOCKADDR_UN);
            int length = sockaddrUn(addr, address, "bind", name);
            // Non-blocking: accept returns EAGAIN rather than wait, so a caller bounds its wait with poll.
            int fd = (int) SOCKET.invokeExact(CAPTURE_BUFFER.get(), AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | O_NONBLOCK, 0);
            if (fd < 0) throw new SysException("socket(AF_UNIX, SOCK_STREAM)", errno(), name);
            int r = (int) BIND.invokeExact(CAPTURE_BUFFER.get(), fd, addr, length);
            String call = "bind(" + address + ")";
            if (r >= 0) {
                r = (int) LISTEN.invokeExact(CAPTURE_BUFFER.get(), fd, 4);
                call = "listen(" + address + ")";
            }
            if (r < 0) {
                int e = errno();
                closeRaw(fd);
                throw new SysException(call, e, name);
            }
            return new Fd(fd, name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code accept4(fd, NULL, NULL, SOCK_CLOEXEC)} on a listening socket; returns the new fd or -errno. */
    public static int acceptRaw(int fd) {
        try {
            int r = (int) ACCEPT4.invokeExact(CAPTURE_BUFFER.get(), fd, MemorySegment.NULL, MemorySegment.NULL, SOCK_CLOEXEC);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * A connected UNIX stream socket to {@code path} ({@code socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)} then
     * {@code connect}); blocking. The fd is named {@code name}.
     */
    public static Fd connectUnix(java.nio.file.Path path, String name) {
        byte[] p = path.toString().getBytes(java.nio.charset.StandardCharsets.UTF_8);
        if (p.length >= SOCKADDR_UN.byteSize() - SUN_PATH) {
            throw new SysException("connect(" + path + ")", Errno.ENAMETOOLONG, name, "a UNIX socket path has at most "
                    + (SOCKADDR_UN.byteSize() - SUN_PATH - 1) + " bytes");
        }
        try (Arena arena = Arena.ofConfined()) {
            int fd = (int) SOCKET.invokeExact(CAPTURE_BUFFER.get(), AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) throw new SysException("socket(AF_UNIX, SOCK_STREAM)", errno(), name);
            MemorySegment addr = arena.allocate(SOCKADDR_UN);
            addr.set(ValueLayout.JAVA_SHORT, SUN_FAMILY, (short) AF_UNIX);
            MemorySegment.copy(p, 0, addr, ValueLayout.JAVA_BYTE, SUN_PATH, p.length);
            int r = (int) CONNECT.invokeExact(CAPTURE_BUFFER.get(), fd, addr, (int) SOCKADDR_UN.byteSize());
            if (r < 0) {
                int e = errno();
                closeRaw(fd);
                throw new SysException("connect(" + path + ")", e, name);
            }
            return new Fd(fd, name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)}: two connected ends, named {@code name-0} and {@code name-1}. */
    public static Fd[] socketpair(String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment sv = arena.allocate(JAVA_INT, 2);
            int r = (int) SOCKETPAIR.invokeExact(CAPTURE_BUFFER.get(), AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
            if (r < 0) throw new SysException("socketpair(AF_UNIX, SOCK_STREAM)", errno(), name);
            return new Fd[] {new Fd(sv.getAtIndex(JAVA_INT, 0), name + "-0"), new Fd(sv.getAtIndex(JAVA_INT, 1), name + "-1")};
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code shutdown(fd, how)}; returns 0 or -errno. */
    public static int shutdownRaw(int fd, int how) {
        try {
            int r = (int) SHUTDOWN.invokeExact(CAPTURE_BUFFER.get(), fd, how);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code sendmsg(fd, msg, flags)}; returns the bytes sent or -errno. */
    public static long sendmsgRaw(int fd, MemorySegment msghdr, int flags) {
        try {
            long r = (long) SENDMSG.invokeExact(CAPTURE_BUFFER.get(), fd, msghdr, flags);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code recvmsg(fd, msg, flags)}; returns the bytes received (0 at end of stream) or -errno. */
    public static long recvmsgRaw(int fd, MemorySegment msghdr, int flags) {
        try {
            long r = (long) RECVMSG.invokeExact(CAPTURE_BUFFER.get(), fd, msghdr, flags);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code poll(fds, count, timeoutMillis)}; returns how many have events, 0 on timeout, or -errno. */
    public static int pollRaw(MemorySegment pollfds, long count, int timeoutMillis) {
        try {
            int r = (int) POLL.invokeExact(CAPTURE_BUFFER.get(), pollfds, count, timeoutMillis);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code close(fd)} of a raw fd (one received by SCM_RIGHTS that nothing took); returns 0 or -errno. */
    public static int closeFdRaw(int fd) {
        return closeRaw(fd);
    }

    private static int errno() {
        return (int) ERRNO.get(CAPTURE_BUFFER.get(), 0L);
    }

    private static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }

    /** {@code open(path, flags)}; the returned fd carries the path as its name. */
    public static Fd open(String path, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment cpath = arena.allocateFrom(path);
            MemorySegment cap = CAPTURE_BUFFER.get();
            int fd = (int) OPEN.invokeExact(cap, cpath, flags | O_CLOEXEC, 0);
            if (fd < 0) throw new SysException("open(" + openFlags(flags) + ")", errno(), path);
            return new Fd(fd, path);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    private static String openFlags(int flags) {
        return switch (flags & 3) {
            case O_RDONLY -> "O_RDONLY";
            case O_WRONLY -> "O_WRONLY";
            default -> "O_RDWR";
        };
    }

    /** {@code close(fd)}; returns 0 or -errno. */
    static int closeRaw(int fd) {
        try {
            int r = (int) CLOSE.invokeExact(CAPTURE_BUFFER.get(), fd);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code ioctl(fd, request, pointer)}; returns the result or -errno, never throws for a failed call. */
    public static int ioctlRaw(int fd, long request, MemorySegment arg) {
        try {
            int r = (int) IOCTL_PTR.invokeExact(CAPTURE_BUFFER.get(), fd, request, arg);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code ioctl(fd, request, value)} with an integer argument; returns the result or -errno. */
    public static int ioctlRaw(int fd, long request, long arg) {
        try {
            int r = (int) IOCTL_LONG.invokeExact(CAPTURE_BUFFER.get(), fd, request, arg);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code mmap(NULL, length, prot, flags, fd, offset)}; the segment has the mapping's length. */
    public static MemorySegment mmap(long length, int prot, int flags, int fd, long offset, String object) {
        return mmap(0, length, prot, flags, fd, offset, object);
    }

    /** {@code mmap(address, length, prot, flags, fd, offset)}: {@code address} is a hint, or exact with MAP_FIXED. */
    public static MemorySegment mmap(long address, long length, int prot, int flags, int fd, long offset, String object) {
        try {
            MemorySegment p = (MemorySegment) MMAP.invokeExact(CAPTURE_BUFFER.get(), MemorySegment.ofAddress(address), length, prot,
                    flags, fd, offset);
            if (p.address() == -1L) {
                throw new SysException("mmap(length=" + length + ", offset=" + offset + ")", errno(), object);
            }
            return p.reinterpret(length);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public static void munmap(MemorySegment mapping, String object) {
        try {
            int r = (int) MUNMAP.invokeExact(CAPTURE_BUFFER.get(), mapping, mapping.byteSize());
            if (r < 0) throw new SysException("munmap(length=" + mapping.byteSize() + ")", errno(), object);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public static void madvise(MemorySegment range, int advice, String object) {
        try {
            int r = (int) MADVISE.invokeExact(CAPTURE_BUFFER.get(), range, range.byteSize(), advice);
            if (r < 0) throw new SysException("madvise(advice=" + advice + ", length=" + range.byteSize() + ")", errno(), object);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code madvise(address, length, advice)} on a raw range; returns 0, or -1 on failure (errno is not
     * captured: the hot path that calls it only needs to know whether it worked). Allocates nothing.
     */
    public static int madviseRaw(long address, long length, int advice) {
        try {
            return (int) MADVISE_AT.invokeExact(address, length, advice) < 0 ? -1 : 0;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code lseek(fd, offset, whence)}: the resulting offset, or {@link SysException} naming the call, errno and file. */
    public static long lseek(Fd fd, long offset, int whence) {
        try {
            long r = (long) LSEEK.invokeExact(CAPTURE_BUFFER.get(), fd.raw(), offset, whence);
            if (r < 0) throw new SysException("lseek(offset=" + offset + ", whence=" + whence + ")", errno(), fd.describe());
            return r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code lseek(fd, offset, whence)}: the resulting offset, or -1 on failure (errno is not captured: capturing
     * it allocates, and the caller — SEEK_DATA on a file known to support it, where the only failure is ENXIO,
     * no data from there on — knows what -1 means). Allocates nothing.
     */
    public static long lseekRaw(int fd, long offset, int whence) {
        try {
            return (long) LSEEK_AT.invokeExact(fd, offset, whence);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code mincore(address, length, vector)}: one byte per page, bit 0 set where the page is in memory (for a
     * shared memfd: allocated and not swapped out). Returns 0, or -1 on failure (errno not captured). Allocates nothing.
     */
    public static int mincoreRaw(long address, long length, MemorySegment vector) {
        try {
            return (int) MINCORE_AT.invokeExact(address, length, vector) < 0 ? -1 : 0;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * The bytes of storage {@code fd}'s file holds ({@code fstat}'s {@code st_blocks} × 512): for a memfd, the
     * memory it costs, holes (never-written or punched pages) not counted.
     */
    public static long allocatedBytes(Fd fd) {
        return fstat(fd).get(JAVA_LONG, STAT_ST_BLOCKS) * 512;
    }

    /** The size of {@code fd}'s file ({@code fstat}'s {@code st_size}): for a memfd, what it was truncated to. */
    public static long fileSize(Fd fd) {
        return fstat(fd).get(JAVA_LONG, STAT_ST_SIZE);
    }

    /**
     * The file's preferred I/O block ({@code fstat}'s {@code st_blksize}): on hugetlbfs (a memfd made with
     * {@link #MFD_HUGETLB}) the huge page size, on tmpfs the base page size.
     */
    public static long blockSize(Fd fd) {
        return fstat(fd).get(JAVA_LONG, STAT_ST_BLKSIZE);
    }

    /** {@code fstat(fd)} into this thread's stat buffer, which it returns. */
    private static MemorySegment fstat(Fd fd) {
        MemorySegment stat = STAT_BUFFER.get();
        try {
            int r = (int) FSTAT.invokeExact(CAPTURE_BUFFER.get(), fd.raw(), stat);
            if (r < 0) throw new SysException("fstat", errno(), fd.describe());
        } catch (Throwable t) {
            throw rethrow(t);
        }
        return stat;
    }

    /**
     * {@code pread(fd, address, length, offset)} into raw memory; returns the bytes read, or -1 on failure (errno
     * not captured). Allocates nothing.
     */
    public static long preadRaw(int fd, long address, long length, long offset) {
        try {
            return (long) PREAD_AT.invokeExact(fd, address, length, offset);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code pread(fd, buffer, buffer.byteSize(), offset)}; returns bytes read or -errno. */
    public static long preadRaw(int fd, MemorySegment buffer, long offset) {
        try {
            long r = (long) PREAD.invokeExact(CAPTURE_BUFFER.get(), fd, buffer, buffer.byteSize(), offset);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code pwrite(fd, buffer, buffer.byteSize(), offset)}; returns bytes written or -errno. */
    public static long pwriteRaw(int fd, MemorySegment buffer, long offset) {
        try {
            long r = (long) PWRITE.invokeExact(CAPTURE_BUFFER.get(), fd, buffer, buffer.byteSize(), offset);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code read(fd, buffer, buffer.byteSize())}; returns bytes read or -errno. */
    public static long readRaw(int fd, MemorySegment buffer) {
        try {
            long r = (long) READ.invokeExact(CAPTURE_BUFFER.get(), fd, buffer, buffer.byteSize());
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code write(fd, buffer, buffer.byteSize())}; returns bytes written or -errno. */
    public static long writeRaw(int fd, MemorySegment buffer) {
        try {
            long r = (long) WRITE.invokeExact(CAPTURE_BUFFER.get(), fd, buffer, buffer.byteSize());
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code memfd_create(name, MFD_CLOEXEC)}. */
    public static Fd memfdCreate(String name) {
        return memfdCreate(name, 0);
    }

    /** {@code memfd_create(name, MFD_CLOEXEC | flags)}, e.g. {@code MFD_HUGETLB | MFD_HUGE_2MB}. */
    public static Fd memfdCreate(String name, int flags) {
        try (Arena arena = Arena.ofConfined()) {
            int fd = (int) MEMFD_CREATE.invokeExact(CAPTURE_BUFFER.get(), arena.allocateFrom(name), MFD_CLOEXEC | flags);
            if (fd < 0) {
                throw new SysException(flags == 0 ? "memfd_create" : "memfd_create(flags=0x" + Integer.toHexString(MFD_CLOEXEC | flags) + ")",
                        errno(), "memfd " + name);
            }
            return new Fd(fd, "memfd:" + name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    static int ftruncateRaw(int fd, long length) {
        try {
            int r = (int) FTRUNCATE.invokeExact(CAPTURE_BUFFER.get(), fd, length);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code eventfd(initial, flags | EFD_CLOEXEC)}. */
    public static Fd eventfd(int initial, int flags, String name) {
        try {
            int fd = (int) EVENTFD.invokeExact(CAPTURE_BUFFER.get(), initial, flags | EFD_CLOEXEC);
            if (fd < 0) throw new SysException("eventfd", errno(), name);
            return new Fd(fd, name);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public static int getpid() {
        try {
            return (int) GETPID.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** The kernel thread id of the calling (platform) thread. */
    public static int gettid() {
        try {
            return (int) GETTID.invokeExact();
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code tgkill(getpid(), tid, signal)}: sends a signal to one thread of this process. */
    public static void tgkill(int tid, int signal) {
        try {
            int r = (int) TGKILL.invokeExact(CAPTURE_BUFFER.get(), getpid(), tid, signal);
            if (r < 0) throw new SysException("tgkill(signal=" + signal + ")", errno(), "thread " + tid);
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code pthread_sigmask(how, set, old)} on the calling thread; either set may be NULL. */
    public static void pthreadSigmask(int how, MemorySegment set, MemorySegment old) {
        try {
            int r = (int) PTHREAD_SIGMASK.invokeExact(how, set, old);
            if (r != 0) throw new SysException("pthread_sigmask(how=" + how + ")", r, "thread " + gettid());
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code sigtimedwait(set, NULL, timeout)}; returns the signal taken, or -errno (EAGAIN when none was
     * pending within the timeout).
     */
    public static int sigtimedwaitRaw(MemorySegment set, MemorySegment timespec) {
        try {
            int r = (int) SIGTIMEDWAIT.invokeExact(CAPTURE_BUFFER.get(), set, MemorySegment.NULL, timespec);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** Adds a signal to a glibc {@code sigset_t} (bit {@code signal - 1}, 64-bit words). */
    public static void sigaddset(MemorySegment set, int signal) {
        long word = (signal - 1) / 64;
        long bit = 1L << ((signal - 1) % 64);
        set.set(JAVA_LONG, word * 8, set.get(JAVA_LONG, word * 8) | bit);
    }

    public static void sigdelset(MemorySegment set, int signal) {
        long word = (signal - 1) / 64;
        long bit = 1L << ((signal - 1) % 64);
        set.set(JAVA_LONG, word * 8, set.get(JAVA_LONG, word * 8) & ~bit);
    }

    /** {@code pipe2(fds, flags | O_CLOEXEC)}: the read end, then the write end, each named {@code name:r} / {@code name:w}. */
    public static Fd[] pipe(int flags, String name) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment fds = arena.allocate(JAVA_INT, 2);
            int r = (int) PIPE2.invokeExact(CAPTURE_BUFFER.get(), fds, flags | O_CLOEXEC);
            if (r < 0) throw new SysException("pipe2", errno(), name);
            return new Fd[] {new Fd(fds.getAtIndex(JAVA_INT, 0), name + ":r"), new Fd(fds.getAtIndex(JAVA_INT, 1), name + ":w")};
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * {@code splice(in, NULL, out, NULL, length, flags)}: moves up to {@code length} bytes between two fds, one of
     * them a pipe, without passing them through user memory. Returns the bytes moved (0: end of input) or -errno
     * (EINVAL where the input has no splice support, as a VFIO data fd).
     */
    public static long spliceRaw(int in, int out, long length, int flags) {
        try {
            long r = (long) SPLICE.invokeExact(CAPTURE_BUFFER.get(), in, MemorySegment.NULL, out, MemorySegment.NULL, length, flags);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /** {@code fcntl(fd, command, value)} with an integer argument; returns the result or -errno. */
    public static int fcntlRaw(int fd, int command, int value) {
        try {
            int r = (int) FCNTL_INT.invokeExact(CAPTURE_BUFFER.get(), fd, command, value);
            return r < 0 ? -errno() : r;
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

}
