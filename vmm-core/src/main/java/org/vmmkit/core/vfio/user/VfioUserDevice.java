package org.vmmkit.core.vfio.user;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.sys.UnixSocket;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

import static java.lang.foreign.MemoryLayout.PathElement.groupElement;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.vmmkit.core.vfio.user.abi.VfioUserAbi.*;

/**
 * A device served by a vfio-user server over a UNIX socket, driven as a {@link VfioDevice}: VERSION at
 * connect, then DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with its capability chain), REGION_READ/WRITE for
 * every region access and DEVICE_RESET. Whatever drives a kernel VFIO device (the v1 migration region
 * protocol, {@code V1DeviceMigration}; migration v2, {@code V2DeviceMigration}) drives this one unchanged.
 *
 * <p>Migration v2 (specification 0.9.2): {@link #feature} is {@code VFIO_USER_DEVICE_FEATURE}, and the data
 * session a MIG_DEVICE_STATE arc opens ({@link #migrationData}) is MIG_DATA_READ/WRITE messages on this
 * connection instead of the kernel's {@code data_fd}; PRECOPY_INFO has no message (ENOTTY). Which protocol the
 * server speaks is detected per server ({@link #migrationProtocol}): a v1 server is never sent DEVICE_FEATURE.
 * The dirty pages of its DMA space come from DIRTY_PAGES (v1) or DMA logging (v2), see {@link VfioUserContainer}.
 *
 * <p>File descriptors cross the socket (SCM_RIGHTS, see {@link VfioUserConnection}). A region whose info
 * reply carries an fd is mappable through it ({@link #mmap}, within its sparse areas): BARs are. The v1
 * migration region is the exception by default ({@link Options#mapMigrationData()}): its info is reported
 * without {@code VFIO_REGION_INFO_FLAG_MMAP}, so callers that choose by that flag, as {@code MigrationRegion}
 * does, take the REGION_READ/WRITE path; libvfio-user's v1 library announces that data area as mappable but
 * moves migration data only through its save/load callbacks (a mapping reads zeros), and a client cannot tell
 * without consuming device state.
 *
 * <p>The device's DMA space is {@link #dmaSpace} (a {@link org.vmmkit.core.vfio.VfioContainer}: DMA_MAP with
 * memfds, DIRTY_PAGES, and the server's DMA_READ/DMA_WRITE served against it); interrupts go to eventfds
 * ({@link #setIrqEventfds}). Twin-socket mode is asked for in VERSION, so the server's own commands have a
 * socket of their own.
 *
 * <p>Register accesses are one REGION_READ/WRITE of exactly 4 or 8 bytes; bulk transfers are chunked (reads
 * by the smaller of the server's {@code max_data_xfer_size} and ours, writes also to the 64 KiB message
 * limit). Every access is checked against the region before it is sent: an out-of-range request never
 * reaches the server. Failures are {@link SysException}s naming the command with its arguments, this
 * device and its socket, and the errno (the server's, or ECONNRESET / ETIMEDOUT / EPROTO for a server that
 * died, stalled or sent what cannot be a reply). Thread-safe: one request in flight, calls serialised.
 */
public final class VfioUserDevice implements VfioDevice {

    /**
     * @param replyTimeout how long one request may wait for its reply before the connection is declared dead
     * @param mapMigrationData whether the v1 migration region's data section may be mmap'd through the fd the
     *     server offers. Off by default: the migration region is the one region a server may announce as
     *     mappable yet serve only through REGION_READ/WRITE (libvfio-user's v1 library moves migration data
     *     through its read/write callbacks; its mapping reads zeros), and that cannot be detected without
     *     moving migration data (a probing read would consume device state). BARs are mapped when offered.
     * @param preCopy whether {@code VFIO_DEVICE_FEATURE_MIGRATION} reports the server's {@code VFIO_MIGRATION_PRE_COPY}
     *     (migration v2). On by default; off, the VMM sees a stop-copy-only device and never enters PRE_COPY. For a
     *     server whose destination accepts only the stop-copy stream, as libvfio-user's v2 sample does (forwarded
     *     pre-copy bytes are refused or land in its BAR0).
     */
    public record Options(Duration replyTimeout, boolean mapMigrationData, boolean preCopy) {
        public static final Options DEFAULT = new Options(Duration.ofSeconds(10), false, true);

        public Options(Duration replyTimeout) {
            this(replyTimeout, false, true);
        }

