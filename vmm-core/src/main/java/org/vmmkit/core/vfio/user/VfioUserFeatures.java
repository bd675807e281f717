package org.vmmkit.core.vfio.user;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.MigrationData;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.vmmkit.core.vfio.user.abi.VfioUserAbi.*;

/**
 * The migration v2 commands of one {@link VfioUserDevice} (specification 0.9.2): {@code VFIO_USER_DEVICE_FEATURE}
 * carrying the kernel's feature structs (DMA logging's, which hold pointers in the kernel, translated to
 * vfio-user's inline ranges and bitmap), and the MIG_DATA_READ/WRITE data session that stands for the kernel's
 * {@code data_fd}. Every call holds the device's lock: one request in flight on its connection.
 */
final class VfioUserFeatures {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.core.vfio.user");

    private final VfioUserDevice device;
    private final VfioUserConnection conn;
    private final ServerCapabilities capabilities;
    private final boolean preCopy;

    VfioUserFeatures(VfioUserDevice device, VfioUserConnection conn, ServerCapabilities capabilities, boolean preCopy) {
        this.device = device;
        this.conn = conn;
        this.capabilities = capabilities;
        this.preCopy = preCopy;
    }

    /** DEVICE_FEATURE of {@code flags} and {@code data} as the kernel's ioctl takes them (the caller holds the device's lock). */
    void feature(int flags, MemorySegment data) {
        int feature = flags & V2Abi.FEATURE_MASK;
        if ((flags & V2Abi.FEATURE_PROBE) == 0 && feature == V2Abi.FEATURE_DMA_LOGGING_START && (flags & V2Abi.FEATURE_SET) != 0) {
            MemorySegment control = data.reinterpret(V2Abi.DMA_LOGGING_CONTROL.byteSize());
            int n = control.get(JAVA_INT, V2Abi.LOGGING_CONTROL_NUM_RANGES);
            long range = V2Abi.DMA_LOGGING_RANGE.byteSize();
            MemorySegment ranges = MemorySegment.ofAddress(control.get(JAVA_LONG, V2Abi.LOGGING_CONTROL_RANGES)).reinterpret(range * Math.max(0, n));
            long[] iovas = new long[n], lengths = new long[n];
            for (int i = 0; i < n; i++) {
                iovas[i] = ranges.get(JAVA_LONG, range * i + V2Abi.LOGGING_RANGE_IOVA);
                lengths[i] = ranges.get(JAVA_LONG, range * i + V2Abi.LOGGING_RANGE_LENGTH);
            }
            dmaLoggingStart(control.get(JAVA_LONG, V2Abi.LOGGING_CONTROL_PAGE_SIZE), iovas, lengths);
            return;
        }
        if ((flags & V2Abi.FEATURE_PROBE) == 0 && feature == V2Abi.FEATURE_DMA_LOGGING_REPORT && (flags & V2Abi.FEATURE_GET) != 0) {
            MemorySegment report = data.reinterpret(V2Abi.DMA_LOGGING_REPORT.byteSize());
            long iova = report.get(JAVA_LONG, V2Abi.LOGGING_REPORT_IOVA), length = report.get(JAVA_LONG, V2Abi.LOGGING_REPORT_LENGTH),
                    pageSize = report.get(JAVA_LONG, V2Abi.LOGGING_REPORT_PAGE_SIZE);
            if (pageSize <= 0 || Long.bitCount(pageSize) != 1 || length <= 0) {
                throw new SysException(commandName(DEVICE_FEATURE) + "(" + featureWhat(flags) + ")", Errno.EINVAL, conn.object(),
                        "page size " + pageSize + ", length " + length + "; not sent");
            }
            long bytes = (((length + pageSize - 1) / pageSize + 63) >>> 6) << 3;
            MemorySegment bitmap = MemorySegment.ofAddress(report.get(JAVA_LONG, V2Abi.LOGGING_REPORT_BITMAP)).reinterpret(bytes);
            dmaLoggingReport(iova, length, pageSize, bitmap, true); // the kernel only sets bits in the user's bitmap
            return;
        }
        call(flags, data);
        if (!preCopy && flags == (V2Abi.FEATURE_GET | V2Abi.FEATURE_MIGRATION) && data.byteSize() >= 8) {
            data.set(JAVA_LONG_UNALIGNED, 0, data.get(JAVA_LONG_UNALIGNED, 0) & ~V2Abi.MIGRATION_PRE_COPY);
        }
    }

