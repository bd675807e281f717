package org.vmmkit.core.kvm.abi;

import java.lang.foreign.GroupLayout;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.VarHandle;

import org.vmmkit.core.sys.Ioctl;

import static java.lang.foreign.MemoryLayout.PathElement.groupElement;
import static java.lang.foreign.MemoryLayout.paddingLayout;
import static java.lang.foreign.MemoryLayout.sequenceLayout;
import static java.lang.foreign.MemoryLayout.structLayout;
import static java.lang.foreign.MemoryLayout.unionLayout;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The KVM kernel ABI for x86_64: struct layouts, ioctl numbers, capabilities and exit reasons from
 * {@code linux/kvm.h} and {@code asm/kvm.h}. Nothing but data; every layout and number here is checked
 * against the installed headers by {@code KvmAbiTest}.
 */
public final class KvmAbi {
    private KvmAbi() {}

    public static final int API_VERSION = 12;
    private static final int KVMIO = 0xAE;

    // Capabilities (KVM_CHECK_EXTENSION).
    public static final int CAP_USER_MEMORY = 3, CAP_SET_TSS_ADDR = 4, CAP_EXT_CPUID = 7, CAP_NR_MEMSLOTS = 10,
            CAP_SYNC_MMU = 16, CAP_IMMEDIATE_EXIT = 136, CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168,
            CAP_DIRTY_LOG_RING = 192;

    // Exit reasons (kvm_run.exit_reason).
    public static final int EXIT_UNKNOWN = 0, EXIT_EXCEPTION = 1, EXIT_IO = 2, EXIT_HYPERCALL = 3, EXIT_DEBUG = 4,
            EXIT_HLT = 5, EXIT_MMIO = 6, EXIT_IRQ_WINDOW_OPEN = 7, EXIT_SHUTDOWN = 8, EXIT_FAIL_ENTRY = 9,
            EXIT_INTR = 10, EXIT_INTERNAL_ERROR = 17, EXIT_SYSTEM_EVENT = 24;
    public static final int EXIT_IO_IN = 0, EXIT_IO_OUT = 1;

    // KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) flags.
    public static final int DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1, DIRTY_LOG_INITIALLY_SET = 2;

    // Memory slot flags.
    public static final int MEM_LOG_DIRTY_PAGES = 1, MEM_READONLY = 2;

    public static final StructLayout USERSPACE_MEMORY_REGION = structLayout(
            JAVA_INT.withName("slot"),
            JAVA_INT.withName("flags"),
            JAVA_LONG.withName("guest_phys_addr"),
            JAVA_LONG.withName("memory_size"),
            JAVA_LONG.withName("userspace_addr")).withName("kvm_userspace_memory_region");

    public static final StructLayout REGS = structLayout(
            JAVA_LONG.withName("rax"), JAVA_LONG.withName("rbx"), JAVA_LONG.withName("rcx"), JAVA_LONG.withName("rdx"),
            JAVA_LONG.withName("rsi"), JAVA_LONG.withName("rdi"), JAVA_LONG.withName("rsp"), JAVA_LONG.withName("rbp"),
            JAVA_LONG.withName("r8"), JAVA_LONG.withName("r9"), JAVA_LONG.withName("r10"), JAVA_LONG.withName("r11"),
            JAVA_LONG.withName("r12"), JAVA_LONG.withName("r13"), JAVA_LONG.withName("r14"), JAVA_LONG.withName("r15"),
            JAVA_LONG.withName("rip"), JAVA_LONG.withName("rflags")).withName("kvm_regs");

    public static final StructLayout SEGMENT = structLayout(
            JAVA_LONG.withName("base"),
            JAVA_INT.withName("limit"),
            JAVA_SHORT.withName("selector"),
            JAVA_BYTE.withName("type"),
            JAVA_BYTE.withName("present"),
            JAVA_BYTE.withName("dpl"),
            JAVA_BYTE.withName("db"),
            JAVA_BYTE.withName("s"),
            JAVA_BYTE.withName("l"),
            JAVA_BYTE.withName("g"),
            JAVA_BYTE.withName("avl"),
            JAVA_BYTE.withName("unusable"),
            JAVA_BYTE.withName("padding")).withName("kvm_segment");