        public Options withMapMigrationData(boolean map) {
            return new Options(replyTimeout, map, preCopy);
        }

        public Options withPreCopy(boolean offered) {
            return new Options(replyTimeout, mapMigrationData, offered);
        }
    }

    /** The dirty-page size this client proposes for migration (the v1 sample server accepts only 4096). */
    static final long MIGRATION_PGSIZE = 4096;
    /** More than any vfio region info with its capabilities needs; a larger argsz is a protocol error. */
    private static final long MAX_REGION_INFO = 64 * 1024;
    private static final long INFO_ARGSZ = VfioAbi.REGION_INFO.byteOffset(groupElement("argsz")),
            INFO_INDEX = VfioAbi.REGION_INFO.byteOffset(groupElement("index"));


    private final String name;
    private final Path socket;
    private final VfioUserConnection conn;
    private final ServerCapabilities capabilities;
    private final int flags, regionCount, irqCount;
    private final RegionInfo[] regions;
    private final Fd[] regionFds;
    private final long readChunk, writeChunk;
    private final Options options;
    private final java.util.List<MemorySegment> mapped = new java.util.ArrayList<>();
    private final int[] fdArg = new int[UnixSocket.MAX_FDS];
    private VfioUserContainer container;
    private final VfioUserFeatures features;

    private VfioUserDevice(String name, Path socket, VfioUserConnection conn, Options options) {
        this.name = name;
        this.socket = socket;
        this.conn = conn;
        this.options = options;
        this.capabilities = negotiate();
        long payload = conn.call(DEVICE_GET_INFO, fillDeviceInfo(), DEVICE_INFO.byteSize(), DEVICE_INFO.byteSize(), 0, 0, 0);
        MemorySegment in = conn.in();
        this.flags = in.get(U32, DEVICE_INFO_FLAGS);
        this.regionCount = in.get(U32, DEVICE_INFO_NUM_REGIONS);
        this.irqCount = in.get(U32, DEVICE_INFO_NUM_IRQS);
        if (regionCount < 0 || regionCount > 1024) {
            throw new SysException(commandName(DEVICE_GET_INFO) + "()", Errno.EPROTO, conn.object(),
                    "the server reports " + Integer.toUnsignedString(regionCount) + " regions (" + payload + "-byte reply)");
        }
        this.regions = new RegionInfo[regionCount];
        this.regionFds = new Fd[regionCount];
        this.readChunk = Math.min(capabilities.maxDataXferSize(), VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE);
        this.writeChunk = Math.min(capabilities.maxDataXferSize(), conn.maxRequestPayload() - REGION_ACCESS.byteSize());
        this.features = new VfioUserFeatures(this, conn, capabilities, options.preCopy());
    }

    /**
     * Connects to the server at {@code socket}, negotiates the version and reads the device info. {@code name}
     * is the device's name in this VMM (errors add the socket).
     */
    public static VfioUserDevice connect(Path socket, String name, Options options) {
        VfioUserConnection conn = VfioUserConnection.connect(socket, name + " (vfio-user " + socket + ")", options.replyTimeout());
        try {
            VfioUserDevice d = new VfioUserDevice(name, socket, conn, options);
            conn.startServingIdle();
            return d;
        } catch (RuntimeException e) {
            conn.close();
            throw e;
        }
    }

    private long fillDeviceInfo() {
        MemorySegment out = conn.out();
        out.asSlice(0, DEVICE_INFO.byteSize()).fill((byte) 0);
        out.set(U32, DEVICE_INFO_ARGSZ, (int) DEVICE_INFO.byteSize());
        return DEVICE_INFO.byteSize();
    }