    /** One DEVICE_FEATURE of {@code data} as is: sent for GET and SET, filled from the reply for GET. */
    void call(int flags, MemorySegment data) {
        boolean probe = (flags & V2Abi.FEATURE_PROBE) != 0, get = !probe && (flags & V2Abi.FEATURE_GET) != 0;
        long dataBytes = probe ? 0 : data.byteSize();
        if (FEATURE_DATA + dataBytes > conn.maxRequestPayload()) {
            throw new SysException(commandName(DEVICE_FEATURE) + "(" + featureWhat(flags) + ")", Errno.E2BIG, conn.object(),
                    dataBytes + " bytes of feature data exceed the 64 KiB message; not sent");
        }
        MemorySegment out = conn.out();
        out.set(U32, FEATURE_ARGSZ, (int) (FEATURE_DATA + dataBytes));
        out.set(U32, FEATURE_FLAGS, flags);
        if (dataBytes > 0) MemorySegment.copy(data, 0, out, FEATURE_DATA, dataBytes);
        long payload = conn.call(DEVICE_FEATURE, FEATURE_DATA + dataBytes, FEATURE_DATA + (get ? dataBytes : 0), FEATURE_DATA + dataBytes, flags, 0, 0);
        MemorySegment in = conn.in();
        if (in.get(U32, FEATURE_FLAGS) != flags) {
            throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply is for flags 0x" + Integer.toHexString(in.get(U32, FEATURE_FLAGS)));
        }
        if (get) MemorySegment.copy(in, FEATURE_DATA, data, 0, Math.min(dataBytes, payload - FEATURE_DATA));
    }

    private static String featureWhat(int flags) {
        return VfioUserConnection.featureWhat(flags);
    }

    /**
     * DMA_LOGGING_START (SET) at {@code pageSize} over the IOVA ranges given (vfio-user's layout: the ranges inline).
     * libvfio-user logs every DMA region mapped with an fd, whatever the ranges.
     */
    void dmaLoggingStart(long pageSize, long[] iovas, long[] lengths) {
        int flags = V2Abi.FEATURE_SET | V2Abi.FEATURE_DMA_LOGGING_START;
        long bytes = FEATURE_DATA + LOGGING_RANGES + DMA_LOGGING_RANGE.byteSize() * iovas.length;
        if (bytes > conn.maxRequestPayload()) {
            throw new SysException(commandName(DEVICE_FEATURE) + "(" + featureWhat(flags) + ")", Errno.E2BIG, conn.object(),
                    iovas.length + " ranges exceed the 64 KiB message; not sent");
        }
        MemorySegment out = conn.out();
        out.set(U32, FEATURE_ARGSZ, (int) bytes);
        out.set(U32, FEATURE_FLAGS, flags);
        out.set(U64, FEATURE_DATA + LOGGING_PAGE_SIZE, pageSize);
        out.set(U32, FEATURE_DATA + LOGGING_NUM_RANGES, iovas.length);
        out.set(U32, FEATURE_DATA + LOGGING_NUM_RANGES + 4, 0);
        for (int i = 0; i < iovas.length; i++) {
            out.set(U64, FEATURE_DATA + LOGGING_RANGES + DMA_LOGGING_RANGE.byteSize() * i, iovas[i]);
            out.set(U64, FEATURE_DATA + LOGGING_RANGES + DMA_LOGGING_RANGE.byteSize() * i + 8, lengths[i]);
        }
        conn.call(DEVICE_FEATURE, bytes, FEATURE_DATA, bytes, flags, 0, 0);
    }

    /** DMA_LOGGING_STOP (SET). */
    void dmaLoggingStop() {
        int flags = V2Abi.FEATURE_SET | V2Abi.FEATURE_DMA_LOGGING_STOP;
        MemorySegment out = conn.out();
        out.set(U32, FEATURE_ARGSZ, (int) FEATURE_DATA);
        out.set(U32, FEATURE_FLAGS, flags);
        conn.call(DEVICE_FEATURE, FEATURE_DATA, FEATURE_DATA, FEATURE_DATA, flags, 0, 0);
    }

