package org.vmmkit.testbed.vfio;

import java.util.List;

import org.vmmkit.core.vfio.VfioDevice;

/** What a verification asks of an emulated device, whichever migration protocol its driver speaks. */
public interface EmulatedDevice extends VfioDevice {
    /** SHA-256 of the device's state now. */
    byte[] stateDigest();

    /** The digest recorded when a resumed state was complete, before the device ran, or null. */
    byte[] digestAtResume();

    /** Workload operations done (a register that migrates with the device). */
    long operations();

    long dmaWrites();

    /** Every protocol misuse by the VMM so far. */
    List<String> misuse();

    /** Peer writes received while stopped (a P2P ordering the VMM got wrong); none for devices without a P2P path. */
    default List<String> p2pViolations() {
        return List.of();
    }

    /** Peer-to-peer writes this device made (0 for devices without a P2P path). */
    default long p2pWrites() {
        return 0;
    }
}
