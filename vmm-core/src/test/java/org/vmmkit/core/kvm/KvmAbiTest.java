package org.vmmkit.core.kvm;

import java.lang.foreign.GroupLayout;
import java.lang.foreign.MemoryLayout;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.sys.HeaderProbe;
import org.vmmkit.core.sys.Ioctl;

class KvmAbiTest {

    @Test
    void everyKvmStructMatchesTheHeader() {
        HeaderProbe probe = new HeaderProbe("linux/kvm.h")
                .expectLayout(KvmAbi.USERSPACE_MEMORY_REGION, "struct kvm_userspace_memory_region")
                .expectLayout(KvmAbi.REGS, "struct kvm_regs")
                .expectLayout(KvmAbi.SEGMENT, "struct kvm_segment")
                .expectLayout(KvmAbi.DTABLE, "struct kvm_dtable")
                .expectLayout(KvmAbi.SREGS, "struct kvm_sregs")
                .expectLayout(KvmAbi.FPU, "struct kvm_fpu")
                .expectLayout(KvmAbi.MSR_ENTRY, "struct kvm_msr_entry")
                .expectLayout(KvmAbi.MSRS, "struct kvm_msrs")
                .expectLayout(KvmAbi.MSR_LIST, "struct kvm_msr_list")
                .expectLayout(KvmAbi.CPUID_ENTRY2, "struct kvm_cpuid_entry2")
                .expectLayout(KvmAbi.CPUID2, "struct kvm_cpuid2")
                .expectLayout(KvmAbi.SIGNAL_MASK, "struct kvm_signal_mask")
                .expectLayout(KvmAbi.DIRTY_LOG, "struct kvm_dirty_log")
                .expectLayout(KvmAbi.CLEAR_DIRTY_LOG, "struct kvm_clear_dirty_log")
                .expectLayout(KvmAbi.ENABLE_CAP, "struct kvm_enable_cap")
                .expectLayout(KvmAbi.LAPIC_STATE, "struct kvm_lapic_state")
                .expectLayout(KvmAbi.PIC_STATE, "struct kvm_pic_state")
                .expectLayout(KvmAbi.IOAPIC_STATE, "struct kvm_ioapic_state")
                .expectLayout(KvmAbi.IRQCHIP, "struct kvm_irqchip")
                .expectLayout(KvmAbi.PIT_CHANNEL_STATE, "struct kvm_pit_channel_state")
                .expectLayout(KvmAbi.PIT_STATE2, "struct kvm_pit_state2")
                .expectLayout(KvmAbi.PIT_CONFIG, "struct kvm_pit_config")
                .expectLayout(KvmAbi.XSAVE, "struct kvm_xsave")
                .expectLayout(KvmAbi.XCR, "struct kvm_xcr")
                .expectLayout(KvmAbi.XCRS, "struct kvm_xcrs")
                .expectLayout(KvmAbi.DEBUGREGS, "struct kvm_debugregs")
                .expectLayout(KvmAbi.CLOCK_DATA, "struct kvm_clock_data")
                .expectLayout(KvmAbi.MP_STATE, "struct kvm_mp_state")
                .expectLayout(KvmAbi.IRQ_LEVEL, "struct kvm_irq_level")
                .expect("offsetof(struct kvm_irq_level, status)", "offsetof(struct kvm_irq_level, status)",
                        KvmAbi.off(KvmAbi.IRQ_LEVEL, "irq"))
                .expectLayout(KvmAbi.IRQFD, "struct kvm_irqfd")
                .expectLayout(KvmAbi.IOEVENTFD, "struct kvm_ioeventfd")
                // The redirection table's entries are 64-bit unions; the bit-field view must lie inside.
                .expect("sizeof(kvm_ioapic_state.redirtbl[0])", "sizeof(((struct kvm_ioapic_state *)0)->redirtbl[0])", 8)
                .expect("offsetof(kvm_ioapic_state, redirtbl[0].fields.dest_id)",
                        "offsetof(struct kvm_ioapic_state, redirtbl[0].fields.dest_id)", KvmAbi.off(KvmAbi.IOAPIC_STATE, "redirtbl") + 7)
                .expect("sizeof(struct kvm_vcpu_events)", "sizeof(struct kvm_vcpu_events)", KvmAbi.VCPU_EVENTS_SIZE);
        // kvm_run: the named header fields and every member of the anonymous exit union, by C path.
        for (MemoryLayout m : KvmAbi.RUN.memberLayouts()) {
            String name = m.name().orElse("");
            if (name.isEmpty() || name.startsWith("padding")) continue;
            probe.expect("offsetof(kvm_run, " + name + ")", "offsetof(struct kvm_run, " + name + ")",
                    KvmAbi.off(KvmAbi.RUN, name));
        }
        probe.expect("sizeof(struct kvm_run)", "sizeof(struct kvm_run)", KvmAbi.RUN.byteSize());
        GroupLayout union = KvmAbi.runExitUnion();
        long unionOffset = KvmAbi.off(KvmAbi.RUN, "");
        for (MemoryLayout exit : union.memberLayouts()) {
            String exitName = exit.name().orElseThrow();
            if (exitName.equals("padding")) continue;
            for (MemoryLayout field : ((GroupLayout) exit).memberLayouts()) {
                if (field.name().isEmpty()) continue;
                String path = exitName + "." + field.name().get();
                probe.expect("offsetof(kvm_run, " + path + ")", "offsetof(struct kvm_run, " + path + ")",
                        unionOffset + KvmAbi.off((GroupLayout) exit, field.name().get()));
                probe.expect("sizeof(kvm_run." + path + ")", "sizeof(((struct kvm_run *)0)->" + path + ")", field.byteSize());
            }
        }
        probe.verify();
    }

