package org.vmmkit.vmm;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.user.VfioUserContainer;
import org.vmmkit.core.vfio.user.VfioUserDevice;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.VfioIommuDirtyPages;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * A {@code type = vfio-user} device of this VM: the connection to the operator's server (a
 * {@link VfioUserDevice}), its DMA space with guest RAM mapped by memfd (a dirty source for migrations), the
 * record of every {@code device_state} the migration wrote (v1 region or v2 MIG_DEVICE_STATE, as the server
 * speaks), and, with {@code driver = libvfio-user-sample}, the host-side driver of libvfio-user's sample device
 * (either era's: the same BARs) in place of a guest driver. A v2 sample must be configured without pre-copy
 * ({@code pre-copy = false}): its destination takes only the stop-copy stream, so {@link #open} refuses it otherwise.
 *
 * <p>The sample driver: BAR0 (a time_t) is set an hour ahead on a source, since every transition to running
 * re-arms the device's timer from it and a time in the past makes resuming (and a cancelled pre-copy) fail;
 * its timer's handler would DMA into the first two DMA regions. INTx goes to an eventfd (SET_IRQS), counted.
 * A thread rewrites all of BAR1 (0x3000 bytes, pattern {@code n}) {@code ops-per-second} times a second while
 * the device runs: the write and the migration's {@code device_state} writes take the same lock, so the last
 * pattern written before the device left the running states is exactly what the stop-and-copy data holds.
 */
final class VfioUserAttachment implements AutoCloseable {
    static final int BAR0 = 0, BAR1 = 1, BAR1_SIZE = 0x3000;

    private final DeviceSpec spec;
    private final VfioUserDevice device;
    private final Recording recording;
    private final VfioUserContainer dma;
    private final Fd intx; // null without the sample driver
    private final Fd intxStop; // wakes the interrupt thread to end
    private final boolean sampleDriver, dmaAtMigration;
    private final Thread interruptThread;
    private volatile boolean closing;
    private final java.util.concurrent.atomic.AtomicLong interrupts = new java.util.concurrent.atomic.AtomicLong();
    private volatile List<Long> deviceDirtyPages = List.of(); // guest addresses the device's source reported, last migration
    private volatile Thread writer;
    private volatile boolean stopWriter;
    private volatile byte[] incomingBar1Digest;
    private long bar1Writes; // under recording
    private long lastPattern = -1; // under recording

    private VfioUserAttachment(DeviceSpec spec, VfioUserDevice device, GuestMemory memory) {
        this.spec = spec;
        this.device = device;
        this.recording = new Recording(device);
        this.dmaAtMigration = spec.driver().equals(DeviceSpec.SAMPLE_DMA_DRIVER);
        this.sampleDriver = dmaAtMigration || spec.driver().equals(DeviceSpec.SAMPLE_DRIVER);
        this.dma = device.dmaSpace(memory);
        if (spec.dmaSize() > 0) {
            GuestRegion r = memory.regionOf(spec.dmaAddress());
            MemorySegment window = r.host().asSlice(spec.dmaAddress() - r.guestAddress(), spec.dmaSize());
            if (dmaAtMigration) { // the sample DMAs into its first two DMA regions: the window's halves, in this order
                long half = spec.dmaSize() / 2 / GuestMemory.PAGE_SIZE * GuestMemory.PAGE_SIZE;
                dma.mapDma(spec.dmaAddress(), window.asSlice(0, half), true, true);
                dma.mapDma(spec.dmaAddress() + half, window.asSlice(half), true, true);
            } else {
                dma.mapDma(spec.dmaAddress(), window, true, true);
            }
        } else {
            for (GuestRegion r : memory.regions()) dma.mapDma(r.guestAddress(), r.host(), true, true);
        }
        if (sampleDriver) {
            intx = Libc.eventfd(0, Libc.EFD_NONBLOCK, spec.name() + " INTx");
            intxStop = Libc.eventfd(0, Libc.EFD_NONBLOCK, spec.name() + " INTx stop");
            device.setIrqEventfds(VfioUserAbi.PCI_INTX_IRQ_INDEX, intx);
            interruptThread = Thread.ofPlatform().daemon().name(spec.name() + " INTx").start(this::takeInterrupts);
        } else {
            intx = null;
            intxStop = null;
            interruptThread = null;
        }
    }

    /**
     * Counts the device's interrupts (its INTx eventfd). With the DMA driver, an interrupt is the sample's timer
     * firing: BAR0 now lies in the past, and it travels in the stop-and-copy data to a destination whose resume
     * (a transition to running re-arms the timer from it) would fail, so it is set an hour ahead again.
     */
    private void takeInterrupts() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment fds = arena.allocate(Libc.POLLFD.byteSize() * 2, 8), value = arena.allocate(8, 8);
            fds.set(java.lang.foreign.ValueLayout.JAVA_INT, Libc.POLL_FD, intx.raw());
            fds.set(java.lang.foreign.ValueLayout.JAVA_SHORT, Libc.POLL_EVENTS, Libc.POLLIN);
            fds.set(java.lang.foreign.ValueLayout.JAVA_INT, Libc.POLLFD.byteSize() + Libc.POLL_FD, intxStop.raw());
            fds.set(java.lang.foreign.ValueLayout.JAVA_SHORT, Libc.POLLFD.byteSize() + Libc.POLL_EVENTS, Libc.POLLIN);
            while (!closing) {
                if (Libc.pollRaw(fds, 2, -1) < 0) continue; // EINTR
                if (closing) return;
                if (Libc.readRaw(intx.raw(), value) != 8) continue;
                interrupts.addAndGet(value.get(JAVA_LONG, 0));
                if (dmaAtMigration) {
                    try {
                        recording.setBar0(System.currentTimeMillis() / 1000 + 3600);
                    } catch (RuntimeException e) {
                        System.getLogger("org.vmmkit.vmm").log(System.Logger.Level.WARNING, spec.name() + ": BAR0 after the interrupt: " + e.getMessage());
                    }
                }
            }
        }
    }

    /**
     * Connects to the server at the spec's socket and maps guest RAM for its DMA. On a source
     * ({@code incoming} false) the sample driver arms BAR0 an hour ahead; a destination's device gets BAR0 from
     * the stream.
     */
    static VfioUserAttachment open(DeviceSpec spec, GuestMemory memory, boolean incoming) {
        VfioUserDevice device = VfioUserDevice.connect(spec.socket(), spec.name(),
                VfioUserDevice.Options.DEFAULT.withMapMigrationData(spec.mapMigrationData()).withPreCopy(spec.preCopy()));
        try {
            boolean sample = spec.driver().equals(DeviceSpec.SAMPLE_DRIVER) || spec.driver().equals(DeviceSpec.SAMPLE_DMA_DRIVER);
            if (sample && spec.preCopy() && device.migrationProtocol() == VfioUserDevice.MigrationProtocol.V2_FEATURE) {
                // Its destination loads exactly the stop-copy stream: pre-copy bytes forwarded ahead of it are refused
                // or land in BAR0, and the resume then fails or arms a garbage timer.
                throw new IllegalArgumentException("device " + spec.name() + ": the server at " + spec.socket() + " speaks migration v2 (libvfio-user's "
                        + "v2 sample with driver " + spec.driver() + "), whose destination takes only the stop-copy stream: set device."
                        + spec.name() + ".pre-copy = false");
            }
            VfioUserAttachment a = new VfioUserAttachment(spec, device, memory);
            if (a.sampleDriver && !incoming) device.writeLong(BAR0, 0, System.currentTimeMillis() / 1000 + 3600);
            return a;
        } catch (RuntimeException e) {
            device.close();
            throw e;
        }
    }

    String name() {
        return spec.name();
    }

    /** The device as the migration drives it: every access goes to the server, state writes are recorded. */
    VfioDevice migrationDevice() {
        return recording;
    }

    /**
     * The device's dirty pages: its server's DMA-space bitmap, through the unchanged IOMMU source; what it reports
     * is kept for query-guest ({@code device-dirty-pages}). With the DMA driver, starting it (a migration starts
     * tracking, the device still runs) sets the device's timer to fire 1-2 s later.
     */
    DirtySource dirtySource(GuestMemory memory) {
        VfioIommuDirtyPages inner = new VfioIommuDirtyPages(dma, memory);
        return new DirtySource() {
            private final java.util.Map<Integer, org.vmmkit.dirty.DirtyBitmap> scratch = new java.util.HashMap<>();
            private final List<Long> reported = new ArrayList<>();

            @Override
            public String name() {
                return inner.name();
            }

            @Override
            public void start() {
                inner.start();
                deviceDirtyPages = List.of();
                if (dmaAtMigration) recording.setBar0(System.currentTimeMillis() / 1000 + 2); // arms the timer (1-2 s): the device runs
            }

            @Override
            public void sync(GuestRegion region, org.vmmkit.dirty.DirtyBitmap into) {
                org.vmmkit.dirty.DirtyBitmap mine = scratch.computeIfAbsent(region.index(), i -> new org.vmmkit.dirty.DirtyBitmap(region.size() / GuestMemory.PAGE_SIZE));
                mine.clear();
                inner.sync(region, mine);
                for (long p = mine.nextSet(0); p >= 0 && reported.size() < 64; p = mine.nextSet(p + 1)) {
                    long gpa = region.guestAddress() + p * GuestMemory.PAGE_SIZE;
                    if (!reported.contains(gpa)) reported.add(gpa);
                }
                deviceDirtyPages = List.copyOf(reported);
                into.or(mine);
            }

            @Override
            public void stop() {
                inner.stop();
                scratch.values().forEach(org.vmmkit.dirty.DirtyBitmap::close);
                scratch.clear();
            }

            @Override
            public boolean reportsEverything() {
                return inner.reportsEverything();
            }
        };
    }

    /** Starts the sample driver's BAR1 writer (the device runs); nothing without the driver. */
    synchronized void startDriver() {
        if (!sampleDriver || writer != null) return;
        stopWriter = false;
        long periodNanos = spec.opsPerSecond() <= 0 ? 0 : 1_000_000_000L / spec.opsPerSecond();
        writer = Thread.ofPlatform().daemon().name(spec.name() + " BAR1 writer").start(() -> writeBar1(periodNanos));
    }

    private void writeBar1(long periodNanos) {
        MemorySegment pattern = Arena.ofAuto().allocate(BAR1_SIZE, 8);
        long next = System.nanoTime();
        for (long n = 0; !stopWriter; n++) {
            fill(pattern, n);
            try {
                recording.writeBar1IfRunning(pattern, n);
            } catch (RuntimeException e) {
                if (!stopWriter) System.getLogger("org.vmmkit.vmm").log(System.Logger.Level.WARNING, spec.name() + ": BAR1 write: " + e.getMessage());
                return; // the server is gone: the migration or the next query says so
            }
            if (periodNanos > 0) {
                next += periodNanos;
                long wait = next - System.nanoTime();
                if (wait > 0) LockSupport.parkNanos(wait);
                else next = System.nanoTime();
            }
        }
    }

    /** BAR1's content for pattern {@code n}: 0x3000 bytes from a generator seeded with {@code n}. */
    static void fill(MemorySegment bar1, long n) {
        SplittableRandom random = new SplittableRandom(n * 0x9E3779B97F4A7C15L + 1);
        for (long at = 0; at < BAR1_SIZE; at += 8) bar1.set(JAVA_LONG, at, random.nextLong());
    }

    static byte[] digestOfPattern(long n) {
        MemorySegment p = Arena.ofAuto().allocate(BAR1_SIZE, 8);
        fill(p, n);
        return sha256(p);
    }

    void stopDriver() {
        Thread w = writer;
        stopWriter = true;
        if (w != null) {
            try {
                w.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        writer = null;
    }

    /** On a destination, once the stream is loaded and before anything runs: BAR1 as the migration brought it. */
    void recordIncoming() {
        if (sampleDriver) incomingBar1Digest = sha256(readBar1());
    }

    private MemorySegment readBar1() {
        MemorySegment b = Arena.ofAuto().allocate(BAR1_SIZE, 8);
        device.read(BAR1, 0, b); // one REGION_READ: the sample copies BAR1 whole from its start
        return b;
    }

    private static byte[] sha256(MemorySegment s) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(s.asByteBuffer());
            return sha.digest();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * For query-guest. {@code still}: the guest is not running, so BAR1 is read now ({@code state-digest});
     * {@code bar1-last-written} is the digest of the last pattern the driver wrote while the device ran;
     * {@code states} every device_state written by migrations, from the state at connect.
     */
    Map<String, Object> report(boolean still) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("name", spec.name());
        out.put("type", "vfio-user");
        out.put("socket", spec.socket().toString());
        out.put("migratable", spec.migratable());
        boolean v2 = device.migrationProtocol() == VfioUserDevice.MigrationProtocol.V2_FEATURE;
        out.put("protocol", v2 ? "v2" : device.migrationProtocol() == VfioUserDevice.MigrationProtocol.V1_REGION ? "v1" : null);
        out.put("migration-data", v2 ? "messages" : spec.mapMigrationData() ? "mmap" : "trapped");
        out.put("twin-socket", device.twinSocket());
        HexFormat hex = HexFormat.of();
        String stateDigest = null;
        if (still && sampleDriver) {
            try {
                stateDigest = hex.formatHex(sha256(readBar1()));
            } catch (RuntimeException e) {
                stateDigest = null; // the server is gone
            }
        }
        out.put("state-digest", stateDigest);
        byte[] atResume = incomingBar1Digest;
        out.put("incoming-state-digest", atResume == null ? null : hex.formatHex(atResume));
        long last;
        synchronized (recording) {
            last = lastPattern;
            out.put("bar1-writes", bar1Writes);
            out.put("states", new ArrayList<>(recording.states));
        }
        out.put("bar1-last-written", last < 0 ? null : hex.formatHex(digestOfPattern(last)));
        out.put("operations", bar1WritesNow());
        out.put("dma-writes", device.dmaWritesServed());
        out.put("dma-reads", device.dmaReadsServed());
        out.put("interrupts", interrupts.get());
        out.put("device-dirty-pages", deviceDirtyPages.stream().map(a -> "0x" + Long.toHexString(a)).toList());
        List<String> misuse = new ArrayList<>();
        if (device.serverCommandsRefused() > 0) misuse.add(device.serverCommandsRefused() + " server commands refused (see the log)");
        out.put("misuse", misuse);
        return out;
    }

    private long bar1WritesNow() {
        synchronized (recording) {
            return bar1Writes;
        }
    }

    @Override
    public void close() {
        stopDriver();
        closing = true;
        if (interruptThread != null) {
            try (Arena a = Arena.ofConfined()) {
                MemorySegment one = a.allocate(JAVA_LONG);
                one.set(JAVA_LONG, 0, 1L);
                Libc.writeRaw(intxStop.raw(), one);
            }
            try {
                interruptThread.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        try {
            dma.close();
        } finally {
            device.close();
            if (intx != null) intx.close();
            if (intxStop != null) intxStop.close();
        }
    }

    /**
     * The device as the migration sees it: every access passes through to the server; writes of the v1
     * migration region's {@code device_state} and v2 {@code MIG_DEVICE_STATE} SETs are recorded by name once they
     * succeeded, and serialised with the driver's BAR1 writes (which go on only while the device runs).
     */
    private final class Recording implements VfioDevice {
        private final VfioUserDevice d;
        final List<String> states = new ArrayList<>();
        private int migrationRegion = -2; // unknown
        private boolean running = true; // the sample starts running (v1 001b, v2 RUNNING)

        Recording(VfioUserDevice d) {
            this.d = d;
            states.add("running");
        }

        private int migrationRegion() {
            if (migrationRegion == -2) {
                migrationRegion = -1;
                for (int i = 0; i < d.regionCount(); i++) {
                    RegionInfo r = d.regionInfo(i);
                    if (r.type().isPresent() && r.type().get().type() == VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED
                            && r.type().get().subtype() == VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED) {
                        migrationRegion = i;
                    }
                }
            }
            return migrationRegion;
        }

        /** BAR0 (a time_t), serialised with the state writes: written while running it re-arms the device's timer. */
        synchronized void setBar0(long time) {
            d.writeLong(BAR0, 0, time);
        }

        synchronized void writeBar1IfRunning(MemorySegment pattern, long n) {
            if (!running) return; // stopped, stop-and-copy or resuming: a stopped device is not driven
            d.write(BAR1, 0, pattern);
            lastPattern = n;
            bar1Writes++;
        }

        static String stateName(int v) {
            return switch (v & 7) {
                case 0 -> "stopped";
                case 1 -> "running";
                case 2 -> "stop-and-copy";
                case 3 -> "pre-copy";
                case 4 -> "resuming";
                default -> "invalid " + Integer.toBinaryString(v & 7);
            };
        }

        /** A v2 state by the names the v1 states have, so that both eras read alike in query-guest. */
        static String v2StateName(MigState s) {
            return switch (s) {
                case RUNNING -> "running";
                case STOP -> "stopped";
                case STOP_COPY -> "stop-and-copy";
                case RESUMING -> "resuming";
                case PRE_COPY -> "pre-copy";
                case RUNNING_P2P -> "running-p2p";
                case PRE_COPY_P2P -> "pre-copy-p2p";
                case ERROR -> "error";
            };
        }

        @Override
        public synchronized void writeInt(int region, long offset, int value) {
            d.writeInt(region, offset, value);
            if (offset == 0 && region == migrationRegion()) {
                running = (value & 1) != 0;
                states.add(stateName(value));
            }
        }

        /** VFIO_USER_DEVICE_FEATURE; a MIG_DEVICE_STATE SET that succeeded is recorded (one arc per SET). */
        @Override
        public synchronized void feature(int flags, MemorySegment data) {
            d.feature(flags, data);
            if (flags == (V2Abi.FEATURE_SET | V2Abi.FEATURE_MIG_DEVICE_STATE)) {
                MigState to = MigState.of(data.get(java.lang.foreign.ValueLayout.JAVA_INT, V2Abi.MIG_STATE_DEVICE_STATE));
                running = to == MigState.RUNNING || to == MigState.PRE_COPY; // the P2P states are not used in vfio-user
                states.add(v2StateName(to));
            }
        }

        @Override
        public MigrationData migrationData(MemorySegment migState) {
            return d.migrationData(migState);
        }

        @Override public String name() { return d.name(); }
        @Override public int regionCount() { return d.regionCount(); }
        @Override public boolean resettable() { return d.resettable(); }
        @Override public RegionInfo regionInfo(int region) { return d.regionInfo(region); }
        @Override public int readInt(int region, long offset) { return d.readInt(region, offset); }
        @Override public long readLong(int region, long offset) { return d.readLong(region, offset); }
        @Override public void writeLong(int region, long offset, long value) { d.writeLong(region, offset, value); }
        @Override public void read(int region, long offset, MemorySegment dst) { d.read(region, offset, dst); }
        @Override public void write(int region, long offset, MemorySegment src) { d.write(region, offset, src); }
        @Override public MemorySegment mmap(int region, long offset, long size) { return d.mmap(region, offset, size); }
        @Override public void unmap(MemorySegment mapping) { d.unmap(mapping); }

        @Override
        public synchronized void reset() {
            d.reset();
            running = true; // VFIO_USER_DEVICE_RESET leaves the sample running (v1 and v2)
            states.add("reset: running");
        }

        @Override
        public void close() {
            // the attachment closes the device
        }

        @Override
        public String toString() {
            return d.toString();
        }
    }
}
