package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * A listening UNIX stream socket whose connections are {@link UnixSocket}s, so they can carry file descriptors
 * ({@code SCM_RIGHTS}), which a JDK {@code ServerSocketChannel} cannot. The address is a path or, written
 * {@code @name}, a name in Linux's abstract namespace (no file to clean up; it goes with the socket).
 */
public final class UnixListener implements AutoCloseable {
    private final Fd fd;
    private final String address;

    private UnixListener(Fd fd, String address) {
        this.fd = fd;
        this.address = address;
    }

    /** Binds and listens on {@code address}; a failure names the call, the errno and the address. */
    public static UnixListener listen(String address) {
        return new UnixListener(Libc.listenUnix(address, "listener " + address), address);
    }

    /** The address it listens on, as given ({@code @name} for an abstract one). */
    public String address() {
        return address;
    }

    /**
     * The next connection, waiting at most {@code timeout}; a {@link SysException} naming the address when none
     * comes in time ({@code ETIMEDOUT}) or accept fails.
     */
    public UnixSocket accept(Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment pollfd = arena.allocate(Libc.POLLFD.byteSize(), 8);
            while (true) {
                int c = Libc.acceptRaw(fd.raw());
                if (c >= 0) return UnixSocket.of(new Fd(c, "connection on " + address));
                if (c != -Errno.EAGAIN && c != -Errno.EINTR && c != -Errno.ECONNABORTED) {
                    throw new SysException("accept", -c, fd.describe());
                }
                long left = deadline - System.nanoTime();
                if (left <= 0) throw new SysException("accept", Errno.ETIMEDOUT, fd.describe(), "no connection within " + timeout.toMillis() + " ms");
                pollfd.set(JAVA_INT, Libc.POLL_FD, fd.raw());
                pollfd.set(JAVA_SHORT, Libc.POLL_EVENTS, Libc.POLLIN);
                pollfd.set(JAVA_SHORT, Libc.POLL_REVENTS, (short) 0);
                int r = Libc.pollRaw(pollfd, 1, (int) Math.clamp(left / 1_000_000, 1, Integer.MAX_VALUE));
                if (r < 0 && r != -Errno.EINTR) throw new SysException("poll", -r, fd.describe());
            }
        }
    }

    /** Stops listening: closes the socket (an abstract name is free again at once). */
    @Override
    public void close() {
        fd.close();
    }
}