    /**
     * VFIO_USER_VERSION: proposes {@value org.vmmkit.core.vfio.user.abi.VfioUserAbi#VERSION_MAJOR}.{@value
     * org.vmmkit.core.vfio.user.abi.VfioUserAbi#VERSION_MINOR} with our capabilities and checks the answer: the
     * same major, a minor no higher, NUL-terminated JSON. We take up to {@link UnixSocket#MAX_FDS} fds a
     * message and ask for twin-socket mode: a server that enables it passes the client end of its command socket
     * with the reply (at {@code twin_socket.fd_index}), and its DMA commands then never cross our requests. A
     * reply that enables it without a usable fd is refused, as the specification says.
     */
    private ServerCapabilities negotiate() {
        String json = "{\"capabilities\":{\"max_msg_fds\":" + UnixSocket.MAX_FDS + ",\"max_data_xfer_size\":"
                + VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE + ",\"migration\":{\"pgsize\":" + MIGRATION_PGSIZE
                + "},\"twin_socket\":{\"supported\":true}}}";
        byte[] text = json.getBytes(StandardCharsets.UTF_8);
        MemorySegment out = conn.out();
        out.set(U16, VERSION_MAJOR_AT, (short) VERSION_MAJOR);
        out.set(U16, VERSION_MINOR_AT, (short) VERSION_MINOR);
        MemorySegment.copy(text, 0, out, JAVA_BYTE, VERSION_DATA_AT, text.length);
        out.set(JAVA_BYTE, VERSION_DATA_AT + text.length, (byte) 0); // the NUL is part of the message
        long payload = conn.call(VERSION, VERSION_DATA_AT + text.length + 1, VERSION_DATA_AT, conn.maxRequestPayload(),
                VERSION_MAJOR, VERSION_MINOR, 0);
        MemorySegment in = conn.in();
        int major = Short.toUnsignedInt(in.get(U16, VERSION_MAJOR_AT));
        int minor = Short.toUnsignedInt(in.get(U16, VERSION_MINOR_AT));
        String what = conn.what();
        if (major != VERSION_MAJOR || minor > VERSION_MINOR) {
            throw new SysException(what, Errno.EPROTO, conn.object(), "the server answers version " + major + "." + minor
                    + " to our " + VERSION_MAJOR + "." + VERSION_MINOR + " (the major must be the same, the minor no higher)");
        }
        String serverJson = "";
        long jsonBytes = payload - VERSION_DATA_AT;
        if (jsonBytes > 0) {
            if (in.get(JAVA_BYTE, VERSION_DATA_AT + jsonBytes - 1) != 0) {
                throw new SysException(what, Errno.EPROTO, conn.object(), "the server's version data is not NUL-terminated");
            }
            byte[] b = new byte[(int) jsonBytes - 1];
            MemorySegment.copy(in, JAVA_BYTE, VERSION_DATA_AT, b, 0, b.length);
            serverJson = new String(b, StandardCharsets.UTF_8);
        }
        ServerCapabilities caps;
        try {
            caps = ServerCapabilities.parse(major, minor, serverJson);
        } catch (IllegalArgumentException e) {
            throw new SysException(what, Errno.EPROTO, conn.object(), "the server's capabilities: " + e.getMessage() + ": " + serverJson);
        }
        if (caps.twinSocket()) {
            if (caps.twinSocketFdIndex() < 0 || caps.twinSocketFdIndex() >= conn.receivedFdCount()) {
                throw new SysException(what, Errno.EPROTO, conn.object(), "the server enables twin-socket mode but passed no command socket at fd_index "
                        + caps.twinSocketFdIndex() + " (" + conn.receivedFdCount() + " fds came): " + serverJson);
            }
            conn.useCommandSocket(new Fd(conn.takeFd(caps.twinSocketFdIndex()), name + " command socket"));
        }
        return caps;
    }

    /** What the server said in VERSION. */
    public ServerCapabilities capabilities() {
        return capabilities;
    }

