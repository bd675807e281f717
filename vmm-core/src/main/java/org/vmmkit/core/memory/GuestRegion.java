package org.vmmkit.core.memory;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Fd;

/**
 * One contiguous range of guest RAM: guest physical address, size, the host mapping and the memfd
 * behind it (mapped shared, so another process can map the same pages from {@code backing}).
 */
public record GuestRegion(int index, long guestAddress, long size, MemorySegment host, Fd backing) {

    public long end() {
        return guestAddress + size;
    }

    public boolean contains(long gpa) {
        return gpa >= guestAddress && gpa - guestAddress < size;
    }

    @Override
    public String toString() {
        return "region " + index + " [0x" + Long.toHexString(guestAddress) + ", 0x" + Long.toHexString(end()) + ")";
    }
}
