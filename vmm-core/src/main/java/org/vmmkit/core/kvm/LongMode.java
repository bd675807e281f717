package org.vmmkit.core.kvm;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * Puts a fresh vCPU straight into 64-bit mode, as a firmware would hand over: a flat GDT, identity
 * paging of the whole guest physical range with 2 MiB pages, and the control registers and EFER for
 * long mode (the first 4 GiB always, for MMIO below 4 GiB). The page-table entries carry their accessed and dirty bits already, so the CPU never
 * writes the page tables: the guest's own writes are the only ones it makes.
 */
public final class LongMode {
    private LongMode() {}

    public static final long GDT = 0x500, TSS = 0x600, PML4 = 0x10000, PDPT = 0x11000, PD = 0x12000;
    /** Lowest address of the area free for guest programs and data. */
    public static final long FREE_FROM = 0x100000;
    private static final long MAX_PAGE_DIRECTORIES = (FREE_FROM - PD) / 4096;

    private static final long PTE_PRESENT = 1, PTE_WRITE = 2, PTE_ACCESSED = 0x20, PTE_DIRTY = 0x40, PTE_HUGE = 0x80;
    private static final long CR0_PE = 1, CR0_MP = 2, CR0_ET = 0x10, CR0_NE = 0x20, CR0_WP = 0x10000, CR0_PG = 1L << 31;
    private static final long CR4_PAE = 0x20, CR4_OSFXSR = 0x200, CR4_OSXMMEXCPT = 0x400;
    private static final long EFER_LME = 0x100, EFER_LMA = 0x400;

    /** Writes the GDT and the identity-mapping page tables for all of {@code memory} into it. */
    public static void buildTables(GuestMemory memory) {
        long top = 0;
        for (GuestRegion r : memory.regions()) top = Math.max(top, r.end());
        // At least the first 4 GiB, so the MMIO hole below 4 GiB is reachable however small the RAM.
        long gibs = Math.max(4, (top + (1L << 30) - 1) >>> 30);
        if (gibs > MAX_PAGE_DIRECTORIES) {
            throw new IllegalArgumentException("the built-in boot maps at most " + MAX_PAGE_DIRECTORIES + " GiB, memory ends at 0x"
                    + Long.toHexString(top));
        }
        memory.writeLong(GDT, 0);
        memory.writeLong(GDT + 8, 0x00AF9B000000FFFFL);  // 64-bit code, DPL 0
        memory.writeLong(GDT + 16, 0x00CF93000000FFFFL); // flat data
        memory.writeLong(PML4, PDPT | PTE_PRESENT | PTE_WRITE | PTE_ACCESSED);
        for (long g = 0; g < gibs; g++) {
            long pd = PD + g * 4096;
            memory.writeLong(PDPT + g * 8, pd | PTE_PRESENT | PTE_WRITE | PTE_ACCESSED);
            for (long e = 0; e < 512; e++) {
                long address = (g << 30) | (e << 21);
                memory.writeLong(pd + e * 8, address | PTE_PRESENT | PTE_WRITE | PTE_ACCESSED | PTE_DIRTY | PTE_HUGE);
            }
        }
    }

    /** Sets the vCPU's special and general registers to start executing 64-bit code at {@code rip}. */
    public static void boot(Vcpu vcpu, long rip, long rsp) {
        byte[] sregsBytes = vcpu.getSregs();
        MemorySegment s = MemorySegment.ofArray(sregsBytes);
        segment(s, "cs", 0x08, 0xB, 1, 0);
        for (String data : new String[] {"ds", "es", "fs", "gs", "ss"}) segment(s, data, 0x10, 0x3, 0, 1);
        segment(s, "tr", 0x18, 0xB, 0, 0);
        set(s, KvmAbi.off(KvmAbi.SREGS, "tr", "base"), TSS);
        setInt(s, KvmAbi.off(KvmAbi.SREGS, "tr", "limit"), 0x67);
        set(s, KvmAbi.off(KvmAbi.SREGS, "gdt", "base"), GDT);
        setShort(s, KvmAbi.off(KvmAbi.SREGS, "gdt", "limit"), (short) 23);
        set(s, KvmAbi.off(KvmAbi.SREGS, "idt", "base"), 0);
        setShort(s, KvmAbi.off(KvmAbi.SREGS, "idt", "limit"), (short) 0);
        set(s, KvmAbi.off(KvmAbi.SREGS, "cr0"), CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG);
        set(s, KvmAbi.off(KvmAbi.SREGS, "cr3"), PML4);
        set(s, KvmAbi.off(KvmAbi.SREGS, "cr4"), CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT);
        set(s, KvmAbi.off(KvmAbi.SREGS, "efer"), EFER_LME | EFER_LMA);
        vcpu.setSregs(sregsBytes);

        byte[] regsBytes = new byte[(int) KvmAbi.REGS.byteSize()];
        MemorySegment r = MemorySegment.ofArray(regsBytes);
        set(r, KvmAbi.off(KvmAbi.REGS, "rflags"), 0x2);
        set(r, KvmAbi.off(KvmAbi.REGS, "rip"), rip);
        set(r, KvmAbi.off(KvmAbi.REGS, "rsp"), rsp);
        vcpu.setRegs(regsBytes);
    }

    private static void segment(MemorySegment s, String name, int selector, int type, int l, int db) {
        long base = KvmAbi.off(KvmAbi.SREGS, name);
        set(s, base + KvmAbi.off(KvmAbi.SEGMENT, "base"), 0);
        setInt(s, base + KvmAbi.off(KvmAbi.SEGMENT, "limit"), 0xFFFFFFFF);
        setShort(s, base + KvmAbi.off(KvmAbi.SEGMENT, "selector"), (short) selector);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "type"), type);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "present"), 1);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "dpl"), 0);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "db"), db);
        // Code and data descriptors have S=1; the TSS (selector 0x18 here) is a system descriptor.
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "s"), selector == 0x18 ? 0 : 1);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "l"), l);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "g"), selector == 0x18 ? 0 : 1);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "avl"), 0);
        setByte(s, base + KvmAbi.off(KvmAbi.SEGMENT, "unusable"), 0);
    }

    private static void set(MemorySegment s, long offset, long v) {
        s.set(JAVA_LONG.withOrder(ByteOrder.nativeOrder()).withByteAlignment(1), offset, v);
    }

    private static void setInt(MemorySegment s, long offset, int v) {
        s.set(JAVA_INT.withOrder(ByteOrder.nativeOrder()).withByteAlignment(1), offset, v);
    }

    private static void setShort(MemorySegment s, long offset, short v) {
        s.set(JAVA_SHORT.withOrder(ByteOrder.nativeOrder()).withByteAlignment(1), offset, v);
    }

    private static void setByte(MemorySegment s, long offset, int v) {
        s.set(JAVA_BYTE, offset, (byte) v);
    }
}
