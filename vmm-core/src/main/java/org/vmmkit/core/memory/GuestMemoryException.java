package org.vmmkit.core.memory;

/** An access to guest memory outside every region, or across a region's end. */
public final class GuestMemoryException extends IndexOutOfBoundsException {
    private final long guestAddress;
    private final long length;

    public GuestMemoryException(String what, long guestAddress, long length) {
        super(what + ": guest address 0x" + Long.toHexString(guestAddress) + " length " + length);
        this.guestAddress = guestAddress;
        this.length = length;
    }

    public long guestAddress() { return guestAddress; }

    public long length() { return length; }
}
