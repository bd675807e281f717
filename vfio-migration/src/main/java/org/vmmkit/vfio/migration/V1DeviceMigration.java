package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;

import org.vmmkit.core.memory.GuardedMapping;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V1Abi;

/**
 * Migration of one VFIO device through the v1 migration region, VMM side, as the reference thread
 * defines it.
 *
 * <p>Save (pre-copy 011b, stop-and-copy 010b): a. read {@code pending_bytes} (any number of times, no
 * side effect while no chunk is out); if 0, nothing to do. b. read {@code data_offset} (the device stages
 * a chunk). c. read {@code data_size}. d. the chunk's bytes are {@code [data_offset, +data_size)} of the
 * region: handed out as a {@link DeviceChunk}, zero copy where mmap'd. e. the caller consumes it and
 * releases it. f. the next {@code pending_bytes} read tells the device the chunk was consumed, so it is
 * refused while a chunk is out; the next pending value is always read, never computed. Pre-copy may move
 * to stop-and-copy with data pending; stop-and-copy iterates until {@code pending_bytes} is 0, within a
 * bound on chunks and on time.
 *
 * <p>Resume (100b): for each chunk, in the source's order and sizes: a. read {@code data_offset}, b.
 * write the bytes there, c. write {@code data_size}. Then 001b.
 *
 * <p>Every value the device returns is checked before it is used: a chunk must lie in the region past
 * the 32-byte header. A failed {@code device_state} write re-reads the state: a valid state is reported,
 * ERROR is reset with {@code VFIO_DEVICE_RESET}. Not thread-safe: one thread drives a device, and the
 * release of a chunk may come from another thread (the sender) - it only sets a volatile flag.
 */
public final class V1DeviceMigration implements DeviceSection {
    /** The section kind of a VFIO device's v1 migration region state; its chunks are the vendor driver's, opaque. */
    public static final String SECTION_KIND = "vfio-v1";

    /** Bounds that turn a misbehaving device into an error instead of a hang. */
    public record Options(long maxStopCopyChunks, Duration stopCopyTimeout) {
        public static final Options DEFAULT = new Options(1_000_000, Duration.ofSeconds(60));
    }

    /** Receives the chunks of a save loop; must release each (now or later, before the next is asked for). */
    @FunctionalInterface
    public interface ChunkSink {
        void accept(DeviceChunk chunk);
    }

    private final int deviceId;
    private final MigrationRegion region;
    private final Options options;
    private final DeviceChunk chunk = new DeviceChunk(this);
    private final Arena arena = Arena.ofShared();
    private MemorySegment buffer; // for chunks that are not mmap'd, allocated on first need
    private volatile boolean chunkOut;
    private long sequence;
    private long bytesSaved, chunksSaved, bytesLoaded, chunksLoaded;

    private String config; // the section's config: the device's shape (set at open)

    private V1DeviceMigration(int deviceId, MigrationRegion region, Options options) {
        this.deviceId = deviceId;
        this.region = region;
        this.options = options;
        configure("");
    }

    /**
     * Opens a device for migration. A device without a v1 migration region is a migration blocker with
     * a clear message.
     */
    public static V1DeviceMigration open(VfioDevice device, int deviceId, Options options) {
        MigrationRegion region = MigrationRegion.find(device).orElseThrow(() -> new MigrationBlockedException(
                "device " + device.name() + " has no VFIO migration region (type 3, subtype 1, read-write): it cannot be "
                        + "migrated; mark it non-migratable in the config to run the VM without migrating it"));
        return new V1DeviceMigration(deviceId, region, options);
    }

    public int deviceId() {
        return deviceId;
    }

    public String deviceName() {
        return region.deviceName();
    }

    public MigrationRegion region() {
        return region;
    }

    public long bytesSaved() { return bytesSaved; }

    public long chunksSaved() { return chunksSaved; }

    public long bytesLoaded() { return bytesLoaded; }

