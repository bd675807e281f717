package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * A connected UNIX stream socket that sends and receives file descriptors ({@code SCM_RIGHTS}): what a JDK
 * {@code SocketChannel} cannot do. Every send is one {@code sendmsg} of up to two buffers (say a header and a
 * payload straight from guest memory) with the fds attached; every receive is one {@code recvmsg} that keeps
 * the fds arriving with it until {@link #takeFd} or {@link #closeReceivedFds}. Sends and receives do not
 * block ({@code MSG_DONTWAIT}); {@link #await} polls for readiness with a deadline, so a caller can bound every
 * wait, and {@link #watch} lets a second thread wait for input without holding the socket until {@link #wake}.
 *
 * <p>The message header, iovecs and control buffer are allocated once: a send or receive allocates nothing.
 * Not thread-safe: callers serialise sends, receives and {@link #await}; one other thread may {@link #watch},
 * and {@link #wake()} and {@link #shutdown()} may be called from any thread. {@link #close} only once the watcher
 * has stopped.
 */
public final class UnixSocket implements AutoCloseable {
    /** The most fds one receive keeps; a message carrying more is truncated by the kernel (MSG_CTRUNC). */
    public static final int MAX_FDS = 16;

    private final Fd fd;
    private final Fd wakeup;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment msghdr = arena.allocate(Libc.MSGHDR);
    private final MemorySegment iov = arena.allocate(Libc.IOVEC.byteSize() * 2, 8);
    private final MemorySegment control = arena.allocate(Libc.cmsgSpace(4L * MAX_FDS), 8);
    private final MemorySegment pollfds = arena.allocate(Libc.POLLFD.byteSize(), 8);
    private final MemorySegment watchfds = arena.allocate(Libc.POLLFD.byteSize() * 2, 8);
    private final MemorySegment wakeWord = arena.allocate(8, 8);
    private final int[] received = new int[MAX_FDS];
    private int receivedCount;
    private volatile boolean closed;

    private UnixSocket(Fd fd) {
        this.fd = fd;
        this.wakeup = Libc.eventfd(0, Libc.EFD_NONBLOCK, fd.name() + " wake-up");
    }

    /** Connects to the socket at {@code path}; failures name the path and carry connect's errno. */
    public static UnixSocket connect(Path path, String name) {
        return new UnixSocket(Libc.connectUnix(path, name));
    }

    /** Connects to {@code address}: a path, or {@code @name} in the abstract namespace (see {@link UnixListener}). */
    public static UnixSocket connect(String address, String name) {
        return new UnixSocket(Libc.connectUnix(address, name));
    }

    /** Wraps a connected UNIX stream socket (one end of {@link Libc#socketpair}); closing this closes it. */
    public static UnixSocket of(Fd connected) {
        return new UnixSocket(connected);
    }

    public Fd fd() {
        return fd;
    }

    /**
     * One {@code sendmsg} of {@code firstLength} bytes of {@code first} from {@code firstOffset}, then
     * {@code secondLength} bytes of {@code second} (null or 0: none), with {@code fdCount} fds of {@code fds}
     * attached as one SCM_RIGHTS message. The buffers must be native memory. Returns the bytes sent (possibly
     * fewer than offered: the caller sends the rest without fds), or -errno (EAGAIN: the socket buffer is full).
     */
    public long send(MemorySegment first, long firstOffset, long firstLength, MemorySegment second, long secondOffset, long secondLength,
                     int[] fds, int fdCount) {
        if (fdCount < 0 || fdCount > MAX_FDS) throw new IllegalArgumentException(fdCount + " fds; at most " + MAX_FDS + " in one message");
        long count = 1;
        setIov(0, first, firstOffset, firstLength);
        if (second != null && secondLength > 0) {
            setIov(1, second, secondOffset, secondLength);
            count = 2;
        }
        prepare(count, fdCount == 0 ? 0 : Libc.cmsgSpace(4L * fdCount));
        if (fdCount > 0) {
            control.asSlice(0, Libc.cmsgSpace(4L * fdCount)).fill((byte) 0);
            control.set(JAVA_LONG, Libc.CMSG_LEN_AT, Libc.cmsgLen(4L * fdCount));
            control.set(JAVA_INT, Libc.CMSG_LEVEL, Libc.SOL_SOCKET);
            control.set(JAVA_INT, Libc.CMSG_TYPE, Libc.SCM_RIGHTS);
            long data = Libc.cmsgLen(0);
            for (int i = 0; i < fdCount; i++) control.set(JAVA_INT, data + 4L * i, fds[i]);
        }
        return Libc.sendmsgRaw(fd.raw(), msghdr, Libc.MSG_DONTWAIT | Libc.MSG_NOSIGNAL);
    }

    private void setIov(int i, MemorySegment buffer, long offset, long length) {
        if (!buffer.isNative()) throw new IllegalArgumentException("sendmsg/recvmsg need native memory");
        java.util.Objects.checkFromIndexSize(offset, length, buffer.byteSize());
        iov.set(JAVA_LONG, i * Libc.IOVEC.byteSize() + Libc.IOV_BASE, buffer.address() + offset);
        iov.set(JAVA_LONG, i * Libc.IOVEC.byteSize() + Libc.IOV_LEN, length);
    }

    /**
     * One {@code recvmsg} of at most {@code length} bytes into {@code dst} at {@code offset}; with
     * {@code acceptFds} the fds that arrive with these bytes are kept (close-on-exec) for {@link #takeFd}.
     * Returns the bytes received, 0 at the end of the stream, or -errno (EAGAIN when nothing is there yet).
     * Fds cut off because more came than {@link #MAX_FDS} make it -EMSGSIZE (those that did arrive are kept,
     * to be closed).
     */
    public long receive(MemorySegment dst, long offset, long length, boolean acceptFds) {
        setIov(0, dst, offset, length);
        prepare(1, acceptFds ? control.byteSize() : 0);
        long r = Libc.recvmsgRaw(fd.raw(), msghdr, Libc.MSG_DONTWAIT | Libc.MSG_CMSG_CLOEXEC);
        if (r < 0) return r;
        if (acceptFds) collectFds();
        if ((msghdr.get(JAVA_INT, Libc.MSG_FLAGS) & Libc.MSG_CTRUNC) != 0) return -Errno.EMSGSIZE;
        return r;
    }

    private void prepare(long iovCount, long controlLength) {
        msghdr.fill((byte) 0);
        msghdr.set(ADDRESS, Libc.MSG_IOV, iov);
        msghdr.set(JAVA_LONG, Libc.MSG_IOVLEN, iovCount);
        if (controlLength > 0) {
            msghdr.set(ADDRESS, Libc.MSG_CONTROL, control);
            msghdr.set(JAVA_LONG, Libc.MSG_CONTROLLEN, controlLength);
        }
    }

    /** Walks the control messages the kernel filled (CMSG_FIRSTHDR / CMSG_NXTHDR) and keeps every SCM_RIGHTS fd. */
    private void collectFds() {
        long length = msghdr.get(JAVA_LONG, Libc.MSG_CONTROLLEN);
        long at = 0;
        while (at + Libc.CMSGHDR.byteSize() <= length) {
            long len = control.get(JAVA_LONG, at + Libc.CMSG_LEN_AT);
            if (len < Libc.cmsgLen(0) || at + len > length) break;
            if (control.get(JAVA_INT, at + Libc.CMSG_LEVEL) == Libc.SOL_SOCKET && control.get(JAVA_INT, at + Libc.CMSG_TYPE) == Libc.SCM_RIGHTS) {
                for (long d = Libc.cmsgLen(0); d + 4 <= len; d += 4) {
                    int received = control.get(JAVA_INT, at + d);
                    if (receivedCount < this.received.length) this.received[receivedCount++] = received;
                    else Libc.closeFdRaw(received);
                }
            }
            at += Libc.cmsgAlign(len);
        }
    }

    /** How many received fds are held. */
    public int receivedFdCount() {
        return receivedCount;
    }

    /** Hands over the {@code i}-th fd received (the caller now owns it); -1 if taken already. */
    public int takeFd(int i) {
        if (i >= receivedCount) throw new IndexOutOfBoundsException(i + " of " + receivedCount + " received fds");
        int f = received[i];
        received[i] = -1;
        return f;
    }

    /** Closes every received fd nobody took. */
    public void closeReceivedFds() {
        for (int i = 0; i < receivedCount; i++) {
            if (received[i] >= 0) Libc.closeFdRaw(received[i]);
            received[i] = -1;
        }
        receivedCount = 0;
    }

    /**
     * Waits until the socket is ready for {@code events} ({@link Libc#POLLIN} or {@link Libc#POLLOUT}), hangs up
     * or fails, or {@code timeoutMillis} pass (0: just look). Returns the socket's revents (0 on a timeout), or
     * -errno. For the thread that holds the socket (the caller's lock).
     */
    public int await(short events, int timeoutMillis) {
        pollfds.set(JAVA_INT, Libc.POLL_FD, fd.raw());
        pollfds.set(JAVA_SHORT, Libc.POLL_EVENTS, events);
        pollfds.set(JAVA_SHORT, Libc.POLL_REVENTS, (short) 0);
        int r = Libc.pollRaw(pollfds, 1, timeoutMillis);
        if (r < 0) return r == -Errno.EINTR ? 0 : r;
        return pollfds.get(JAVA_SHORT, Libc.POLL_REVENTS);
    }

    /**
     * Waits without limit until the socket is readable (or hangs up, or fails) or {@link #wake()} is called, for
     * a thread that watches the socket without holding it (its own poll array). Returns the socket's revents,
     * 0 when woken (the wake-up is consumed), or -errno.
     */
    public int watch() {
        watchfds.set(JAVA_INT, Libc.POLL_FD, fd.raw());
        watchfds.set(JAVA_SHORT, Libc.POLL_EVENTS, Libc.POLLIN);
        watchfds.set(JAVA_SHORT, Libc.POLL_REVENTS, (short) 0);
        long second = Libc.POLLFD.byteSize();
        watchfds.set(JAVA_INT, second + Libc.POLL_FD, wakeup.raw());
        watchfds.set(JAVA_SHORT, second + Libc.POLL_EVENTS, Libc.POLLIN);
        watchfds.set(JAVA_SHORT, second + Libc.POLL_REVENTS, (short) 0);
        int r = Libc.pollRaw(watchfds, 2, -1);
        if (r < 0) return r == -Errno.EINTR ? 0 : r;
        if ((watchfds.get(JAVA_SHORT, second + Libc.POLL_REVENTS) & Libc.POLLIN) != 0) {
            Libc.readRaw(wakeup.raw(), wakeWord);
            return 0;
        }
        return watchfds.get(JAVA_SHORT, Libc.POLL_REVENTS);
    }

    /** Wakes the thread in {@link #watch} (from any thread). */
    public void wake() {
        if (closed) return;
        try (Arena a = Arena.ofConfined()) {
            MemorySegment one = a.allocate(JAVA_LONG);
            one.set(JAVA_LONG, 0, 1L);
            Libc.writeRaw(wakeup.raw(), one);
        }
    }

    /**
     * {@code shutdown(SHUT_RDWR)}: the peer reads the end of the stream and a thread in {@link #watch} wakes,
     * while the fd stays open (and its number taken) until {@link #close}.
     */
    public void shutdown() {
        if (!closed) Libc.shutdownRaw(fd.raw(), Libc.SHUT_RDWR);
    }

    public boolean isClosed() {
        return closed;
    }

    /** Closes the socket, the wake-up eventfd and every received fd nobody took. Idempotent. */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        closeReceivedFds();
        fd.close();
        wakeup.close();
        arena.close();
    }
}
