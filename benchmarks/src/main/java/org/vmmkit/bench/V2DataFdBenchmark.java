package org.vmmkit.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.vfio.migration.DataFdPump;

/**
 * Device state from a v2 data fd to a socket: 64 MiB per op. The data fd is a pipe that a producer thread keeps
 * full from a prefilled 1 MiB buffer (a driver streaming its state; the same cost for every mode); the socket is
 * a Unix stream socket whose other end a drain thread reads and discards (the same cost for every mode).
 * <ul>
 * <li>{@code splice}: {@link DataFdPump} SPLICE, pipe → socket inside the kernel (no copy to user space);</li>
 * <li>{@code readWrite}: {@link DataFdPump} COPY, read(2) into an off-heap 1 MiB buffer, write(2) to the socket;</li>
 * <li>{@code v1MappedSection}: the v1 path from an mmap'd data section: write(2) of 1 MiB of mapped memory to the
 * socket, 64 times (no producer: the device's staging is not in it);</li>
 * <li>{@code memcpy}: the baseline, {@code MemorySegment.copy} of the same 64 MiB, 1 MiB at a time.</li>
 * </ul>
 * The consumer's CPU time (the benchmark thread's, from {@code ThreadMXBean}) is counted beside the wall time:
 * {@code cpuNanos} / {@code ops} is what the VMM's thread spends per 64 MiB, the saving zero copy is for.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 2)
public class V2DataFdBenchmark {
    private static final long BYTES = 64L << 20;
    private static final int CHUNK = 1 << 20;

    private Arena arena;
    private MemorySegment source, sink, mapped;
    private Fd[] dataPipe, socket;
    private Thread producer, drain;
    private volatile boolean stop;
    private DataFdPump splice, copy;

    @Setup(Level.Trial)
    public void setUp() {
        arena = Arena.ofShared();
        source = arena.allocate(CHUNK, 4096);
        sink = arena.allocate(CHUNK, 4096);
        source.fill((byte) 0x5a);
        mapped = Libc.mmap(CHUNK, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0, "v1 data section stand-in");
        mapped.fill((byte) 0x5a);
        dataPipe = Libc.pipe(0, "data_fd");
        Libc.fcntlRaw(dataPipe[1].raw(), Libc.F_SETPIPE_SZ, CHUNK);
        socket = Libc.socketpair("migration socket");
        producer = new Thread(() -> {
            while (!stop) {
                long r = Libc.writeRaw(dataPipe[1].raw(), source);
                if (r < 0 && r != -Errno.EINTR) return;
            }
        }, "driver");
        drain = new Thread(() -> {
            MemorySegment b = Arena.ofAuto().allocate(CHUNK, 4096);
            while (!stop) {
                long r = Libc.readRaw(socket[1].raw(), b);
                if (r <= 0 && r != -Errno.EINTR) return;
            }
        }, "receiver");
        producer.setDaemon(true);
        drain.setDaemon(true);
        producer.start();
        drain.start();
        splice = new DataFdPump(DataFdPump.Mode.SPLICE, CHUNK);
        copy = new DataFdPump(DataFdPump.Mode.COPY, CHUNK);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        stop = true;
        dataPipe[0].close(); // the producer's write fails (EPIPE), the drain's read ends
        socket[0].close();
        splice.close();
        copy.close();
        Libc.munmap(mapped, "v1 data section stand-in");
    }

    /** The consumer thread's CPU time and op count, per iteration: divide one by the other. */
    @State(Scope.Thread)
    @AuxCounters(AuxCounters.Type.EVENTS)
    public static class ConsumerCpu {
        private static final java.lang.management.ThreadMXBean THREADS = java.lang.management.ManagementFactory.getThreadMXBean();
        public long cpuNanos, ops;

        @Setup(Level.Iteration)
        public void reset() {
            cpuNanos = 0;
            ops = 0;
        }

        long start() {
            return THREADS.getCurrentThreadCpuTime();
        }

        void end(long start) {
            cpuNanos += THREADS.getCurrentThreadCpuTime() - start;
            ops++;
        }
    }

    private long pump(DataFdPump pump) {
        long moved = 0;
        while (moved < BYTES) {
            long r = pump.transfer(dataPipe[0].raw(), true, socket[0].raw(), Math.min(CHUNK, BYTES - moved));
            if (r <= 0) throw new IllegalStateException("transfer: " + r);
            moved += r;
        }
        return moved;
    }

    @Benchmark
    public long splice(ConsumerCpu cpu) {
        long t = cpu.start();
        long r = pump(splice);
        cpu.end(t);
        return r;
    }

    @Benchmark
    public long readWrite(ConsumerCpu cpu) {
        long t = cpu.start();
        long r = pump(copy);
        cpu.end(t);
        return r;
    }

    @Benchmark
    public long v1MappedSection(ConsumerCpu cpu) {
        long t = cpu.start();
        long moved = 0;
        while (moved < BYTES) {
            long r = Libc.writeRaw(socket[0].raw(), mapped);
            if (r < 0) throw new IllegalStateException("write: " + r);
            moved += r;
        }
        cpu.end(t);
        return moved;
    }

    @Benchmark
    public long memcpy() {
        for (long moved = 0; moved < BYTES; moved += CHUNK) MemorySegment.copy(source, 0, sink, 0, CHUNK);
        return BYTES;
    }
}
