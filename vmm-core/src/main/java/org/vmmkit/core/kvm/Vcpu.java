package org.vmmkit.core.kvm;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One KVM vCPU: its fd, the shared {@code kvm_run} page, and typed get/set of its state. The run loop
 * that drives it lives in {@link VcpuRunner}.
 */
public final class Vcpu implements AutoCloseable {
    /** The MSRs a vCPU's state carries, where the host's KVM supports them. */
    static final int[] STATE_MSRS = {KvmAbi.MSR_IA32_TSC, KvmAbi.MSR_IA32_SYSENTER_CS, KvmAbi.MSR_IA32_SYSENTER_ESP,
            KvmAbi.MSR_IA32_SYSENTER_EIP, KvmAbi.MSR_IA32_MISC_ENABLE, KvmAbi.MSR_IA32_CR_PAT, KvmAbi.MSR_STAR,
            KvmAbi.MSR_LSTAR, KvmAbi.MSR_CSTAR, KvmAbi.MSR_SYSCALL_MASK, KvmAbi.MSR_KERNEL_GS_BASE, KvmAbi.MSR_TSC_AUX};

    private static final VarHandle IMMEDIATE_EXIT = JAVA_BYTE.varHandle();

    private final int id;
    private final Fd fd;
    private final MemorySegment run;
    private final int[] stateMsrs;

    Vcpu(Kvm kvm, Fd vmFd, int id) {
        this.id = id;
        this.fd = new Fd(vmFd.ioctl(KvmAbi.KVM_CREATE_VCPU, id), "vcpu " + id);
        try {
            this.run = fd.mmap(kvm.vcpuMmapSize(), Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, 0);
            this.stateMsrs = java.util.Arrays.stream(STATE_MSRS).filter(kvm::supportsMsr).toArray();
            setCpuid(kvm.supportedCpuid());
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    public int id() {
        return id;
    }

    Fd fd() {
        return fd;
    }

    /** The mmap'd {@code struct kvm_run}. */
    MemorySegment run() {
        return run;
    }

    int exitReason() {
        return run.get(JAVA_INT, KvmAbi.RUN_EXIT_REASON);
    }

    /**
     * Sets {@code kvm_run.immediate_exit}: KVM_RUN returns EINTR before entering the guest while it is
     * set. A volatile store, so a KVM_RUN the vCPU thread starts after a kick sees it.
     */
    void setImmediateExit(boolean on) {
        IMMEDIATE_EXIT.setVolatile(run, KvmAbi.RUN_IMMEDIATE_EXIT, (byte) (on ? 1 : 0));
    }

    private void setCpuid(byte[] cpuid) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = arena.allocate(cpuid.length, 8);
            seg.copyFrom(MemorySegment.ofArray(cpuid));
            fd.ioctl(KvmAbi.KVM_SET_CPUID2, seg);
        }
    }

