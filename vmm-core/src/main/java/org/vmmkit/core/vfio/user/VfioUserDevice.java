package org.vmmkit.core.vfio.user;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.MemoryLayout.PathElement.groupElement;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.vmmkit.core.vfio.user.abi.VfioUserAbi.*;

/**
 * A device served by a vfio-user server over a UNIX socket, driven as a {@link VfioDevice}: VERSION at
 * connect, then DEVICE_GET_INFO, DEVICE_GET_REGION_INFO (with its capability chain), REGION_READ/WRITE for
 * every region access and DEVICE_RESET. Whatever drives a kernel VFIO device (the v1 migration region
 * protocol, {@code V1DeviceMigration}) drives this one unchanged.
 *
 * <p>No file descriptors cross the socket in this increment (see {@link VfioUserConnection}), so no region
 * can be mmap'd: {@link #regionInfo} reports every region without {@code VFIO_REGION_INFO_FLAG_MMAP} (the
 * server offered an fd we cannot receive; its sparse areas are kept, for information) and {@link #mmap}
 * refuses. Callers that choose between mmap and read/write by that flag, as {@code MigrationRegion} does,
 * take the read/write path. That path is also the one that works with libvfio-user's v1 migration region even
 * once fds arrive: the library announces the data area as mmap-able but moves migration data only through
 * REGION_READ/WRITE (its save/load callbacks); a mapping of the area reads zeros.
 *
 * <p>Register accesses are one REGION_READ/WRITE of exactly 4 or 8 bytes; bulk transfers are chunked (reads
 * by the smaller of the server's {@code max_data_xfer_size} and ours, writes also to the 64 KiB message
 * limit). Every access is checked against the region before it is sent: an out-of-range request never
 * reaches the server. Failures are {@link SysException}s naming the command with its arguments, this
 * device and its socket, and the errno (the server's, or ECONNRESET / ETIMEDOUT / EPROTO for a server that
 * died, stalled or sent what cannot be a reply). Thread-safe: one request in flight, calls serialised.
 */
public final class VfioUserDevice implements VfioDevice {

    /** @param replyTimeout how long one request may wait for its reply before the connection is declared dead */
    public record Options(Duration replyTimeout) {
        public static final Options DEFAULT = new Options(Duration.ofSeconds(10));
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
    private final long readChunk, writeChunk;

    private VfioUserDevice(String name, Path socket, VfioUserConnection conn) {
        this.name = name;
        this.socket = socket;
        this.conn = conn;
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
        this.readChunk = Math.min(capabilities.maxDataXferSize(), VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE);
        this.writeChunk = Math.min(capabilities.maxDataXferSize(), conn.maxRequestPayload() - REGION_ACCESS.byteSize());
    }

    /**
     * Connects to the server at {@code socket}, negotiates the version and reads the device info. {@code name}
     * is the device's name in this VMM (errors add the socket).
     */
    public static VfioUserDevice connect(Path socket, String name, Options options) {
        VfioUserConnection conn = VfioUserConnection.connect(socket, name + " (vfio-user " + socket + ")", options.replyTimeout());
        try {
            return new VfioUserDevice(name, socket, conn);
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
     * same major, a minor no higher, NUL-terminated JSON. {@code max_msg_fds} is left at its default: until fds
     * are received (SCM_RIGHTS), the number announced here will not matter.
     */
    private ServerCapabilities negotiate() {
        String json = "{\"capabilities\":{\"max_data_xfer_size\":" + VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE
                + ",\"migration\":{\"pgsize\":" + MIGRATION_PGSIZE + "}}}";
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
        try {
            return ServerCapabilities.parse(major, minor, serverJson);
        } catch (IllegalArgumentException e) {
            throw new SysException(what, Errno.EPROTO, conn.object(), "the server's capabilities: " + e.getMessage() + ": " + serverJson);
        }
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
            // No fd was received with the reply (no SCM_RIGHTS yet), so nothing of it can be mmap'd here.
            regions[region] = new RegionInfo(parsed.index(), parsed.flags() & ~VfioAbi.REGION_INFO_FLAG_MMAP, parsed.size(),
                    parsed.fdOffset(), parsed.type(), parsed.sparseAreas());
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

    /** Refused: mapping needs the region's fd, which arrives by SCM_RIGHTS (a later increment). */
    @Override
    public MemorySegment mmap(int region, long offset, long size) {
        throw new SysException("mmap(region " + region + ", offset 0x" + Long.toHexString(offset) + ", " + size + " bytes)",
                Errno.EOPNOTSUPP, conn.object(), "this vfio-user client receives no file descriptors yet (SCM_RIGHTS), "
                        + "so no region can be mapped; use read/write (VFIO_USER_REGION_READ/WRITE)");
    }

    @Override
    public void unmap(MemorySegment mapping) {
        throw new IllegalArgumentException("vfio-user device " + name + " maps nothing, so it has nothing to unmap");
    }

    @Override
    public synchronized void reset() {
        conn.call(DEVICE_RESET, 0, 0, 0, 0, 0, 0);
    }

    /** Disconnects; the server sees its client go (the sample server then exits). */
    @Override
    public synchronized void close() {
        conn.close();
    }

    @Override
    public String toString() {
        return conn.object();
    }
}