    public static final StructLayout DTABLE = structLayout(
            JAVA_LONG.withName("base"),
            JAVA_SHORT.withName("limit"),
            sequenceLayout(3, JAVA_SHORT).withName("padding")).withName("kvm_dtable");

    public static final StructLayout SREGS = structLayout(
            SEGMENT.withName("cs"), SEGMENT.withName("ds"), SEGMENT.withName("es"), SEGMENT.withName("fs"),
            SEGMENT.withName("gs"), SEGMENT.withName("ss"), SEGMENT.withName("tr"), SEGMENT.withName("ldt"),
            DTABLE.withName("gdt"), DTABLE.withName("idt"),
            JAVA_LONG.withName("cr0"), JAVA_LONG.withName("cr2"), JAVA_LONG.withName("cr3"), JAVA_LONG.withName("cr4"),
            JAVA_LONG.withName("cr8"), JAVA_LONG.withName("efer"), JAVA_LONG.withName("apic_base"),
            sequenceLayout(4, JAVA_LONG).withName("interrupt_bitmap")).withName("kvm_sregs");

    public static final StructLayout FPU = structLayout(
            sequenceLayout(8, sequenceLayout(16, JAVA_BYTE)).withName("fpr"),
            JAVA_SHORT.withName("fcw"),
            JAVA_SHORT.withName("fsw"),
            JAVA_BYTE.withName("ftwx"),
            JAVA_BYTE.withName("pad1"),
            JAVA_SHORT.withName("last_opcode"),
            JAVA_LONG.withName("last_ip"),
            JAVA_LONG.withName("last_dp"),
            sequenceLayout(16, sequenceLayout(16, JAVA_BYTE)).withName("xmm"),
            JAVA_INT.withName("mxcsr"),
            JAVA_INT.withName("pad2")).withName("kvm_fpu");

    public static final StructLayout MSR_ENTRY = structLayout(
            JAVA_INT.withName("index"),
            JAVA_INT.withName("reserved"),
            JAVA_LONG.withName("data")).withName("kvm_msr_entry");

    /** {@code struct kvm_msrs}: a header followed by {@code nmsrs} entries. */
    public static final StructLayout MSRS = structLayout(
            JAVA_INT.withName("nmsrs"),
            JAVA_INT.withName("pad"),
            sequenceLayout(0, MSR_ENTRY).withName("entries")).withName("kvm_msrs");

    /** {@code struct kvm_msr_list}: a count followed by that many MSR indices. */
    public static final StructLayout MSR_LIST = structLayout(
            JAVA_INT.withName("nmsrs"),
            sequenceLayout(0, JAVA_INT).withName("indices")).withName("kvm_msr_list");

    public static final StructLayout CPUID_ENTRY2 = structLayout(
            JAVA_INT.withName("function"), JAVA_INT.withName("index"), JAVA_INT.withName("flags"),
            JAVA_INT.withName("eax"), JAVA_INT.withName("ebx"), JAVA_INT.withName("ecx"), JAVA_INT.withName("edx"),
            sequenceLayout(3, JAVA_INT).withName("padding")).withName("kvm_cpuid_entry2");

    public static final StructLayout CPUID2 = structLayout(
            JAVA_INT.withName("nent"),
            JAVA_INT.withName("padding"),
            sequenceLayout(0, CPUID_ENTRY2).withName("entries")).withName("kvm_cpuid2");

    public static final StructLayout SIGNAL_MASK = structLayout(
            JAVA_INT.withName("len"),
            sequenceLayout(0, JAVA_BYTE).withName("sigset")).withName("kvm_signal_mask");

    /** {@code struct kvm_vcpu_events}: pending exceptions, interrupts, NMI, SMM; saved and restored whole. */
    public static final long VCPU_EVENTS_SIZE = 64;

    public static final StructLayout DIRTY_LOG = structLayout(
            JAVA_INT.withName("slot"),
            JAVA_INT.withName("padding1"),
            ValueLayout.ADDRESS.withName("dirty_bitmap")).withName("kvm_dirty_log");

