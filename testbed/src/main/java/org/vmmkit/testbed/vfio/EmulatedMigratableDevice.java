package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.memory.GuardedMapping;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V1Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v1.DeviceState;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * An in-process vendor driver with the kernel side of the v1 migration region, as the reference thread
 * defines it, behind {@link VfioDevice}: what a VFIO device looks like to a VMM where no hardware is. This
 * class is the region driver (registers, state machine, staging, the DIRECT window); the device itself is a
 * {@link DeviceModel} and its chunks follow {@link ChunkFormat}.
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
    static final int PAGE = DeviceModel.PAGE, RECORD = ChunkFormat.RECORD, CHUNK_HEADER = ChunkFormat.HEADER;
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
    private final DeviceModel model;
    private final ChunkFormat.Resume resume;
    private final MemorySegment data;
    private final Faults faults = new Faults();
    private final List<String> misuse = new ArrayList<>();
    private final RegionInfo migrationInfo, bar0Info;

    // Guarded by this.
    private int state = V1Abi.STATE_RUNNING | RESERVED_BIT;
    private Staged staged; // null, or stagedChunk while a chunk is out
    private final Staged stagedChunk;
    private boolean registersSent;
    private long stagedChunks;
    private boolean partialFlip;
    private long resumeOffset = -1;
    private long rawPendingStart = -1, rawPendingCount; // DIRECT, source: the run a consumed header announced
    private final long windowStart;

    private final Thread workload;
    private volatile boolean closed;

    public EmulatedMigratableDevice(Config config, long seed) {
        this.config = config;
        // The data section and device memory (the DIRECT window) are what a VMM writes into straight from a
        // socket: each sits between guard pages, so a write past its end faults instead of corrupting the heap.
        this.model = new DeviceModel(config.name(), config.memoryBytes(), config.dmaEvery(), seed, arena);
        this.resume = new ChunkFormat.Resume(model, config.dataSection() == DataSection.DIRECT);
        this.data = GuardedMapping.anonymous(config.dataSectionBytes(), arena, config.name() + " data section");
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
        model.attachDma(container, iova, bytes);
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
        return model.operations();
    }

    /** Pages this device has written into guest memory by DMA. */
    public synchronized long dmaWrites() {
        return model.dmaWrites();
    }

    /** SHA-256 of device memory and registers: equal on source at stop and destination at resume. */
    public synchronized byte[] stateDigest() {
        return model.stateDigest();
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

    /**
     * One device operation. DIRECT: a raw chunk that is out is device memory itself, read by the VMM (for its
     * frame CRC, then by the kernel) until the chunk is consumed; as a driver must keep a chunk's bytes still
     * while it is out, the run's pages are held (a write just before or after still marks the page dirty, so
     * it goes again in a later chunk).
     */
    private void operate() {
        boolean rawOut = staged != null && staged.kind == ChunkFormat.KIND_RAW;
        model.operate(rawOut ? staged.runStart : 0, rawOut ? staged.count : 0);
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
        if (region == BAR0) return (int) model.localOperations();
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
            if (staged.kind == ChunkFormat.KIND_RAW) {
                rawPendingStart = -1; // the run's bytes are gone: device memory itself, nothing to poison
            } else {
                data.set(JAVA_INT, staged.offset - DATA_START, ChunkFormat.POISON); // a VMM still using it will be caught
                if (staged.kind == ChunkFormat.KIND_RUN_HEADER) {
                    rawPendingStart = staged.runStart;
                    rawPendingCount = staged.count;
                }
            }
            staged = null;
        }
        long pending = model.dirtyCount() * RECORD + (rawPendingStart >= 0 ? rawPendingCount * PAGE : 0);
        boolean stopped = (state & V1Abi.STATE_RUNNING) == 0;
        if (stopped && !registersSent) pending += CHUNK_HEADER + ChunkFormat.REGISTERS_PAYLOAD;
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
            if (resume.rawDue()) {
                resumeOffset = windowStart + resume.expectRawStart * PAGE;
                return faults.badDataOffset >= 0 ? faults.badDataOffset : resumeOffset;
            }
            if (config.dataSection() == DataSection.PARTIAL) partialFlip = !partialFlip;
            resumeOffset = DATA_START + (partialFlip ? 0 : (config.dataSection() == DataSection.PARTIAL ? config.dataSectionBytes() / 2 : 0));
            return faults.badDataOffset >= 0 ? faults.badDataOffset : resumeOffset;
        }
        throw refuse(access, "data_offset read in " + new DeviceState(state));
    }

    private long readPendingQuietly() {
        long pending = model.dirtyCount() * RECORD + (rawPendingStart >= 0 ? rawPendingCount * PAGE : 0);
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
        boolean stopped = (state & V1Abi.STATE_RUNNING) == 0;
        Staged st = stagedChunk;
        st.count = 0;
        long payload;
        if (model.dirtyCount() > 0) {
            st.kind = ChunkFormat.KIND_PAGES;
            st.count = ChunkFormat.pages(model, data, at, (int) ((capacity - CHUNK_HEADER) / RECORD), st.pages);
            payload = (long) st.count * RECORD;
        } else if (stopped && !registersSent) {
            st.kind = ChunkFormat.KIND_REGISTERS;
            ChunkFormat.registers(model, data, at);
            payload = ChunkFormat.REGISTERS_PAYLOAD;
            registersSent = true;
        } else {
            st.kind = ChunkFormat.KIND_EMPTY;
            payload = 0;
        }
        ChunkFormat.header(data, at, stagedChunks, st.kind, st.count, payload, checksums);
        st.offset = offset;
        st.size = CHUNK_HEADER + payload;
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
            st.kind = ChunkFormat.KIND_RAW;
            st.runStart = rawPendingStart;
            st.count = (int) rawPendingCount;
            st.offset = windowStart + rawPendingStart * PAGE;
            st.size = rawPendingCount * PAGE;
            return st;
        }
        long start = model.takeDirtyRun(ChunkFormat.MAX_RUN_PAGES);
        if (start < 0) return null;
        int count = model.lastRunLength();
        ChunkFormat.runHeader(data, 0, start, count);
        ChunkFormat.header(data, 0, stagedChunks, ChunkFormat.KIND_RUN_HEADER, count, ChunkFormat.RUN_HEADER_PAYLOAD, checksums);
        st.kind = ChunkFormat.KIND_RUN_HEADER;
        st.runStart = start;
        st.count = count;
        st.offset = DATA_START;
        st.size = CHUNK_HEADER + ChunkFormat.RUN_HEADER_PAYLOAD;
        return st;
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
        if (bits == V1Abi.STATE_RUNNING && from.resuming() && !resume.finalReceived) {
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
            if (staged.kind == ChunkFormat.KIND_RUN_HEADER) {
                model.markDirty(staged.runStart, staged.count);
            } else if (staged.kind == ChunkFormat.KIND_RAW) {
                // The header was consumed, so the destination expects this run next: it stays announced.
            } else {
                for (int i = 0; i < staged.count; i++) model.markDirty(staged.pages[i]);
            }
            if (staged.kind == ChunkFormat.KIND_REGISTERS) registersSent = false;
            staged = null;
        }
        if ((bits & V1Abi.STATE_SAVING) == 0 && rawPendingStart >= 0) {
            model.markDirty(rawPendingStart, rawPendingCount);
            rawPendingStart = -1;
        }
        boolean wasSaving = from.saving();
        if ((bits & V1Abi.STATE_SAVING) != 0 && !wasSaving) {
            model.markAllDirty();
            registersSent = false;
            stagedChunks = 0;
        }
        if (bits == V1Abi.STATE_RESUMING) {
            resume.reset();
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
        try {
            if (resume.rawDue()) {
                resume.rawArrived(at, size, windowStart);
                return;
            }
            long capacity = config.dataSection() == DataSection.PARTIAL ? config.dataSectionBytes() / 2 : config.dataSectionBytes();
            if (size < CHUNK_HEADER || size > capacity) throw corrupt(access, "a chunk of " + size + " bytes");
            resume.apply(data.asSlice(at - DATA_START, size), checksums);
        } catch (ChunkFormat.Refusal r) {
            throw r.misuse ? refuse(access, r.getMessage()) : corrupt(access, r.getMessage());
        }
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
            return model.memory.asSlice(offset - windowStart, length);
        }
        if (offset - DATA_START > config.dataSectionBytes() - length) throw new SysException(access.toString(), Errno.EINVAL, name());
        return data.asSlice(offset - DATA_START, length);
    }

    @Override
    public MemorySegment mmap(int region, long offset, long size) {
        if (region != MIGRATION_REGION || migrationInfo.mmappableArea(offset, size).isEmpty()) {
            throw new SysException("mmap(region " + region + ", offset " + hex(offset) + ", " + size + " bytes)", Errno.EINVAL, name());
        }
        if (config.dataSection() == DataSection.DIRECT && offset >= windowStart) return model.memory.asSlice(offset - windowStart, size);
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
        resume.reset();
        registersSent = false;
        resumeOffset = -1;
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