    /**
     * DMA_LOGGING_REPORT (GET) of {@code [iova, iova + length)}, which libvfio-user takes only as one DMA map
     * exactly: the bits (cleared at the server), {@code ceil(pages / 64)} words, copied into {@code bits}
     * ({@code or}: ORed in, as the kernel's report sets bits). The reply must echo the range and carry that bitmap.
     */
    void dmaLoggingReport(long iova, long length, long pageSize, MemorySegment bits, boolean or) {
        int flags = V2Abi.FEATURE_GET | V2Abi.FEATURE_DMA_LOGGING_REPORT;
        long pages = (length + pageSize - 1) / pageSize;
        long bytes = ((pages + 63) >>> 6) << 3;
        long request = FEATURE_DATA + REPORT_BITMAP, reply = request + bytes;
        if (reply > VfioUserConnection.MAX_REPLY_PAYLOAD || bits.byteSize() < bytes) {
            throw new IllegalArgumentException(device.name() + ": a DMA logging report of " + pages + " pages does not fit one reply or the buffer");
        }
        MemorySegment out = conn.out();
        out.set(U32, FEATURE_ARGSZ, (int) reply);
        out.set(U32, FEATURE_FLAGS, flags);
        out.set(U64, FEATURE_DATA + REPORT_IOVA, iova);
        out.set(U64, FEATURE_DATA + REPORT_LENGTH, length);
        out.set(U64, FEATURE_DATA + REPORT_PAGE_SIZE, pageSize);
        conn.call(DEVICE_FEATURE, request, reply, reply, flags, iova, length);
        MemorySegment in = conn.in();
        if (in.get(U64, FEATURE_DATA + REPORT_IOVA) != iova || in.get(U64, FEATURE_DATA + REPORT_LENGTH) != length
                || in.get(U64, FEATURE_DATA + REPORT_PAGE_SIZE) != pageSize) {
            throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply describes another range: iova 0x"
                    + Long.toHexString(in.get(U64, FEATURE_DATA + REPORT_IOVA)) + ", length " + in.get(U64, FEATURE_DATA + REPORT_LENGTH)
                    + ", page size " + in.get(U64, FEATURE_DATA + REPORT_PAGE_SIZE));
        }
        if (!or) {
            MemorySegment.copy(in, request, bits, 0, bytes);
            return;
        }
        for (long w = 0; w < bytes; w += 8) {
            long v = in.get(U64, request + w);
            if (v != 0) bits.set(JAVA_LONG_UNALIGNED, w, bits.get(JAVA_LONG_UNALIGNED, w) | v);
        }
    }

    /** A data session over MIG_DATA_READ/WRITE, for the state arc that just opened one. */
    MigrationData migrationData() {
        return new MigrationDataMessages();
    }

    /**
     * A v2 data session over {@code VFIO_USER_MIG_DATA_READ}/{@code _WRITE}: a read asks for at most what the
     * client's {@code max_data_xfer_size} lets the server send and returns the reply's {@code size} (fewer than
     * asked: nothing more for now; 0 at the end); a write sends at most a 64 KiB message and the server's
     * {@code max_data_xfer_size}, and returns what it carried (the caller loops, as for write(2)). PRECOPY_INFO
     * has no vfio-user message: ENOTTY, so the VMM treats the device as reporting no pre-copy estimate. Not an
     * fd: {@link #fd()} is -1 (no splice). A failure returns -errno and logs the client's full reason (a server
     * that died, a malformed reply); the session ends with the state arc that ends it.
     */
    private final class MigrationDataMessages implements MigrationData {
        private final long readMax = Math.min(VfioUserConnection.CLIENT_MAX_DATA_XFER_SIZE, VfioUserConnection.MAX_REPLY_PAYLOAD - MIG_DATA.byteSize());
        private final long writeMax = Math.min(capabilities.maxDataXferSize(), conn.maxRequestPayload() - MIG_DATA.byteSize());
        private volatile boolean closed;

        @Override
        public String name() {
            return conn.object() + " MIG_DATA";
        }

        @Override
        public long readRaw(MemorySegment dst) {
            if (closed) return -Errno.EBADF;
            long n = Math.min(dst.byteSize(), readMax);
            synchronized (device) {
                try {
                    MemorySegment out = conn.out();
                    out.set(U32, MIG_DATA_ARGSZ, (int) (MIG_DATA.byteSize() + n));
                    out.set(U32, MIG_DATA_SIZE, (int) n);
                    long payload = conn.call(MIG_DATA_READ, MIG_DATA.byteSize(), MIG_DATA.byteSize(), MIG_DATA.byteSize() + n, n, 0, 0);
                    MemorySegment in = conn.in();
                    long size = Integer.toUnsignedLong(in.get(U32, MIG_DATA_SIZE));
                    if (size > n || MIG_DATA.byteSize() + size > payload) {
                        throw new SysException(conn.what(), Errno.EPROTO, conn.object(), "the reply says " + size + " bytes in a "
                                + payload + "-byte payload, for " + n + " asked");
                    }
                    MemorySegment.copy(in, MIG_DATA_DATA, dst, 0, size);
                    return size;
                } catch (SysException e) {
                    return failed(e);
                }
            }
        }

        @Override
        public long writeRaw(MemorySegment src) {
            if (closed) return -Errno.EBADF;
            long n = Math.min(src.byteSize(), writeMax);
            synchronized (device) {
                try {
                    MemorySegment out = conn.out();
                    out.set(U32, MIG_DATA_ARGSZ, (int) (MIG_DATA.byteSize() + n));
                    out.set(U32, MIG_DATA_SIZE, (int) n);
                    MemorySegment.copy(src, 0, out, MIG_DATA_DATA, n);
                    conn.call(MIG_DATA_WRITE, MIG_DATA.byteSize() + n, 0, MIG_DATA.byteSize(), n, 0, 0);
                    return n;
                } catch (SysException e) {
                    return failed(e);
                }
            }
        }

        private long failed(SysException e) {
            LOG.log(System.Logger.Level.WARNING, "{0}: {1}", name(), e.getMessage());
            return -e.errno();
        }

        @Override
        public int precopyInfoRaw(MemorySegment info) {
            return -Errno.ENOTTY;
        }

        @Override
        public int fd() {
            return -1;
        }

        @Override
        public void close() {
            closed = true;
        }
    }
}
