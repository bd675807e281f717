package org.vmmkit.core.kvm;

/** KVM is missing, too old, lacks a capability, or a vCPU stopped with an error exit. */
public final class KvmException extends RuntimeException {
    public KvmException(String message) {
        super(message);
    }

    public KvmException(String message, Throwable cause) {
        super(message, cause);
    }
}
