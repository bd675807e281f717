package org.vmmkit.vfio.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.vfio.VfioDevice;

/**
 * Which of a VM's VFIO devices a migration moves, and by which protocol. A device's protocol is detected
 * ({@link Protocol#AUTO}: v2 when {@code VFIO_DEVICE_FEATURE_MIGRATION} reports STOP_COPY, as every current
 * kernel driver does; else the v1 migration region) or forced per device. A device the config marks
 * migratable must speak the protocol chosen; one that does not blocks the migration (every such device is
 * named at once). A device the config marks non-migratable is left out: its state is not moved, the
 * destination starts its own device fresh, and the plan says so. The v2 devices of the plan form one
 * {@link P2pGroup}: every one of them reaches its P2P state before any stops.
 */
public final class DeviceMigrationPlan implements AutoCloseable {

    /** The protocol that moves a device: detected, or forced by the config. */
    public enum Protocol { AUTO, V1, V2 }

    /**
     * A device and what the config says of it: whether it migrates, by which protocol, and {@code shape}, the
     * VMM's own settings for it ({@code key=value;...}, e.g. {@code memory=16M}) that the destination's device
     * must equal, added to its section's config after the region sizes.
     */
    public record Entry(VfioDevice device, boolean migratable, Protocol protocol, String shape) {
        public Entry(VfioDevice device, boolean migratable, Protocol protocol) {
            this(device, migratable, protocol, "");
        }

        public Entry(VfioDevice device, boolean migratable) {
            this(device, migratable, Protocol.AUTO);
        }
    }

    private final List<DeviceSection> devices;
    private final List<String> leftOut;
    private final P2pGroup group;

    private DeviceMigrationPlan(List<DeviceSection> devices, List<String> leftOut, P2pGroup group) {
        this.devices = List.copyOf(devices);
        this.leftOut = List.copyOf(leftOut);
        this.group = group;
    }

    /** Opens every migratable device; throws one {@link MigrationBlockedException} naming all blockers. */
    public static DeviceMigrationPlan open(List<Entry> entries, V1DeviceMigration.Options options) {
        return open(entries, options, V2DeviceMigration.Options.DEFAULT);
    }

    public static DeviceMigrationPlan open(List<Entry> entries, V1DeviceMigration.Options v1, V2DeviceMigration.Options v2) {
        List<DeviceSection> opened = new ArrayList<>();
        List<String> leftOut = new ArrayList<>();
        List<String> blockers = new ArrayList<>();
        P2pGroup group = new P2pGroup();
        for (Entry e : entries) {
            if (!e.migratable()) {
                leftOut.add(e.device().name() + " (marked non-migratable: its state is not migrated)");
                continue;
            }
            try {
                Protocol p = e.protocol();
                if (p == Protocol.AUTO) p = V2DeviceMigration.supported(e.device()) ? Protocol.V2 : Protocol.V1;
                if (p == Protocol.V2) {
                    V2DeviceMigration d = V2DeviceMigration.open(e.device(), group, v2);
                    d.configure(e.shape());
                    opened.add(d);
                } else {
                    V1DeviceMigration d = V1DeviceMigration.open(e.device(), opened.size(), v1);
                    d.configure(e.shape());
                    opened.add(d);
                }
            } catch (MigrationBlockedException blocked) {
                blockers.add(blocked.getMessage());
            }
        }
        if (!blockers.isEmpty()) {
            opened.forEach(DeviceSection::close);
            throw new MigrationBlockedException("migration is blocked: " + String.join("; ", blockers));
        }
        return new DeviceMigrationPlan(opened, leftOut, group);
    }

    /** The devices whose state moves, in entry order. */
    public List<DeviceSection> devices() {
        return devices;
    }

    /** The devices left out, each with why. */
    public List<String> leftOut() {
        return leftOut;
    }

    /** The plan's v2 devices, ordered together at stop and at start. */
    public P2pGroup p2pGroup() {
        return group;
    }

    @Override
    public void close() {
        devices.forEach(DeviceSection::close);
    }
}
