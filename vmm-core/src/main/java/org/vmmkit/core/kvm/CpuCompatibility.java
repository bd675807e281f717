package org.vmmkit.core.kvm;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Whether a destination host can give a migrated guest the CPU it had: every CPUID feature bit the guest was
 * shown must be one the destination's KVM supports (KVM_GET_SUPPORTED_CPUID), XSAVE state must be laid out
 * the same (KVM_SET_XSAVE reads it in the host's layout), and the TSC must tick at the guest's rate. Pure
 * logic over the entries; the VMM reads them from KVM on each side and refuses in setup with what this says.
 *
 * <p>Only feature-flag registers are compared: leaf 0x1 ecx/edx, 0x7.0 ebx/ecx/edx, 0x7.1 eax, 0xD.0 eax/edx
 * (the XCR0 components), 0xD.1 eax/ecx/edx, 0x40000001 eax (KVM's paravirtual features), 0x80000001 ecx/edx,
 * 0x80000007 edx, 0x80000008 ebx. Identification and topology (vendor, family/model, APIC ids, cache and
 * core counts, address sizes) are the VMM's to present and are not compared. Not compared either, because
 * they are not host capabilities: OSXSAVE (0x1 ecx 27) and OSPKE (0x7.0 ecx 4) mirror the guest's CR4 and
 * KVM reports them as 0; the hypervisor bit (0x1 ecx 31) is the VMM's to set; TSC-deadline (0x1 ecx 24) is
 * reported as 0 by KVM_GET_SUPPORTED_CPUID and offered through KVM_CAP_TSC_DEADLINE_TIMER instead
 * ({@link #withTscDeadline}).
 */
public final class CpuCompatibility {
    private CpuCompatibility() {}

    /** QEMU's tolerance for a TSC frequency that differs without scaling: 250 parts per million. */
    public static final long TSC_TOLERANCE_PPM = 250;

    private static final int OSXSAVE = 1 << 27, HYPERVISOR = 1 << 31, TSC_DEADLINE = 1 << 24, OSPKE = 1 << 4;

    /** A register of a leaf whose bits are features, with the bits not to compare and names for some bits. */
    private record FeatureRegister(int function, int index, boolean indexed, String register, int ignored, Map<Integer, String> names) {
        String leaf() {
            return indexed ? String.format("leaf 0x%X.%d", function, index) : String.format("leaf 0x%X", function);
        }
    }

    private static final List<FeatureRegister> FEATURES = List.of(
            new FeatureRegister(0x1, 0, false, "ecx", OSXSAVE | HYPERVISOR, Map.ofEntries(Map.entry(0, "SSE3"), Map.entry(1, "PCLMULQDQ"),
                    Map.entry(9, "SSSE3"), Map.entry(12, "FMA"), Map.entry(13, "CMPXCHG16B"), Map.entry(19, "SSE4.1"),
                    Map.entry(20, "SSE4.2"), Map.entry(21, "x2APIC"), Map.entry(22, "MOVBE"), Map.entry(23, "POPCNT"),
                    Map.entry(24, "TSC-deadline"), Map.entry(25, "AES"), Map.entry(26, "XSAVE"), Map.entry(28, "AVX"),
                    Map.entry(29, "F16C"), Map.entry(30, "RDRAND"))),
            new FeatureRegister(0x1, 0, false, "edx", 0, Map.ofEntries(Map.entry(0, "FPU"), Map.entry(4, "TSC"), Map.entry(5, "MSR"),
                    Map.entry(6, "PAE"), Map.entry(8, "CX8"), Map.entry(9, "APIC"), Map.entry(11, "SEP"), Map.entry(12, "MTRR"),
                    Map.entry(13, "PGE"), Map.entry(15, "CMOV"), Map.entry(16, "PAT"), Map.entry(19, "CLFLUSH"), Map.entry(23, "MMX"),
                    Map.entry(24, "FXSR"), Map.entry(25, "SSE"), Map.entry(26, "SSE2"))),
            new FeatureRegister(0x7, 0, true, "ebx", 0, Map.ofEntries(Map.entry(0, "FSGSBASE"), Map.entry(3, "BMI1"), Map.entry(5, "AVX2"),
                    Map.entry(7, "SMEP"), Map.entry(8, "BMI2"), Map.entry(9, "ERMS"), Map.entry(10, "INVPCID"), Map.entry(16, "AVX512F"),
                    Map.entry(17, "AVX512DQ"), Map.entry(18, "RDSEED"), Map.entry(19, "ADX"), Map.entry(20, "SMAP"),
                    Map.entry(21, "AVX512IFMA"), Map.entry(23, "CLFLUSHOPT"), Map.entry(24, "CLWB"), Map.entry(28, "AVX512CD"),
                    Map.entry(29, "SHA"), Map.entry(30, "AVX512BW"), Map.entry(31, "AVX512VL"))),
            new FeatureRegister(0x7, 0, true, "ecx", OSPKE, Map.ofEntries(Map.entry(1, "AVX512VBMI"), Map.entry(2, "UMIP"), Map.entry(3, "PKU"),
                    Map.entry(6, "AVX512VBMI2"), Map.entry(8, "GFNI"), Map.entry(9, "VAES"), Map.entry(10, "VPCLMULQDQ"),
                    Map.entry(11, "AVX512VNNI"), Map.entry(12, "AVX512BITALG"), Map.entry(14, "AVX512VPOPCNTDQ"), Map.entry(16, "LA57"),
                    Map.entry(22, "RDPID"))),
            new FeatureRegister(0x7, 0, true, "edx", 0, Map.ofEntries(Map.entry(4, "FSRM"), Map.entry(8, "AVX512VP2INTERSECT"),
                    Map.entry(10, "MD_CLEAR"), Map.entry(14, "SERIALIZE"), Map.entry(22, "AMX-BF16"), Map.entry(24, "AMX-TILE"),
                    Map.entry(25, "AMX-INT8"), Map.entry(26, "SPEC_CTRL"), Map.entry(27, "STIBP"), Map.entry(29, "ARCH_CAPABILITIES"),
                    Map.entry(31, "SSBD"))),
            new FeatureRegister(0x7, 1, true, "eax", 0, Map.of(4, "AVX-VNNI", 5, "AVX512_BF16")),
            new FeatureRegister(0xD, 0, true, "eax", 0, Map.ofEntries(Map.entry(0, "x87 state"), Map.entry(1, "SSE state"),
                    Map.entry(2, "AVX state"), Map.entry(3, "MPX BNDREGS"), Map.entry(4, "MPX BNDCSR"), Map.entry(5, "AVX-512 opmask"),
                    Map.entry(6, "AVX-512 ZMM_Hi256"), Map.entry(7, "AVX-512 Hi16_ZMM"), Map.entry(9, "PKRU state"),
                    Map.entry(17, "AMX TILECFG"), Map.entry(18, "AMX TILEDATA"))),
            new FeatureRegister(0xD, 0, true, "edx", 0, Map.of()),
            new FeatureRegister(0xD, 1, true, "eax", 0, Map.of(0, "XSAVEOPT", 1, "XSAVEC", 2, "XGETBV_ECX1", 3, "XSAVES", 4, "XFD")),
            new FeatureRegister(0xD, 1, true, "ecx", 0, Map.of()),
            new FeatureRegister(0xD, 1, true, "edx", 0, Map.of()),
            new FeatureRegister(0x40000001, 0, false, "eax", 0, Map.of(0, "KVM_CLOCKSOURCE", 3, "KVM_CLOCKSOURCE2", 4, "KVM_ASYNC_PF",
                    5, "KVM_STEAL_TIME", 6, "KVM_PV_EOI", 7, "KVM_PV_UNHALT", 24, "KVM_CLOCKSOURCE_STABLE")),
            new FeatureRegister(0x80000001, 0, false, "ecx", 0, Map.of(0, "LAHF_LM", 5, "LZCNT", 6, "SSE4A", 8, "PREFETCHW")),
            new FeatureRegister(0x80000001, 0, false, "edx", 0, Map.of(11, "SYSCALL", 20, "NX", 26, "1GB pages", 27, "RDTSCP", 29, "LM")),
            new FeatureRegister(0x80000007, 0, false, "edx", 0, Map.of(8, "invariant TSC")),
            new FeatureRegister(0x80000008, 0, false, "ebx", 0, Map.of(0, "CLZERO", 9, "WBNOINVD")));

    /**
     * What the destination cannot give a guest that saw {@code source} (its vCPU's KVM_GET_CPUID2), where the
     * destination's KVM supports {@code destination}: one line per register with missing bits ("leaf 0x7.0 ebx
     * bit 5 (AVX2)"), and one per XSAVE component laid out differently. Empty: compatible.
     */
    public static List<String> cpuidDifferences(List<CpuidEntry> source, List<CpuidEntry> destination) {
        List<String> out = new ArrayList<>();
        for (FeatureRegister f : FEATURES) {
            int seen = find(source, f.function(), f.index(), f.indexed()).map(e -> e.register(f.register())).orElse(0);
            int offered = find(destination, f.function(), f.index(), f.indexed()).map(e -> e.register(f.register())).orElse(0);
            int missing = seen & ~offered & ~f.ignored();
            if (missing != 0) out.add(f.leaf() + " " + f.register() + " " + bits(missing, f.names()));
        }
        xsaveLayout(source, destination, out);
        return out;
    }

    /** Throws, naming every difference, unless {@link #cpuidDifferences} is empty. */
    public static void requireCpuid(List<CpuidEntry> source, List<CpuidEntry> destination) {
        List<String> d = cpuidDifferences(source, destination);
        if (!d.isEmpty()) {
            throw new IllegalStateException("the destination's KVM cannot give the guest the CPU it has: " + String.join("; ", d));
        }
    }

    /**
     * The destination's supported entries as a VMM offers them: with TSC-deadline (leaf 0x1 ecx bit 24) set
     * where KVM_CHECK_EXTENSION(KVM_CAP_TSC_DEADLINE_TIMER) says the in-kernel LAPIC has it.
     */
    public static List<CpuidEntry> withTscDeadline(List<CpuidEntry> supported, boolean tscDeadlineTimer) {
        if (!tscDeadlineTimer) return supported;
        List<CpuidEntry> out = new ArrayList<>(supported.size());
        for (CpuidEntry e : supported) {
            out.add(e.function() == 0x1 ? new CpuidEntry(e.function(), e.index(), e.eax(), e.ebx(), e.ecx() | TSC_DEADLINE, e.edx()) : e);
        }
        return List.copyOf(out);
    }

    /**
     * Why a guest whose TSC ran at {@code sourceKhz} cannot run at the destination's {@code destinationKhz}, or
     * empty: equal within {@code tolerancePpm}, or the destination can scale its vCPUs' TSC (KVM_CAP_TSC_CONTROL,
     * then KVM_SET_TSC_KHZ to the source's rate).
     */
    public static Optional<String> tscDifference(long sourceKhz, long destinationKhz, boolean destinationCanScale, long tolerancePpm) {
        if (sourceKhz <= 0 || destinationKhz <= 0) {
            throw new IllegalArgumentException("TSC frequencies must be positive: source " + sourceKhz + " kHz, destination " + destinationKhz + " kHz");
        }
        long diff = Math.abs(sourceKhz - destinationKhz);
        if (diff * 1_000_000L <= tolerancePpm * sourceKhz || destinationCanScale) return Optional.empty();
        return Optional.of("the guest's TSC runs at " + sourceKhz + " kHz on the source and would run at " + destinationKhz
                + " kHz on the destination (" + (diff * 1_000_000L / sourceKhz) + " ppm apart, more than " + tolerancePpm
                + "), and the destination's KVM cannot scale the TSC (no KVM_CAP_TSC_CONTROL)");
    }

    /** Each XSAVE component the guest saw (0xD.0 edx:eax, from 2 on) must have the same size and offset (0xD.i eax, ebx). */
    private static void xsaveLayout(List<CpuidEntry> source, List<CpuidEntry> destination, List<String> out) {
        long components = find(source, 0xD, 0, true).map(e -> Integer.toUnsignedLong(e.edx()) << 32 | Integer.toUnsignedLong(e.eax())).orElse(0L);
        for (int i = 2; i < 64; i++) {
            if ((components & (1L << i)) == 0) continue;
            Optional<CpuidEntry> s = find(source, 0xD, i, true), d = find(destination, 0xD, i, true);
            if (s.isEmpty() || d.isEmpty()) continue; // a missing component is reported as a missing bit of 0xD.0
            if (s.get().eax() != d.get().eax() || s.get().ebx() != d.get().ebx()) {
                out.add(String.format("leaf 0xD.%d eax/ebx: XSAVE component %d is %d bytes at offset %d on the source, %d bytes at offset %d"
                        + " on the destination (KVM_SET_XSAVE would misplace it)", i, i, s.get().eax(), s.get().ebx(), d.get().eax(), d.get().ebx()));
            }
        }
    }

    private static Optional<CpuidEntry> find(List<CpuidEntry> entries, int function, int index, boolean indexed) {
        for (CpuidEntry e : entries) if (e.function() == function && (!indexed || e.index() == index)) return Optional.of(e);
        return Optional.empty();
    }

    private static String bits(int mask, Map<Integer, String> names) {
        List<String> parts = new ArrayList<>();
        for (int b = 0; b < 32; b++) {
            if ((mask & (1 << b)) == 0) continue;
            String name = names.get(b);
            parts.add(b + (name == null ? "" : " (" + name + ")"));
        }
        return (parts.size() == 1 ? "bit " : "bits ") + String.join(", ", parts);
    }
}
