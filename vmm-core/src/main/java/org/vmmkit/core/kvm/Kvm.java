package org.vmmkit.core.kvm;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/** The open {@code /dev/kvm}: API version and capability checks, host-wide queries, VM creation. */
public final class Kvm implements AutoCloseable {
    public static final String DEVICE = "/dev/kvm";

    /** Capabilities the VMM cannot run without, with what each is for. */
    private static final int[][] REQUIRED = {
            {KvmAbi.CAP_USER_MEMORY}, {KvmAbi.CAP_SET_TSS_ADDR}, {KvmAbi.CAP_EXT_CPUID}, {KvmAbi.CAP_IMMEDIATE_EXIT}};
    private static final String[] REQUIRED_NAMES = {
            "KVM_CAP_USER_MEMORY (memory slots)", "KVM_CAP_SET_TSS_ADDR", "KVM_CAP_EXT_CPUID (KVM_SET_CPUID2)",
            "KVM_CAP_IMMEDIATE_EXIT (pausing vCPUs)"};

    private final Fd fd;
    private final long vcpuMmapSize;
    private final int[] msrIndices;
    private final byte[] supportedCpuid;

    private Kvm(Fd fd) {
        this.fd = fd;
        int version = fd.ioctl(KvmAbi.KVM_GET_API_VERSION, 0L);
        if (version != KvmAbi.API_VERSION) {
            throw new KvmException(DEVICE + " speaks KVM API version " + version + ", vmmkit needs " + KvmAbi.API_VERSION);
        }
        List<String> missing = new ArrayList<>();
        for (int i = 0; i < REQUIRED.length; i++) {
            if (checkExtension(REQUIRED[i][0]) <= 0) missing.add(REQUIRED_NAMES[i]);
        }
        if (!missing.isEmpty()) {
            throw new KvmException(DEVICE + " lacks capabilities vmmkit needs: " + String.join(", ", missing));
        }
        this.vcpuMmapSize = fd.ioctl(KvmAbi.KVM_GET_VCPU_MMAP_SIZE, 0L);
        this.msrIndices = readMsrIndexList();
        this.supportedCpuid = readSupportedCpuid();
    }

    /** Whether {@code /dev/kvm} exists and this process may open it read-write. */
    public static boolean available() {
        Path dev = Path.of(DEVICE);
        return Files.exists(dev) && Files.isReadable(dev) && Files.isWritable(dev);
    }

    /** Why KVM cannot be used here, or null when it can: for the tests' and the demo's skip message. */
    public static String unavailableReason() {
        if (!Files.exists(Path.of(DEVICE))) return DEVICE + " does not exist (no KVM on this host)";
        if (!available()) return DEVICE + " is not readable and writable by this user";
        try (Kvm ignored = open()) {
            return null;
        } catch (RuntimeException e) {
            return e.getMessage();
        }
    }

    /** Opens {@code /dev/kvm} and checks the API version and the capabilities vmmkit uses. */
    public static Kvm open() {
        Fd fd = Libc.open(DEVICE, Libc.O_RDWR);
        try {
            return new Kvm(fd);
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** {@code KVM_CHECK_EXTENSION} on the system fd: 0 when absent, else a capability-specific value. */
    public int checkExtension(int capability) {
        return fd.ioctl(KvmAbi.KVM_CHECK_EXTENSION, capability);
    }

    public long vcpuMmapSize() {
        return vcpuMmapSize;
    }

    /** The MSRs this host's KVM saves and restores. */
    public int[] msrIndexList() {
        return msrIndices.clone();
    }

    public boolean supportsMsr(int index) {
        return Arrays.stream(msrIndices).anyMatch(i -> i == index);
    }

    /** A {@code struct kvm_cpuid2} with everything the host supports, ready for {@code KVM_SET_CPUID2}. */
    byte[] supportedCpuid() {
        return supportedCpuid;
    }

    private int[] readMsrIndexList() {
        try (Arena arena = Arena.ofConfined()) {
            for (int n = 256; ; n *= 2) {
                MemorySegment list = arena.allocate(4 + 4L * n, 8);
                list.set(JAVA_INT, 0, n);
                int r = Libc.ioctlRaw(fd.raw(), KvmAbi.KVM_GET_MSR_INDEX_LIST.number(), list);
                if (r == -Errno.E2BIG && n < 65536) continue;
                if (r < 0) throw new SysException("ioctl(KVM_GET_MSR_INDEX_LIST)", -r, fd.describe());
                int count = list.get(JAVA_INT, 0);
                return list.asSlice(4, 4L * count).toArray(JAVA_INT);
            }
        }
    }

    private byte[] readSupportedCpuid() {
        long entry = KvmAbi.CPUID_ENTRY2.byteSize();
        try (Arena arena = Arena.ofConfined()) {
            for (int n = 64; ; n *= 2) {
                MemorySegment cpuid = arena.allocate(KvmAbi.CPUID2.byteSize() + entry * n, 8);
                cpuid.set(JAVA_INT, 0, n);
                int r = Libc.ioctlRaw(fd.raw(), KvmAbi.KVM_GET_SUPPORTED_CPUID.number(), cpuid);
                if (r == -Errno.E2BIG && n < 4096) continue;
                if (r < 0) throw new SysException("ioctl(KVM_GET_SUPPORTED_CPUID)", -r, fd.describe());
                int count = cpuid.get(JAVA_INT, 0);
                return cpuid.asSlice(0, KvmAbi.CPUID2.byteSize() + entry * count).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
            }
        }
    }

    /** Creates a VM whose RAM is {@code memory}, registered as one memory slot per region. */
    public Vm createVm(GuestMemory memory) {
        Fd vmFd = new Fd(fd.ioctl(KvmAbi.KVM_CREATE_VM, 0L), "kvm-vm");
        try {
            return new Vm(this, vmFd, memory);
        } catch (RuntimeException e) {
            vmFd.close();
            throw e;
        }
    }

    Fd fd() {
        return fd;
    }

    @Override
    public void close() {
        fd.close();
    }
}
