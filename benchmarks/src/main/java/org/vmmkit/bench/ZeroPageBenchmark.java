package org.vmmkit.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.migration.ram.RamSender;

/**
 * Zero-page detection at send time, as {@link RamSender} does it ({@link RamSender#isZeroPage}: a
 * vectorized {@code MemorySegment.mismatch} of each 4 KiB page against a zero page), over 256 MiB of
 * zero pages (the worst case: every byte is read), versus the baseline {@code memcpy}: one
 * {@code MemorySegment.copy} of the same 256 MiB. GB/s = 256 MiB / the time per op.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
public class ZeroPageBenchmark {
    private static final long SIZE = 256L << 20, PAGE = 4096;

    /** "zero": every page zero (all bytes read); "data": no page zero (the compare stops at the first byte). */
    @Param({"zero", "data"})
    public String content;

    private Arena arena;
    private MemorySegment memory, copy, zeroPage;

    @Setup
    public void setUp() {
        arena = Arena.ofShared();
        memory = arena.allocate(SIZE, PAGE);
        copy = arena.allocate(SIZE, PAGE);
        zeroPage = arena.allocate(PAGE, PAGE);
        if (content.equals("data")) for (long o = 0; o < SIZE; o += PAGE) memory.set(java.lang.foreign.ValueLayout.JAVA_BYTE, o, (byte) 1);
        copy.fill((byte) 1); // touched, so the baseline does not measure page faults
    }

    @Benchmark
    public long detect() {
        long zero = 0;
        for (long o = 0; o < SIZE; o += PAGE) if (RamSender.isZeroPage(memory, o, zeroPage)) zero++;
        return zero;
    }

    /** The alternative: OR the page's longs together (C2 vectorizes the loop), stopping at the first non-zero 64 bytes. */
    @Benchmark
    public long detectOrLongs() {
        long zero = 0;
        for (long o = 0; o < SIZE; o += PAGE) {
            boolean isZero = true;
            for (long i = 0; i < PAGE && isZero; i += 64) {
                long x = 0;
                for (long j = 0; j < 64; j += 8) x |= memory.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, o + i + j);
                isZero = x == 0;
            }
            if (isZero) zero++;
        }
        return zero;
    }

    @Benchmark
    public MemorySegment memcpy() {
        MemorySegment.copy(memory, 0, copy, 0, SIZE);
        return copy;
    }

    @TearDown
    public void tearDown() {
        arena.close();
    }
}
