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
