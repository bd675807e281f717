package org.vmmkit.core.vfio;

/** A device DMA to an IOVA that is not mapped, or is mapped without the access it needs. */
public final class IommuFaultException extends RuntimeException {
    public IommuFaultException(String container, String access, long iova, long length, String why) {
        super("DMA " + access + " of " + length + " bytes at iova 0x" + Long.toHexString(iova) + " through " + container
                + " faulted: " + why);
    }
}