    public Path socket() {
        return socket;
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public int regionCount() {
        return regionCount;
    }

    public int irqCount() {
        return irqCount;
    }

    @Override
    public boolean resettable() {
        return (flags & VfioAbi.DEVICE_FLAGS_RESET) != 0;
    }

    public boolean pci() {
        return (flags & VfioAbi.DEVICE_FLAGS_PCI) != 0;
    }

    /**
     * VFIO_USER_DEVICE_GET_REGION_INFO: asked with the bare 32-byte struct, the server answers without
     * capabilities but with the argsz it needs; asked again with that argsz, it sends the chain, which is
     * parsed as the kernel's. Cached.
     */
    @Override
    public synchronized RegionInfo regionInfo(int region) {
        if (region < 0 || region >= regionCount) {
            throw new SysException(commandName(DEVICE_GET_REGION_INFO) + "(index=" + region + ")", Errno.EINVAL, conn.object(),
                    "the device has " + regionCount + " regions");
        }
        if (regions[region] != null) return regions[region];
        long argsz = VfioAbi.REGION_INFO.byteSize();
        for (int attempt = 0; ; attempt++) {
            MemorySegment out = conn.out();
            out.asSlice(0, VfioAbi.REGION_INFO.byteSize()).fill((byte) 0);
            out.set(U32, INFO_ARGSZ, (int) argsz);
            out.set(U32, INFO_INDEX, region);
            long payload = conn.call(DEVICE_GET_REGION_INFO, VfioAbi.REGION_INFO.byteSize(), VfioAbi.REGION_INFO.byteSize(), argsz,
                    region, argsz, 0);
            MemorySegment in = conn.in();
            long wanted = Integer.toUnsignedLong(in.get(U32, INFO_ARGSZ));
            int index = in.get(U32, INFO_INDEX);
            if (index != region) {
                throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply is for region " + index);
            }
            if (wanted > argsz) {
                if (attempt > 0 || wanted > MAX_REGION_INFO) {
                    throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the server wants argsz " + wanted
                            + " after we asked with " + argsz);
                }
                argsz = wanted;
                continue;
            }
            // RegionInfo reads aligned native fields: copy the payload into an aligned native segment.
            MemorySegment info = Arena.ofAuto().allocate(payload, 8).copyFrom(in.asSlice(0, payload));
            RegionInfo parsed;
            try {
                parsed = RegionInfo.parse(info);
            } catch (IllegalStateException e) {
                throw new SysException(conn.what(), Errno.EPROTO, conn.object(), e.getMessage());
            }
            // The server attaches the region's fd to the reply that carries the whole info (not to the short one).
            Fd fd = (parsed.flags() & VfioAbi.REGION_INFO_FLAG_MMAP) != 0 && conn.receivedFdCount() > 0
                    ? new Fd(conn.takeFd(0), name + " region " + region) : null;
            boolean migrationData = parsed.type().isPresent()
                    && parsed.type().get().equals(new RegionInfo.Type(VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED, VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED));
            if (fd != null && migrationData && !options.mapMigrationData()) {
                fd.close(); // trapped by choice (Options.mapMigrationData)
                fd = null;
            }
            regionFds[region] = fd;
            regions[region] = fd != null ? parsed : new RegionInfo(parsed.index(), parsed.flags() & ~VfioAbi.REGION_INFO_FLAG_MMAP,
                    parsed.size(), parsed.fdOffset(), parsed.type(), parsed.sparseAreas());
            return regions[region];
        }
    }

    private void check(String op, int region, long offset, long length) {
        RegionInfo r = regionInfo(region);
        if (offset < 0 || length < 0 || offset > r.size() - length) {
            throw new SysException(op + "(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + length
                    + " bytes)", Errno.EINVAL, conn.object(), "outside the " + r.size() + "-byte region; not sent");
        }
    }

    /** One REGION_READ of {@code count} bytes; the data is at {@code ACCESS_DATA} of {@code conn.in()}. */
    private void readOnce(int region, long offset, long count) {
        MemorySegment out = conn.out();
        out.set(U64, ACCESS_OFFSET, offset);
        out.set(U32, ACCESS_REGION, region);
        out.set(U32, ACCESS_COUNT, (int) count);
        long reply = REGION_ACCESS.byteSize() + count;
        conn.call(REGION_READ, REGION_ACCESS.byteSize(), reply, reply, region, offset, count);
        echoed(region, offset, count);
    }

    /** One REGION_WRITE of the {@code count} bytes already at {@code ACCESS_DATA} of {@code conn.out()}. */
    private void writeOnce(int region, long offset, long count) {
        MemorySegment out = conn.out();
        out.set(U64, ACCESS_OFFSET, offset);
        out.set(U32, ACCESS_REGION, region);
        out.set(U32, ACCESS_COUNT, (int) count);
        conn.call(REGION_WRITE, REGION_ACCESS.byteSize() + count, REGION_ACCESS.byteSize(), REGION_ACCESS.byteSize(), region, offset, count);
        echoed(region, offset, count);
    }

    /** The reply repeats the access; a server that moved another count or elsewhere is not believed. */
    private void echoed(int region, long offset, long count) {
        MemorySegment in = conn.in();
        long o = in.get(U64, ACCESS_OFFSET);
        int r = in.get(U32, ACCESS_REGION);
        long c = Integer.toUnsignedLong(in.get(U32, ACCESS_COUNT));
        if (o != offset || r != region || c != count) {
            throw new SysException(conn.what(), Errno.EIO, conn.object(), "the reply says region " + r + ", offset 0x"
                    + Long.toHexString(o) + ", " + c + " bytes");
        }
    }

