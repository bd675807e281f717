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
    // Capabilities of the platform state (issue #15): in-kernel irqchip and PIT, XSAVE, clocks and TSC.
    public static final int CAP_IRQCHIP = 0, CAP_MP_STATE = 14, CAP_IRQFD = 32, CAP_PIT2 = 33, CAP_PIT_STATE2 = 35,
            CAP_IOEVENTFD = 36, CAP_SET_IDENTITY_MAP_ADDR = 37, CAP_ADJUST_CLOCK = 39, CAP_VCPU_EVENTS = 41,
            CAP_DEBUGREGS = 50, CAP_XSAVE = 55, CAP_XCRS = 56, CAP_TSC_CONTROL = 60, CAP_GET_TSC_KHZ = 61,
            CAP_TSC_DEADLINE_TIMER = 72, CAP_XSAVE2 = 208;

    // kvm_irqchip.chip_id.
    public static final int IRQCHIP_PIC_MASTER = 0, IRQCHIP_PIC_SLAVE = 1, IRQCHIP_IOAPIC = 2, NR_IRQCHIPS = 3;
    public static final int IOAPIC_NUM_PINS = 24;
    public static final int APIC_REG_SIZE = 0x400;
    public static final int MAX_XCRS = 16;

    // kvm_mp_state.mp_state (the x86 ones).
    public static final int MP_STATE_RUNNABLE = 0, MP_STATE_UNINITIALIZED = 1, MP_STATE_INIT_RECEIVED = 2,
            MP_STATE_HALTED = 3, MP_STATE_SIPI_RECEIVED = 4;

    // kvm_pit_config.flags and kvm_pit_state2.flags.
    public static final int PIT_SPEAKER_DUMMY = 1, PIT_FLAGS_HPET_LEGACY = 1, PIT_FLAGS_SPEAKER_DATA_ON = 2;

    // kvm_clock_data.flags.
    public static final int CLOCK_TSC_STABLE = 2, CLOCK_REALTIME = 1 << 2, CLOCK_HOST_TSC = 1 << 3;

    // kvm_irqfd.flags and kvm_ioeventfd.flags.
    public static final int IRQFD_FLAG_DEASSIGN = 1, IRQFD_FLAG_RESAMPLE = 2;
    public static final int IOEVENTFD_FLAG_DATAMATCH = 1, IOEVENTFD_FLAG_PIO = 2, IOEVENTFD_FLAG_DEASSIGN = 4;

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

    /** {@code struct kvm_lapic_state}: the local APIC's register page as the guest sees it at 0xfee00000. */
    public static final StructLayout LAPIC_STATE = structLayout(
            sequenceLayout(APIC_REG_SIZE, JAVA_BYTE).withName("regs")).withName("kvm_lapic_state");

    /** {@code struct kvm_pic_state}: one 8259 of the in-kernel PIC pair. */
    public static final StructLayout PIC_STATE = structLayout(
            JAVA_BYTE.withName("last_irr"), JAVA_BYTE.withName("irr"), JAVA_BYTE.withName("imr"), JAVA_BYTE.withName("isr"),
            JAVA_BYTE.withName("priority_add"), JAVA_BYTE.withName("irq_base"), JAVA_BYTE.withName("read_reg_select"),
            JAVA_BYTE.withName("poll"), JAVA_BYTE.withName("special_mask"), JAVA_BYTE.withName("init_state"),
            JAVA_BYTE.withName("auto_eoi"), JAVA_BYTE.withName("rotate_on_auto_eoi"),
            JAVA_BYTE.withName("special_fully_nested_mode"), JAVA_BYTE.withName("init4"), JAVA_BYTE.withName("elcr"),
            JAVA_BYTE.withName("elcr_mask")).withName("kvm_pic_state");

    /**
     * {@code struct kvm_ioapic_state}. Each redirection entry is a union of a {@code __u64 bits} and a
     * bit-field struct; it is kept as the 64-bit value (vector in bits 0..7, mask in bit 16, destination in 56..63).
     */
    public static final StructLayout IOAPIC_STATE = structLayout(
            JAVA_LONG.withName("base_address"),
            JAVA_INT.withName("ioregsel"),
            JAVA_INT.withName("id"),
            JAVA_INT.withName("irr"),
            JAVA_INT.withName("pad"),
            sequenceLayout(IOAPIC_NUM_PINS, JAVA_LONG).withName("redirtbl")).withName("kvm_ioapic_state");

    /** {@code struct kvm_irqchip} (KVM_GET/SET_IRQCHIP): which chip, and its state in a 512-byte union. */
    public static final StructLayout IRQCHIP = structLayout(
            JAVA_INT.withName("chip_id"),
            JAVA_INT.withName("pad"),
            unionLayout(
                    sequenceLayout(512, JAVA_BYTE).withName("dummy"),
                    PIC_STATE.withName("pic"),
                    IOAPIC_STATE.withName("ioapic")).withName("chip")).withName("kvm_irqchip");

    /** {@code struct kvm_pit_channel_state}: one of the 8254's three counters. */
    public static final StructLayout PIT_CHANNEL_STATE = structLayout(
            JAVA_INT.withName("count"),
            JAVA_SHORT.withName("latched_count"),
            JAVA_BYTE.withName("count_latched"), JAVA_BYTE.withName("status_latched"), JAVA_BYTE.withName("status"),
            JAVA_BYTE.withName("read_state"), JAVA_BYTE.withName("write_state"), JAVA_BYTE.withName("write_latch"),
            JAVA_BYTE.withName("rw_mode"), JAVA_BYTE.withName("mode"), JAVA_BYTE.withName("bcd"), JAVA_BYTE.withName("gate"),
            JAVA_LONG.withName("count_load_time")).withName("kvm_pit_channel_state");

    /** {@code struct kvm_pit_state2} (KVM_GET/SET_PIT2). */
    public static final StructLayout PIT_STATE2 = structLayout(
            sequenceLayout(3, PIT_CHANNEL_STATE).withName("channels"),
            JAVA_INT.withName("flags"),
            sequenceLayout(9, JAVA_INT).withName("reserved")).withName("kvm_pit_state2");

    /** {@code struct kvm_pit_config} (KVM_CREATE_PIT2). */
    public static final StructLayout PIT_CONFIG = structLayout(
            JAVA_INT.withName("flags"),
            sequenceLayout(15, JAVA_INT).withName("pad")).withName("kvm_pit_config");

    /**
     * {@code struct kvm_xsave}: the 4096-byte XSAVE region in the host's standard format. KVM_GET_XSAVE2 and
     * KVM_SET_XSAVE move as many bytes as KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM says (at least 4096,
     * more with dynamic features such as AMX); the ioctl numbers still encode 4096, the flexible
     * {@code extra} array is where the rest goes.
     */
    public static final StructLayout XSAVE = structLayout(
            sequenceLayout(1024, JAVA_INT).withName("region"),
            sequenceLayout(0, JAVA_INT).withName("extra")).withName("kvm_xsave");

    public static final StructLayout XCR = structLayout(
            JAVA_INT.withName("xcr"),
            JAVA_INT.withName("reserved"),
            JAVA_LONG.withName("value")).withName("kvm_xcr");

    /** {@code struct kvm_xcrs} (KVM_GET/SET_XCRS): XCR0 and any other extended control registers. */
    public static final StructLayout XCRS = structLayout(
            JAVA_INT.withName("nr_xcrs"),
            JAVA_INT.withName("flags"),
            sequenceLayout(MAX_XCRS, XCR).withName("xcrs"),
            sequenceLayout(16, JAVA_LONG).withName("padding")).withName("kvm_xcrs");

    /** {@code struct kvm_debugregs} (KVM_GET/SET_DEBUGREGS): DR0-3, DR6, DR7. */
    public static final StructLayout DEBUGREGS = structLayout(
            sequenceLayout(4, JAVA_LONG).withName("db"),
            JAVA_LONG.withName("dr6"),
            JAVA_LONG.withName("dr7"),
            JAVA_LONG.withName("flags"),
            sequenceLayout(9, JAVA_LONG).withName("reserved")).withName("kvm_debugregs");

    /** {@code struct kvm_clock_data} (KVM_GET/SET_CLOCK): the VM's kvmclock. */
    public static final StructLayout CLOCK_DATA = structLayout(
            JAVA_LONG.withName("clock"),
            JAVA_INT.withName("flags"),
            JAVA_INT.withName("pad0"),
            JAVA_LONG.withName("realtime"),
            JAVA_LONG.withName("host_tsc"),
            sequenceLayout(4, JAVA_INT).withName("pad")).withName("kvm_clock_data");

    /** {@code struct kvm_mp_state} (KVM_GET/SET_MP_STATE). */
    public static final StructLayout MP_STATE = structLayout(JAVA_INT.withName("mp_state")).withName("kvm_mp_state");

    /**
     * {@code struct kvm_irq_level} (KVM_IRQ_LINE): {@code irq} shares an anonymous union with {@code __s32
     * status} (what KVM_IRQ_LINE_STATUS writes back); only {@code irq} is named here.
     */
    public static final StructLayout IRQ_LEVEL = structLayout(
            JAVA_INT.withName("irq"),
            JAVA_INT.withName("level")).withName("kvm_irq_level");

    /** {@code struct kvm_irqfd} (KVM_IRQFD): an eventfd that raises (or, with resample, levels) a GSI. */
    public static final StructLayout IRQFD = structLayout(
            JAVA_INT.withName("fd"),
            JAVA_INT.withName("gsi"),
            JAVA_INT.withName("flags"),
            JAVA_INT.withName("resamplefd"),
            sequenceLayout(16, JAVA_BYTE).withName("pad")).withName("kvm_irqfd");

    /** {@code struct kvm_ioeventfd} (KVM_IOEVENTFD): a guest write to a port or address signals an eventfd. */
    public static final StructLayout IOEVENTFD = structLayout(
            JAVA_LONG.withName("datamatch"),
            JAVA_LONG.withName("addr"),
            JAVA_INT.withName("len"),
            JAVA_INT.withName("fd"),
            JAVA_INT.withName("flags"),
            sequenceLayout(36, JAVA_BYTE).withName("pad")).withName("kvm_ioeventfd");

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
    public static final Ioctl KVM_SET_IDENTITY_MAP_ADDR = Ioctl.iow("KVM_SET_IDENTITY_MAP_ADDR", KVMIO, 0x48, JAVA_LONG.byteSize());
    public static final Ioctl KVM_CREATE_IRQCHIP = Ioctl.io("KVM_CREATE_IRQCHIP", KVMIO, 0x60);
    public static final Ioctl KVM_IRQ_LINE = Ioctl.iow("KVM_IRQ_LINE", KVMIO, 0x61, IRQ_LEVEL.byteSize());
    public static final Ioctl KVM_GET_IRQCHIP = Ioctl.iowr("KVM_GET_IRQCHIP", KVMIO, 0x62, IRQCHIP.byteSize());
    /** {@code _IOR} although the kernel reads the argument: the header's historical direction bits. */
    public static final Ioctl KVM_SET_IRQCHIP = Ioctl.ior("KVM_SET_IRQCHIP", KVMIO, 0x63, IRQCHIP.byteSize());
    public static final Ioctl KVM_IRQFD = Ioctl.iow("KVM_IRQFD", KVMIO, 0x76, IRQFD.byteSize());
    public static final Ioctl KVM_CREATE_PIT2 = Ioctl.iow("KVM_CREATE_PIT2", KVMIO, 0x77, PIT_CONFIG.byteSize());
    public static final Ioctl KVM_IOEVENTFD = Ioctl.iow("KVM_IOEVENTFD", KVMIO, 0x79, IOEVENTFD.byteSize());
    public static final Ioctl KVM_SET_CLOCK = Ioctl.iow("KVM_SET_CLOCK", KVMIO, 0x7b, CLOCK_DATA.byteSize());
    public static final Ioctl KVM_GET_CLOCK = Ioctl.ior("KVM_GET_CLOCK", KVMIO, 0x7c, CLOCK_DATA.byteSize());
    public static final Ioctl KVM_GET_PIT2 = Ioctl.ior("KVM_GET_PIT2", KVMIO, 0x9f, PIT_STATE2.byteSize());
    public static final Ioctl KVM_SET_PIT2 = Ioctl.iow("KVM_SET_PIT2", KVMIO, 0xa0, PIT_STATE2.byteSize());
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
    public static final Ioctl KVM_GET_LAPIC = Ioctl.ior("KVM_GET_LAPIC", KVMIO, 0x8e, LAPIC_STATE.byteSize());
    public static final Ioctl KVM_SET_LAPIC = Ioctl.iow("KVM_SET_LAPIC", KVMIO, 0x8f, LAPIC_STATE.byteSize());
    public static final Ioctl KVM_SET_CPUID2 = Ioctl.iow("KVM_SET_CPUID2", KVMIO, 0x90, CPUID2.byteSize());
    public static final Ioctl KVM_GET_CPUID2 = Ioctl.iowr("KVM_GET_CPUID2", KVMIO, 0x91, CPUID2.byteSize());
    public static final Ioctl KVM_GET_MP_STATE = Ioctl.ior("KVM_GET_MP_STATE", KVMIO, 0x98, MP_STATE.byteSize());
    public static final Ioctl KVM_SET_MP_STATE = Ioctl.iow("KVM_SET_MP_STATE", KVMIO, 0x99, MP_STATE.byteSize());
    public static final Ioctl KVM_GET_VCPU_EVENTS = Ioctl.ior("KVM_GET_VCPU_EVENTS", KVMIO, 0x9f, VCPU_EVENTS_SIZE);
    public static final Ioctl KVM_SET_VCPU_EVENTS = Ioctl.iow("KVM_SET_VCPU_EVENTS", KVMIO, 0xa0, VCPU_EVENTS_SIZE);
    public static final Ioctl KVM_GET_DEBUGREGS = Ioctl.ior("KVM_GET_DEBUGREGS", KVMIO, 0xa1, DEBUGREGS.byteSize());
    public static final Ioctl KVM_SET_DEBUGREGS = Ioctl.iow("KVM_SET_DEBUGREGS", KVMIO, 0xa2, DEBUGREGS.byteSize());
    /** On a vCPU with KVM_CAP_TSC_CONTROL (on the VM with KVM_CAP_VM_TSC_CONTROL): the argument is the kHz. */
    public static final Ioctl KVM_SET_TSC_KHZ = Ioctl.io("KVM_SET_TSC_KHZ", KVMIO, 0xa2);
    /** Returns the vCPU's TSC frequency in kHz (KVM_CAP_GET_TSC_KHZ). */
    public static final Ioctl KVM_GET_TSC_KHZ = Ioctl.io("KVM_GET_TSC_KHZ", KVMIO, 0xa3);
    public static final Ioctl KVM_GET_XSAVE = Ioctl.ior("KVM_GET_XSAVE", KVMIO, 0xa4, XSAVE.byteSize());
    public static final Ioctl KVM_SET_XSAVE = Ioctl.iow("KVM_SET_XSAVE", KVMIO, 0xa5, XSAVE.byteSize());
    public static final Ioctl KVM_GET_XCRS = Ioctl.ior("KVM_GET_XCRS", KVMIO, 0xa6, XCRS.byteSize());
    public static final Ioctl KVM_SET_XCRS = Ioctl.iow("KVM_SET_XCRS", KVMIO, 0xa7, XCRS.byteSize());
    /** Writes KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) bytes, not the 4096 its number encodes (see {@link #XSAVE}). */
    public static final Ioctl KVM_GET_XSAVE2 = Ioctl.ior("KVM_GET_XSAVE2", KVMIO, 0xcf, XSAVE.byteSize());

    /** The ioctls above, for the header check. */
    public static Ioctl[] ioctls() {
        return new Ioctl[] {KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_MSR_INDEX_LIST, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
                KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_GET_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_ENABLE_CAP,
                KVM_CLEAR_DIRTY_LOG, KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_MSRS, KVM_SET_MSRS,
                KVM_SET_SIGNAL_MASK, KVM_GET_FPU, KVM_SET_FPU, KVM_SET_CPUID2, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
                KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_IRQFD,
                KVM_CREATE_PIT2, KVM_IOEVENTFD, KVM_SET_CLOCK, KVM_GET_CLOCK, KVM_GET_PIT2, KVM_SET_PIT2, KVM_GET_LAPIC,
                KVM_SET_LAPIC, KVM_GET_CPUID2, KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS,
                KVM_SET_TSC_KHZ, KVM_GET_TSC_KHZ, KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_XSAVE2};
    }

    // x86 MSRs a vCPU's state includes (filtered by KVM_GET_MSR_INDEX_LIST at run time).
    public static final int MSR_IA32_TSC = 0x10, MSR_IA32_SYSENTER_CS = 0x174, MSR_IA32_SYSENTER_ESP = 0x175,
            MSR_IA32_SYSENTER_EIP = 0x176, MSR_IA32_MISC_ENABLE = 0x1a0, MSR_IA32_CR_PAT = 0x277,
            MSR_STAR = 0xc0000081, MSR_LSTAR = 0xc0000082, MSR_CSTAR = 0xc0000083, MSR_SYSCALL_MASK = 0xc0000084,
            MSR_KERNEL_GS_BASE = 0xc0000102, MSR_TSC_AUX = 0xc0000103;
}
