package org.vmmkit.core.vfio.v2;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.OptionalLong;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.VfioDevice;
import org.vmmkit.core.vfio.abi.V2Abi;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * The typed layer over {@link VfioDevice#feature}: the migration v2 features and device DMA logging, so that
 * protocol code never sees a uapi offset. Each call uses a per-thread scratch buffer for the feature's data,
 * so none allocates (DMA logging's range array, given once at start, excepted). Errors are
 * {@link SysException}s naming the feature, the errno and the device.
 */
public final class DeviceFeatures {
    private DeviceFeatures() {}

    private static final ThreadLocal<MemorySegment> SCRATCH = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(64, 8));

    /** How an error names a feature call, e.g. {@code ioctl(VFIO_DEVICE_FEATURE(SET MIG_DEVICE_STATE))}. */
    public static String describe(int flags) {
        StringBuilder b = new StringBuilder("ioctl(VFIO_DEVICE_FEATURE(");
        if ((flags & V2Abi.FEATURE_PROBE) != 0) b.append("PROBE ");
        if ((flags & V2Abi.FEATURE_GET) != 0) b.append("GET ");
        if ((flags & V2Abi.FEATURE_SET) != 0) b.append("SET ");
        return b.append(featureName(flags & V2Abi.FEATURE_MASK)).append("))").toString();
    }

    public static String featureName(int index) {
        return switch (index) {
            case V2Abi.FEATURE_PCI_VF_TOKEN -> "PCI_VF_TOKEN";
            case V2Abi.FEATURE_MIGRATION -> "MIGRATION";
            case V2Abi.FEATURE_MIG_DEVICE_STATE -> "MIG_DEVICE_STATE";
            case V2Abi.FEATURE_LOW_POWER_ENTRY -> "LOW_POWER_ENTRY";
            case V2Abi.FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP -> "LOW_POWER_ENTRY_WITH_WAKEUP";
            case V2Abi.FEATURE_LOW_POWER_EXIT -> "LOW_POWER_EXIT";
            case V2Abi.FEATURE_DMA_LOGGING_START -> "DMA_LOGGING_START";
            case V2Abi.FEATURE_DMA_LOGGING_STOP -> "DMA_LOGGING_STOP";
            case V2Abi.FEATURE_DMA_LOGGING_REPORT -> "DMA_LOGGING_REPORT";
            case V2Abi.FEATURE_MIG_DATA_SIZE -> "MIG_DATA_SIZE";
            default -> "feature " + index;
        };
    }

    /** The errnos by which a device says it lacks a feature (the kernel: ENOTTY; drivers also EINVAL, EOPNOTSUPP). */
    static boolean unsupported(SysException e) {
        return e.errno() == Errno.ENOTTY || e.errno() == Errno.EINVAL || e.errno() == Errno.EOPNOTSUPP;
    }

    private static MemorySegment scratch(long bytes) {
        MemorySegment s = SCRATCH.get().asSlice(0, bytes);
        s.fill((byte) 0);
        return s;
    }

    /** {@code VFIO_DEVICE_FEATURE_MIGRATION} GET: the device's migration flags, or empty when it has no v2 migration. */
    public static OptionalLong migrationFlags(VfioDevice device) {
        MemorySegment data = scratch(V2Abi.FEATURE_MIGRATION_LAYOUT.byteSize());
        try {
            device.feature(V2Abi.FEATURE_GET | V2Abi.FEATURE_MIGRATION, data);
        } catch (SysException e) {
            if (unsupported(e)) return OptionalLong.empty();
            throw e;
        }
        long flags = data.get(JAVA_LONG, 0);
        // The header: "at least VFIO_MIGRATION_STOP_COPY must be set"; without it there is no usable protocol.
        return (flags & V2Abi.MIGRATION_STOP_COPY) == 0 ? OptionalLong.empty() : OptionalLong.of(flags);
    }

    /** {@code VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE} GET. */
    public static MigState state(VfioDevice device) {
        MemorySegment data = scratch(V2Abi.FEATURE_MIG_STATE.byteSize());
        device.feature(V2Abi.FEATURE_GET | V2Abi.FEATURE_MIG_DEVICE_STATE, data);
        return MigState.of(data.get(JAVA_INT, V2Abi.MIG_STATE_DEVICE_STATE));
    }

    /**
     * {@code VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE} SET from {@code from} to {@code to}: the data session when the
     * transition opens one (into the saving group from outside it, or into RESUMING), else null.
     */
    public static MigrationData setState(VfioDevice device, MigState from, MigState to) {
        MemorySegment data = scratch(V2Abi.FEATURE_MIG_STATE.byteSize());
        data.set(JAVA_INT, V2Abi.MIG_STATE_DEVICE_STATE, to.value());
        data.set(JAVA_INT, V2Abi.MIG_STATE_DATA_FD, -1);
        device.feature(V2Abi.FEATURE_SET | V2Abi.FEATURE_MIG_DEVICE_STATE, data);
        return MigrationFsm.opensSession(from, to) ? device.migrationData(data) : null;
    }

    /** {@code VFIO_DEVICE_FEATURE_MIG_DATA_SIZE} GET: the estimated bytes of STOP_COPY, or empty when the device does not say. */
    public static OptionalLong stopCopyLength(VfioDevice device) {
        MemorySegment data = scratch(V2Abi.FEATURE_MIG_DATA_SIZE_LAYOUT.byteSize());
        try {
            device.feature(V2Abi.FEATURE_GET | V2Abi.FEATURE_MIG_DATA_SIZE, data);
        } catch (SysException e) {
            if (unsupported(e)) return OptionalLong.empty();
            throw e;
        }
        return OptionalLong.of(data.get(JAVA_LONG, 0));
    }

    /** {@code PROBE | SET} of {@code DMA_LOGGING_START}: whether the device logs its own DMA writes. */
    public static boolean dmaLoggingSupported(VfioDevice device) {
        try {
            device.feature(V2Abi.FEATURE_PROBE | V2Abi.FEATURE_SET | V2Abi.FEATURE_DMA_LOGGING_START, MemorySegment.NULL);
            return true;
        } catch (SysException e) {
            if (unsupported(e)) return false;
            throw e;
        }
    }

    /**
     * {@code DMA_LOGGING_START} over the IOVA ranges {@code [iovas[i], iovas[i] + lengths[i])} at a tracking
     * granularity of {@code pageSize} (a hint). {@code ranges} must stay valid for the call: it is given here.
     */
    public static void dmaLoggingStart(VfioDevice device, long pageSize, long[] iovas, long[] lengths) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment ranges = arena.allocate(V2Abi.DMA_LOGGING_RANGE.byteSize() * iovas.length, 8);
            for (int i = 0; i < iovas.length; i++) {
                ranges.set(JAVA_LONG, 16L * i, iovas[i]);
                ranges.set(JAVA_LONG, 16L * i + 8, lengths[i]);
            }
            MemorySegment control = scratch(V2Abi.DMA_LOGGING_CONTROL.byteSize());
            control.set(JAVA_LONG, 0, pageSize);
            control.set(JAVA_INT, 8, iovas.length);
            control.set(JAVA_LONG, 16, ranges.address());
            device.feature(V2Abi.FEATURE_SET | V2Abi.FEATURE_DMA_LOGGING_START, control);
        }
    }

    /** {@code DMA_LOGGING_STOP}. */
    public static void dmaLoggingStop(VfioDevice device) {
        device.feature(V2Abi.FEATURE_SET | V2Abi.FEATURE_DMA_LOGGING_STOP, MemorySegment.NULL);
    }

    /**
     * {@code DMA_LOGGING_REPORT} GET: ORs into {@code bitmap} (one bit per {@code pageSize} of IOVA from
     * {@code iova}, 64-bit words, the kernel's layout) the pages the device wrote in {@code [iova, iova + length)}
     * since the last report, and clears them at the device. The bitmap is native memory the device writes.
     */
    public static void dmaLoggingReport(VfioDevice device, long iova, long length, long pageSize, MemorySegment bitmap) {
        MemorySegment report = scratch(V2Abi.DMA_LOGGING_REPORT.byteSize());
        report.set(JAVA_LONG, 0, iova);
        report.set(JAVA_LONG, 8, length);
        report.set(JAVA_LONG, 16, pageSize);
        report.set(JAVA_LONG, 24, bitmap.address());
        device.feature(V2Abi.FEATURE_GET | V2Abi.FEATURE_DMA_LOGGING_REPORT, report);
    }
}
