package org.vmmkit.vmm;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

/**
 * One device of the {@code device.<name>.*} config section: an emulated VFIO device with a v1 migration
 * region (the kernel side's semantics, see vfio-migration), its state size, data section kind, operation
 * rate, the guest RAM it writes by DMA, and whether its state migrates.
 */
public record DeviceSpec(String name, boolean migratable, long memory, EmulatedMigratableDevice.DataSection dataSection,
                         long opsPerSecond, long dmaAddress, long dmaSize) {

    public static final ConfigKey<String> TYPE = new ConfigKey<>("device.<name>.type", "emulated",
            "Device kind. `emulated`: a VFIO device emulated in-process with the kernel's v1 migration semantics (no /dev/vfio here).",
            v -> {
                if (!v.equals("emulated")) throw new IllegalArgumentException("expected 'emulated' (the only kind this build runs)");
                return v;
            });
    public static final ConfigKey<Boolean> MIGRATABLE = ConfigKey.flag("device.<name>.migratable", "true",
            "Whether the device's state migrates. A migratable device without a migration region blocks migration; `false` leaves it out and the destination's device starts fresh.");
    public static final ConfigKey<Long> MEMORY = ConfigKey.size("device.<name>.memory", "16M",
            "Size of the device's internal state (its memory), all of it moved by a migration.");
    public static final ConfigKey<EmulatedMigratableDevice.DataSection> DATA_SECTION = new ConfigKey<>("device.<name>.data-section", "mmap",
            "How the migration region's data section is reached: `mmap`, `partial` (half mmap'd), `trapped` (read/write only) or `direct` (device memory mapped in the region).",
            v -> {
                try {
                    return EmulatedMigratableDevice.DataSection.valueOf(v.toUpperCase(Locale.ROOT));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("expected mmap, partial, trapped or direct");
                }
            });
    public static final ConfigKey<Long> OPS = ConfigKey.count("device.<name>.ops-per-second", "2000",
            "State-changing operations per second while the device runs (each dirties device memory and, with DMA, guest RAM).");
    public static final ConfigKey<Long> DMA_ADDRESS = ConfigKey.size("device.<name>.dma-address", "128M",
            "Guest physical address of the RAM the device writes by DMA (through the IOMMU, which tracks it dirty).");
    public static final ConfigKey<Long> DMA_SIZE = ConfigKey.size("device.<name>.dma-size", "0",
            "Bytes of guest RAM from dma-address the device writes by DMA; 0 is no DMA.");

    public static final List<ConfigKey<?>> KEYS = List.of(TYPE, MIGRATABLE, MEMORY, DATA_SECTION, OPS, DMA_ADDRESS, DMA_SIZE);

    /** Every device the config names, in the order first named, each checked against the VM's memory. */
    public static List<DeviceSpec> from(Config config, long guestMemory) {
        List<DeviceSpec> out = new ArrayList<>();
        for (String name : config.names("device")) {
            config.get(TYPE, name);
            long memory = config.get(MEMORY, name);
            if (memory < 1 << 20 || memory % GuestMemory.PAGE_SIZE != 0) throw config.invalid(MEMORY, name, "must be a multiple of 4K and at least 1M");
            long dmaAddress = config.get(DMA_ADDRESS, name), dmaSize = config.get(DMA_SIZE, name);
            if (dmaSize > 0) {
                long end = dmaAddress + dmaSize;
                boolean fits = GuestMemory.standardLayout(guestMemory).stream()
                        .anyMatch(r -> dmaAddress >= r.guestAddress() && end <= r.guestAddress() + r.size());
                if (!fits || dmaAddress % GuestMemory.PAGE_SIZE != 0) {
                    throw config.invalid(DMA_SIZE, name, "DMA range [0x" + Long.toHexString(dmaAddress) + ", 0x" + Long.toHexString(end)
                            + ") is not page-aligned inside one RAM region of a " + guestMemory + "-byte VM");
                }
            }
            out.add(new DeviceSpec(name, config.get(MIGRATABLE, name), memory, config.get(DATA_SECTION, name), config.get(OPS, name),
                    dmaAddress, dmaSize));
        }
        return out;
    }

    /** The emulated device's own configuration. */
    public EmulatedMigratableDevice.Config deviceConfig() {
        return EmulatedMigratableDevice.Config.defaults(name).withMemory(memory).with(dataSection).withOpsPerSecond(opsPerSecond);
    }
}
