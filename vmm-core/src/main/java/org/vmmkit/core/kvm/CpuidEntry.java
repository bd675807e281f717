package org.vmmkit.core.kvm;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.kvm.abi.KvmAbi;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;

/**
 * One CPUID leaf (and subleaf) as KVM lists it in {@code struct kvm_cpuid_entry2}: what a guest's CPUID
 * instruction returns for {@code function} (EAX) and {@code index} (ECX).
 */
public record CpuidEntry(int function, int index, int eax, int ebx, int ecx, int edx) {
    private static final long ENTRY = KvmAbi.CPUID_ENTRY2.byteSize(), HEADER = KvmAbi.off(KvmAbi.CPUID2, "entries");

    /**
     * The entries of a {@code struct kvm_cpuid2} as KVM_GET_SUPPORTED_CPUID and KVM_GET_CPUID2 fill it
     * (what {@code Kvm} keeps); refuses bytes whose {@code nent} does not match their length.
     */
    public static List<CpuidEntry> fromCpuid2(byte[] cpuid2) {
        if (cpuid2.length < HEADER) throw new IllegalArgumentException("kvm_cpuid2 of " + cpuid2.length + " bytes: shorter than its header");
        MemorySegment s = MemorySegment.ofArray(cpuid2);
        long nent = Integer.toUnsignedLong(s.get(JAVA_INT_UNALIGNED, KvmAbi.off(KvmAbi.CPUID2, "nent")));
        if (HEADER + nent * ENTRY != cpuid2.length) {
            throw new IllegalArgumentException("kvm_cpuid2 says nent " + nent + " (" + (HEADER + nent * ENTRY) + " bytes) in " + cpuid2.length + " bytes");
        }
        List<CpuidEntry> out = new ArrayList<>((int) nent);
        for (long i = 0; i < nent; i++) {
            long at = HEADER + i * ENTRY;
            out.add(new CpuidEntry(field(s, at, "function"), field(s, at, "index"), field(s, at, "eax"), field(s, at, "ebx"),
                    field(s, at, "ecx"), field(s, at, "edx")));
        }
        return List.copyOf(out);
    }

    private static int field(MemorySegment s, long entryAt, String name) {
        return s.get(JAVA_INT_UNALIGNED, entryAt + KvmAbi.off(KvmAbi.CPUID_ENTRY2, name));
    }

    /** A register by its name: {@code eax}, {@code ebx}, {@code ecx}, {@code edx}. */
    public int register(String name) {
        return switch (name) {
            case "eax" -> eax;
            case "ebx" -> ebx;
            case "ecx" -> ecx;
            case "edx" -> edx;
            default -> throw new IllegalArgumentException("no CPUID register " + name);
        };
    }

    @Override
    public String toString() {
        return String.format("CpuidEntry[0x%x.%d eax=%08x ebx=%08x ecx=%08x edx=%08x]", function, index, eax, ebx, ecx, edx);
    }
}
