package org.vmmkit.testbed.vfio;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;

/**
 * The peer-to-peer path between emulated v2 devices (one PCI hierarchy): a device that runs may write into a
 * peer; a peer that has stopped must never receive such a write, which is what the P2P states exist for. Each
 * device records what it received while stopped ({@link EmulatedV2Device#p2pViolations()}).
 */
public final class P2pFabric {
    private final List<EmulatedV2Device> devices = new CopyOnWriteArrayList<>();

    void join(EmulatedV2Device device) {
        devices.add(device);
    }

    /** The peers of {@code device}, in joining order. */
    List<EmulatedV2Device> peers(EmulatedV2Device device) {
        List<EmulatedV2Device> peers = new ArrayList<>(devices);
        peers.remove(device);
        return peers;
    }
}
