package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.memory.GuardedMapping;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v1.DeviceState;
import org.vmmkit.core.vfio.abi.V1Abi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * An in-process vendor driver with the kernel side of the v1 migration region, as the reference thread
 * defines it, behind {@link VfioDevice}: what a VFIO device looks like to a VMM where no hardware is.
 *
 * <p>The device has memory (default 64 MiB) and registers that a workload thread changes while the device
 * runs, and a DMA engine that writes guest memory through an {@link EmulatedVfioContainer} (marking its
 * IOMMU dirty bitmap). Pre-copy data is the device memory dirtied since pre-copy began (all of it at
 * first); stop-and-copy is the rest plus the registers. The data section is mmappable, half mmappable
 * (chunks alternate between the mapped and the trapped half) or trapped, by config.
 *
 * <p>Driver side of the protocol: {@code pending_bytes} reads have no side effect until {@code data_offset}
 * is read; reading {@code data_offset} stages a chunk; {@code data_offset}/{@code data_size} return the
 * same values until the next {@code pending_bytes} read, which marks the chunk consumed (and, to catch a
 * VMM that uses a chunk after that, overwrites the chunk's magic). Resume: each {@code data_size} write
 * applies the chunk at the {@code data_offset} last read, checking its magic, sequence, size and checksum.
 *
 * <p>Misuse by the VMM is refused with EINVAL and recorded in {@link #misuse()}: a state write of 101b,
 * 110b or 111b, one that changes reserved bits 3..31 (this device keeps bit 8 set) or is off the
 * transition diagram; a register access at the wrong width or offset; {@code data_size} before
 * {@code data_offset}; {@code data_offset} with nothing pending; a chunk written out of order or with a
 * different size than the source's. {@link Faults} injects a driver's own failures.
 */
public final class EmulatedMigratableDevice implements EmulatedDevice {

    /**
     * How the data section is laid out and how much of it can be mmap'd. DIRECT exposes the device memory
     * itself as an mmappable window after the staging area: a dirty run goes as a small header chunk
     * (staged) naming the run, then a raw chunk whose data_offset points into the window, so neither side
     * copies the bytes through a staging buffer.
     */
    public enum DataSection { MMAP, PARTIAL, TRAPPED, DIRECT }

    /**
     * @param memoryBytes      device memory
     * @param dataSectionBytes size of the data section (the largest chunk)
     * @param opsPerSecond     workload operations per second while running (0 = none)
     * @param dmaEvery         every n-th operation also DMAs a page into guest memory (0 = never)
     */
    public record Config(String name, long memoryBytes, long dataSectionBytes, DataSection dataSection, long opsPerSecond,
                         int dmaEvery) {
        public Config {
            if (memoryBytes <= 0 || memoryBytes % PAGE != 0 || dataSectionBytes < 2L * (CHUNK_HEADER + RECORD)
                    || dataSectionBytes % PAGE != 0) {
                throw new IllegalArgumentException("bad emulated device config: " + memoryBytes + " bytes of memory, "
                        + dataSectionBytes + "-byte data section");
            }
        }

        public static Config defaults(String name) {
            return new Config(name, 64L << 20, 1L << 20, DataSection.MMAP, 2000, 4);
        }

        public Config with(DataSection section) {
            return new Config(name, memoryBytes, dataSectionBytes, section, opsPerSecond, dmaEvery);
        }

        public Config withMemory(long bytes) {
            return new Config(name, bytes, dataSectionBytes, dataSection, opsPerSecond, dmaEvery);
        }

        public Config withOpsPerSecond(long ops) {
            return new Config(name, memoryBytes, dataSectionBytes, dataSection, ops, dmaEvery);
        }
    }

    public static final int BAR0 = 0, MIGRATION_REGION = 9, REGION_COUNT = 10;
    /** The data section starts on the page after the registers, so it can be mmap'd. */
    public static final long DATA_START = 4096;
    static final int PAGE = 4096, RECORD = 8 + PAGE, CHUNK_HEADER = 32, REGISTERS = 256;
    static final int MAGIC = 0x56444D43, POISON = 0xDEADDEAD;
    static final int KIND_PAGES = 1, KIND_REGISTERS = 2, KIND_EMPTY = 3, KIND_RUN_HEADER = 4, KIND_RAW = 5;
    /** The longest run one DIRECT raw chunk carries: 4 MiB. */
    static final int MAX_RUN_PAGES = 1024;
    /** A reserved bit this device keeps set in device_state, so a VMM that clobbers bits 3..31 is caught. */
    static final int RESERVED_BIT = 1 << 8;

    /** The chunk staged by a data_offset read: mutable and reused, so staging allocates nothing. */
    private static final class Staged {
        long offset, size, runStart;
        int kind, count;
        final long[] pages;

        Staged(int maxPages) {
            pages = new long[maxPages];
        }
    }

    private final Config config;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment memory, registers, data;
    private final long[] dirty;
    private final long pages;
    private final Faults faults = new Faults();
    private final List<String> misuse = new ArrayList<>();
    private final RegionInfo migrationInfo, bar0Info;

    // Guarded by this.
    private int state = V1Abi.STATE_RUNNING | RESERVED_BIT;
    private Staged staged; // null, or stagedChunk while a chunk is out
    private final Staged stagedChunk;
    private boolean registersSent;
    private long stagedChunks, dirtyCount, nextDirtyScan;
    private boolean partialFlip;
    private long resumeOffset = -1, resumeSequence;
    private long rawPendingStart = -1, rawPendingCount; // DIRECT, source: the run a consumed header announced
    private long expectRawStart = -1, expectRawCount;   // DIRECT, destination: the run the last header announced
    private final long windowStart;
    private boolean finalReceived;
    private EmulatedVfioContainer dma;
    private long dmaIova, dmaBytes;
    private final SplittableRandom random;
    private long ops, dmaWrites;

    private final Thread workload;
    private volatile boolean closed;

    public EmulatedMigratableDevice(Config config, long seed) {
        this.config = config;
        this.pages = config.memoryBytes() / PAGE;
        // The data section and device memory (the DIRECT window) are what a VMM writes into straight from a
        // socket: each sits between guard pages, so a write past its end faults instead of corrupting the heap.
        this.memory = GuardedMapping.anonymous(config.memoryBytes(), arena, config.name() + " device memory");
        this.registers = arena.allocate(REGISTERS, 8);
        this.data = GuardedMapping.anonymous(config.dataSectionBytes(), arena, config.name() + " data section");
        this.dirty = new long[(int) ((pages + 63) / 64)];
        this.random = new SplittableRandom(seed);
        for (long o = 0; o < config.memoryBytes(); o += PAGE) memory.set(JAVA_LONG, o, random.nextLong());
        for (long o = 0; o < REGISTERS; o += 8) registers.set(JAVA_LONG, o, random.nextLong());
        registers.set(JAVA_LONG, 0, 0); // register 0 counts operations
        this.windowStart = DATA_START + config.dataSectionBytes();
        long regionSize = windowStart + (config.dataSection() == DataSection.DIRECT ? config.memoryBytes() : 0);
        int flags = VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE | VfioAbi.REGION_INFO_FLAG_CAPS;
        List<RegionInfo.SparseArea> areas = switch (config.dataSection()) {
            case MMAP -> List.of(new RegionInfo.SparseArea(DATA_START, config.dataSectionBytes()));
            case PARTIAL -> List.of(new RegionInfo.SparseArea(DATA_START, config.dataSectionBytes() / 2));
            case TRAPPED -> List.of();
            case DIRECT -> List.of(new RegionInfo.SparseArea(DATA_START, config.dataSectionBytes()),
                    new RegionInfo.SparseArea(windowStart, config.memoryBytes()));
        };
        if (!areas.isEmpty()) flags |= VfioAbi.REGION_INFO_FLAG_MMAP;
        this.migrationInfo = new RegionInfo(MIGRATION_REGION, flags, regionSize, (long) MIGRATION_REGION << 40,
                Optional.of(new RegionInfo.Type(VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED, VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED)),
                areas);
        this.bar0Info = new RegionInfo(BAR0, VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE, 4096, 0,
                Optional.empty(), List.of());
        this.stagedChunk = new Staged((int) ((config.dataSectionBytes() - CHUNK_HEADER) / RECORD));
        this.workload = new Thread(this::work, config.name() + "-workload");
        workload.setDaemon(true);
        workload.start();
    }

    /** Connects the DMA engine: it writes guest memory at IOVAs in {@code [iova, iova + bytes)}. */
    public synchronized void attachDma(EmulatedVfioContainer container, long iova, long bytes) {
        this.dma = container;
        this.dmaIova = iova;
        this.dmaBytes = bytes;
    }

    public Faults faults() {
        return faults;
    }

    /**
     * Chunk checksums (on by default) catch corrupted or reordered data at the destination; a benchmark
     * that measures the VMM's path may turn this test instrumentation off on both sides.
     */
    public EmulatedMigratableDevice checksums(boolean on) {
        checksums = on;
        return this;
    }

    private volatile boolean checksums = true;

    /**
     * Records {@link #stateDigest()} inside the resuming → running transition, before the workload can run
     * again: what the device held at the moment it resumed (a digest taken after returning would race
     * with the running device).
     */
    public EmulatedMigratableDevice recordDigestOnResume() {
        recordDigestOnResume = true;
        return this;
    }

    /** The digest recorded at the last resume, or null. */
    public synchronized byte[] digestAtResume() {
        return digestAtResume;
    }

    private volatile boolean recordDigestOnResume;
    private byte[] digestAtResume;

    /** Every protocol misuse by the VMM so far. */
    public synchronized List<String> misuse() {
        return List.copyOf(misuse);
    }

    public synchronized DeviceState currentState() {
        return new DeviceState(state);
    }

    /** One workload operation now (if the device runs), for tests that need to dirty state at a known point. */
    public synchronized void operateOnce() {
        if ((state & V1Abi.STATE_RUNNING) != 0 && !isError(state)) operate();
    }

    /** Makes this device look like one whose driver has no migration region (a migration blocker). */
    public EmulatedMigratableDevice withoutMigrationRegion() {
        noMigrationRegion = true;
        return this;
    }

    private volatile boolean noMigrationRegion;

    /** Workload operations done (a register the workload keeps; it migrates with the device). */
    public synchronized long operations() {
        return registers.get(JAVA_LONG, 0);
    }

    public synchronized long dmaWrites() {
        return dmaWrites;
    }

    /** SHA-256 of device memory and registers: equal on source at stop and destination at resume. */
    public synchronized byte[] stateDigest() {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(memory.asByteBuffer());
            sha.update(registers.asByteBuffer());
            return sha.digest();
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    // ---- the workload ----

    private void work() {
        long period = config.opsPerSecond() > 0 ? TimeUnit.SECONDS.toNanos(1) / config.opsPerSecond() : 0;
        while (!closed) {
            if (period == 0) {
                LockSupport.parkNanos(10_000_000L);
                continue;
            }
            LockSupport.parkNanos(period);
            synchronized (this) {
                if (closed || (state & V1Abi.STATE_RUNNING) == 0 || isError(state)) continue; // stopped devices do nothing
                operate();
            }
        }
    }

    /** One device operation: rewrite part of a page, bump the registers, sometimes DMA. Under the lock. */
    private void operate() {
        long page = random.nextLong(pages);
        // DIRECT: a raw chunk that is out is this memory itself, read by the VMM (for its frame CRC, then by the
        // kernel) until the chunk is consumed. As a driver must keep a chunk's bytes still while it is out, the
        // device holds writes to the run's pages until then (here the operation is skipped); a write just before
        // or after still marks the page dirty, so it goes again in a later chunk.
        if (staged != null && staged.kind == KIND_RAW && page >= staged.runStart && page < staged.runStart + staged.count) return;
        long at = page * PAGE + random.nextInt(PAGE / 64) * 64L;
        for (int i = 0; i < 8; i++) memory.set(JAVA_LONG, at + 8L * i, random.nextLong());
        markDirty(page);
        ops++;
        registers.set(JAVA_LONG, 0, registers.get(JAVA_LONG, 0) + 1);
        registers.set(JAVA_LONG, 8 + 8 * (ops % 30), random.nextLong());
        if (dma != null && config.dmaEvery() > 0 && ops % config.dmaEvery() == 0 && dmaBytes >= PAGE) {
            long target = dmaIova + random.nextLong(dmaBytes / PAGE) * PAGE;
            dma.dmaWrite(target, memory.asSlice(page * PAGE, PAGE));
            dmaWrites++;
        }
    }

    private void markDirty(long page) {
        long bit = 1L << (page & 63);
        int w = (int) (page >>> 6);
        if ((dirty[w] & bit) == 0) {
            dirty[w] |= bit;
            dirtyCount++;
        }
    }

    private void markAllDirty() {
        for (long p = 0; p < pages; p++) markDirty(p);
        nextDirtyScan = 0;
    }

    // ---- VfioDevice ----

    @Override
    public String name() {
        return config.name();
    }

    @Override
    public int regionCount() {
        return REGION_COUNT;
    }

    @Override
    public boolean resettable() {
        return true;
    }

    @Override
    public RegionInfo regionInfo(int region) {
        if (region == MIGRATION_REGION && noMigrationRegion) {
            return new RegionInfo(region, VfioAbi.REGION_INFO_FLAG_READ, 4096, (long) region << 40, Optional.empty(), List.of());
        }
        if (region == MIGRATION_REGION) return migrationInfo;
        if (region == BAR0) return bar0Info;
        if (region < 0 || region >= REGION_COUNT) throw new SysException("ioctl(VFIO_DEVICE_GET_REGION_INFO(index=" + region + "))", Errno.EINVAL, name());
        return new RegionInfo(region, 0, 0, (long) region << 40, Optional.empty(), List.of());
    }

    /** The register or data access being served, described only when an error needs it (no string per access). */
    private static final class Access {
        String op;
        int region;
        long offset, length;

        Access set(String op, int region, long offset, long length) {
            this.op = op;
            this.region = region;
            this.offset = offset;
            this.length = length;
            return this;
        }

        @Override
        public String toString() {
            return op + "(region " + region + ", offset " + hex(offset) + ", " + length + " bytes)";
        }
    }

    private final Access access = new Access(); // guarded by this, like every access

    private SysException refuse(Access access, String why) {
        misuse.add(why);
        return new SysException(access + " [" + why + "]", Errno.EINVAL, name());
    }

    private static String hex(long v) {
        return "0x" + Long.toHexString(v);
    }

    private static boolean isError(int raw) {
        return (raw & V1Abi.STATE_MASK) == (V1Abi.STATE_SAVING | V1Abi.STATE_RESUMING);
    }

    @Override
    public synchronized int readInt(int region, long offset) {
        Access access = this.access.set("pread", region, offset, 4);
        if (region == BAR0) return (int) ops;
        if (region != MIGRATION_REGION) throw new SysException(access.toString(), Errno.EINVAL, name());
        if (offset == V1Abi.DEVICE_STATE) {
            failRead("device_state", access);
            return state;
        }
        if (offset == V1Abi.RESERVED) return 0;
        throw refuse(access, "4-byte read at " + hex(offset) + " of the migration registers is not a native-width access");
    }

    private void failRead(String register, Access access) {
        if (register.equals(faults.failRead)) throw new SysException(access + " [injected: " + register + "]", faults.failReadErrno, name());
    }

    @Override
    public synchronized long readLong(int region, long offset) {
        Access access = this.access.set("pread", region, offset, 8);
        if (region != MIGRATION_REGION) throw new SysException(access.toString(), Errno.EINVAL, name());
        if (offset == V1Abi.PENDING_BYTES) {
            failRead("pending_bytes", access);
            return readPending();
        }
        if (offset == V1Abi.DATA_OFFSET) {
            failRead("data_offset", access);
            return readDataOffset(access);
        }
        if (offset == V1Abi.DATA_SIZE) {
            failRead("data_size", access);
            if ((state & V1Abi.STATE_SAVING) != 0) {
                if (staged == null) throw refuse(access, "data_size read before data_offset (save step c before b)");
                return faults.badDataSize >= 0 ? faults.badDataSize : staged.size;
            }
            throw refuse(access, "data_size read in " + new DeviceState(state) + ": there is no chunk to size");
        }
        throw refuse(access, "8-byte read at " + hex(offset) + " of the migration registers is not a native-width access");
    }

    /** Save steps a and f: the read that follows a data_offset read means the chunk was consumed. */
    private long readPending() {
        if ((state & V1Abi.STATE_SAVING) == 0) return 0;
        if (staged != null) {
            if (staged.kind == KIND_RAW) {
                rawPendingStart = -1; // the run's bytes are gone: device memory itself, nothing to poison
            } else {
                data.set(JAVA_INT, staged.offset - DATA_START, POISON); // a VMM still using it will be caught
                if (staged.kind == KIND_RUN_HEADER) {
                    rawPendingStart = staged.runStart;
                    rawPendingCount = staged.count;
                }
            }
            staged = null;
        }
        long pending = dirtyCount * RECORD + (rawPendingStart >= 0 ? rawPendingCount * PAGE : 0);
        boolean stopped = (state & V1Abi.STATE_RUNNING) == 0;
        if (stopped && !registersSent) pending += CHUNK_HEADER + REGISTERS + 8;
        if (stopped && faults.pendingNeverDrains) pending = Math.max(pending, CHUNK_HEADER);
        return pending;
    }

    private long readDataOffset(Access access) {
        if ((state & V1Abi.STATE_SAVING) != 0) {
            if (staged == null) {
                long pending = readPendingQuietly();
                if (pending == 0) throw refuse(access, "data_offset read with pending_bytes 0 (save step b without data)");
                if (faults.failStagingAfterChunks >= 0 && stagedChunks >= faults.failStagingAfterChunks) {
                    throw new SysException(access + " [injected: staging failed]", Errno.EIO, name());
                }
                if (faults.slowDataNanos > 0) LockSupport.parkNanos(faults.slowDataNanos);
                staged = stage();
                stagedChunks++;
            }
            return faults.badDataOffset >= 0 ? faults.badDataOffset : staged.offset;
        }
        if ((state & V1Abi.STATE_MASK) == V1Abi.STATE_RESUMING) {
            if (expectRawStart >= 0) {
                resumeOffset = windowStart + expectRawStart * PAGE;
                return faults.badDataOffset >= 0 ? faults.badDataOffset : resumeOffset;
            }
            if (config.dataSection() == DataSection.PARTIAL) partialFlip = !partialFlip;
            resumeOffset = DATA_START + (partialFlip ? 0 : (config.dataSection() == DataSection.PARTIAL ? config.dataSectionBytes() / 2 : 0));
            return faults.badDataOffset >= 0 ? faults.badDataOffset : resumeOffset;
        }
        throw refuse(access, "data_offset read in " + new DeviceState(state));
    }

    private long readPendingQuietly() {
        long pending = dirtyCount * RECORD + (rawPendingStart >= 0 ? rawPendingCount * PAGE : 0);
        boolean stopped = (state & V1Abi.STATE_RUNNING) == 0;
        if (stopped && !registersSent) pending += 1;
        if (stopped && faults.pendingNeverDrains) pending = Math.max(pending, 1);
        return pending;
    }

    /** Builds the next chunk in the data section: dirty pages, else (stopped) the registers. */
    private Staged stage() {
        if (config.dataSection() == DataSection.DIRECT) {
            Staged direct = stageDirect();
            if (direct != null) return direct;
        }
        long offset = DATA_START, capacity = config.dataSectionBytes();
        if (config.dataSection() == DataSection.PARTIAL) {
            partialFlip = !partialFlip;
            capacity = config.dataSectionBytes() / 2;
            offset = DATA_START + (partialFlip ? 0 : capacity);
        }
        long at = offset - DATA_START;
        MemorySegment chunk = data;
        boolean stopped = (state & V1Abi.STATE_RUNNING) == 0;
        int kind;
        long payload = 0;
        Staged st = stagedChunk;
        st.count = 0;
        if (dirtyCount > 0) {
            kind = KIND_PAGES;
            int max = (int) ((capacity - CHUNK_HEADER) / RECORD);
            int want = (int) Math.min(max, dirtyCount);
            long[] taken = st.pages;
            int n = 0;
            for (long p = nextDirtyScan; n < want; p = p + 1 == pages ? 0 : p + 1) {
                long bit = 1L << (p & 63);
                int w = (int) (p >>> 6);
                if ((dirty[w] & bit) != 0) {
                    dirty[w] &= ~bit;
                    dirtyCount--;
                    taken[n++] = p;
                    long rec = at + CHUNK_HEADER + payload;
                    chunk.set(JAVA_LONG, rec, p);
                    MemorySegment.copy(memory, p * PAGE, chunk, rec + 8, PAGE);
                    payload += RECORD;
                    nextDirtyScan = p + 1 == pages ? 0 : p + 1;
                }
            }
            st.count = n;
        } else if (stopped && !registersSent) {
            kind = KIND_REGISTERS;
            MemorySegment.copy(registers, 0, chunk, at + CHUNK_HEADER, REGISTERS);
            chunk.set(JAVA_LONG, at + CHUNK_HEADER + REGISTERS, config.memoryBytes());
            payload = REGISTERS + 8;
            registersSent = true;
        } else {
            kind = KIND_EMPTY;
        }
        chunk.set(JAVA_INT, at, MAGIC);
        chunk.set(JAVA_INT, at + 4, (int) stagedChunks);
        chunk.set(JAVA_INT, at + 8, kind);
        chunk.set(JAVA_INT, at + 12, st.count);
        chunk.set(JAVA_LONG, at + 16, payload);
        chunk.set(JAVA_LONG, at + 24, checksums ? checksum(chunk, at + CHUNK_HEADER, payload) : 0);
        st.offset = offset;
        st.size = CHUNK_HEADER + payload;
        st.kind = kind;
        return st;
    }

    /**
     * DIRECT: the raw chunk of the run a consumed header announced, or a header chunk for the next dirty run
     * (its bits cleared now: a write after this re-dirties the page, so it is sent again). Null when no page
     * is dirty: then the registers go as usual.
     */
    private Staged stageDirect() {
        Staged st = stagedChunk;
        if (rawPendingStart >= 0) {
            st.kind = KIND_RAW;
            st.runStart = rawPendingStart;
            st.count = (int) rawPendingCount;
            st.offset = windowStart + rawPendingStart * PAGE;
            st.size = rawPendingCount * PAGE;
            return st;
        }
        if (dirtyCount == 0) return null;
        long start = -1;
        for (long p = nextDirtyScan, seen = 0; seen < pages; p = p + 1 == pages ? 0 : p + 1, seen++) {
            if ((dirty[(int) (p >>> 6)] & (1L << (p & 63))) != 0) {
                start = p;
                break;
            }
        }
        int count = 0;
        for (long p = start; p < pages && count < MAX_RUN_PAGES && (dirty[(int) (p >>> 6)] & (1L << (p & 63))) != 0; p++) {
            dirty[(int) (p >>> 6)] &= ~(1L << (p & 63));
            dirtyCount--;
            count++;
        }
        nextDirtyScan = start + count == pages ? 0 : start + count;
        data.set(JAVA_INT, 0, MAGIC);
        data.set(JAVA_INT, 4, (int) stagedChunks);
        data.set(JAVA_INT, 8, KIND_RUN_HEADER);
        data.set(JAVA_INT, 12, count);
        data.set(JAVA_LONG, 16, 16);
        data.set(JAVA_LONG, CHUNK_HEADER, start);
        data.set(JAVA_LONG, CHUNK_HEADER + 8, count);
        data.set(JAVA_LONG, 24, checksums ? checksum(data, CHUNK_HEADER, 16) : 0);
        st.kind = KIND_RUN_HEADER;
        st.runStart = start;
        st.count = count;
        st.offset = DATA_START;
        st.size = CHUNK_HEADER + 16;
        return st;
    }

    private static long checksum(MemorySegment s, long from, long length) {
        long h = 0x9E3779B97F4A7C15L;
        long n = length & ~7L;
        for (long o = 0; o < n; o += 8) h = Long.rotateLeft(h ^ s.get(JAVA_LONG, from + o), 29) * 0xBF58476D1CE4E5B9L;
        for (long o = n; o < length; o++) h = Long.rotateLeft(h ^ s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, from + o), 7) * 31;
        return h;
    }

    @Override
    public synchronized void writeInt(int region, long offset, int value) {
        Access access = this.access.set("pwrite", region, offset, 4);
        if (region == BAR0) return;
        if (region != MIGRATION_REGION) throw new SysException(access.toString(), Errno.EINVAL, name());
        if (offset == V1Abi.RESERVED) return; // writes are ignored
        if (offset != V1Abi.DEVICE_STATE) throw refuse(access, "4-byte write at " + hex(offset) + " is not a native-width access");
        writeState(access, value);
    }

    private void writeState(Access access, int value) {
        DeviceState from = new DeviceState(state), to = new DeviceState(value);
        if (!to.valid() || to.isError() || (value & V1Abi.STATE_MASK) == 0b111) {
            throw refuse(access, "device_state write of " + to + ": the VMM never writes 101b, 110b or 111b");
        }
        if ((value & ~V1Abi.STATE_MASK) != (state & ~V1Abi.STATE_MASK)) {
            throw refuse(access, "device_state write changes reserved bits 3..31 (0x" + Integer.toHexString(state & ~V1Abi.STATE_MASK)
                    + " -> 0x" + Integer.toHexString(value & ~V1Abi.STATE_MASK) + "): read-modify-write them");
        }
        if (isError(state)) throw refuse(access, "device_state write in ERROR: VFIO_DEVICE_RESET first");
        if (from.sameBits(to)) return;
        if (!from.canGoTo(to)) throw refuse(access, "device_state " + from + " -> " + to + " is not a transition of the diagram");
        int bits = value & V1Abi.STATE_MASK;
        if (bits == faults.errorOnStateWriteTo) {
            state = (state & ~V1Abi.STATE_MASK) | V1Abi.STATE_SAVING | V1Abi.STATE_RESUMING;
            staged = null;
            throw new SysException(access + " [injected: internal error, device in ERROR]", Errno.EIO, name());
        }
        if (bits == faults.failStateWriteTo) {
            throw new SysException(access + " [injected]", faults.failStateWriteErrno, name());
        }
        if (bits == V1Abi.STATE_RUNNING && from.resuming() && !finalReceived) {
            throw new SysException(access + " [resume incomplete: the final chunk (registers) never arrived]", Errno.EIO, name());
        }
        enter(from, bits);
        if (bits == V1Abi.STATE_RUNNING && from.resuming() && recordDigestOnResume) digestAtResume = stateDigest();
        state = (state & ~V1Abi.STATE_MASK) | bits;
    }

    /** The driver's side effects of a transition; the workload observes the new state under the same lock. */
    private void enter(DeviceState from, int bits) {
        if (staged != null) {
            // Not known to be consumed: send again.
            if (staged.kind == KIND_RUN_HEADER) {
                for (long p = staged.runStart; p < staged.runStart + staged.count; p++) markDirty(p);
            } else if (staged.kind == KIND_RAW) {
                // The header was consumed, so the destination expects this run next: it stays announced.
            } else {
                for (int i = 0; i < staged.count; i++) markDirty(staged.pages[i]);
            }
            if (staged.kind == KIND_REGISTERS) registersSent = false;
            staged = null;
        }
        if ((bits & V1Abi.STATE_SAVING) == 0 && rawPendingStart >= 0) {
            for (long p = rawPendingStart; p < rawPendingStart + rawPendingCount; p++) markDirty(p);
            rawPendingStart = -1;
        }
        boolean wasSaving = from.saving();
        if ((bits & V1Abi.STATE_SAVING) != 0 && !wasSaving) {
            markAllDirty();
            registersSent = false;
            stagedChunks = 0;
        }
        if (bits == V1Abi.STATE_RESUMING) {
            expectRawStart = -1;
            resumeSequence = 0;
            finalReceived = false;
            resumeOffset = -1;
        }
        if ((bits & V1Abi.STATE_SAVING) == 0) registersSent = false;
    }

    @Override
    public synchronized void writeLong(int region, long offset, long value) {
        Access access = this.access.set("pwrite", region, offset, 8);
        if (region != MIGRATION_REGION) throw new SysException(access.toString(), Errno.EINVAL, name());
        if (offset == V1Abi.PENDING_BYTES || offset == V1Abi.DATA_OFFSET) {
            throw refuse(access, (offset == V1Abi.PENDING_BYTES ? "pending_bytes" : "data_offset") + " is read-only");
        }
        if (offset != V1Abi.DATA_SIZE) throw refuse(access, "8-byte write at " + hex(offset) + " is not a native-width access");
        if ((state & V1Abi.STATE_MASK) != V1Abi.STATE_RESUMING) {
            throw refuse(access, "data_size written in " + new DeviceState(state) + ": only resuming devices take data");
        }
        if (resumeOffset < 0) throw refuse(access, "data_size written before data_offset was read (resume step c before a)");
        long at = resumeOffset;
        resumeOffset = -1;
        if (faults.failResumeErrno != 0) throw new SysException(access + " [injected]", faults.failResumeErrno, name());
        apply(access, at, value);
    }

    /** Resume step c, the driver's side: checks and applies the chunk written at {@code at}. */
    private void apply(Access access, long at, long size) {
        if (expectRawStart >= 0) {
            if (at != windowStart + expectRawStart * PAGE || size != expectRawCount * PAGE) {
                throw refuse(access, "raw chunk of " + size + " bytes at " + hex(at) + " where the announced run of "
                        + expectRawCount + " pages at page " + expectRawStart + " was due");
            }
            expectRawStart = -1; // the bytes are already in device memory: the VMM wrote them into the window
            resumeSequence++;
            return;
        }
        long capacity = config.dataSection() == DataSection.PARTIAL ? config.dataSectionBytes() / 2 : config.dataSectionBytes();
        if (size < CHUNK_HEADER || size > capacity) throw corrupt(access, "a chunk of " + size + " bytes");
        MemorySegment chunk = data.asSlice(at - DATA_START, size);
        int magic = chunk.get(JAVA_INT, 0);
        if (magic == POISON) {
            throw corrupt(access, "chunk " + resumeSequence + " was overwritten at the source: the VMM used it after reading "
                    + "pending_bytes (save step f before e)");
        }
        if (magic != MAGIC) throw corrupt(access, "chunk " + resumeSequence + " has magic 0x" + Integer.toHexString(magic));
        long seq = Integer.toUnsignedLong(chunk.get(JAVA_INT, 4));
        if (seq != resumeSequence) {
            throw refuse(access, "chunk " + seq + " written where chunk " + resumeSequence + " was due: order must be the source's");
        }
        long payload = chunk.get(JAVA_LONG, 16);
        if (payload != size - CHUNK_HEADER) {
            throw refuse(access, "chunk " + seq + " written with data_size " + size + ", the source's was " + (payload + CHUNK_HEADER));
        }
        if (checksums && checksum(chunk, CHUNK_HEADER, payload) != chunk.get(JAVA_LONG, 24)) {
            throw corrupt(access, "chunk " + seq + " fails its checksum");
        }
        int kind = chunk.get(JAVA_INT, 8);
        if (kind == KIND_PAGES) {
            int n = chunk.get(JAVA_INT, 12);
            for (int i = 0; i < n; i++) {
                long base = CHUNK_HEADER + (long) i * RECORD;
                long page = chunk.get(JAVA_LONG, base);
                if (page < 0 || page >= pages) throw corrupt(access, "chunk " + seq + " names page " + page);
                MemorySegment.copy(chunk, base + 8, memory, page * PAGE, PAGE);
            }
        } else if (kind == KIND_REGISTERS) {
            if (chunk.get(JAVA_LONG, CHUNK_HEADER + REGISTERS) != config.memoryBytes()) {
                throw corrupt(access, "the source device has " + chunk.get(JAVA_LONG, CHUNK_HEADER + REGISTERS) + " bytes of memory, this one "
                        + config.memoryBytes());
            }
            MemorySegment.copy(chunk, CHUNK_HEADER, registers, 0, REGISTERS);
            finalReceived = true;
        } else if (kind == KIND_RUN_HEADER) {
            long start = chunk.get(JAVA_LONG, CHUNK_HEADER), count = chunk.get(JAVA_LONG, CHUNK_HEADER + 8);
            if (config.dataSection() != DataSection.DIRECT || start < 0 || count <= 0 || start + count > pages) {
                throw corrupt(access, "chunk " + seq + " announces a run of " + count + " pages at page " + start);
            }
            expectRawStart = start;
            expectRawCount = count;
        } else if (kind != KIND_EMPTY) {
            throw corrupt(access, "chunk " + seq + " has kind " + kind);
        }
        resumeSequence++;
    }

    private SysException corrupt(Access access, String why) {
        return new SysException(access + " [" + why + "]", Errno.EIO, name());
    }

    @Override
    public synchronized void read(int region, long offset, MemorySegment dst) {
        Access access = this.access.set("pread", region, offset, dst.byteSize());
        MemorySegment.copy(backing(access, region, offset, dst.byteSize()), 0, dst, 0, dst.byteSize());
    }

    @Override
    public synchronized void write(int region, long offset, MemorySegment src) {
        Access access = this.access.set("pwrite", region, offset, src.byteSize());
        MemorySegment target = backing(access, region, offset, src.byteSize());
        if ((state & V1Abi.STATE_MASK) != V1Abi.STATE_RESUMING) throw refuse(access, "data written to a device that is not resuming");
        MemorySegment.copy(src, 0, target, 0, src.byteSize());
    }

    /** The bytes behind {@code [offset, offset + length)} of the data section or the DIRECT window. */
    private MemorySegment backing(Access access, int region, long offset, long length) {
        if (region != MIGRATION_REGION) throw new SysException(access.toString(), Errno.EINVAL, name());
        if (offset < DATA_START) throw refuse(access, "bulk access to the migration registers");
        if (config.dataSection() == DataSection.DIRECT && offset >= windowStart) {
            if (offset - windowStart > config.memoryBytes() - length) throw new SysException(access.toString(), Errno.EINVAL, name());
            return memory.asSlice(offset - windowStart, length);
        }
        if (offset - DATA_START > config.dataSectionBytes() - length) throw new SysException(access.toString(), Errno.EINVAL, name());
        return data.asSlice(offset - DATA_START, length);
    }

    @Override
    public MemorySegment mmap(int region, long offset, long size) {
        if (region != MIGRATION_REGION || migrationInfo.mmappableArea(offset, size).isEmpty()) {
            throw new SysException("mmap(region " + region + ", offset " + hex(offset) + ", " + size + " bytes)", Errno.EINVAL, name());
        }
        if (config.dataSection() == DataSection.DIRECT && offset >= windowStart) return memory.asSlice(offset - windowStart, size);
        return data.asSlice(offset - DATA_START, size);
    }

    @Override
    public void unmap(MemorySegment mapping) {
        // The mapping is a view of the device's own buffer; nothing to undo.
    }

    /** VFIO_DEVICE_RESET: back to running with no migration in progress. */
    @Override
    public synchronized void reset() {
        state = V1Abi.STATE_RUNNING | RESERVED_BIT;
        staged = null;
        rawPendingStart = -1;
        expectRawStart = -1;
        registersSent = false;
        resumeOffset = -1;
        finalReceived = false;
    }

    @Override
    public void close() {
        closed = true;
        LockSupport.unpark(workload);
        try {
            workload.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (this) {
            arena.close();
        }
    }
}