    @Override
    public synchronized int readInt(int region, long offset) {
        check(commandName(REGION_READ), region, offset, 4);
        readOnce(region, offset, 4);
        return conn.in().get(U32, ACCESS_DATA);
    }

    @Override
    public synchronized long readLong(int region, long offset) {
        check(commandName(REGION_READ), region, offset, 8);
        readOnce(region, offset, 8);
        return conn.in().get(U64, ACCESS_DATA);
    }

    @Override
    public synchronized void writeInt(int region, long offset, int value) {
        check(commandName(REGION_WRITE), region, offset, 4);
        conn.out().set(U32, ACCESS_DATA, value);
        writeOnce(region, offset, 4);
    }

    @Override
    public synchronized void writeLong(int region, long offset, long value) {
        check(commandName(REGION_WRITE), region, offset, 8);
        conn.out().set(U64, ACCESS_DATA, value);
        writeOnce(region, offset, 8);
    }

    /** REGION_READs of at most the read chunk each, in order. */
    @Override
    public synchronized void read(int region, long offset, MemorySegment dst) {
        check(commandName(REGION_READ), region, offset, dst.byteSize());
        for (long done = 0; done < dst.byteSize(); ) {
            long n = Math.min(readChunk, dst.byteSize() - done);
            readOnce(region, offset + done, n);
            MemorySegment.copy(conn.in(), ACCESS_DATA, dst, done, n);
            done += n;
        }
    }

    /** REGION_WRITEs of at most the write chunk each (each message at most 64 KiB), in order. */
    @Override
    public synchronized void write(int region, long offset, MemorySegment src) {
        check(commandName(REGION_WRITE), region, offset, src.byteSize());
        for (long done = 0; done < src.byteSize(); ) {
            long n = Math.min(writeChunk, src.byteSize() - done);
            MemorySegment.copy(src, done, conn.out(), ACCESS_DATA, n);
            writeOnce(region, offset + done, n);
            done += n;
        }
    }