    /** Reads a whole kernel struct with a GET ioctl. */
    private byte[] get(org.vmmkit.core.sys.Ioctl ioctl, long size) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(size, 8);
            fd.ioctl(ioctl, buf);
            return buf.toArray(JAVA_BYTE);
        }
    }

    private void set(org.vmmkit.core.sys.Ioctl ioctl, byte[] bytes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment buf = arena.allocate(bytes.length, 8);
            buf.copyFrom(MemorySegment.ofArray(bytes));
            fd.ioctl(ioctl, buf);
        }
    }

    byte[] getRegs() {
        return get(KvmAbi.KVM_GET_REGS, KvmAbi.REGS.byteSize());
    }

    void setRegs(byte[] regs) {
        set(KvmAbi.KVM_SET_REGS, regs);
    }

    byte[] getSregs() {
        return get(KvmAbi.KVM_GET_SREGS, KvmAbi.SREGS.byteSize());
    }

    void setSregs(byte[] sregs) {
        set(KvmAbi.KVM_SET_SREGS, sregs);
    }

    private List<VcpuState.Msr> getMsrs() {
        long entry = KvmAbi.MSR_ENTRY.byteSize();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment msrs = arena.allocate(KvmAbi.MSRS.byteSize() + entry * stateMsrs.length, 8);
            msrs.set(JAVA_INT, 0, stateMsrs.length);
            for (int i = 0; i < stateMsrs.length; i++) msrs.set(JAVA_INT, 8 + entry * i, stateMsrs[i]);
            int got = fd.ioctl(KvmAbi.KVM_GET_MSRS, msrs);
            if (got != stateMsrs.length) {
                throw new KvmException("KVM_GET_MSRS on " + fd.describe() + " read " + got + " of " + stateMsrs.length
                        + " MSRs; MSR 0x" + Integer.toHexString(stateMsrs[got]) + " failed");
            }
            List<VcpuState.Msr> out = new ArrayList<>(got);
            for (int i = 0; i < got; i++) {
                out.add(new VcpuState.Msr(msrs.get(JAVA_INT, 8 + entry * i), msrs.get(JAVA_LONG, 8 + entry * i + 8)));
            }
            return out;
        }
    }

    private void setMsrs(List<VcpuState.Msr> list) {
        long entry = KvmAbi.MSR_ENTRY.byteSize();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment msrs = arena.allocate(KvmAbi.MSRS.byteSize() + entry * list.size(), 8);
            msrs.set(JAVA_INT, 0, list.size());
            for (int i = 0; i < list.size(); i++) {
                msrs.set(JAVA_INT, 8 + entry * i, list.get(i).index());
                msrs.set(JAVA_LONG, 8 + entry * i + 8, list.get(i).value());
            }
            int set = fd.ioctl(KvmAbi.KVM_SET_MSRS, msrs);
            if (set != list.size()) {
                throw new KvmException("KVM_SET_MSRS on " + fd.describe() + " wrote " + set + " of " + list.size()
                        + " MSRs; MSR 0x" + Integer.toHexString(list.get(set).index()) + " was refused");
            }
        }
    }

    /** The vCPU's whole state; call only while the vCPU is not in KVM_RUN (paused or not started). */
    public VcpuState state() {
        return new VcpuState(id, getRegs(), getSregs(), get(KvmAbi.KVM_GET_FPU, KvmAbi.FPU.byteSize()),
                get(KvmAbi.KVM_GET_VCPU_EVENTS, KvmAbi.VCPU_EVENTS_SIZE), getMsrs());
    }

    /**
     * Loads a state saved by {@link #state()}: special registers first (they set the mode the rest is
     * interpreted in), then MSRs, general registers, FPU and pending events.
     */
    public void restore(VcpuState state) {
        setSregs(state.sregs());
        setMsrs(state.msrs());
        setRegs(state.regs());
        set(KvmAbi.KVM_SET_FPU, state.fpu());
        set(KvmAbi.KVM_SET_VCPU_EVENTS, state.events());
    }

    /** {@code KVM_SET_SIGNAL_MASK}: the signal mask in force while this vCPU is in KVM_RUN. */
    void setRunSignalMask(MemorySegment kernelSigset) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment mask = arena.allocate(KvmAbi.SIGNAL_MASK.byteSize() + Libc.KERNEL_SIGSET_BYTES, 8);
            mask.set(JAVA_INT, 0, (int) Libc.KERNEL_SIGSET_BYTES);
            mask.asSlice(KvmAbi.SIGNAL_MASK.byteSize(), Libc.KERNEL_SIGSET_BYTES)
                    .copyFrom(kernelSigset.asSlice(0, Libc.KERNEL_SIGSET_BYTES));
            fd.ioctl(KvmAbi.KVM_SET_SIGNAL_MASK, mask);
        }
    }

    String describe() {
        return fd.describe();
    }

    @Override
    public void close() {
        try {
            Libc.munmap(run, fd.describe() + " kvm_run");
        } catch (SysException e) {
            // The fd close below still releases the vCPU; an unmap failure only leaks address space.
        }
        fd.close();
    }
}
