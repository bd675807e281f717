package org.vmmkit.core.kvm;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.function.UnaryOperator;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.kvm.abi.KvmAbi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CpuCompatibilityTest {
    static final int SSE3 = 1, SSSE3 = 1 << 9, SSE41 = 1 << 19, SSE42 = 1 << 20, X2APIC = 1 << 21, TSC_DEADLINE = 1 << 24,
            XSAVE = 1 << 26, OSXSAVE = 1 << 27, AVX = 1 << 28, HYPERVISOR = 1 << 31;
    static final int AVX2 = 1 << 5, AVX512F = 1 << 16;

    /** A synthetic AVX-512 host: what KVM_GET_SUPPORTED_CPUID might list (identification leaves too). */
    static List<CpuidEntry> avx512Host() {
        return List.of(
                new CpuidEntry(0x0, 0, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69), // GenuineIntel
                new CpuidEntry(0x1, 0, 0x50657, 0x00010800, SSE3 | SSSE3 | SSE41 | SSE42 | X2APIC | XSAVE | AVX, 0x178bfbff),
                new CpuidEntry(0x4, 0, 0x121, 0x1c0003f, 0x3f, 0),
                new CpuidEntry(0x7, 0, 0, AVX2 | AVX512F | 1 << 3 | 1 << 8, 0, 0),
                new CpuidEntry(0xb, 0, 1, 1, 0x100, 0),
                new CpuidEntry(0xd, 0, 0xe7, 0x340, 0xa88, 0),
                new CpuidEntry(0xd, 1, 0xf, 0, 0, 0),
                new CpuidEntry(0xd, 2, 256, 576, 0, 0),
                new CpuidEntry(0xd, 5, 64, 1088, 0, 0),
                new CpuidEntry(0xd, 6, 512, 1152, 0, 0),
                new CpuidEntry(0xd, 7, 1024, 1664, 0, 0),
                new CpuidEntry(0x40000001, 0, 1 | 1 << 3 | 1 << 24, 0, 0, 0),
                new CpuidEntry(0x80000001, 0, 0, 0, 1, 1 << 11 | 1 << 20 | 1 << 27 | 1 << 29),
                new CpuidEntry(0x80000007, 0, 0, 0, 0, 1 << 8));
    }

    /** {@code entries} with the entry for {@code function}.{@code index} replaced (or removed, for null). */
    static List<CpuidEntry> with(List<CpuidEntry> entries, int function, int index, UnaryOperator<CpuidEntry> change) {
        List<CpuidEntry> out = new ArrayList<>();
        for (CpuidEntry e : entries) {
            CpuidEntry next = e.function() == function && e.index() == index ? change.apply(e) : e;
            if (next != null) out.add(next);
        }
        return out;
    }

    @Test
    void theSameHostIsCompatible() {
        assertEquals(List.of(), CpuCompatibility.cpuidDifferences(avx512Host(), avx512Host()));
        CpuCompatibility.requireCpuid(avx512Host(), avx512Host());
    }

    @Test
    void aDestinationWithoutAvx2IsRefusedNamingTheLeafRegisterAndBit() {
        List<CpuidEntry> noAvx2 = with(avx512Host(), 0x7, 0, e -> new CpuidEntry(7, 0, 0, e.ebx() & ~AVX2, 0, 0));
        assertEquals(List.of("leaf 0x7.0 ebx bit 5 (AVX2)"), CpuCompatibility.cpuidDifferences(avx512Host(), noAvx2));
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> CpuCompatibility.requireCpuid(avx512Host(), noAvx2));
        assertEquals("the destination's KVM cannot give the guest the CPU it has: leaf 0x7.0 ebx bit 5 (AVX2)", e.getMessage());
    }

    @Test
    void aDestinationWithoutAvxAndAvx512NamesEveryRegisterAndEveryBit() {
        List<CpuidEntry> avxLess = with(avx512Host(), 0x1, 0, e -> new CpuidEntry(1, 0, e.eax(), e.ebx(), e.ecx() & ~AVX & ~XSAVE, e.edx()));
        avxLess = with(avxLess, 0x7, 0, e -> null); // no leaf 7 at all
        avxLess = with(avxLess, 0xd, 0, e -> new CpuidEntry(0xd, 0, 0x3, 0x240, 0x240, 0));
        assertEquals(List.of("leaf 0x1 ecx bits 26 (XSAVE), 28 (AVX)",
                        "leaf 0x7.0 ebx bits 3 (BMI1), 5 (AVX2), 8 (BMI2), 16 (AVX512F)",
                        "leaf 0xD.0 eax bits 2 (AVX state), 5 (AVX-512 opmask), 6 (AVX-512 ZMM_Hi256), 7 (AVX-512 Hi16_ZMM)"),
                CpuCompatibility.cpuidDifferences(avx512Host(), avxLess));
    }

    @Test
    void identificationTopologyAndGuestControlledBitsAreNotCompared() {
        List<CpuidEntry> guest = with(avx512Host(), 0x0, 0, e -> new CpuidEntry(0, 0, 0x1f, 0x68747541, 0x444d4163, 0x69746e65));
        guest = with(guest, 0x1, 0, e -> new CpuidEntry(1, 0, 0xa20f12, 0x07020800, e.ecx() | OSXSAVE | HYPERVISOR, e.edx()));
        guest = with(guest, 0x4, 0, e -> new CpuidEntry(4, 0, 0x4121, 0x3c0003f, 0x3f, 1));
        guest = with(guest, 0xb, 0, e -> new CpuidEntry(0xb, 0, 2, 4, 0x201, 7));
        guest = with(guest, 0x7, 0, e -> new CpuidEntry(7, 0, 0, e.ebx(), 1 << 4 /* OSPKE */, 0));
        assertEquals(List.of(), CpuCompatibility.cpuidDifferences(guest, avx512Host()));
    }

    @Test
    void tscDeadlineIsOfferedThroughItsCapabilityNotTheSupportedTable() {
        List<CpuidEntry> guest = with(avx512Host(), 0x1, 0, e -> new CpuidEntry(1, 0, e.eax(), e.ebx(), e.ecx() | TSC_DEADLINE, e.edx()));
        assertEquals(List.of("leaf 0x1 ecx bit 24 (TSC-deadline)"), CpuCompatibility.cpuidDifferences(guest, avx512Host()));
        assertEquals(List.of(), CpuCompatibility.cpuidDifferences(guest, CpuCompatibility.withTscDeadline(avx512Host(), true)));
        assertEquals(avx512Host(), CpuCompatibility.withTscDeadline(avx512Host(), false));
    }

    @Test
    void unnamedBitsAreNamedByNumberAndOtherFeatureLeavesAreCompared() {
        List<CpuidEntry> guest = with(avx512Host(), 0x7, 0, e -> new CpuidEntry(7, 0, 0, e.ebx() | 1 << 1, 0, 0));
        assertEquals(List.of("leaf 0x7.0 ebx bit 1"), CpuCompatibility.cpuidDifferences(guest, avx512Host()));
        List<CpuidEntry> noKvmClock2 = with(avx512Host(), 0x40000001, 0, e -> new CpuidEntry(0x40000001, 0, 1, 0, 0, 0));
        List<CpuidEntry> noRdtscp = with(noKvmClock2, 0x80000001, 0, e -> new CpuidEntry(0x80000001, 0, 0, 0, 1, e.edx() & ~(1 << 27)));
        assertEquals(List.of("leaf 0x40000001 eax bits 3 (KVM_CLOCKSOURCE2), 24 (KVM_CLOCKSOURCE_STABLE)", "leaf 0x80000001 edx bit 27 (RDTSCP)"),
                CpuCompatibility.cpuidDifferences(avx512Host(), noRdtscp));
    }

    @Test
    void anXsaveComponentLaidOutElsewhereIsRefusedOnlyIfTheGuestUsesIt() {
        List<CpuidEntry> moved = with(avx512Host(), 0xd, 5, e -> new CpuidEntry(0xd, 5, 64, 1152, 0, 0));
        assertEquals(List.of("leaf 0xD.5 eax/ebx: XSAVE component 5 is 64 bytes at offset 1088 on the source, 64 bytes at offset 1152 on the "
                + "destination (KVM_SET_XSAVE would misplace it)"), CpuCompatibility.cpuidDifferences(avx512Host(), moved));
        // A guest shown only x87, SSE and AVX state does not care where AVX-512 state lives.
        List<CpuidEntry> avxGuest = with(avx512Host(), 0xd, 0, e -> new CpuidEntry(0xd, 0, 0x7, 0x340, 0x340, 0));
        assertEquals(List.of(), CpuCompatibility.cpuidDifferences(avxGuest, moved));
    }

    @Test
    void entriesAreReadFromAKvmCpuid2AndAWrongCountIsRefused() {
        long header = KvmAbi.off(KvmAbi.CPUID2, "entries"), entry = KvmAbi.CPUID_ENTRY2.byteSize();
        MemorySegment s = MemorySegment.ofArray(new byte[(int) (header + 2 * entry)]);
        s.set(ValueLayout.JAVA_INT_UNALIGNED, 0, 2);
        int[][] values = {{0x7, 0, 0, AVX2, 2, 3}, {0xd, 1, 0xf, 4, 5, 6}};
        String[] names = {"function", "index", "eax", "ebx", "ecx", "edx"};
        for (int i = 0; i < 2; i++) {
            for (int f = 0; f < names.length; f++) {
                s.set(ValueLayout.JAVA_INT_UNALIGNED, header + i * entry + KvmAbi.off(KvmAbi.CPUID_ENTRY2, names[f]), values[i][f]);
            }
        }
        byte[] bytes = s.toArray(ValueLayout.JAVA_BYTE);
        assertEquals(List.of(new CpuidEntry(0x7, 0, 0, AVX2, 2, 3), new CpuidEntry(0xd, 1, 0xf, 4, 5, 6)), CpuidEntry.fromCpuid2(bytes));
        byte[] lying = bytes.clone();
        lying[0] = 3;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CpuidEntry.fromCpuid2(lying));
        assertTrue(e.getMessage().contains("nent 3"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> CpuidEntry.fromCpuid2(new byte[4]));
    }

    @Test
    void aTscFrequencyBeyondTheToleranceIsRefusedNamingBothUnlessTheDestinationScales() {
        long ppm = CpuCompatibility.TSC_TOLERANCE_PPM;
        assertEquals(Optional.empty(), CpuCompatibility.tscDifference(2_999_999, 2_999_999, false, ppm));
        assertEquals(Optional.empty(), CpuCompatibility.tscDifference(1_000_000, 1_000_250, false, ppm), "250 ppm: within");
        Optional<String> just = CpuCompatibility.tscDifference(1_000_000, 1_000_251, false, ppm);
        assertTrue(just.isPresent(), "251 ppm: beyond");
        Optional<String> far = CpuCompatibility.tscDifference(3_000_000, 2_400_000, false, ppm);
        assertEquals(Optional.of("the guest's TSC runs at 3000000 kHz on the source and would run at 2400000 kHz on the destination "
                + "(200000 ppm apart, more than 250), and the destination's KVM cannot scale the TSC (no KVM_CAP_TSC_CONTROL)"), far);
        assertEquals(Optional.empty(), CpuCompatibility.tscDifference(3_000_000, 2_400_000, true, ppm), "KVM_SET_TSC_KHZ makes up the difference");
        assertThrows(IllegalArgumentException.class, () -> CpuCompatibility.tscDifference(0, 2_400_000, true, ppm));
    }
}
