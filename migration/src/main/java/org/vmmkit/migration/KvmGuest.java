package org.vmmkit.migration;

import java.time.Duration;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.VcpuState;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;

/** A KVM {@link Vm} as a {@link MigratableVm}: vCPU state through {@link VcpuState}, started with its exit handler. */
public final class KvmGuest implements MigratableVm {
    private final Vm vm;
    private final ExitHandler handler;

    /** {@code handler} runs the vCPUs' exits once a destination starts the VM (null on a source). */
    public KvmGuest(Vm vm, ExitHandler handler) {
        this.vm = vm;
        this.handler = handler;
    }

    public Vm vm() {
        return vm;
    }

    @Override
    public GuestMemory memory() {
        return vm.memory();
    }

    @Override
    public int vcpuCount() {
        return vm.vcpus().size();
    }

    @Override
    public byte[] saveVcpu(int index) {
        return vm.vcpus().get(index).state().toBytes();
    }

    @Override
    public void restoreVcpu(int index, byte[] state) {
        vm.vcpus().get(index).restore(VcpuState.fromBytes(state));
    }

    @Override
    public String vcpuStateKind() {
        return "kvm-x86-vcpu";
    }

    @Override
    public int vcpuStateVersion() {
        return VcpuState.FORMAT_VERSION;
    }

    @Override
    public void startLoaded() {
        if (handler == null) throw new IllegalStateException("this VM has no exit handler to start with");
        vm.start(handler);
    }

    @Override
    public Duration pause() {
        return vm.pause();
    }

    @Override
    public void resume() {
        vm.resume();
    }
}