    public static final StructLayout CLEAR_DIRTY_LOG = structLayout(
            JAVA_INT.withName("slot"),
            JAVA_INT.withName("num_pages"),
            JAVA_LONG.withName("first_page"),
            ValueLayout.ADDRESS.withName("dirty_bitmap")).withName("kvm_clear_dirty_log");

    public static final StructLayout ENABLE_CAP = structLayout(
            JAVA_INT.withName("cap"),
            JAVA_INT.withName("flags"),
            sequenceLayout(4, JAVA_LONG).withName("args"),
            sequenceLayout(64, JAVA_BYTE).withName("pad")).withName("kvm_enable_cap");

    private static final StructLayout RUN_IO = structLayout(
            JAVA_BYTE.withName("direction"),
            JAVA_BYTE.withName("size"),
            JAVA_SHORT.withName("port"),
            JAVA_INT.withName("count"),
            JAVA_LONG.withName("data_offset"));
    private static final StructLayout RUN_MMIO = structLayout(
            JAVA_LONG.withName("phys_addr"),
            sequenceLayout(8, JAVA_BYTE).withName("data"),
            JAVA_INT.withName("len"),
            JAVA_BYTE.withName("is_write"),
            paddingLayout(3));
    private static final StructLayout RUN_FAIL_ENTRY = structLayout(
            JAVA_LONG.withName("hardware_entry_failure_reason"),
            JAVA_INT.withName("cpu"),
            paddingLayout(4));
    private static final StructLayout RUN_INTERNAL = structLayout(
            JAVA_INT.withName("suberror"),
            JAVA_INT.withName("ndata"),
            sequenceLayout(16, JAVA_LONG).withName("data"));
    private static final StructLayout RUN_HW = structLayout(JAVA_LONG.withName("hardware_exit_reason"));
    private static final StructLayout RUN_SYSTEM_EVENT = structLayout(
            JAVA_INT.withName("type"),
            JAVA_INT.withName("ndata"),
            sequenceLayout(16, JAVA_LONG).withName("data"));

    /** The shared {@code struct kvm_run} page of a vCPU, up to and including the sync-regs union. */
    public static final StructLayout RUN = structLayout(
            JAVA_BYTE.withName("request_interrupt_window"),
            JAVA_BYTE.withName("immediate_exit"),
            sequenceLayout(6, JAVA_BYTE).withName("padding1"),
            JAVA_INT.withName("exit_reason"),
            JAVA_BYTE.withName("ready_for_interrupt_injection"),
            JAVA_BYTE.withName("if_flag"),
            JAVA_SHORT.withName("flags"),
            JAVA_LONG.withName("cr8"),
            JAVA_LONG.withName("apic_base"),
            unionLayout(
                    RUN_HW.withName("hw"),
                    RUN_FAIL_ENTRY.withName("fail_entry"),
                    RUN_IO.withName("io"),
                    RUN_MMIO.withName("mmio"),
                    RUN_INTERNAL.withName("internal"),
                    RUN_SYSTEM_EVENT.withName("system_event"),
                    sequenceLayout(256, JAVA_BYTE).withName("padding")).withName(""),
            JAVA_LONG.withName("kvm_valid_regs"),
            JAVA_LONG.withName("kvm_dirty_regs"),
            sequenceLayout(2048, JAVA_BYTE).withName("s")).withName("kvm_run");

