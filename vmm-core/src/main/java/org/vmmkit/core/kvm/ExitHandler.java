package org.vmmkit.core.kvm;

import java.lang.foreign.MemorySegment;

/**
 * What the VMM does with a vCPU's port-IO and MMIO exits. Called on the vCPU's thread; {@code data} is
 * the kvm_run buffer, valid only during the call. Return false for an access nothing handles.
 */
public interface ExitHandler {
    /** An {@code OUT} of {@code size} bytes, {@code count} times (string IO), to {@code port}. */
    boolean portOut(int vcpu, int port, int size, int count, MemorySegment data);

    /** An {@code IN}: fill {@code data} ({@code size * count} bytes). */
    boolean portIn(int vcpu, int port, int size, int count, MemorySegment data);

    /** An MMIO access of {@code data.byteSize()} bytes at a guest physical address outside RAM. */
    default boolean mmio(int vcpu, long address, boolean write, MemorySegment data) {
        return false;
    }
}
