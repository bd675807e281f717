package org.vmmkit.core.sys;

/**
 * A failed system call: names the call (with its ioctl or argument), the errno symbol and the object
 * it was made on, e.g. {@code ioctl(KVM_CREATE_VCPU) on kvm-vm fd 5 failed: EEXIST (File exists)}.
 */
public final class SysException extends RuntimeException {
    private final String call;
    private final int errno;
    private final String object;

    public SysException(String call, int errno, String object) {
        this(call, errno, object, null);
    }

    /**
     * With what the errno alone does not say, appended after it, e.g. {@code ...failed: ECONNRESET (Connection
     * reset by peer): the server closed the connection}.
     */
    public SysException(String call, int errno, String object, String detail) {
        super(call + " on " + object + " failed: " + Errno.name(errno) + " (" + Errno.description(errno) + ")"
                + (detail == null ? "" : ": " + detail));
        this.call = call;
        this.errno = errno;
        this.object = object;
    }

    /** The call as attempted, e.g. {@code ioctl(KVM_RUN)} or {@code open(O_RDWR)}. */
    public String call() { return call; }

    public int errno() { return errno; }

    /** The errno symbol, e.g. {@code EINVAL}. */
    public String errnoName() { return Errno.name(errno); }

    /** What the call was made on: a path, an fd with its name, a guest address. */
    public String object() { return object; }
}