    /** Offsets into {@code kvm_run}, resolved once. The exit union is anonymous in C. */
    public static final long RUN_IMMEDIATE_EXIT = off(RUN, "immediate_exit");
    public static final long RUN_EXIT_REASON = off(RUN, "exit_reason");
    private static final long RUN_UNION = off(RUN, "");
    public static final long RUN_IO_DIRECTION = RUN_UNION + off(RUN_IO, "direction");
    public static final long RUN_IO_SIZE = RUN_UNION + off(RUN_IO, "size");
    public static final long RUN_IO_PORT = RUN_UNION + off(RUN_IO, "port");
    public static final long RUN_IO_COUNT = RUN_UNION + off(RUN_IO, "count");
    public static final long RUN_IO_DATA_OFFSET = RUN_UNION + off(RUN_IO, "data_offset");
    public static final long RUN_MMIO_PHYS_ADDR = RUN_UNION + off(RUN_MMIO, "phys_addr");
    public static final long RUN_MMIO_DATA = RUN_UNION + off(RUN_MMIO, "data");
    public static final long RUN_MMIO_LEN = RUN_UNION + off(RUN_MMIO, "len");
    public static final long RUN_MMIO_IS_WRITE = RUN_UNION + off(RUN_MMIO, "is_write");
    public static final long RUN_FAIL_ENTRY_REASON = RUN_UNION + off(RUN_FAIL_ENTRY, "hardware_entry_failure_reason");
    public static final long RUN_FAIL_ENTRY_CPU = RUN_UNION + off(RUN_FAIL_ENTRY, "cpu");
    public static final long RUN_INTERNAL_SUBERROR = RUN_UNION + off(RUN_INTERNAL, "suberror");
    public static final long RUN_INTERNAL_NDATA = RUN_UNION + off(RUN_INTERNAL, "ndata");
    public static final long RUN_INTERNAL_DATA = RUN_UNION + off(RUN_INTERNAL, "data");
    public static final long RUN_HW_EXIT_REASON = RUN_UNION + off(RUN_HW, "hardware_exit_reason");

    /** Offsets into the dirty-log ioctl arguments, resolved once (the sync path allocates nothing). */
    public static final long DIRTY_LOG_SLOT = off(DIRTY_LOG, "slot"), DIRTY_LOG_BITMAP = off(DIRTY_LOG, "dirty_bitmap"),
            CLEAR_DIRTY_LOG_SLOT = off(CLEAR_DIRTY_LOG, "slot"), CLEAR_DIRTY_LOG_NUM_PAGES = off(CLEAR_DIRTY_LOG, "num_pages"),
            CLEAR_DIRTY_LOG_FIRST_PAGE = off(CLEAR_DIRTY_LOG, "first_page"),
            CLEAR_DIRTY_LOG_BITMAP = off(CLEAR_DIRTY_LOG, "dirty_bitmap");

    /** The exit union's member layouts, for the header check ({@code offsetof(struct kvm_run, io.port)}). */
    public static GroupLayout runExitUnion() {
        return (GroupLayout) RUN.select(groupElement(""));
    }

    public static long off(GroupLayout layout, String... path) {
        MemoryLayout.PathElement[] elements = new MemoryLayout.PathElement[path.length];
        for (int i = 0; i < path.length; i++) elements[i] = groupElement(path[i]);
        return layout.byteOffset(elements);
    }

    public static VarHandle field(GroupLayout layout, String... path) {
        MemoryLayout.PathElement[] elements = new MemoryLayout.PathElement[path.length];
        for (int i = 0; i < path.length; i++) elements[i] = groupElement(path[i]);
        return layout.varHandle(elements);
    }

