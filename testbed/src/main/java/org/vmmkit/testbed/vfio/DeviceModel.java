package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.SplittableRandom;

import org.vmmkit.core.memory.GuardedMapping;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * What an emulated device is, whatever protocol migrates it: device memory (between guard pages, since a VMM
 * writes into it straight from a socket), 256 bytes of registers (register 0 counts operations), a dirty
 * bitmap of device memory, and the operation a workload repeats — rewrite part of a random page, bump the
 * registers, every n-th time DMA a page into guest memory through an {@link EmulatedVfioContainer}. Not
 * thread-safe: its driver calls it under its own lock.
 */
final class DeviceModel {
    static final int PAGE = 4096, REGISTERS = 256;

    final MemorySegment memory, registers;
    final long pages;
    private final long[] dirty;
    private final SplittableRandom random;
    private long dirtyCount, nextDirtyScan, ops, dmaWrites;
    private EmulatedVfioContainer dma;
    private long dmaIova, dmaBytes;
    private final int dmaEvery;

    DeviceModel(String name, long memoryBytes, int dmaEvery, long seed, Arena arena) {
        this.pages = memoryBytes / PAGE;
        this.memory = GuardedMapping.anonymous(memoryBytes, arena, name + " device memory");
        this.registers = arena.allocate(REGISTERS, 8);
        this.dirty = new long[(int) ((pages + 63) / 64)];
        this.dmaEvery = dmaEvery;
        this.random = new SplittableRandom(seed);
        for (long o = 0; o < memoryBytes; o += PAGE) memory.set(JAVA_LONG, o, random.nextLong());
        for (long o = 0; o < REGISTERS; o += 8) registers.set(JAVA_LONG, o, random.nextLong());
        registers.set(JAVA_LONG, 0, 0); // register 0 counts operations
    }

    /** Connects the DMA engine: it writes guest memory at IOVAs in {@code [iova, iova + bytes)}. */
    void attachDma(EmulatedVfioContainer container, long iova, long bytes) {
        this.dma = container;
        this.dmaIova = iova;
        this.dmaBytes = bytes;
    }

    /**
     * One operation, unless its page falls in {@code [heldFrom, heldFrom + heldCount)}: pages whose bytes a
     * VMM is reading in place (a raw chunk that is out) are held still, as a driver must.
     */
    void operate(long heldFrom, long heldCount) {
        long page = random.nextLong(pages);
        if (page >= heldFrom && page < heldFrom + heldCount) return;
        long at = page * PAGE + random.nextInt(PAGE / 64) * 64L;
        for (int i = 0; i < 8; i++) memory.set(JAVA_LONG, at + 8L * i, random.nextLong());
        markDirty(page);
        ops++;
        registers.set(JAVA_LONG, 0, registers.get(JAVA_LONG, 0) + 1);
        registers.set(JAVA_LONG, 8 + 8 * (ops % 30), random.nextLong());
        if (dma != null && dmaEvery > 0 && ops % dmaEvery == 0 && dmaBytes >= PAGE) {
            long target = dmaIova + random.nextLong(dmaBytes / PAGE) * PAGE;
            dma.dmaWrite(target, memory.asSlice(page * PAGE, PAGE));
            dmaWrites++;
        }
    }

    /** Operations done since this device was made (not migrated; the register is). */
    long localOperations() {
        return ops;
    }

    /** Workload operations done, as register 0 says (it migrates with the device). */
    long operations() {
        return registers.get(JAVA_LONG, 0);
    }

    long dmaWrites() {
        return dmaWrites;
    }

    void markDirty(long page) {
        long bit = 1L << (page & 63);
        int w = (int) (page >>> 6);
        if ((dirty[w] & bit) == 0) {
            dirty[w] |= bit;
            dirtyCount++;
        }
    }

    void markDirty(long from, long count) {
        for (long p = from; p < from + count; p++) markDirty(p);
    }

    /** Everything dirty, the scan from page 0: what saving begins with. */
    void markAllDirty() {
        for (long p = 0; p < pages; p++) markDirty(p);
        nextDirtyScan = 0;
    }

    long dirtyCount() {
        return dirtyCount;
    }

    /** The next dirty page from where the last scan stopped, its bit cleared (wrapping around); -1 if none is dirty. */
    long takeDirty() {
        if (dirtyCount == 0) return -1;
        for (long p = nextDirtyScan, seen = 0; seen < pages; p = p + 1 == pages ? 0 : p + 1, seen++) {
            if (isDirty(p)) {
                clear(p);
                nextDirtyScan = p + 1 == pages ? 0 : p + 1;
                return p;
            }
        }
        return -1;
    }

    /**
     * The run of dirty pages starting at the next dirty page, at most {@code max} long and not wrapping, its
     * bits cleared; returns its first page and leaves its length in {@link #lastRunLength()}; -1 if none is dirty.
     */
    long takeDirtyRun(int max) {
        long start = takeDirty();
        if (start < 0) return -1;
        int count = 1;
        for (long p = start + 1; p < pages && count < max && isDirty(p); p++) {
            clear(p);
            count++;
        }
        nextDirtyScan = start + count == pages ? 0 : start + count;
        lastRunLength = count;
        return start;
    }

    private int lastRunLength;

    int lastRunLength() {
        return lastRunLength;
    }

    private boolean isDirty(long p) {
        return (dirty[(int) (p >>> 6)] & (1L << (p & 63))) != 0;
    }

    private void clear(long p) {
        dirty[(int) (p >>> 6)] &= ~(1L << (p & 63));
        dirtyCount--;
    }

    /** SHA-256 of device memory and registers: equal on source at stop and destination at resume. */
    byte[] stateDigest() {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(memory.asByteBuffer());
            sha.update(registers.asByteBuffer());
            return sha.digest();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
