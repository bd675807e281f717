package org.vmmkit.vfio.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.vfio.VfioDevice;

/**
 * Which of a VM's VFIO devices a migration moves. A device the config marks migratable must have a v1
 * migration region; one that lacks it blocks the migration (every such device is named at once). A
 * device the config marks non-migratable is left out: its state is not moved, the destination starts its
 * own device fresh, and the plan says so.
 */
public final class DeviceMigrationPlan implements AutoCloseable {

    /** A device and what the config says of it. */
    public record Entry(VfioDevice device, boolean migratable) {}

    private final List<V1DeviceMigration> devices;
    private final List<String> leftOut;

    private DeviceMigrationPlan(List<V1DeviceMigration> devices, List<String> leftOut) {
        this.devices = List.copyOf(devices);
        this.leftOut = List.copyOf(leftOut);
    }

    /** Opens every migratable device (ids in list order); throws one {@link MigrationBlockedException} naming all blockers. */
    public static DeviceMigrationPlan open(List<Entry> entries, V1DeviceMigration.Options options) {
        List<V1DeviceMigration> opened = new ArrayList<>();
        List<String> leftOut = new ArrayList<>();
        List<String> blockers = new ArrayList<>();
        for (Entry e : entries) {
            if (!e.migratable()) {
                leftOut.add(e.device().name() + " (marked non-migratable: its state is not migrated)");
                continue;
            }
            try {
                opened.add(V1DeviceMigration.open(e.device(), opened.size(), options));
            } catch (MigrationBlockedException blocked) {
                blockers.add(blocked.getMessage());
            }
        }
        if (!blockers.isEmpty()) {
            opened.forEach(V1DeviceMigration::close);
            throw new MigrationBlockedException("migration is blocked: " + String.join("; ", blockers));
        }
        return new DeviceMigrationPlan(opened, leftOut);
    }

    /** The devices whose state moves, by device id. */
    public List<V1DeviceMigration> devices() {
        return devices;
    }

    /** The devices left out, each with why. */
    public List<String> leftOut() {
        return leftOut;
    }

    @Override
    public void close() {
        devices.forEach(V1DeviceMigration::close);
    }
}
