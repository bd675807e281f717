package org.vmmkit.core.vfio;

import java.lang.foreign.MemorySegment;

/** One IOVA range a container maps to host memory (guest RAM), with the device's access rights. */
public record DmaMapping(long iova, MemorySegment host, boolean deviceReads, boolean deviceWrites) {
    public long size() {
        return host.byteSize();
    }

    public long end() {
        return iova + host.byteSize();
    }
}