    public long chunksLoaded() { return chunksLoaded; }

    // ---- state ----

    public DeviceState state() {
        try {
            return region.readState();
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + ": reading device_state failed: " + e.errnoName(), e);
        }
    }

    /**
     * Moves the device to {@code target} with a read-modify-write that keeps bits 3..31. On failure the
     * state is read again: a valid state is named in the error; ERROR is reset first (the device then
     * runs again).
     */
    public void transition(DeviceState target) {
        DeviceState current = state();
        if (current.sameBits(target)) return;
        if (!current.canGoTo(target)) {
            throw new DeviceMigrationException("device " + deviceName() + ": no transition from " + current + " to " + target);
        }
        try {
            region.writeState(current.withBits(target));
        } catch (SysException e) {
            DeviceState now;
            try {
                now = region.readState();
            } catch (SysException again) {
                e.addSuppressed(again);
                throw new DeviceMigrationException("device " + deviceName() + ": writing device_state " + target + " from "
                        + current + " failed: " + e.errnoName() + "; reading it back failed too: " + again.errnoName(), e);
            }
            if (now.isError() || !now.valid()) {
                String reset = resetFromError();
                throw new DeviceMigrationException("device " + deviceName() + ": writing device_state " + target + " from "
                        + current + " failed: " + e.errnoName() + "; the device reported " + now + "; " + reset, e);
            }
            throw new DeviceMigrationException("device " + deviceName() + ": writing device_state " + target + " from "
                    + current + " failed: " + e.errnoName() + "; the device remains in " + now + " (" + e.getMessage() + ")", e);
        }
    }

    /** The state for an error message; a device that cannot say is described as such. */
    private String stateForMessage() {
        try {
            return region.readState().toString();
        } catch (SysException e) {
            return "an unknown state (device_state read failed: " + e.errnoName() + ")";
        }
    }

    /** VFIO_DEVICE_RESET, the only way out of ERROR; returns what happened, for the error message. */
    private String resetFromError() {
        chunkOut = false;
        try {
            region.device().reset();
            return "VFIO_DEVICE_RESET done, the device reports " + region.readState();
        } catch (SysException e) {
            return "VFIO_DEVICE_RESET failed too: " + e.errnoName();
        }
    }

    // ---- save ----

    /** 001b → 011b. */
    public void startPrecopy() {
        sequence = 0;
        transition(DeviceState.PRECOPY);
    }

    /** 011b (or 001b) → 010b: the device stops; allowed with data pending. */
    public void enterStopAndCopy() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": a chunk is still out");
        transition(DeviceState.STOP_COPY);
    }

    /**
     * Save step a (and f): {@code pending_bytes}. Refused while a chunk is out: a read now would tell the
     * device the chunk was consumed.
     */
    public long pendingBytes() {
        if (chunkOut) {
            throw new IllegalStateException("device " + deviceName() + ": pending_bytes may not be read before chunk "
                    + chunk.sequence() + " is released");
        }
        try {
            long pending = region.readPendingBytes();
            if (pending < 0) throw new DeviceMigrationException("device " + deviceName() + ": pending_bytes is negative: " + pending);
            return pending;
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": reading pending_bytes failed: "
                    + e.errnoName(), e);
        }
    }

    /**
     * Save steps b, c, d: the next chunk, after {@link #pendingBytes()} returned more than 0. The chunk is
     * checked against the region before anything reads it.
     */
    public DeviceChunk nextChunk() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": the previous chunk is not released");
        long offset, size;
        try {
            offset = region.readDataOffset();
            size = region.readDataSize();
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": reading data_offset/data_size failed: "
                    + e.errnoName(), e);
        }
        checkChunk("data_offset", offset, size);
        int area = region.mappedArea(offset, size);
        if (area >= 0) {
            chunk.set(region.mappedSegment(area), offset - region.mappedOffset(area), size, sequence++, true);
        } else {
            MemorySegment view = buffer(size);
            try {
                region.read(offset, view);
            } catch (SysException e) {
                throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": reading chunk " + sequence + " (" + size
                        + " bytes at data_offset 0x" + Long.toHexString(offset) + ") failed: " + e.getMessage(), e);
            }
            chunk.set(buffer, 0, size, sequence++, false);
        }
        bytesSaved += size;
        chunksSaved++;
        chunkOut = true;
        return chunk;
    }

    private void checkChunk(String what, long offset, long size) {
        if (offset < V1Abi.HEADER_SIZE || offset >= region.size() || size < 0 || size > region.size() - offset) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": " + what + " 0x" + Long.toHexString(offset)
                    + " with data_size " + size + " does not lie in the " + region.size() + "-byte migration region past its "
                    + V1Abi.HEADER_SIZE + "-byte header");
        }
    }

    private MemorySegment buffer(long size) {
        // A resume reads chunks from the network straight into it: between guard pages, like the data section.
        if (buffer == null) buffer = GuardedMapping.anonymous(region.size() - V1Abi.HEADER_SIZE, arena, "device " + deviceName() + " staging buffer");
        return buffer.asSlice(0, size);
    }

    void released(DeviceChunk c) {
        chunkOut = false;
    }

    /** Whether a chunk is out (not yet released). */
    public boolean chunkOut() {
        return chunkOut;
    }

    /**
     * Stop-and-copy: iterates until {@code pending_bytes} is 0, handing every chunk to {@code sink}, then
     * 010b → 000b. A device whose pending bytes do not drain within the bounds is an error, never a hang.
     */
    public void drainStopAndCopy(ChunkSink sink) {
        long deadline = System.nanoTime() + options.stopCopyTimeout().toNanos();
        long chunks = 0;
        while (true) {
            long pending = pendingBytes();
            if (pending == 0) break;
            if (chunks >= options.maxStopCopyChunks() || System.nanoTime() - deadline > 0) {
                throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": pending_bytes is still "
                        + pending + " after " + chunks + " chunks in stop-and-copy (bounds: " + options.maxStopCopyChunks()
                        + " chunks, " + options.stopCopyTimeout().toMillis() + " ms)");
            }
            DeviceChunk c = nextChunk();
            chunks++;
            sink.accept(c);
            if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": the sink kept chunk " + c.sequence());
        }
        transition(DeviceState.STOP);
    }

    /**
     * Puts a saving device back to running (cancel, or any failure at the source). A device in ERROR is
     * reset. Never throws for a device that ends up running; returns what was done.
     */
    public String cancelSave() {
        chunkOut = false;
        DeviceState now = state();
        if (now.isError() || !now.valid()) {
            String reset = resetFromError();
            return "device " + deviceName() + " was in " + now + ": " + reset;
        }
        if (now.sameBits(DeviceState.RUNNING)) return "device " + deviceName() + " is running";
        transition(DeviceState.RUNNING);
        return "device " + deviceName() + " back to " + DeviceState.RUNNING + " from " + now;
    }

    // ---- resume ----

    /** 001b → 100b. */
    public void startResume() {
        sequence = 0;
        targetOffset = -1;
        transition(DeviceState.RESUMING);
    }

    /** Resume steps a, b, c for one chunk, exactly as the source produced it (a copy into the data section). */
    public void loadChunk(MemorySegment data) {
        chunkTarget(data.byteSize()).copyFrom(data);
        commitChunk(data.byteSize());
    }

    private long targetOffset = -1, targetSize;

    /**
     * Resume steps a and b, for a caller that fills the data section itself (a network receiver reading
     * straight into it): reads {@code data_offset}, checks that {@code size} bytes fit there, and returns where
     * to put them — the mmap'd data section at {@code data_offset} when it is mapped there (no copy), otherwise
     * a staging buffer that {@link #commitChunk} writes to the region. Nothing is consumed until
     * {@link #commitChunk}: a chunk that fails its check after filling the target is never committed.
     */
    public MemorySegment chunkTarget(long size) {
        long at = placeChunk(size);
        return targetSegment.asSlice(at, size);
    }

    private MemorySegment targetSegment;

    /**
     * {@link #chunkTarget} without creating a slice: places the chunk and returns its offset in
     * {@link #targetSegment()} (the whole mmap'd area or the staging buffer, the same few segments every
     * time, so a receiver can keep one view of each). Allocates nothing.
     */
    public long placeChunk(long size) {
        if (targetOffset >= 0) throw new IllegalStateException("device " + deviceName() + ": chunk " + sequence + " was not committed");
        long offset;
        try {
            offset = region.readDataOffset();
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": reading data_offset for chunk "
                    + sequence + " failed: " + e.errnoName(), e);
        }
        checkChunk("data_offset (resume)", offset, size);
        int area = region.mappedArea(offset, size);
        targetOffset = offset;
        targetSize = size;
        if (area < 0) { // not mapped there: staged, written by commitChunk
            buffer(size);
            targetSegment = buffer;
            return 0;
        }
        targetSegment = region.mappedSegment(area);
        return offset - region.mappedOffset(area);
    }

    /** The segment the last {@link #placeChunk} placed its chunk in. */
    public MemorySegment targetSegment() {
        return targetSegment;
    }

    /** Resume step c for the chunk {@link #chunkTarget} placed: the staged bytes to the region if any, then {@code data_size}. */
    public void commitChunk(long size) {
        if (targetOffset < 0 || size != targetSize) {
            throw new IllegalStateException("device " + deviceName() + ": commit of " + size + " bytes without a matching chunkTarget");
        }
        long offset = targetOffset;
        targetOffset = -1;
        try {
            if (targetSegment == buffer) region.write(offset, buffer.asSlice(0, size)); // trapped sections: one slice per chunk, with the pwrite
            region.writeDataSize(size);
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + stateForMessage() + ": loading chunk " + sequence + " (" + size
                    + " bytes at data_offset 0x" + Long.toHexString(offset) + ") failed: " + e.getMessage(), e);
        }
        sequence++;
        bytesLoaded += size;
        chunksLoaded++;
    }

    /** 100b → 001b: the device runs with the loaded state. */
    public void completeResume() {
        transition(DeviceState.RUNNING);
    }

    /** A resume that will not complete: the device must not run with partial state, so it is reset. */
    public String abortResume() {
        targetOffset = -1;
        return resetFromError();
    }

    // ---- the migration section: the coordinator's view of the save and resume sequences above ----

    /**
     * Section id = the device name, kind {@value #SECTION_KIND}, version 1 (the framing; the chunks are the
     * vendor's), config: the device's shape ({@link DeviceShape}).
     */
    @Override
    public SectionInfo info() {
        return new SectionInfo(deviceName(), SECTION_KIND, 1, config);
    }

    /** Sets what the section's config says of the device: its region sizes, and {@code vmm} ({@code key=value;...}) of the VMM's own. */
    void configure(String vmm) {
        this.config = DeviceShape.of(region.device(), "v1", region.index(), vmm);
    }

    @Override
    public void startSave() {
        startPrecopy();
    }

    @Override
    public long pending() {
        return pendingBytes();
    }

    @Override
    public void stop() {
        enterStopAndCopy();
    }

    /** Every chunk was sent and released: 010b → 000b. */
    @Override
    public void finishSave() {
        transition(DeviceState.STOP);
    }

    @Override
    public boolean canLoad(int version) {
        return version == 1;
    }

    @Override
    public void startLoad(int version) {
        startResume();
    }

    /** Nothing to check before the VM starts: {@link #start} refuses a device without its final chunk. */
    @Override
    public void finishLoad() {
    }

    @Override
    public void start() {
        completeResume();
    }

    @Override
    public String abortLoad() {
        return abortResume();
    }

    @Override
    public void close() {
        region.close();
        arena.close();
    }
}
