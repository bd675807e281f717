package org.vmmkit.bench;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
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
import org.vmmkit.vfio.migration.DeviceChunk;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

/**
 * Device state through the v1 migration region: one pre-copy pass over 64 MiB of device memory, chunk by
 * chunk through the data section (save steps a-f), each chunk read once by the consumer (a copy into a
 * sink, standing in for the socket write). Baselines in the same run: {@code copyOnce}, one
 * {@code MemorySegment.copy} of the same bytes; {@code copyTwice}, the least an emulated device can cost
 * (its driver stages the bytes into the data section, as a real device's DMA would, then the consumer
 * reads them). Score per op = one pass of 64 MiB.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED"})
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 2)
public class DeviceStateBenchmark {
    private static final long MEMORY = 64L << 20;

    @Param({"MMAP", "TRAPPED", "DIRECT"})
    public EmulatedMigratableDevice.DataSection dataSection;

    @Param({"1048576", "4194304"})
    public long dataSectionBytes;

    /** The emulated driver's chunk checksum: test instrumentation, not part of the VMM's path. */
    @Param({"false", "true"})
    public boolean checksums;

    private EmulatedMigratableDevice device;
    private V1DeviceMigration migration;
    private Arena arena;
    private MemorySegment source, stage, sink;

    @Setup(Level.Trial)
    public void setUp() {
        device = new EmulatedMigratableDevice(new EmulatedMigratableDevice.Config("bench-dev", MEMORY, dataSectionBytes, dataSection, 0, 0), 1)
                .checksums(checksums);
        migration = V1DeviceMigration.open(device, 0, V1DeviceMigration.Options.DEFAULT);
        arena = Arena.ofShared();
        source = arena.allocate(MEMORY, 4096);
        stage = arena.allocate(MEMORY, 4096);
        sink = arena.allocate(dataSectionBytes, 4096);
        source.fill((byte) 7);
    }

    @Benchmark
    public long precopyPassThroughTheDataSection() {
        migration.startPrecopy();
        long bytes = 0;
        for (long p = migration.pendingBytes(); p > 0; p = migration.pendingBytes()) {
            DeviceChunk c = migration.nextChunk();
            MemorySegment.copy(c.base(), c.offset(), sink, 0, c.length());
            bytes += c.length();
            c.release();
        }
        migration.cancelSave();
        return bytes;
    }

    @Benchmark
    public MemorySegment copyOnce() {
        for (long o = 0; o < MEMORY; o += dataSectionBytes) MemorySegment.copy(source, o, sink, 0, dataSectionBytes);
        return sink;
    }

    @Benchmark
    public MemorySegment copyTwice() {
        for (long o = 0; o < MEMORY; o += dataSectionBytes) {
            MemorySegment.copy(source, o, stage, o, dataSectionBytes);
            MemorySegment.copy(stage, o, sink, 0, dataSectionBytes);
        }
        return sink;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        migration.close();
        device.close();
        arena.close();
    }
}
