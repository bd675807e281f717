package org.vmmkit.bench;

import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;
import org.vmmkit.core.config.Units;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.dirty.DirtyRunCursor;

/**
 * Merge + scan of one sync generation: the KVM bitmap and the IOMMU bitmap ORed into one, then walked
 * as runs of dirty pages. {@code mergeAndScan} is the tracker's code; {@code mergeAndScanPlainLoop} is
 * the baseline: the same result from a plain loop over every bit. Divide the score by the guest memory
 * in GiB for the time per GiB.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx2g"})
@Warmup(iterations = 2, time = 1)
@Measurement(iterations = 3, time = 2)
public class DirtyBitmapBenchmark {
    @Param({"16G", "1T"})
    public String memory;

    /** Fraction of pages the vCPUs dirtied; the IOMMU adds a tenth of that. */
    @Param({"0.01", "0.5"})
    public double dirty;

    private DirtyBitmap kvm, iommu, merged;
    private final DirtyRunCursor cursor = new DirtyRunCursor();

    @Setup(Level.Trial)
    public void setUp() {
        long pages = Units.parseSize(memory) / 4096;
        kvm = new DirtyBitmap(pages);
        iommu = new DirtyBitmap(pages);
        merged = new DirtyBitmap(pages);
        fill(kvm, dirty, 1);
        fill(iommu, dirty / 10, 2);
    }

    private static void fill(DirtyBitmap b, double density, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        if (density >= 0.5) {
            for (long w = 0; w < b.words(); w++) b.segment().set(java.lang.foreign.ValueLayout.JAVA_LONG, w * 8, r.nextLong());
            b.orWords(java.lang.foreign.MemorySegment.ofArray(new long[(int) b.words()])); // clear the tail bits
        } else {
            long n = (long) (b.pages() * density);
            for (long i = 0; i < n; i++) b.set(r.nextLong(b.pages()));
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        kvm.close();
        iommu.close();
        merged.close();
    }

    @Benchmark
    public long mergeAndScan() {
        merged.clear();
        merged.or(kvm);
        merged.or(iommu);
        cursor.reset(merged);
        long pages = 0;
        while (cursor.next()) pages += cursor.length();
        return pages;
    }

    @Benchmark
    public long mergeAndScanPlainLoop() {
        long pages = 0, runStart = -1, total = kvm.pages();
        for (long p = 0; p < total; p++) {
            boolean d = kvm.test(p) | iommu.test(p);
            if (d && runStart < 0) runStart = p;
            if (!d && runStart >= 0) {
                pages += p - runStart;
                runStart = -1;
            }
        }
        if (runStart >= 0) pages += total - runStart;
        return pages;
    }
}
