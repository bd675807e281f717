package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.zip.CRC32C;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.core.vfio.v2.MigrationFsm;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * An in-process VFIO device with a migration v2 driver, behind {@link VfioDevice} like a kernel device: the
 * state machine through {@code VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE} (multi-arc requests walked along
 * {@link MigrationFsm}'s paths, as the kernel's core does), its data sessions as real file descriptors (a
 * pipe: the VMM reads or writes one end, the driver's pump thread the other), {@code VFIO_MIG_GET_PRECOPY_INFO}
 * with the temporary end of pre-copy (ENOMSG), {@code MIG_DATA_SIZE}, the P2P states (a P2P arc completes the
 * device's outstanding peer writes first; see {@link P2pFabric}) and device DMA logging.
 *
 * <p>Device memory ({@code memoryBytes}) and 256 bytes of registers change under a workload while the device
 * runs; every {@code dmaEvery}-th operation DMAs a page into guest memory, every {@code p2pEvery}-th writes a
 * peer. The saving stream is the driver's own records (magic, kind, sequence, argument, length, CRC32C):
 * BEGIN, pages (all of them first, then those dirtied since), and in STOP_COPY the registers, then the end.
 *
 * <p>It detects the VMM's misuse, fails the call with EINVAL and records it in {@link #misuse()}: a state value
 * it does not know, an optional state it did not offer, a transition the FSM refuses (STOP_COPY → PRE_COPY, to
 * ERROR), GET and SET together, a read of a resuming or ended session, a write to a saving one,
 * PRECOPY_INFO outside PRE_COPY, a stream written out of order (sequence), corrupted (CRC) or cut.
 */
public final class EmulatedV2Device implements EmulatedDevice {
    public static final int PAGE = 4096, REGISTERS = 256, RECORD_HEADER = 32;
    static final int MAGIC = 0x56324D47, KIND_BEGIN = 1, KIND_PAGE = 2, KIND_REGISTERS = 3;
    /** Bytes per page record in the stream. */
    public static final int PAGE_RECORD = RECORD_HEADER + PAGE;
    private static final long FIONREAD = 0x541B;
    private static final int F_SETFL = 4;

    public static final long ALL_FLAGS = V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P | V2Abi.MIGRATION_PRE_COPY;

    /**
     * {@code migrationFlags}: what {@code VFIO_DEVICE_FEATURE_MIGRATION} reports (0: no v2 migration, ENOTTY);
     * {@code dataSize}: whether it answers {@code MIG_DATA_SIZE}.
     */
    public record Config(String name, long memoryBytes, long migrationFlags, long opsPerSecond, int dmaEvery, int p2pEvery,
                         boolean dataSize, boolean dmaLogging) {
        public Config {
            if (memoryBytes <= 0 || memoryBytes % PAGE != 0) throw new IllegalArgumentException("device memory must be whole pages: " + memoryBytes);
        }

        public static Config defaults(String name) {
            return new Config(name, 1 << 20, ALL_FLAGS, 2000, 16, 8, true, true);
        }

        public Config withFlags(long flags) {
            return new Config(name, memoryBytes, flags, opsPerSecond, dmaEvery, p2pEvery, dataSize, dmaLogging);
        }

        public Config withMemory(long bytes) {
            return new Config(name, bytes, migrationFlags, opsPerSecond, dmaEvery, p2pEvery, dataSize, dmaLogging);
        }

        public Config withOpsPerSecond(long ops) {
            return new Config(name, memoryBytes, migrationFlags, ops, dmaEvery, p2pEvery, dataSize, dmaLogging);
        }
    }

    private final Config config;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment memory, registers;
    private final long pages;
    private final long[] dirty;
    private long dirtyCount, dirtyCursor;
    private final V2Faults faults = new V2Faults();
    private final List<String> misuse = new ArrayList<>();
    private final List<String> p2pViolations = new ArrayList<>();
    private final List<String> arcs = new ArrayList<>();
    private final SplittableRandom random;
    private final CRC32C crc = new CRC32C();

    // Guarded by this.
    private MigState state = MigState.RUNNING;
    private SaveSession save;
    private ResumeSession resume;
    private Session lastOpened;
    private int inflightP2p;
    private long ops, dmaWrites, p2pWrites, p2pReceived;
    /**
     * Whether it writes its peers: a reset device has no peer DMA programmed (on real hardware that is what makes
     * the moment between a reset and the P2P arc after it harmless); a state loaded and run again (STOP to
     * RUNNING_P2P or RUNNING) brings it back. Guarded by this.
     */
    private boolean peerDmaProgrammed = true;
    private EmulatedVfioContainer dma;
    private long dmaIova, dmaBytes;
    private P2pFabric fabric;
    private boolean logging;
    private long logPageSize;
    private long[] logIova, logLength;
    private BitSet[] logBits;
    private byte[] digestAtResume;
    private boolean recordDigestOnResume;

    private final Thread workload, pump;
    private volatile boolean closed;

    public EmulatedV2Device(Config config, long seed) {
        this.config = config;
        this.pages = config.memoryBytes() / PAGE;
        this.memory = arena.allocate(config.memoryBytes(), PAGE);
        this.registers = arena.allocate(REGISTERS, 8);
        this.dirty = new long[(int) ((pages + 63) / 64)];
        this.random = new SplittableRandom(seed);
        for (long o = 0; o < config.memoryBytes(); o += 8) memory.set(JAVA_LONG, o, random.nextLong());
        for (long o = 0; o < REGISTERS; o += 8) registers.set(JAVA_LONG, o, random.nextLong());
        registers.set(JAVA_LONG, 0, 0); // register 0 counts operations
        this.workload = new Thread(this::work, config.name() + "-workload");
        workload.setDaemon(true);
        this.pump = new Thread(this::pumpLoop, config.name() + "-migration-pump");
        pump.setDaemon(true);
        workload.start();
        pump.start();
    }

    // ---- test surface ----

    /** Connects the DMA engine: it writes guest memory at IOVAs in {@code [iova, iova + bytes)}. */
    public synchronized EmulatedV2Device attachDma(EmulatedVfioContainer container, long iova, long bytes) {
        this.dma = container;
        this.dmaIova = iova;
        this.dmaBytes = bytes;
        return this;
    }

    /** Puts the device on a P2P path with the fabric's other devices. */
    public synchronized EmulatedV2Device joinFabric(P2pFabric fabric) {
        this.fabric = fabric;
        fabric.join(this);
        return this;
    }

    public V2Faults faults() {
        return faults;
    }

    public Config config() {
        return config;
    }

    /** Every protocol misuse by the VMM so far. */
    public synchronized List<String> misuse() {
        return List.copyOf(misuse);
    }

    /** Every peer write this device received while it was stopped: a P2P ordering the VMM got wrong. */
    public synchronized List<String> p2pViolations() {
        return List.copyOf(p2pViolations);
    }

    /** Every arc the device took, {@code FROM->TO}, in order (a multi-arc SET shows each). */
    public synchronized List<String> arcs() {
        return List.copyOf(arcs);
    }

    public synchronized MigState currentState() {
        return state;
    }

    public synchronized long operations() {
        return registers.get(JAVA_LONG, 0);
    }

    public synchronized long dmaWrites() {
        return dmaWrites;
    }

    public synchronized long p2pWrites() {
        return p2pWrites;
    }

    public synchronized long p2pReceived() {
        return p2pReceived;
    }

    /** Records {@link #stateDigest()} at RESUMING → STOP, when the loaded state is complete and before anything runs. */
    public synchronized EmulatedV2Device recordDigestOnResume() {
        recordDigestOnResume = true;
        return this;
    }

    public synchronized byte[] digestAtResume() {
        return digestAtResume;
    }

    /** SHA-256 of device memory and registers. */
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

    /** One workload operation now, on the caller's thread, if the device runs (a test's known point of change). */
    public void operateOnce() {
        EmulatedV2Device peer;
        synchronized (this) {
            if (!state.running() || closed) return;
            peer = operate();
        }
        if (peer != null) p2pWrite(peer);
    }

    // ---- the workload ----

    private void work() {
        long period = config.opsPerSecond() > 0 ? TimeUnit.SECONDS.toNanos(1) / config.opsPerSecond() : 0;
        while (!closed) {
            LockSupport.parkNanos(period == 0 ? 10_000_000L : period);
            if (period == 0) continue;
            EmulatedV2Device peer;
            synchronized (this) {
                if (closed || !state.running()) continue; // STOP, STOP_COPY, RESUMING, ERROR: the device does nothing
                peer = operate();
            }
            if (peer != null) p2pWrite(peer);
        }
    }

    /** One operation, under the lock; returns the peer to write (outside the lock) or null. */
    private EmulatedV2Device operate() {
        long page = random.nextLong(pages);
        long at = page * PAGE + random.nextInt(PAGE / 64) * 64L;
        for (int i = 0; i < 8; i++) memory.set(JAVA_LONG, at + 8L * i, random.nextLong());
        markDirty(page);
        if (save != null) notifyAll(); // the pump has a dirty page to stream
        ops++;
        registers.set(JAVA_LONG, 0, registers.get(JAVA_LONG, 0) + 1);
        registers.set(JAVA_LONG, 8 + 8 * (ops % 30), random.nextLong());
        if (dma != null && config.dmaEvery() > 0 && ops % config.dmaEvery() == 0 && dmaBytes >= PAGE) {
            long target = dmaIova + random.nextLong(dmaBytes / PAGE) * PAGE;
            dma.dmaWrite(target, memory.asSlice(page * PAGE, PAGE));
            logDma(target, PAGE);
            dmaWrites++;
        }
        if (fabric != null && peerDmaProgrammed && config.p2pEvery() > 0 && ops % config.p2pEvery() == 0 && !state.p2pQuiesced()) {
            List<EmulatedV2Device> peers = fabric.peers(this);
            if (!peers.isEmpty()) {
                inflightP2p++; // a P2P arc waits for it: the header's "complete any such outstanding operations"
                return peers.get(random.nextInt(peers.size()));
            }
        }
        return null;
    }

    private void p2pWrite(EmulatedV2Device peer) {
        try {
            peer.p2pReceive(config.name());
        } finally {
            synchronized (this) {
                inflightP2p--;
                p2pWrites++;
                notifyAll();
            }
        }
    }

    private synchronized void p2pReceive(String from) {
        if (!state.running()) {
            p2pViolations.add("received a P2P write from " + from + " while in " + state);
            return;
        }
        p2pReceived++;
        registers.set(JAVA_LONG, 248, registers.get(JAVA_LONG, 248) + 1);
    }

    private void markDirty(long page) {
        long bit = 1L << (page & 63);
        int w = (int) (page >>> 6);
        if ((dirty[w] & bit) == 0) {
            dirty[w] |= bit;
            dirtyCount++;
        }
    }

    private void clearDirty(long page) {
        long bit = 1L << (page & 63);
        int w = (int) (page >>> 6);
        if ((dirty[w] & bit) != 0) {
            dirty[w] &= ~bit;
            dirtyCount--;
        }
    }

    private long nextDirty() {
        for (long i = 0; i < pages; i++) {
            long p = (dirtyCursor + i) % pages;
            if ((dirty[(int) (p >>> 6)] & (1L << (p & 63))) != 0) {
                dirtyCursor = p + 1;
                return p;
            }
        }
        return -1;
    }

    // ---- data sessions ----

    /** What the VMM holds: one end of the session's pipe. */
    private abstract class Session implements MigrationData {
        final Fd vmmEnd, deviceEnd;
        final long id;
        boolean ended;

        Session(Fd vmmEnd, Fd deviceEnd, long id) {
            this.vmmEnd = vmmEnd;
            this.deviceEnd = deviceEnd;
            this.id = id;
        }

        @Override
        public String name() {
            return config.name() + " data_fd " + vmmEnd.raw();
        }

        @Override
        public int fd() {
            return vmmEnd.raw();
        }

        @Override
        public void close() {
            synchronized (EmulatedV2Device.this) {
                if (!vmmEnd.isClosed()) vmmEnd.close();
                EmulatedV2Device.this.notifyAll();
            }
        }

        void end() {
            ended = true;
            if (!deviceEnd.isClosed()) deviceEnd.close();
        }
    }

    private long sessions;

    private Fd[] pipe(String what) {
        Fd[] p = Libc.pipe(0, config.name() + " " + what);
        Libc.fcntlRaw(p[0].raw(), Libc.F_SETPIPE_SZ, 1 << 20); // best effort: a larger pipe holds a whole chunk
        return p;
    }

    private final class SaveSession extends Session {
        final MemorySegment out = arena.allocate(RECORD_HEADER + PAGE, 8);
        long pos, limit;   // the record being written to the pipe: [pos, limit) of out
        long seq, initialNext, produced, read;
        boolean begun, registersSent, pipeFull;

        SaveSession(Fd[] pipe) {
            super(pipe[0], pipe[1], ++sessions);
            if (Libc.fcntlRaw(deviceEnd.raw(), F_SETFL, Libc.O_NONBLOCK) < 0) throw new IllegalStateException("O_NONBLOCK on " + deviceEnd);
        }

        @Override
        public long readRaw(MemorySegment dst) {
            synchronized (EmulatedV2Device.this) {
                if (save != this || ended) {
                    return refuseRaw("read of a data_fd whose session ended (" + name() + ", device in " + state + ")", Errno.ENODEV);
                }
                if (faults.readErrorAfterBytes >= 0 && read >= faults.readErrorAfterBytes) return -faults.readErrno;
                if (state.p2pQuiesced() || state == MigState.PRE_COPY) {
                    if (initialNext >= pages && begun && dirtyCount == 0 && inFlight() == 0) return -Errno.ENOMSG; // pre-copy's temporary end
                }
                EmulatedV2Device.this.notifyAll();
            }
            long r;
            do r = Libc.readRaw(vmmEnd.raw(), dst); while (r == -Errno.EINTR);
            if (r > 0) {
                synchronized (EmulatedV2Device.this) {
                    read += r;
                    EmulatedV2Device.this.notifyAll();
                }
            }
            return r;
        }

        @Override
        public long writeRaw(MemorySegment src) {
            synchronized (EmulatedV2Device.this) {
                return refuseRaw("write to a saving data_fd (" + name() + ")", Errno.EINVAL);
            }
        }

        @Override
        public int precopyInfoRaw(MemorySegment info) {
            synchronized (EmulatedV2Device.this) {
                if (ended || save != this || !(state == MigState.PRE_COPY || state == MigState.PRE_COPY_P2P)) {
                    return (int) refuseRaw("VFIO_MIG_GET_PRECOPY_INFO in " + state + " (only PRE_COPY states)", Errno.EINVAL);
                }
                if (faults.precopyInfoErrno != 0) return -faults.precopyInfoErrno;
                // What the user has not read yet, split as the header says: initial_bytes is what is left of the first
                // pass (however far the pump has got), dirty_bytes the rest. Consumed = written to the pipe less what
                // it still holds, so it counts reads and splices alike.
                long inPipe = pipeBytes(vmmEnd);
                long remaining = (limit - pos) + inPipe + (begun ? 0 : RECORD_HEADER) + (pages - initialNext) * PAGE_RECORD
                        + dirtyCount * PAGE_RECORD;
                long consumed = produced - inPipe;
                long initial = Math.min(remaining, Math.max(0, RECORD_HEADER + pages * PAGE_RECORD - consumed));
                info.set(JAVA_LONG, V2Abi.PRECOPY_INITIAL_BYTES, initial);
                info.set(JAVA_LONG, V2Abi.PRECOPY_DIRTY_BYTES, remaining - initial);
                return 0;
            }
        }

        /** Bytes produced that the VMM has not read: the record part not yet in the pipe, and the pipe's content. */
        long inFlight() {
            return (limit - pos) + pipeBytes(vmmEnd);
        }

        /** Moves the stream on by one step; false when there was nothing to do. Under the lock. */
        boolean pump() {
            if (ended || deviceEnd.isClosed()) return false;
            if (pos < limit) {
                long r = Libc.writeRaw(deviceEnd.raw(), out.asSlice(pos, limit - pos));
                pipeFull = r == -Errno.EAGAIN;
                if (r > 0) {
                    pos += r;
                    produced += r;
                    return true;
                }
                if (r == -Errno.EAGAIN || r == -Errno.EINTR) return false;
                deviceEnd.close(); // EPIPE: the VMM closed its end
                return false;
            }
            if (faults.endStreamAfterBytes >= 0 && produced >= faults.endStreamAfterBytes) {
                deviceEnd.close(); // the injected early end: the VMM reads the end of the stream too soon
                return true;
            }
            if (!begun) {
                record(KIND_BEGIN, pages, MemorySegment.NULL);
                begun = true;
                return true;
            }
            if (initialNext < pages) {
                long p = initialNext++;
                clearDirty(p);
                record(KIND_PAGE, p, memory.asSlice(p * PAGE, PAGE));
                return true;
            }
            if (dirtyCount > 0 && state.saving()) {
                long p = nextDirty();
                clearDirty(p);
                record(KIND_PAGE, p, memory.asSlice(p * PAGE, PAGE));
                return true;
            }
            if (state == MigState.STOP_COPY && !registersSent) {
                record(KIND_REGISTERS, 0, registers);
                registersSent = true;
                return true;
            }
            if (state == MigState.STOP_COPY && registersSent) {
                deviceEnd.close(); // the end of the stream: read() returns 0 from now on
                return true;
            }
            return false;
        }

        private void record(int kind, long arg, MemorySegment payload) {
            out.set(JAVA_INT, 0, MAGIC);
            out.set(JAVA_INT, 4, kind);
            out.set(JAVA_LONG, 8, seq++);
            out.set(JAVA_LONG, 16, arg);
            out.set(JAVA_INT, 24, (int) payload.byteSize());
            crc.reset();
            crc.update(payload.asByteBuffer());
            out.set(JAVA_INT, 28, (int) crc.getValue());
            MemorySegment.copy(payload, 0, out, RECORD_HEADER, payload.byteSize());
            pos = 0;
            limit = RECORD_HEADER + payload.byteSize();
        }
    }

    private final class ResumeSession extends Session {
        final MemorySegment in = arena.allocate(RECORD_HEADER + PAGE, 8);
        long fill, expectSeq, bytes;
        boolean begun, registersLoaded;
        String error;

        ResumeSession(Fd[] pipe) {
            super(pipe[1], pipe[0], ++sessions);
            if (Libc.fcntlRaw(deviceEnd.raw(), F_SETFL, Libc.O_NONBLOCK) < 0) throw new IllegalStateException("O_NONBLOCK on " + deviceEnd);
        }

        @Override
        public long readRaw(MemorySegment dst) {
            synchronized (EmulatedV2Device.this) {
                return refuseRaw("read of a resuming data_fd (" + name() + ")", Errno.EINVAL);
            }
        }

        @Override
        public long writeRaw(MemorySegment src) {
            synchronized (EmulatedV2Device.this) {
                if (ended || resume != this) return refuseRaw("write to a data_fd whose session ended (" + name() + ", device in " + state + ")", Errno.ENODEV);
            }
            long r;
            do r = Libc.writeRaw(vmmEnd.raw(), src); while (r == -Errno.EINTR);
            synchronized (EmulatedV2Device.this) {
                EmulatedV2Device.this.notifyAll();
            }
            return r;
        }

        @Override
        public int precopyInfoRaw(MemorySegment info) {
            synchronized (EmulatedV2Device.this) {
                return (int) refuseRaw("VFIO_MIG_GET_PRECOPY_INFO on a resuming data_fd", Errno.EINVAL);
            }
        }

        /** Reads what the pipe holds and loads whole records. Under the lock. */
        boolean pump() {
            if (ended || deviceEnd.isClosed()) return false;
            boolean progress = false;
            while (true) {
                long need = fill < RECORD_HEADER ? RECORD_HEADER : RECORD_HEADER + Integer.toUnsignedLong(in.get(JAVA_INT, 24));
                if (need > in.byteSize()) {
                    fail("record " + expectSeq + " announces " + (need - RECORD_HEADER) + " bytes, more than a page");
                    deviceEnd.close(); // the driver gives up on the stream: the VMM's next write fails (EPIPE)
                    return true;
                }
                if (fill == need) { // a whole record (a header without payload, or header and payload)
                    load();
                    fill = 0;
                    progress = true;
                    continue;
                }
                long r = Libc.readRaw(deviceEnd.raw(), in.asSlice(fill, need - fill));
                if (r <= 0) return progress; // EAGAIN: nothing now; 0: the VMM closed its end
                progress = true;
                fill += r;
                bytes += r;
            }
        }

        private void load() {
            if (error != null) return;
            int magic = in.get(JAVA_INT, 0), kind = in.get(JAVA_INT, 4), length = in.get(JAVA_INT, 24);
            long seq = in.get(JAVA_LONG, 8), arg = in.get(JAVA_LONG, 16);
            if (magic != MAGIC) {
                fail("record " + expectSeq + " has magic 0x" + Integer.toHexString(magic));
                return;
            }
            if (seq != expectSeq) {
                fail("stream written out of order: record " + seq + " where " + expectSeq + " was due");
                return;
            }
            MemorySegment payload = in.asSlice(RECORD_HEADER, length);
            crc.reset();
            crc.update(payload.asByteBuffer());
            if ((int) crc.getValue() != in.get(JAVA_INT, 28)) {
                fail("record " + seq + " fails its CRC32C");
                return;
            }
            expectSeq++;
            switch (kind) {
                case KIND_BEGIN -> {
                    if (arg != pages) fail("the stream is of a device with " + arg + " pages, this one has " + pages);
                    begun = true;
                }
                case KIND_PAGE -> {
                    if (!begun || arg < 0 || arg >= pages || length != PAGE) fail("page record " + seq + " for page " + arg + " of " + length + " bytes");
                    else MemorySegment.copy(payload, 0, memory, arg * PAGE, PAGE);
                }
                case KIND_REGISTERS -> {
                    if (!begun || length != REGISTERS) fail("register record " + seq + " of " + length + " bytes");
                    else {
                        MemorySegment.copy(payload, 0, registers, 0, REGISTERS);
                        registersLoaded = true;
                    }
                }
                default -> fail("record " + seq + " of unknown kind " + kind);
            }
        }

        private void fail(String why) {
            if (error == null) {
                error = why;
                misuse.add(why);
            }
        }

        /** Why the loaded state is not complete and valid, or null. */
        String incomplete() {
            if (error != null) return error;
            if (fill != 0) return "the stream ends inside record " + expectSeq + " (" + fill + " bytes of it)";
            if (!begun) return "the stream is empty";
            if (!registersLoaded) return "the stream ends before the device's registers (" + expectSeq + " records)";
            return null;
        }
    }

    private long refuseRaw(String why, int errno) {
        misuse.add(why);
        return -errno;
    }

    private static final ThreadLocal<MemorySegment> FIONREAD_ARG = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(JAVA_INT));

    private static long pipeBytes(Fd fd) {
        if (fd.isClosed()) return 0;
        MemorySegment arg = FIONREAD_ARG.get();
        return Libc.ioctlRaw(fd.raw(), FIONREAD, arg) < 0 ? 0 : arg.get(JAVA_INT, 0);
    }

    private void pumpLoop() {
        while (!closed) {
            synchronized (this) {
                boolean progress = false;
                try {
                    if (save != null) progress |= save.pump();
                    if (resume != null) progress |= resume.pump();
                } catch (RuntimeException e) {
                    misuse.add("the device's pump failed: " + e);
                }
                if (!progress) {
                    try {
                        // Woken by a state change, a page dirtied, a read or write through the session. A VMM that
                        // splices moves the pipe without telling: then it is looked at again every millisecond.
                        if (save != null && save.pipeFull || resume != null) wait(1);
                        else wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
            }
        }
    }

    // ---- the state machine ----

    private SysException refuse(String call, String why) {
        misuse.add(why);
        return new SysException(call + " [" + why + "]", Errno.EINVAL, name());
    }

    private synchronized void setState(int value, MemorySegment data) {
        String call = DeviceFeatures.describe(V2Abi.FEATURE_SET | V2Abi.FEATURE_MIG_DEVICE_STATE) + " to " + value;
        MigState target;
        try {
            target = MigState.of(value);
        } catch (IllegalArgumentException e) {
            throw refuse(call, "device_state " + value + " is no vfio_device_mig_state");
        }
        if (!target.supportedBy(config.migrationFlags())) throw refuse(call, target + " was not offered (migration flags " + config.migrationFlags() + ")");
        Optional<List<MigState>> path = MigrationFsm.path(state, target, config.migrationFlags());
        if (path.isEmpty()) throw refuse(call, "no transition from " + state + " to " + target);
        MigState from = state;
        for (MigState next : path.get()) arc(call, next);
        data.set(JAVA_INT, V2Abi.MIG_STATE_DATA_FD, MigrationFsm.opensSession(from, target) ? lastOpened.vmmEnd.raw() : -1);
    }

    /** One arc of the FSM, with its action. */
    private void arc(String call, MigState next) {
        MigState from = state;
        if (faults.errorOnArcInto == next) {
            faults.errorOnArcInto = null;
            endSessions();
            state = MigState.ERROR;
            arcs.add(from + "->ERROR");
            throw new SysException(call + " [arc " + from + " -> " + next + " failed, device in ERROR]", Errno.EIO, name());
        }
        if (faults.failArcInto == next) {
            faults.failArcInto = null;
            throw new SysException(call + " [arc " + from + " -> " + next + " failed, device in " + from + "]", faults.failArcErrno, name());
        }
        if (next.p2pQuiesced() && !from.p2pQuiesced()) {
            while (inflightP2p > 0) { // complete the outstanding peer writes before the arc completes
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new SysException(call + " [interrupted]", Errno.EINTR, name());
                }
            }
        }
        if (from == MigState.RESUMING) {
            resume.pump();
            String why = faults.refuseStream ? "the stream was refused (injected)" : resume.incomplete();
            if (why != null) {
                resume.end();
                resume = null;
                state = MigState.ERROR;
                arcs.add(from + "->ERROR");
                throw new SysException(call + " [RESUMING -> STOP: " + why + "; device in ERROR]", Errno.EINVAL, name());
            }
            if (recordDigestOnResume) digestAtResume = stateDigest();
        }
        if (MigrationFsm.endsSession(from, next)) endSessions();
        if (MigrationFsm.opensSession(from, next)) {
            if (next == MigState.RESUMING) {
                resume = new ResumeSession(pipe("resume"));
                lastOpened = resume;
            } else {
                save = new SaveSession(pipe("save"));
                java.util.Arrays.fill(dirty, 0); // the first pass sends every page; changes are tracked from here
                dirtyCount = 0;
                lastOpened = save;
            }
        }
        state = next;
        arcs.add(from + "->" + next);
        if (from == MigState.STOP && (next == MigState.RUNNING_P2P || next == MigState.RUNNING)) peerDmaProgrammed = true; // its state, peer DMA included, is back
        notifyAll();
    }

    private void endSessions() {
        if (save != null) save.end();
        if (resume != null) resume.end();
        save = null;
        resume = null;
    }

    // ---- VfioDevice ----

    @Override
    public String name() {
        return config.name();
    }

    @Override
    public int regionCount() {
        return 1;
    }

    @Override
    public boolean resettable() {
        return true;
    }

    @Override
    public RegionInfo regionInfo(int region) {
        if (region != 0) throw new SysException("ioctl(VFIO_DEVICE_GET_REGION_INFO(index=" + region + "))", Errno.EINVAL, name());
        return new RegionInfo(0, VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE, REGISTERS, 0, Optional.empty(), List.of());
    }

    @Override
    public synchronized int readInt(int region, long offset) {
        return registers.get(JAVA_INT, checkBar(region, offset, 4));
    }

    @Override
    public synchronized long readLong(int region, long offset) {
        return registers.get(JAVA_LONG, checkBar(region, offset, 8));
    }

    @Override
    public synchronized void writeInt(int region, long offset, int value) {
        registers.set(JAVA_INT, checkBar(region, offset, 4), value);
    }

    @Override
    public synchronized void writeLong(int region, long offset, long value) {
        registers.set(JAVA_LONG, checkBar(region, offset, 8), value);
    }

    @Override
    public synchronized void read(int region, long offset, MemorySegment dst) {
        MemorySegment.copy(registers, checkBar(region, offset, dst.byteSize()), dst, 0, dst.byteSize());
    }

    @Override
    public synchronized void write(int region, long offset, MemorySegment src) {
        MemorySegment.copy(src, 0, registers, checkBar(region, offset, src.byteSize()), src.byteSize());
    }

    private long checkBar(int region, long offset, long length) {
        if (region != 0 || offset < 0 || offset > REGISTERS - length) {
            throw new SysException("access(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + length + " bytes)", Errno.EINVAL, name());
        }
        if (!state.running()) misuse.add("register access in " + state + " (the header: the user must not touch a stopped device)");
        return offset;
    }

    @Override
    public MemorySegment mmap(int region, long offset, long size) {
        throw new SysException("mmap(region " + region + ")", Errno.EINVAL, name());
    }

    @Override
    public void unmap(MemorySegment mapping) {
    }

    @Override
    public synchronized void feature(int flags, MemorySegment data) {
        int index = flags & V2Abi.FEATURE_MASK;
        String call = DeviceFeatures.describe(flags);
        boolean get = (flags & V2Abi.FEATURE_GET) != 0, set = (flags & V2Abi.FEATURE_SET) != 0, probe = (flags & V2Abi.FEATURE_PROBE) != 0;
        if (get && set && !probe) throw refuse(call, "GET and SET together without PROBE");
        if ((flags & ~(V2Abi.FEATURE_MASK | V2Abi.FEATURE_GET | V2Abi.FEATURE_SET | V2Abi.FEATURE_PROBE)) != 0) throw refuse(call, "unknown flag bits");
        boolean migration = config.migrationFlags() != 0;
        boolean supported = switch (index) {
            case V2Abi.FEATURE_MIGRATION -> migration && !set;
            case V2Abi.FEATURE_MIG_DEVICE_STATE -> migration;
            case V2Abi.FEATURE_MIG_DATA_SIZE -> migration && config.dataSize() && !set;
            case V2Abi.FEATURE_DMA_LOGGING_START, V2Abi.FEATURE_DMA_LOGGING_STOP -> config.dmaLogging() && !get;
            case V2Abi.FEATURE_DMA_LOGGING_REPORT -> config.dmaLogging() && !set;
            default -> false;
        };
        if (!supported) throw new SysException(call, Errno.ENOTTY, name());
        if (probe) return;
        switch (index) {
            case V2Abi.FEATURE_MIGRATION -> data.set(JAVA_LONG, 0, config.migrationFlags());
            case V2Abi.FEATURE_MIG_DEVICE_STATE -> {
                if (get) {
                    data.set(JAVA_INT, V2Abi.MIG_STATE_DEVICE_STATE, state.value());
                    data.set(JAVA_INT, V2Abi.MIG_STATE_DATA_FD, -1);
                } else {
                    setState(data.get(JAVA_INT, V2Abi.MIG_STATE_DEVICE_STATE), data);
                }
            }
            case V2Abi.FEATURE_MIG_DATA_SIZE -> data.set(JAVA_LONG, 0, stopCopyLength());
            case V2Abi.FEATURE_DMA_LOGGING_START -> loggingStart(call, data);
            case V2Abi.FEATURE_DMA_LOGGING_STOP -> {
                if (!logging) throw refuse(call, "DMA logging stopped while not started");
                logging = false;
                logBits = null;
            }
            case V2Abi.FEATURE_DMA_LOGGING_REPORT -> loggingReport(call, data);
            default -> throw new SysException(call, Errno.ENOTTY, name());
        }
    }

    private long stopCopyLength() {
        long records = save == null ? pages : (pages - Math.min(pages, save.initialNext)) + dirtyCount;
        return RECORD_HEADER + records * PAGE_RECORD + RECORD_HEADER + REGISTERS;
    }

    @Override
    public synchronized MigrationData migrationData(MemorySegment migState) {
        int fd = migState.get(JAVA_INT, V2Abi.MIG_STATE_DATA_FD);
        if (lastOpened == null || lastOpened.vmmEnd.raw() != fd) throw new IllegalStateException("device " + name() + ": no session has data_fd " + fd);
        return lastOpened;
    }

    // ---- device DMA logging ----

    private void loggingStart(String call, MemorySegment control) {
        if (logging) throw refuse(call, "DMA logging started twice (the header: another start is not allowed in the meantime)");
        long pageSize = control.get(JAVA_LONG, 0);
        int n = control.get(JAVA_INT, 8);
        long rangesAddress = control.get(JAVA_LONG, 16);
        if (pageSize < PAGE || Long.bitCount(pageSize) != 1 || n <= 0 || n > 256 || rangesAddress == 0) {
            throw refuse(call, "DMA_LOGGING_START with page_size " + pageSize + ", " + n + " ranges");
        }
        MemorySegment ranges = MemorySegment.ofAddress(rangesAddress).reinterpret(16L * n);
        logIova = new long[n];
        logLength = new long[n];
        logBits = new BitSet[n];
        for (int i = 0; i < n; i++) {
            logIova[i] = ranges.get(JAVA_LONG, 16L * i);
            logLength[i] = ranges.get(JAVA_LONG, 16L * i + 8);
            if (logIova[i] % pageSize != 0 || logLength[i] <= 0 || logLength[i] % pageSize != 0) {
                throw refuse(call, "DMA logging range " + i + " [0x" + Long.toHexString(logIova[i]) + ", +" + logLength[i] + ") is not in whole pages of " + pageSize);
            }
            logBits[i] = new BitSet();
        }
        logPageSize = pageSize;
        logging = true;
    }

    private void logDma(long iova, long length) {
        if (!logging) return;
        for (int i = 0; i < logIova.length; i++) {
            if (iova >= logIova[i] && iova < logIova[i] + logLength[i]) {
                long end = Math.min(iova + length, logIova[i] + logLength[i]);
                for (long a = iova - iova % logPageSize; a < end; a += logPageSize) logBits[i].set((int) ((a - logIova[i]) / logPageSize));
            }
        }
    }

    private void loggingReport(String call, MemorySegment report) {
        long iova = report.get(JAVA_LONG, 0), length = report.get(JAVA_LONG, 8), pageSize = report.get(JAVA_LONG, 16), bitmap = report.get(JAVA_LONG, 24);
        if (!logging) throw new SysException(call + " [DMA logging is not started]", Errno.EINVAL, name());
        if (pageSize < PAGE || Long.bitCount(pageSize) != 1 || iova % pageSize != 0 || length <= 0 || length % pageSize != 0 || bitmap == 0) {
            throw refuse(call, "DMA_LOGGING_REPORT of [0x" + Long.toHexString(iova) + ", +" + length + ") at page size " + pageSize);
        }
        long bits = length / pageSize;
        MemorySegment out = MemorySegment.ofAddress(bitmap).reinterpret((bits + 63) / 64 * 8);
        for (int i = 0; i < logIova.length; i++) {
            BitSet b = logBits[i];
            for (int bit = b.nextSetBit(0); bit >= 0; bit = b.nextSetBit(bit + 1)) {
                long a = logIova[i] + bit * logPageSize;
                if (a + logPageSize <= iova || a >= iova + length) continue;
                for (long x = Math.max(a, iova); x < Math.min(a + logPageSize, iova + length); x += pageSize) {
                    long idx = (x - iova) / pageSize;
                    out.set(JAVA_LONG, idx / 64 * 8, out.get(JAVA_LONG, idx / 64 * 8) | (1L << (idx % 64)));
                }
                b.clear(bit);
            }
        }
    }

    // ---- reset and close ----

    /**
     * VFIO_DEVICE_RESET: RUNNING, no session, no peer DMA programmed (until a loaded state runs); a device reset out
     * of RESUMING drops its partial state (zeroes).
     */
    @Override
    public synchronized void reset() {
        if (state == MigState.RESUMING || state == MigState.ERROR && resume != null) {
            memory.fill((byte) 0);
            registers.fill((byte) 0);
        }
        endSessions();
        arcs.add(state + "->RUNNING (reset)");
        peerDmaProgrammed = false; // a reset device has no peer DMA programmed until a loaded state runs again
        state = MigState.RUNNING;
        notifyAll();
    }

    @Override
    public void close() {
        closed = true;
        LockSupport.unpark(workload);
        synchronized (this) {
            notifyAll();
        }
        try {
            workload.join(5000);
            pump.join(5000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        synchronized (this) {
            endSessions();
            arena.close();
        }
    }
}
