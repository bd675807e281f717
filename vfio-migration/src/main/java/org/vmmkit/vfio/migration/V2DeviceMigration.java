package org.vmmkit.vfio.migration;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.OptionalLong;

import org.vmmkit.core.memory.GuardedMapping;
import org.vmmkit.core.migration.SectionChunk;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.core.vfio.v2.MigrationFsm;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Migration of one VFIO device through the v2 protocol ({@code linux/vfio.h}), VMM side, as a section of kind
 * {@value #SECTION_KIND}.
 *
 * <p>State changes walk {@link MigrationFsm}'s path one arc per {@code MIG_DEVICE_STATE} SET, so a failure
 * names the arc and the state the device was left in; a device that fell into ERROR is reset
 * ({@code VFIO_DEVICE_RESET}, back to RUNNING). The data session an arc opens (the kernel's {@code data_fd}) is
 * closed when an arc ends it.
 *
 * <p>Save: PRE_COPY only where the device offers it (else it runs untouched until stop-and-copy). Each chunk is
 * one {@code read()} of the session into a buffer allocated once: in PRE_COPY a read that finds the temporary
 * end (ENOMSG, or 0) means nothing now, more may come; in STOP_COPY the stream is read until {@code read()}
 * returns 0, its end. {@link #pending} reads ahead (so it is above 0 exactly when a chunk is ready) and adds
 * {@code VFIO_MIG_GET_PRECOPY_INFO}'s {@code initial_bytes + dirty_bytes}; {@link #downtimeBytes} is
 * {@code MIG_DATA_SIZE}'s {@code stop_copy_length}, what stop-and-copy will carry, for the estimate. At
 * stop-and-copy the {@link P2pGroup} first puts every device of the VM into its P2P state, then this one goes to
 * STOP_COPY (the saving session carries on from PRE_COPY).
 *
 * <p>Resume: RUNNING → RESUMING, each chunk written whole to the session in the source's order, then
 * RESUMING → STOP (the device checks the state it loaded: a refusal fails the destination before it says
 * PREPARED), and at start every device to RUNNING_P2P before any to RUNNING. An aborted load resets the device.
 *
 * <p>Not thread-safe: one thread drives a device; the release of a chunk comes from the sender thread and only
 * sets a volatile flag (its store is the publication point; the producer's load of it in {@link #chunkOut} pairs
 * with it before the buffer is reused).
 */
public final class V2DeviceMigration implements DeviceSection {
    public static final String SECTION_KIND = "vfio-v2";

    /** {@code chunkBytes}: the read buffer, the largest chunk; bounds on stop-and-copy turn a device that never ends its stream into an error. */
    public record Options(int chunkBytes, long maxStopCopyBytes, Duration stopCopyTimeout) {
        public static final Options DEFAULT = new Options(1 << 20, 1L << 40, Duration.ofSeconds(60));
    }

    private final VfioDevice device;
    private final long flags;
    private final P2pGroup group;
    private final Options options;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment buffer, precopyInfo;
    private MemorySegment writeSlice; // the destination's last write view, reused while chunk sizes repeat
    private MigState state;
    private MigrationData session;
    private long buffered;
    private boolean endOfStream;
    private volatile boolean chunkOut;
    private long sequence, stopCopyRead, stopCopyStartNanos;
    private long bytesSaved, chunksSaved, bytesLoaded, chunksLoaded, enomsgCount;

    /** The one chunk object: the buffer's first {@code length} bytes, until released. */
    private final class Chunk implements SectionChunk {
        private long length, seq;

        @Override
        public MemorySegment base() {
            return buffer;
        }

        @Override
        public long offset() {
            return 0;
        }

        @Override
        public long length() {
            return length;
        }

        @Override
        public long sequence() {
            return seq;
        }

        @Override
        public void release() {
            chunkOut = false;
        }
    }

    private final Chunk chunk = new Chunk();

    private V2DeviceMigration(VfioDevice device, long flags, P2pGroup group, Options options) {
        this.device = device;
        this.flags = flags;
        this.group = group;
        this.options = options;
        // A resume reads chunks from the network straight into it: between guard pages.
        this.buffer = GuardedMapping.anonymous(options.chunkBytes(), arena, "device " + device.name() + " v2 chunk buffer");
        this.precopyInfo = arena.allocate(V2Abi.PRECOPY_INFO);
        this.state = readState();
        configure("");
        group.add(this);
    }

    private String config; // the section's config: the device's shape (set at open)

    /** Whether the device speaks migration v2 ({@code VFIO_DEVICE_FEATURE_MIGRATION} answers with STOP_COPY). */
    public static boolean supported(VfioDevice device) {
        return DeviceFeatures.migrationFlags(device).isPresent();
    }

    /**
     * Opens a device for v2 migration as a member of {@code group} (one group per VM). A device without v2 migration
     * is a migration blocker with a clear message.
     */
    public static V2DeviceMigration open(VfioDevice device, P2pGroup group, Options options) {
        OptionalLong flags = DeviceFeatures.migrationFlags(device);
        if (flags.isEmpty()) {
            throw new MigrationBlockedException("device " + device.name() + " has no VFIO migration v2 (VFIO_DEVICE_FEATURE_MIGRATION "
                    + "does not report STOP_COPY): it cannot be migrated; mark it non-migratable in the config to run the VM without migrating it");
        }
        return new V2DeviceMigration(device, flags.getAsLong(), group, options);
    }

    public String deviceName() {
        return device.name();
    }

    /** {@code VFIO_DEVICE_FEATURE_MIGRATION}'s flags. */
    public long migrationFlags() {
        return flags;
    }

    public boolean offersPrecopy() {
        return (flags & V2Abi.MIGRATION_PRE_COPY) != 0;
    }

    public boolean offersP2p() {
        return (flags & V2Abi.MIGRATION_P2P) != 0;
    }

    /** The state this side last set or read (no call). */
    public MigState knownState() {
        return state;
    }

    public long bytesSaved() { return bytesSaved; }

    public long chunksSaved() { return chunksSaved; }

    public long bytesLoaded() { return bytesLoaded; }

    public long chunksLoaded() { return chunksLoaded; }

    /** How often a pre-copy read found the temporary end of the stream (ENOMSG or 0). */
    public long temporaryEnds() { return enomsgCount; }

    // ---- state ----

    private MigState readState() {
        try {
            return DeviceFeatures.state(device);
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + ": reading the migration state (MIG_DEVICE_STATE GET) failed: "
                    + e.errnoName(), e);
        }
    }

    /**
     * Moves the device to {@code target} along the FSM's path, one SET per arc. On a failed arc the state is read
     * again; ERROR is reset (the device runs again); the error names the arc, the errno and the state now.
     */
    void moveTo(MigState target) {
        List<MigState> path = MigrationFsm.path(state, target, flags).orElseThrow(() -> new DeviceMigrationException(
                "device " + deviceName() + ": no transition from " + state + " to " + target + " (migration flags " + flags + ")"));
        for (MigState next : path) {
            MigState from = state;
            MigrationData opened;
            try {
                opened = DeviceFeatures.setState(device, from, next);
            } catch (SysException e) {
                throw arcFailed(from, next, target, e);
            }
            if (MigrationFsm.endsSession(from, next)) closeSession();
            if (opened != null) {
                closeSession();
                session = opened;
            }
            state = next;
        }
    }

    private DeviceMigrationException arcFailed(MigState from, MigState next, MigState target, SysException e) {
        String arc = from + " -> " + next + (next == target ? "" : " (on the way to " + target + ")");
        MigState now;
        try {
            now = DeviceFeatures.state(device);
        } catch (SysException again) {
            e.addSuppressed(again);
            return new DeviceMigrationException("device " + deviceName() + ": the arc " + arc + " failed: " + e.errnoName()
                    + "; reading the state back failed too: " + again.errnoName(), e);
        }
        if (now == MigState.ERROR) {
            String reset = resetDevice();
            return new DeviceMigrationException("device " + deviceName() + ": the arc " + arc + " failed: " + e.errnoName()
                    + "; the device fell into ERROR; " + reset, e);
        }
        if (MigrationFsm.endsSession(state, now) || !now.saving() && now != MigState.RESUMING) closeSession();
        state = now;
        return new DeviceMigrationException("device " + deviceName() + ": the arc " + arc + " failed: " + e.errnoName()
                + "; the device remains in " + now + " (" + e.getMessage() + ")", e);
    }

    /** VFIO_DEVICE_RESET, the only way out of ERROR (and out of RESUMING without loading); says what happened. */
    private String resetDevice() {
        chunkOut = false;
        buffered = 0;
        closeSession();
        try {
            device.reset();
            state = readState();
            return "VFIO_DEVICE_RESET done, the device reports " + state;
        } catch (SysException | DeviceMigrationException e) {
            return "VFIO_DEVICE_RESET failed too: " + e.getMessage();
        }
    }

    private void closeSession() {
        if (session != null) {
            try {
                session.close();
            } catch (RuntimeException ignored) {
                // closing our end of the stream cannot be undone or retried; the device ends the session itself
            }
            session = null;
        }
    }

    // ---- save ----

    /** Section id = the device name, kind {@value #SECTION_KIND}, version 1, config: the device's shape ({@link DeviceShape}). */
    @Override
    public SectionInfo info() {
        return new SectionInfo(deviceName(), SECTION_KIND, 1, config);
    }

    /** Sets what the section's config says of the device: its region sizes, and {@code vmm} ({@code key=value;...}) of the VMM's own. */
    void configure(String vmm) {
        this.config = DeviceShape.of(device, "v2", -1, vmm);
    }

    /** RUNNING → PRE_COPY where offered (the saving session opens); otherwise the device runs on untouched. */
    @Override
    public void startSave() {
        sequence = 0;
        buffered = 0;
        endOfStream = false;
        stopCopyRead = 0;
        chunkOut = false;
        if (state != MigState.RUNNING) state = readState();
        if (offersPrecopy()) moveTo(MigState.PRE_COPY);
    }

    /**
     * Reads ahead one chunk if none is buffered: above 0 exactly when {@link #nextChunk} has one. In PRE_COPY the
     * buffered bytes plus PRECOPY_INFO's estimate; in STOP_COPY the buffered bytes plus what MIG_DATA_SIZE said
     * is left; 0 at pre-copy's temporary end, at the stream's end, and while the device runs without pre-copy.
     */
    @Override
    public long pending() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": pending asked while chunk " + (sequence - 1) + " is out");
        boolean precopy = state == MigState.PRE_COPY || state == MigState.PRE_COPY_P2P;
        if (!precopy && state != MigState.STOP_COPY) return 0;
        if (buffered == 0 && !endOfStream) fill(precopy);
        if (buffered == 0) return 0;
        if (precopy) return buffered + precopyEstimate();
        return buffered + Math.max(0, stopCopyEstimate - stopCopyRead);
    }

    private long stopCopyEstimate;

    /** One read of the session into the buffer. */
    private void fill(boolean precopy) {
        if (!precopy) checkStopCopyBounds();
        long r = session.readRaw(buffer);
        if (r > 0) {
            buffered = r;
            if (!precopy) stopCopyRead += r;
            return;
        }
        if (precopy && (r == 0 || r == -Errno.ENOMSG)) { // the temporary end: nothing now; poll would say when
            enomsgCount++;
            return;
        }
        if (r == 0) {
            endOfStream = true; // STOP_COPY: the whole device state has been read
            return;
        }
        throw new DeviceMigrationException("device " + deviceName() + " in " + state + ": read of the migration data ("
                + session.name() + ", chunk " + sequence + ") failed: " + Errno.name((int) -r) + " (" + Errno.description((int) -r) + ")");
    }

    private void checkStopCopyBounds() {
        if (stopCopyRead > options.maxStopCopyBytes() || System.nanoTime() - stopCopyStartNanos > options.stopCopyTimeout().toNanos()) {
            throw new DeviceMigrationException("device " + deviceName() + " in STOP_COPY: the stream has not ended after " + stopCopyRead
                    + " bytes and " + (System.nanoTime() - stopCopyStartNanos) / 1_000_000 + " ms (bounds: " + options.maxStopCopyBytes()
                    + " bytes, " + options.stopCopyTimeout().toMillis() + " ms)");
        }
    }

    /**
     * {@code initial_bytes + dirty_bytes}, or 0 where the session has no such call (ENOTTY: a vfio-user device, whose
     * protocol has no PRECOPY_INFO; the kernel makes it mandatory with PRE_COPY).
     */
    private long precopyEstimate() {
        int r = session.precopyInfoRaw(precopyInfo);
        if (r == -Errno.ENOTTY) return 0;
        if (r < 0) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + state + ": VFIO_MIG_GET_PRECOPY_INFO on " + session.name()
                    + " failed: " + Errno.name(-r) + " (" + Errno.description(-r) + ")");
        }
        return precopyInfo.get(JAVA_LONG, V2Abi.PRECOPY_INITIAL_BYTES) + precopyInfo.get(JAVA_LONG, V2Abi.PRECOPY_DIRTY_BYTES);
    }

    /**
     * For the downtime estimate: the buffered bytes plus {@code MIG_DATA_SIZE}'s {@code stop_copy_length}; a device
     * without MIG_DATA_SIZE is estimated by PRECOPY_INFO in pre-copy, else by what is buffered.
     */
    @Override
    public long downtimeBytes() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": downtimeBytes asked while a chunk is out");
        OptionalLong length;
        try {
            length = DeviceFeatures.stopCopyLength(device);
        } catch (SysException e) {
            throw new DeviceMigrationException("device " + deviceName() + " in " + state + ": MIG_DATA_SIZE failed: " + e.errnoName(), e);
        }
        if (length.isPresent()) return buffered + length.getAsLong();
        boolean precopy = state == MigState.PRE_COPY || state == MigState.PRE_COPY_P2P;
        return buffered + (precopy ? precopyEstimate() : 0);
    }

    @Override
    public SectionChunk nextChunk() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": the previous chunk is not released");
        if (buffered == 0) throw new IllegalStateException("device " + deviceName() + ": no chunk is due (pending was 0)");
        long n = buffered;
        buffered = 0;
        bytesSaved += n;
        chunksSaved++;
        chunkOut = true; // released by the sender; pending() refuses until then, so the buffer is not refilled under it
        chunk.length = n;
        chunk.seq = sequence++;
        return chunk;
    }

    @Override
    public boolean chunkOut() {
        return chunkOut;
    }

    /**
     * Stop-and-copy: every device of the group into its P2P state first, then this one to STOP_COPY (from
     * PRE_COPY_P2P the session carries on; from RUNNING_P2P, through STOP, a new one opens).
     */
    @Override
    public void stop() {
        if (chunkOut) throw new IllegalStateException("device " + deviceName() + ": a chunk is still out");
        group.quiesce();
        moveTo(MigState.STOP_COPY);
        stopCopyRead = 0;
        stopCopyStartNanos = System.nanoTime();
        try {
            stopCopyEstimate = DeviceFeatures.stopCopyLength(device).orElse(0);
        } catch (SysException e) {
            stopCopyEstimate = 0; // only an estimate: the stream's end decides
        }
    }

    /** The stream was read to its end and every chunk sent: STOP_COPY → STOP, the session closed. */
    @Override
    public void finishSave() {
        if (!endOfStream || buffered != 0) {
            throw new IllegalStateException("device " + deviceName() + ": finished before the end of its stream (" + buffered + " bytes buffered)");
        }
        moveTo(MigState.STOP);
    }

    /** Back to RUNNING from wherever the save got to; ERROR (or a failed way back) is reset. Says what it did. */
    @Override
    public String cancelSave() {
        chunkOut = false;
        buffered = 0;
        MigState now;
        try {
            now = readState();
        } catch (DeviceMigrationException e) {
            return "device " + deviceName() + ": " + e.getMessage() + "; " + resetDevice();
        }
        state = now;
        if (now == MigState.ERROR) return "device " + deviceName() + " was in ERROR: " + resetDevice();
        if (now == MigState.RUNNING) {
            closeSession();
            return "device " + deviceName() + " is running";
        }
        try {
            group.prepareRun(); // no member runs (and writes its peers) while another is still stopped
            moveTo(MigState.RUNNING);
            return "device " + deviceName() + " back to RUNNING from " + now;
        } catch (DeviceMigrationException e) {
            return "device " + deviceName() + ": " + e.getMessage() + (state == MigState.RUNNING ? "" : "; " + resetDevice());
        }
    }

    // ---- resume ----

    @Override
    public boolean canLoad(int version) {
        return version == 1;
    }

    /** RUNNING → RESUMING (through RUNNING_P2P and STOP where offered): the resuming session opens. */
    @Override
    public void startLoad(int version) {
        sequence = 0;
        if (state != MigState.RUNNING) state = readState();
        group.quiesce(); // the peers stop writing this device before it stops to load
        moveTo(MigState.RESUMING);
    }

    @Override
    public long placeChunk(long size) {
        if (state != MigState.RESUMING || session == null) throw new IllegalStateException("device " + deviceName() + ": a chunk while in " + state);
        if (size <= 0 || size > buffer.byteSize()) {
            throw new DeviceMigrationException("device " + deviceName() + ": chunk " + sequence + " of " + size + " bytes; this side takes up to "
                    + buffer.byteSize() + " (vfio-v2 chunk size)");
        }
        return 0;
    }

    @Override
    public MemorySegment targetSegment() {
        return buffer;
    }

    /** The chunk, whole, to the session (the user need not keep the source's segmentation, only the byte order). */
    @Override
    public void commitChunk(long size) {
        if (writeSlice == null || writeSlice.byteSize() != size) writeSlice = buffer.asSlice(0, size);
        MemorySegment rest = writeSlice;
        while (rest.byteSize() > 0) {
            long r = session.writeRaw(rest);
            if (r <= 0) {
                throw new DeviceMigrationException("device " + deviceName() + " in " + state + ": write of chunk " + sequence + " (" + size
                        + " bytes) to " + session.name() + " failed: " + (r == 0 ? "wrote nothing" : Errno.name((int) -r) + " (" + Errno.description((int) -r) + ")"));
            }
            rest = rest.asSlice(r);
        }
        sequence++;
        bytesLoaded += size;
        chunksLoaded++;
    }

    /** RESUMING → STOP: the device checks what it loaded; a refusal fails the destination before PREPARED. */
    @Override
    public void finishLoad() {
        moveTo(MigState.STOP);
    }

    /** Every device of the group to RUNNING_P2P first, then this one to RUNNING. */
    @Override
    public void start() {
        group.prepareRun();
        moveTo(MigState.RUNNING);
    }

    /**
     * The device must not run with partial state: VFIO_DEVICE_RESET (the header's way to abort RESUMING). A device
     * that offers P2P is then held in RUNNING_P2P: its peers may still be resuming, and it must not write them
     * (the next load starts from there). A reset device is RUNNING until that arc: a fresh device has no peer DMA
     * programmed, which is what makes the moment harmless on real hardware.
     */
    @Override
    public String abortLoad() {
        String reset = resetDevice();
        if (offersP2p() && state == MigState.RUNNING) {
            try {
                moveTo(MigState.RUNNING_P2P);
                reset += ", then RUNNING_P2P until the next stream (its peers may still be resuming)";
            } catch (DeviceMigrationException e) {
                reset += "; holding it in RUNNING_P2P failed: " + e.getMessage();
            }
        }
        return "device " + deviceName() + " reset: " + reset;
    }

    @Override
    public void close() {
        closeSession();
        arena.close();
    }
}