    @Test
    void everyKvmIoctlNumberMatchesTheHeader() {
        HeaderProbe probe = new HeaderProbe("linux/kvm.h");
        for (Ioctl ioctl : KvmAbi.ioctls()) probe.expectIoctl(ioctl);
        probe.verify();
    }

    @Test
    void capabilitiesAndExitReasonsMatchTheHeader() {
        new HeaderProbe("linux/kvm.h")
                .expectValue("KVM_API_VERSION", KvmAbi.API_VERSION)
                .expectValue("KVM_CAP_USER_MEMORY", KvmAbi.CAP_USER_MEMORY)
                .expectValue("KVM_CAP_SET_TSS_ADDR", KvmAbi.CAP_SET_TSS_ADDR)
                .expectValue("KVM_CAP_EXT_CPUID", KvmAbi.CAP_EXT_CPUID)
                .expectValue("KVM_CAP_NR_MEMSLOTS", KvmAbi.CAP_NR_MEMSLOTS)
                .expectValue("KVM_CAP_SYNC_MMU", KvmAbi.CAP_SYNC_MMU)
                .expectValue("KVM_CAP_IMMEDIATE_EXIT", KvmAbi.CAP_IMMEDIATE_EXIT)
                .expectValue("KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", KvmAbi.CAP_MANUAL_DIRTY_LOG_PROTECT2)
                .expectValue("KVM_CAP_DIRTY_LOG_RING", KvmAbi.CAP_DIRTY_LOG_RING)
                .expectValue("KVM_CAP_IRQCHIP", KvmAbi.CAP_IRQCHIP)
                .expectValue("KVM_CAP_MP_STATE", KvmAbi.CAP_MP_STATE)
                .expectValue("KVM_CAP_IRQFD", KvmAbi.CAP_IRQFD)
                .expectValue("KVM_CAP_PIT2", KvmAbi.CAP_PIT2)
                .expectValue("KVM_CAP_PIT_STATE2", KvmAbi.CAP_PIT_STATE2)
                .expectValue("KVM_CAP_IOEVENTFD", KvmAbi.CAP_IOEVENTFD)
                .expectValue("KVM_CAP_SET_IDENTITY_MAP_ADDR", KvmAbi.CAP_SET_IDENTITY_MAP_ADDR)
                .expectValue("KVM_CAP_ADJUST_CLOCK", KvmAbi.CAP_ADJUST_CLOCK)
                .expectValue("KVM_CAP_VCPU_EVENTS", KvmAbi.CAP_VCPU_EVENTS)
                .expectValue("KVM_CAP_DEBUGREGS", KvmAbi.CAP_DEBUGREGS)
                .expectValue("KVM_CAP_XSAVE", KvmAbi.CAP_XSAVE)
                .expectValue("KVM_CAP_XCRS", KvmAbi.CAP_XCRS)
                .expectValue("KVM_CAP_TSC_CONTROL", KvmAbi.CAP_TSC_CONTROL)
                .expectValue("KVM_CAP_GET_TSC_KHZ", KvmAbi.CAP_GET_TSC_KHZ)
                .expectValue("KVM_CAP_TSC_DEADLINE_TIMER", KvmAbi.CAP_TSC_DEADLINE_TIMER)
                .expectValue("KVM_CAP_XSAVE2", KvmAbi.CAP_XSAVE2)
                .expectValue("KVM_IRQCHIP_PIC_MASTER", KvmAbi.IRQCHIP_PIC_MASTER)
                .expectValue("KVM_IRQCHIP_PIC_SLAVE", KvmAbi.IRQCHIP_PIC_SLAVE)
                .expectValue("KVM_IRQCHIP_IOAPIC", KvmAbi.IRQCHIP_IOAPIC)
                .expectValue("KVM_NR_IRQCHIPS", KvmAbi.NR_IRQCHIPS)
                .expectValue("KVM_IOAPIC_NUM_PINS", KvmAbi.IOAPIC_NUM_PINS)
                .expectValue("KVM_APIC_REG_SIZE", KvmAbi.APIC_REG_SIZE)
                .expectValue("KVM_MAX_XCRS", KvmAbi.MAX_XCRS)
                .expectValue("KVM_MP_STATE_RUNNABLE", KvmAbi.MP_STATE_RUNNABLE)
                .expectValue("KVM_MP_STATE_UNINITIALIZED", KvmAbi.MP_STATE_UNINITIALIZED)
                .expectValue("KVM_MP_STATE_INIT_RECEIVED", KvmAbi.MP_STATE_INIT_RECEIVED)
                .expectValue("KVM_MP_STATE_HALTED", KvmAbi.MP_STATE_HALTED)
                .expectValue("KVM_MP_STATE_SIPI_RECEIVED", KvmAbi.MP_STATE_SIPI_RECEIVED)
                .expectValue("KVM_PIT_SPEAKER_DUMMY", KvmAbi.PIT_SPEAKER_DUMMY)
                .expectValue("KVM_PIT_FLAGS_HPET_LEGACY", KvmAbi.PIT_FLAGS_HPET_LEGACY)
                .expectValue("KVM_PIT_FLAGS_SPEAKER_DATA_ON", KvmAbi.PIT_FLAGS_SPEAKER_DATA_ON)
                .expectValue("KVM_CLOCK_TSC_STABLE", KvmAbi.CLOCK_TSC_STABLE)
                .expectValue("KVM_CLOCK_REALTIME", KvmAbi.CLOCK_REALTIME)
                .expectValue("KVM_CLOCK_HOST_TSC", KvmAbi.CLOCK_HOST_TSC)
                .expectValue("KVM_IRQFD_FLAG_DEASSIGN", KvmAbi.IRQFD_FLAG_DEASSIGN)
                .expectValue("KVM_IRQFD_FLAG_RESAMPLE", KvmAbi.IRQFD_FLAG_RESAMPLE)
                .expectValue("KVM_IOEVENTFD_FLAG_DATAMATCH", KvmAbi.IOEVENTFD_FLAG_DATAMATCH)
                .expectValue("KVM_IOEVENTFD_FLAG_PIO", KvmAbi.IOEVENTFD_FLAG_PIO)
                .expectValue("KVM_IOEVENTFD_FLAG_DEASSIGN", KvmAbi.IOEVENTFD_FLAG_DEASSIGN)
                .expectValue("KVM_EXIT_UNKNOWN", KvmAbi.EXIT_UNKNOWN)
                .expectValue("KVM_EXIT_EXCEPTION", KvmAbi.EXIT_EXCEPTION)
                .expectValue("KVM_EXIT_IO", KvmAbi.EXIT_IO)
                .expectValue("KVM_EXIT_HYPERCALL", KvmAbi.EXIT_HYPERCALL)
                .expectValue("KVM_EXIT_DEBUG", KvmAbi.EXIT_DEBUG)
                .expectValue("KVM_EXIT_HLT", KvmAbi.EXIT_HLT)
                .expectValue("KVM_EXIT_MMIO", KvmAbi.EXIT_MMIO)
                .expectValue("KVM_EXIT_IRQ_WINDOW_OPEN", KvmAbi.EXIT_IRQ_WINDOW_OPEN)
                .expectValue("KVM_EXIT_SHUTDOWN", KvmAbi.EXIT_SHUTDOWN)
                .expectValue("KVM_EXIT_FAIL_ENTRY", KvmAbi.EXIT_FAIL_ENTRY)
                .expectValue("KVM_EXIT_INTR", KvmAbi.EXIT_INTR)
                .expectValue("KVM_EXIT_INTERNAL_ERROR", KvmAbi.EXIT_INTERNAL_ERROR)
                .expectValue("KVM_EXIT_SYSTEM_EVENT", KvmAbi.EXIT_SYSTEM_EVENT)
                .expectValue("KVM_EXIT_IO_IN", KvmAbi.EXIT_IO_IN)
                .expectValue("KVM_EXIT_IO_OUT", KvmAbi.EXIT_IO_OUT)
                .expectValue("KVM_MEM_LOG_DIRTY_PAGES", KvmAbi.MEM_LOG_DIRTY_PAGES)
                .expectValue("KVM_MEM_READONLY", KvmAbi.MEM_READONLY)
                .expectValue("KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE", KvmAbi.DIRTY_LOG_MANUAL_PROTECT_ENABLE)
                .expectValue("KVM_DIRTY_LOG_INITIALLY_SET", KvmAbi.DIRTY_LOG_INITIALLY_SET)
                .verify();
    }
}
