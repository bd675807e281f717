package org.vmmkit.vfio.migration;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;

/**
 * Moves a v2 device's migration stream from its data fd to a socket (or any fd) without passing it through the
 * Java heap: with {@link Mode#SPLICE}, through the kernel without a copy to user space — {@code splice(2)} straight
 * from the data fd when it is a pipe, else through an intermediate pipe (data fd → pipe → socket); with
 * {@link Mode#COPY}, a {@code read(2)} into one off-heap buffer and a {@code write(2)} from it.
 *
 * <p>A kernel VFIO data fd has no {@code splice_read} (the drivers give their migration files only
 * {@code read}), so its first splice fails with EINVAL: the pump then falls back to COPY for good and says why
 * ({@link #fallback()}). Pipe-backed sessions (the emulated device; a vfio-user client could hand out one) take
 * the zero-copy path. The pump never computes over the bytes: a sender that needs a payload CRC or TLS must read
 * them, which is why the migration's wire path uses the buffered chunks of {@link V2DeviceMigration}; this is
 * the mechanism, measured in {@code V2DataFdBenchmark}. Allocates nothing per call. One thread at a time.
 */
public final class DataFdPump implements AutoCloseable {
    /** How the bytes move: through the kernel only ({@code splice}), or through one off-heap buffer (read/write). */
    public enum Mode { SPLICE, COPY }

    private final Arena arena = Arena.ofShared();
    private final MemorySegment buffer;
    private Fd[] pipe; // intermediate, made on first need
    private Mode mode;
    private String fallback;

    public DataFdPump(Mode mode, int bufferBytes) {
        this.mode = mode;
        this.buffer = arena.allocate(bufferBytes, 4096);
    }

    public Mode mode() {
        return mode;
    }

    /** Why SPLICE fell back to COPY, or null. */
    public String fallback() {
        return fallback;
    }

    /**
     * Moves up to {@code max} bytes from {@code in} to {@code out}, all of what it took from {@code in} written
     * before it returns. Returns the bytes moved, 0 at the end of {@code in}, or -errno of the read side (ENOMSG:
     * pre-copy's temporary end). A failed write is -errno too, after nothing more was taken from {@code in}.
     */
    public long transfer(int in, boolean inIsPipe, int out, long max) {
        if (mode == Mode.SPLICE) {
            long r = inIsPipe ? spliceAll(in, out, max, true) : viaPipe(in, out, max);
            if (r != -Errno.EINVAL || mode == Mode.SPLICE) return r;
        }
        return copy(in, out, max);
    }

    /** data fd → intermediate pipe → out. */
    private long viaPipe(int in, int out, long max) {
        if (pipe == null) {
            pipe = Libc.pipe(0, "data-fd splice pipe");
            Libc.fcntlRaw(pipe[1].raw(), Libc.F_SETPIPE_SZ, (int) Math.min(1 << 20, buffer.byteSize()));
        }
        long r;
        do r = Libc.spliceRaw(in, pipe[1].raw(), Math.min(max, buffer.byteSize()), Libc.SPLICE_F_MOVE); while (r == -Errno.EINTR);
        if (r == -Errno.EINVAL) {
            mode = Mode.COPY; // the data fd has no splice_read: the kernel's VFIO migration files
            fallback = "splice from the data fd failed with EINVAL (no splice support): read/write through an off-heap buffer";
            return r;
        }
        if (r <= 0) return r;
        long moved = spliceAll(pipe[0].raw(), out, r, false);
        return moved < 0 ? moved : r;
    }

    /** Splices from a pipe until {@code length} bytes moved (or, when {@code once}, after the first move). */
    private long spliceAll(int pipeIn, int out, long length, boolean once) {
        long done = 0;
        while (done < length) {
            long r = Libc.spliceRaw(pipeIn, out, length - done, Libc.SPLICE_F_MOVE | Libc.SPLICE_F_MORE);
            if (r == -Errno.EINTR) continue;
            if (r < 0) return done > 0 ? done : r;
            if (r == 0) return done;
            done += r;
            if (once) return done;
        }
        return done;
    }

    private long copy(int in, int out, long max) {
        MemorySegment b = max >= buffer.byteSize() ? buffer : buffer.asSlice(0, max);
        long r;
        do r = Libc.readRaw(in, b); while (r == -Errno.EINTR);
        if (r <= 0) return r;
        long done = 0;
        while (done < r) {
            long w = Libc.writeRaw(out, done == 0 && r == b.byteSize() ? b : buffer.asSlice(done, r - done));
            if (w == -Errno.EINTR) continue;
            if (w < 0) return w;
            done += w;
        }
        return r;
    }

    @Override
    public void close() {
        if (pipe != null) {
            pipe[0].close();
            pipe[1].close();
        }
        arena.close();
    }
}