    /**
     * Maps {@code [offset, offset + size)} of the region through the fd its server passed with the region info:
     * the range must lie in one sparse mmap area (or the region, when it has none). Refused (EOPNOTSUPP) for a
     * region that came without an fd, and for the migration region unless {@link Options#mapMigrationData()}.
     */
    @Override
    public synchronized MemorySegment mmap(int region, long offset, long size) {
        RegionInfo r = regionInfo(region);
        String op = "mmap(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + size + " bytes)";
        Fd fd = regionFds[region];
        if (fd == null || !r.mmappable()) {
            throw new SysException(op, Errno.EOPNOTSUPP, conn.object(), r.type().isPresent() && r.type().get().type() == VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED
                    ? "the migration region's data is reached with VFIO_USER_REGION_READ/WRITE (Options.mapMigrationData is off)"
                    : "the server passed no file descriptor for this region; use read/write (VFIO_USER_REGION_READ/WRITE)");
        }
        boolean inside = r.sparseAreas().isEmpty() ? offset >= 0 && size > 0 && offset <= r.size() - size : r.mmappableArea(offset, size).isPresent();
        if (!inside) throw new SysException(op, Errno.EINVAL, conn.object(), "not inside one mmap'able area of the region");
        int prot = (r.readable() ? Libc.PROT_READ : 0) | (r.writable() ? Libc.PROT_WRITE : 0);
        MemorySegment m = Libc.mmap(size, prot, Libc.MAP_SHARED, fd.raw(), r.fdOffset() + offset, conn.object() + " region " + region);
        mapped.add(m);
        return m;
    }

    @Override
    public synchronized void unmap(MemorySegment mapping) {
        for (int i = 0; i < mapped.size(); i++) {
            if (mapped.get(i).address() == mapping.address() && mapped.get(i).byteSize() == mapping.byteSize()) {
                Libc.munmap(mapped.remove(i), conn.object());
                return;
            }
        }
        throw new IllegalArgumentException("vfio-user device " + name + " did not map " + mapping);
    }

    // --- migration v2: DEVICE_FEATURE and MIG_DATA_READ/WRITE (specification 0.9.2) ---

    /** Which migration protocol the server speaks, as this client detects it ({@link #migrationProtocol}). */
    public enum MigrationProtocol {
        /** Neither: no v1 migration region and DEVICE_FEATURE's MIGRATION probe refused. */
        NONE,
        /** v1: a migration region at index 9 (specification 0.9.1; DEVICE_GET_INFO reports 10 regions). */
        V1_REGION,
        /** v2: {@code VFIO_USER_DEVICE_FEATURE} answers a PROBE of GET MIGRATION (specification 0.9.2; 9 regions). */
        V2_FEATURE
    }

    /** The v1 migration region's index (the PCI regions 0-8 come first). */
    private static final int V1_MIGRATION_REGION = 9;
    private MigrationProtocol protocol; // detected once, under the device's lock

    /**
     * The server's migration protocol, detected on first use and kept: a region 9 of the v1 migration type is v1
     * (libvfio-user up to 2023: 10 regions); else a {@code VFIO_USER_DEVICE_FEATURE} PROBE of GET MIGRATION that
     * succeeds is v2 (from 2023: 9 regions; a v1 server refuses the command with EINVAL); else none. The
     * migration's own choice (detected or {@code device.<name>.migration-protocol}) goes through
     * {@link #feature}, which a v1 server is never sent. On a v2 server every region's info is read (and cached)
     * here: its library refuses DEVICE_GET_REGION_INFO, DMA_MAP/UNMAP and DEVICE_RESET while the device is stopped,
     * and a destination reads its BARs between RESUMING → STOP and STOP → RUNNING.
     */
    public synchronized MigrationProtocol migrationProtocol() {
        if (protocol == null) {
            if (regionCount > V1_MIGRATION_REGION && regionInfo(V1_MIGRATION_REGION).type()
                    .filter(t -> t.equals(new RegionInfo.Type(VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED, VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED))).isPresent()) {
                protocol = MigrationProtocol.V1_REGION;
            } else {
                try {
                    features.call(V2Abi.FEATURE_PROBE | V2Abi.FEATURE_GET | V2Abi.FEATURE_MIGRATION, MemorySegment.NULL);
                    protocol = MigrationProtocol.V2_FEATURE;
                    // libvfio-user's v2 library serves only REGION_READ/WRITE, DEVICE_FEATURE and MIG_DATA_READ while the
                    // device is stopped (STOP, STOP_COPY): every region's info is read now, while it runs, and cached.
                    for (int i = 0; i < regionCount; i++) regionInfo(i);
                } catch (SysException e) {
                    if (conn.broken()) throw e;
                    protocol = MigrationProtocol.NONE; // the server's refusal (EINVAL for an unknown command or feature)
                }
            }
        }
        return protocol;
    }

    /**
     * {@code VFIO_USER_DEVICE_FEATURE}: the kernel's {@code VFIO_DEVICE_FEATURE} over the socket ({@link VfioUserFeatures}).
     * A v1 server has no such command: it fails with ENOTTY, unsent, as an old kernel's ioctl does.
     */
    @Override
    public synchronized void feature(int flags, MemorySegment data) {
        if (migrationProtocol() == MigrationProtocol.V1_REGION) {
            throw new SysException(commandName(DEVICE_FEATURE) + "(" + VfioUserConnection.featureWhat(flags) + ")", Errno.ENOTTY, conn.object(),
                    "the server speaks migration v1 (a migration region); not sent");
        }
        features.feature(flags, data);
    }

    /**
     * The data session the MIG_DEVICE_STATE SET just opened: vfio-user has no {@code data_fd} (the field is unused),
     * the stream goes through MIG_DATA_READ/WRITE messages on this connection ({@link VfioUserFeatures#migrationData}).
     */
    @Override
    public MigrationData migrationData(MemorySegment migState) {
        return features.migrationData();
    }

    /** DMA_LOGGING_START over the IOVA ranges given, at {@code pageSize} ({@link VfioUserFeatures#dmaLoggingStart}). */
    synchronized void dmaLoggingStart(long pageSize, long[] iovas, long[] lengths) {
        features.dmaLoggingStart(pageSize, iovas, lengths);
    }

    /** DMA_LOGGING_STOP. */
    synchronized void dmaLoggingStop() {
        features.dmaLoggingStop();
    }

    /** DMA_LOGGING_REPORT of one DMA map into {@code bits} ({@link VfioUserFeatures#dmaLoggingReport}). */
    synchronized void dmaLoggingReport(long iova, long length, long pageSize, MemorySegment bits, boolean or) {
        features.dmaLoggingReport(iova, length, pageSize, bits, or);
    }

    // --- DMA, dirty pages, interrupts: the client's side of the device's memory access ---

    /**
     * The device's DMA space as a {@link org.vmmkit.core.vfio.VfioContainer}: DMA_MAP/UNMAP, DIRTY_PAGES, and the
     * server's DMA_READ/DMA_WRITE served against what is mapped. One per device (vfio-user has no container: each
     * server has its own DMA space); {@code memory} is the guest RAM whose regions' files are passed with the maps.
     */
    public synchronized VfioUserContainer dmaSpace(org.vmmkit.core.memory.GuestMemory memory) {
        if (container == null) container = new VfioUserContainer(this, memory);
        else if (container.memory() != memory) throw new IllegalStateException(name + ": its DMA space already maps another guest memory");
        return container;
    }

    VfioUserConnection connection() {
        return conn;
    }

    /** VFIO_USER_DMA_MAP: {@code fd} (null: none) is attached as SCM_RIGHTS; the server maps it at {@code fdOffset}. */
    synchronized void dmaMap(long iova, long size, Fd fd, long fdOffset, boolean readable, boolean writable) {
        MemorySegment out = conn.out();
        out.set(U32, DMA_MAP_ARGSZ, (int) DMA_MAP_PAYLOAD.byteSize());
        out.set(U32, DMA_MAP_FLAGS, (readable ? DMA_REGION_READ : 0) | (writable ? DMA_REGION_WRITE : 0));
        out.set(U64, DMA_MAP_OFFSET, fd == null ? 0 : fdOffset);
        out.set(U64, DMA_MAP_ADDR, iova);
        out.set(U64, DMA_MAP_SIZE, size);
        int fds = 0;
        if (fd != null) fdArg[fds++] = fd.raw();
        conn.call(DMA_MAP, DMA_MAP_PAYLOAD.byteSize(), fdArg, fds, 0, 0, iova, size, fd == null ? -1 : fd.raw());
    }

    /** VFIO_USER_DMA_UNMAP of exactly one earlier map; the reply repeats it. */
    synchronized void dmaUnmap(long iova, long size) {
        MemorySegment out = conn.out();
        out.set(U32, DMA_UNMAP_ARGSZ, (int) DMA_UNMAP_PAYLOAD.byteSize());
        out.set(U32, DMA_UNMAP_FLAGS, 0);
        out.set(U64, DMA_UNMAP_ADDR, iova);
        out.set(U64, DMA_UNMAP_SIZE, size);
        conn.call(DMA_UNMAP, DMA_UNMAP_PAYLOAD.byteSize(), DMA_UNMAP_PAYLOAD.byteSize(), DMA_UNMAP_PAYLOAD.byteSize(), iova, size, 0);
        MemorySegment in = conn.in();
        if (in.get(U64, DMA_UNMAP_ADDR) != iova || in.get(U64, DMA_UNMAP_SIZE) != size) {
            throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply unmapped [0x" + Long.toHexString(in.get(U64, DMA_UNMAP_ADDR))
                    + ", +" + in.get(U64, DMA_UNMAP_SIZE) + ")");
        }
    }

    /** VFIO_USER_DIRTY_PAGES START or STOP. */
    synchronized void dirtyPages(int flag) {
        MemorySegment out = conn.out();
        out.set(U32, DIRTY_ARGSZ, (int) DIRTY_PAGES_PAYLOAD.byteSize());
        out.set(U32, DIRTY_FLAGS, flag);
        conn.call(DIRTY_PAGES, DIRTY_PAGES_PAYLOAD.byteSize(), 0, 0, flag, 0, 0);
    }

    /**
     * VFIO_USER_DIRTY_PAGES GET_BITMAP of one DMA map exactly ({@code [iova, iova + size)}) at {@code pageSize}:
     * the bits (cleared at the server) are copied into {@code bits}, which holds {@code ceil(pages / 64)} words.
     * The reply must echo the range and carry exactly that many bitmap bytes.
     */
    synchronized void dirtyBitmap(long iova, long size, long pageSize, MemorySegment bits) {
        long pages = (size + pageSize - 1) / pageSize;
        long bytes = ((pages + 63) >>> 6) << 3;
        long reply = RANGE_BITS + bytes;
        if (reply > VfioUserConnection.MAX_REPLY_PAYLOAD || bits.byteSize() < bytes) {
            throw new IllegalArgumentException(name + ": a dirty bitmap of " + pages + " pages does not fit one reply or the buffer");
        }
        MemorySegment out = conn.out();
        out.set(U32, DIRTY_ARGSZ, (int) reply);
        out.set(U32, DIRTY_FLAGS, VfioAbi.IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
        out.set(U64, RANGE_IOVA, iova);
        out.set(U64, RANGE_SIZE, size);
        out.set(U64, RANGE_PGSIZE, pageSize);
        out.set(U64, RANGE_BITMAP_SIZE, bytes);
        conn.call(DIRTY_PAGES, RANGE_BITS, reply, reply, VfioAbi.IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP, iova, size);
        MemorySegment in = conn.in();
        if (in.get(U64, RANGE_IOVA) != iova || in.get(U64, RANGE_SIZE) != size || in.get(U64, RANGE_PGSIZE) != pageSize
                || in.get(U64, RANGE_BITMAP_SIZE) != bytes) {
            throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply describes another range: iova 0x"
                    + Long.toHexString(in.get(U64, RANGE_IOVA)) + ", size " + in.get(U64, RANGE_SIZE) + ", pgsize " + in.get(U64, RANGE_PGSIZE)
                    + ", " + in.get(U64, RANGE_BITMAP_SIZE) + " bitmap bytes");
        }
        MemorySegment.copy(in, RANGE_BITS, bits, 0, bytes);
    }

    /**
     * VFIO_USER_DEVICE_SET_IRQS: the server signals {@code eventfds[i]} when it triggers interrupt
     * {@code index}, sub-index {@code i} (DATA_EVENTFD | ACTION_TRIGGER; the fds travel as SCM_RIGHTS).
     */
    public synchronized void setIrqEventfds(int index, Fd... eventfds) {
        if (eventfds.length == 0 || eventfds.length > fdArg.length) throw new IllegalArgumentException(eventfds.length + " eventfds");
        for (int i = 0; i < eventfds.length; i++) fdArg[i] = eventfds[i].raw();
        irqSet(index, eventfds.length, VfioUserAbi.IRQ_SET_DATA_EVENTFD | VfioUserAbi.IRQ_SET_ACTION_TRIGGER, eventfds.length);
    }

    /** VFIO_USER_DEVICE_SET_IRQS with DATA_NONE | ACTION_TRIGGER, start and count 0: no eventfd of {@code index} is signalled any more. */
    public synchronized void disableIrqs(int index) {
        irqSet(index, 0, VfioUserAbi.IRQ_SET_DATA_NONE | VfioUserAbi.IRQ_SET_ACTION_TRIGGER, 0);
    }

    private void irqSet(int index, int count, int flags, int fds) {
        if (index < 0 || index >= irqCount) {
            throw new SysException(commandName(DEVICE_SET_IRQS) + "(index " + index + ")", Errno.EINVAL, conn.object(), "the device has " + irqCount + " IRQ indexes");
        }
        MemorySegment out = conn.out();
        out.set(U32, IRQ_SET_ARGSZ, (int) IRQ_SET.byteSize());
        out.set(U32, IRQ_SET_FLAGS, flags);
        out.set(U32, IRQ_SET_INDEX, index);
        out.set(U32, IRQ_SET_START, 0);
        out.set(U32, IRQ_SET_COUNT, count);
        conn.call(DEVICE_SET_IRQS, IRQ_SET.byteSize(), fdArg, fds, 0, 0, index, count, fds);
    }

    /** Whether the server sends its DMA commands on their own socket (twin-socket mode, negotiated in VERSION). */
    public boolean twinSocket() {
        return conn.twinSocket();
    }

    /** The server's DMA_READs and DMA_WRITEs this client served, and its commands it refused (see the log for each). */
    public long dmaReadsServed() {
        return conn.dmaReadsServed();
    }

    public long dmaWritesServed() {
        return conn.dmaWritesServed();
    }

    public long serverCommandsRefused() {
        return conn.serverCommandsRefused();
    }

    @Override
    public synchronized void reset() {
        conn.call(DEVICE_RESET, 0, 0, 0, 0, 0, 0);
    }

    /** Unmaps what was mapped, closes the region fds, and disconnects; the server sees its client go (the sample server then exits). */
    @Override
    public void close() {
        synchronized (this) {
            for (MemorySegment m : mapped) Libc.munmap(m, conn.object());
            mapped.clear();
            for (int i = 0; i < regionFds.length; i++) {
                if (regionFds[i] != null) regionFds[i].close();
                regionFds[i] = null;
            }
        }
        conn.close(); // not under the device's lock: it waits for the idle watcher, which may be serving a DMA
    }

    @Override
    public String toString() {
        return conn.object();
    }
}
