package org.vmmkit.vmm;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.vmm.VmmConfig;
import org.vmmkit.migration.MigrationConfig;
import org.vmmkit.migration.MigrationSettings;
import org.vmmkit.migration.transport.Transport;

/**
 * Everything a vmm process reads from its config file: the VM, its devices, how it migrates, (as a
 * destination) whether it populates guest RAM ahead of the incoming pages, or all of it while it waits, and
 * whether guest memory is handed over as memfds over a Unix socket (either end) rather than copied.
 */
public record VmmSettings(VmmConfig vm, List<DeviceSpec> devices, MigrationSettings migration, Transport transport, boolean populateAhead,
                          boolean incomingPrealloc, boolean localMemoryHandover) {

    /** Every key of the file, in README's order. */
    public static final List<ConfigKey<?>> KEYS;

    static {
        List<ConfigKey<?>> keys = new ArrayList<>(VmmConfig.KEYS);
        keys.addAll(MigrationConfig.KEYS);
        keys.addAll(DeviceSpec.KEYS);
        KEYS = List.copyOf(keys);
    }

    public static VmmSettings from(Config config) {
        VmmConfig vm = VmmConfig.from(config);
        return new VmmSettings(vm, DeviceSpec.from(config, vm.memorySize()), MigrationConfig.from(config), MigrationConfig.transport(config),
                config.get(MigrationConfig.POPULATE_AHEAD), config.get(MigrationConfig.INCOMING_PREALLOC),
                config.get(MigrationConfig.LOCAL_MEMORY_HANDOVER));
    }

    /** Reads {@code file} (null: defaults only) and applies {@code overrides} ({@code key=value}). */
    public static VmmSettings load(Path file, List<String> overrides) {
        return from(Config.load(KEYS, file, overrides));
    }
}