    // ioctls on /dev/kvm.
    public static final Ioctl KVM_GET_API_VERSION = Ioctl.io("KVM_GET_API_VERSION", KVMIO, 0x00);
    public static final Ioctl KVM_CREATE_VM = Ioctl.io("KVM_CREATE_VM", KVMIO, 0x01);
    public static final Ioctl KVM_GET_MSR_INDEX_LIST = Ioctl.iowr("KVM_GET_MSR_INDEX_LIST", KVMIO, 0x02, MSR_LIST.byteSize());
    public static final Ioctl KVM_CHECK_EXTENSION = Ioctl.io("KVM_CHECK_EXTENSION", KVMIO, 0x03);
    public static final Ioctl KVM_GET_VCPU_MMAP_SIZE = Ioctl.io("KVM_GET_VCPU_MMAP_SIZE", KVMIO, 0x04);
    public static final Ioctl KVM_GET_SUPPORTED_CPUID = Ioctl.iowr("KVM_GET_SUPPORTED_CPUID", KVMIO, 0x05, CPUID2.byteSize());
    // ioctls on a VM.
    public static final Ioctl KVM_CREATE_VCPU = Ioctl.io("KVM_CREATE_VCPU", KVMIO, 0x41);
    public static final Ioctl KVM_GET_DIRTY_LOG = Ioctl.iow("KVM_GET_DIRTY_LOG", KVMIO, 0x42, DIRTY_LOG.byteSize());
    public static final Ioctl KVM_SET_USER_MEMORY_REGION =
            Ioctl.iow("KVM_SET_USER_MEMORY_REGION", KVMIO, 0x46, USERSPACE_MEMORY_REGION.byteSize());
    public static final Ioctl KVM_SET_TSS_ADDR = Ioctl.io("KVM_SET_TSS_ADDR", KVMIO, 0x47);
    public static final Ioctl KVM_ENABLE_CAP = Ioctl.iow("KVM_ENABLE_CAP", KVMIO, 0xa3, ENABLE_CAP.byteSize());
    public static final Ioctl KVM_CLEAR_DIRTY_LOG = Ioctl.iowr("KVM_CLEAR_DIRTY_LOG", KVMIO, 0xc0, CLEAR_DIRTY_LOG.byteSize());
    // ioctls on a vCPU.
    public static final Ioctl KVM_RUN = Ioctl.io("KVM_RUN", KVMIO, 0x80);
    public static final Ioctl KVM_GET_REGS = Ioctl.ior("KVM_GET_REGS", KVMIO, 0x81, REGS.byteSize());
    public static final Ioctl KVM_SET_REGS = Ioctl.iow("KVM_SET_REGS", KVMIO, 0x82, REGS.byteSize());
    public static final Ioctl KVM_GET_SREGS = Ioctl.ior("KVM_GET_SREGS", KVMIO, 0x83, SREGS.byteSize());
    public static final Ioctl KVM_SET_SREGS = Ioctl.iow("KVM_SET_SREGS", KVMIO, 0x84, SREGS.byteSize());
    public static final Ioctl KVM_GET_MSRS = Ioctl.iowr("KVM_GET_MSRS", KVMIO, 0x88, MSRS.byteSize());
    public static final Ioctl KVM_SET_MSRS = Ioctl.iow("KVM_SET_MSRS", KVMIO, 0x89, MSRS.byteSize());
    public static final Ioctl KVM_SET_SIGNAL_MASK = Ioctl.iow("KVM_SET_SIGNAL_MASK", KVMIO, 0x8b, SIGNAL_MASK.byteSize());
    public static final Ioctl KVM_GET_FPU = Ioctl.ior("KVM_GET_FPU", KVMIO, 0x8c, FPU.byteSize());
    public static final Ioctl KVM_SET_FPU = Ioctl.iow("KVM_SET_FPU", KVMIO, 0x8d, FPU.byteSize());
    public static final Ioctl KVM_SET_CPUID2 = Ioctl.iow("KVM_SET_CPUID2", KVMIO, 0x90, CPUID2.byteSize());
    public static final Ioctl KVM_GET_VCPU_EVENTS = Ioctl.ior("KVM_GET_VCPU_EVENTS", KVMIO, 0x9f, VCPU_EVENTS_SIZE);
    public static final Ioctl KVM_SET_VCPU_EVENTS = Ioctl.iow("KVM_SET_VCPU_EVENTS", KVMIO, 0xa0, VCPU_EVENTS_SIZE);

    /** The ioctls above, for the header check. */
    public static Ioctl[] ioctls() {
        return new Ioctl[] {KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_MSR_INDEX_LIST, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
                KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_ENABLE_CAP,
                KVM_CLEAR_DIRTY_LOG, KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_MSRS, KVM_SET_MSRS,
                KVM_SET_SIGNAL_MASK, KVM_GET_FPU, KVM_SET_FPU, KVM_SET_CPUID2, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS};
    }

    // x86 MSRs a vCPU's state includes (filtered by KVM_GET_MSR_INDEX_LIST at run time).
    public static final int MSR_IA32_TSC = 0x10, MSR_IA32_SYSENTER_CS = 0x174, MSR_IA32_SYSENTER_ESP = 0x175,
            MSR_IA32_SYSENTER_EIP = 0x176, MSR_IA32_MISC_ENABLE = 0x1a0, MSR_IA32_CR_PAT = 0x277,
            MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082, MSR_CSTAR = 0xc0000083, MSR_SYSCALL_MASK = 0xc0000084,
            MSR_KERNEL_GS_BASE = 0xc0000102, MSR_TSC_AUX = 0xc0000103;
}
