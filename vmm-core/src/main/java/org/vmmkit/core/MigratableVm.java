package org.vmmkit.core;

import org.vmmkit.core.memory.GuestMemory;

/**
 * What a live migration needs of a VM: its guest memory, pausing and resuming it, its vCPUs' state as
 * bytes, and starting it once a destination has loaded everything. A KVM VM is one (through an adapter
 * that knows its exit handler); so is a software guest on a host without {@code /dev/kvm}.
 */
public interface MigratableVm extends Pausable {
    GuestMemory memory();

    /** How many vCPUs have state to move (0 for a guest without vCPUs). */
    int vcpuCount();

    /** vCPU {@code index}'s state as self-describing bytes; the VM is paused. */
    byte[] saveVcpu(int index);

    /** Loads vCPU {@code index}'s state from {@link #saveVcpu}'s bytes; the VM has not started. */
    void restoreVcpu(int index, byte[] state);

    /**
     * The format of {@link #saveVcpu}'s bytes, which the stream header names as each vCPU section's kind: a
     * destination whose VM names another refuses the stream before anything changes.
     */
    default String vcpuStateKind() {
        return "vcpu";
    }

    /** The version of that format (a destination refuses a version it cannot load). */
    default int vcpuStateVersion() {
        return 1;
    }

    /** Starts the VM from what was loaded (memory and vCPU state). */
    void startLoaded();
}
