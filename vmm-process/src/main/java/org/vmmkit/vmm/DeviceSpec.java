package org.vmmkit.vmm;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.testbed.vfio.EmulatedDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedV2Device;
import org.vmmkit.testbed.vfio.P2pFabric;
import org.vmmkit.vfio.migration.DeviceMigrationPlan;

/**
 * One device of the {@code device.<name>.*} config section: an emulated VFIO device whose driver speaks
 * migration v1 (the migration region) or v2 (VFIO_DEVICE_FEATURE, a data_fd; with or without PRE_COPY and the
 * P2P states), its state size, data section kind (v1), operation rate, the guest RAM it writes by DMA, whether
 * its state migrates and by which protocol (detected, or forced); or a device served by a vfio-user server on a
 * UNIX socket ({@code type = vfio-user}), with how its migration data is reached and what drives it.
 */
public record DeviceSpec(String name, boolean migratable, long memory, EmulatedMigratableDevice.DataSection dataSection,
                         long opsPerSecond, long dmaAddress, long dmaSize, Kind kind, Path socket, boolean mapMigrationData,
                         String driver, String emulatedProtocol, DeviceMigrationPlan.Protocol migrationProtocol, boolean preCopy,
                         boolean p2p) {

    /** What serves the device. */
    public enum Kind { EMULATED, VFIO_USER }

    /** The host-side driver for libvfio-user's sample device (see {@link #DRIVER}), and the same with DMA during migrations. */
    public static final String SAMPLE_DRIVER = "libvfio-user-sample", SAMPLE_DMA_DRIVER = "libvfio-user-sample-dma";

    public static final ConfigKey<Kind> TYPE = new ConfigKey<>("device.<name>.type", "emulated",
            "Device kind. `emulated`: a VFIO device emulated in-process with the kernel's migration semantics, v1 or v2 (no /dev/vfio here). `vfio-user`: a device served by a vfio-user server on `device.<name>.socket`, migrated by the protocol the server speaks (v1: a migration region; v2: DEVICE_FEATURE and MIG_DATA_READ/WRITE; detected per server).",
            v -> switch (v) {
                case "emulated" -> Kind.EMULATED;
                case "vfio-user" -> Kind.VFIO_USER;
                default -> throw new IllegalArgumentException("expected 'emulated' or 'vfio-user'");
            });
    public static final ConfigKey<String> SOCKET = ConfigKey.text("device.<name>.socket", "",
            "vfio-user: the UNIX socket of the device's server, which the operator started; each process names its own (a destination its own server's). All guest RAM (or the dma-address/dma-size window) is mapped for DMA with its memfd.");
    public static final ConfigKey<Boolean> MAP_MIGRATION_DATA = ConfigKey.flag("device.<name>.map-migration-data", "false",
            "vfio-user: reach the migration region's data section through the mapping the server offers instead of REGION_READ/WRITE messages (trapped, the default: a v1 server may announce the data mappable yet serve it only through messages, as libvfio-user's does, and a client cannot detect that without consuming device state).");
    public static final ConfigKey<String> DRIVER = new ConfigKey<>("device.<name>.driver", "none",
            "vfio-user: what drives the device from the VMM in place of a guest driver: `none`; `" + SAMPLE_DRIVER + "` (libvfio-user's sample device, of either migration era (v1 or v2, detected); a v2 sample needs `pre-copy = false`: BAR0's timer an hour ahead, INTx on an eventfd, BAR1 rewritten `ops-per-second` times a second while the device runs); `" + SAMPLE_DMA_DRIVER + "`: the same, and when a migration starts tracking dirty pages the device's timer is set to fire 1-2 s later, when it DMAs into the first page of each half of the `dma-address`/`dma-size` window (the second half directly through the memfd), and BAR0 goes back an hour ahead at its interrupt.",
            v -> {
                if (!v.equals("none") && !v.equals(SAMPLE_DRIVER) && !v.equals(SAMPLE_DMA_DRIVER)) {
                    throw new IllegalArgumentException("expected 'none', '" + SAMPLE_DRIVER + "' or '" + SAMPLE_DMA_DRIVER + "'");
                }
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

    public static final ConfigKey<String> EMULATED_PROTOCOL = new ConfigKey<>("device.<name>.emulated-protocol", "v1",
            "The migration protocol the emulated device's driver speaks: `v1` (the migration region) or `v2` (VFIO_DEVICE_FEATURE and a data_fd, as every current kernel driver).",
            v -> {
                if (!v.equals("v1") && !v.equals("v2")) throw new IllegalArgumentException("expected v1 or v2");
                return v;
            });
    public static final ConfigKey<DeviceMigrationPlan.Protocol> MIGRATION_PROTOCOL = new ConfigKey<>("device.<name>.migration-protocol", "auto",
            "How the VMM migrates the device: `auto` (v2 where the device reports VFIO_DEVICE_FEATURE_MIGRATION, else the v1 region; for vfio-user, per server: a v1 migration region at index 9, else a DEVICE_FEATURE probe), `v1` or `v2`; a migratable device without the protocol chosen blocks migration.",
            v -> {
                try {
                    return DeviceMigrationPlan.Protocol.valueOf(v.toUpperCase(Locale.ROOT));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("expected auto, v1 or v2");
                }
            });
    public static final ConfigKey<Boolean> PRE_COPY = ConfigKey.flag("device.<name>.pre-copy", "true",
            "v2: for an emulated device, whether it offers PRE_COPY (VFIO_MIGRATION_PRE_COPY); for a vfio-user device, whether the VMM uses the server's PRE_COPY (`false` hides it: libvfio-user's v2 sample must have `false`, its destination takes only the stop-copy stream). Without it the device's state moves only in stop-and-copy.");
    public static final ConfigKey<Boolean> P2P = ConfigKey.flag("device.<name>.p2p", "true",
            "v2 emulation: whether the device offers the P2P states (VFIO_MIGRATION_P2P) and writes the VM's other v2 devices by peer-to-peer DMA.");

    public static final List<ConfigKey<?>> KEYS = List.of(TYPE, MIGRATABLE, MEMORY, DATA_SECTION, OPS, DMA_ADDRESS, DMA_SIZE, SOCKET,
            MAP_MIGRATION_DATA, DRIVER, EMULATED_PROTOCOL, MIGRATION_PROTOCOL, PRE_COPY, P2P);

    /** Every device the config names, in the order first named, each checked against the VM's memory. */
    public static List<DeviceSpec> from(Config config, long guestMemory) {
        List<DeviceSpec> out = new ArrayList<>();
        for (String name : config.names("device")) {
            Kind kind = config.get(TYPE, name);
            String socket = config.get(SOCKET, name);
            if (kind == Kind.VFIO_USER && socket.isEmpty()) throw config.invalid(SOCKET, name, "a vfio-user device needs the socket of its server");
            if (kind == Kind.EMULATED && !socket.isEmpty()) throw config.invalid(SOCKET, name, "only a vfio-user device has a socket");
            String driver = config.get(DRIVER, name);
            if (kind == Kind.EMULATED && !driver.equals("none")) throw config.invalid(DRIVER, name, "only a vfio-user device takes a driver");
            if (driver.equals(SAMPLE_DMA_DRIVER) && config.get(DMA_SIZE, name) < 2 * GuestMemory.PAGE_SIZE) {
                throw config.invalid(DRIVER, name, "the sample device's DMA needs a dma-size window of two DMA regions (its halves), at least 8K");
            }
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
                    dmaAddress, dmaSize, kind, socket.isEmpty() ? null : Path.of(socket), config.get(MAP_MIGRATION_DATA, name), driver,
                    config.get(EMULATED_PROTOCOL, name), config.get(MIGRATION_PROTOCOL, name), config.get(PRE_COPY, name), config.get(P2P, name)));
        }
        return out;
    }

    /**
     * What the VMM configured of the device's shape, for its stream section ({@code key=value;...}): an emulated
     * device's memory size and the protocol its driver speaks; nothing for a vfio-user device, whose server's
     * regions say its shape.
     */
    public String shape() {
        return kind == Kind.VFIO_USER ? "" : "memory=" + (memory % (1 << 20) == 0 ? (memory >> 20) + "M" : (memory >> 10) + "K")
                + ";emulated-protocol=" + emulatedProtocol;
    }

    /** The emulated device's own configuration (a v1 device). */
    public EmulatedMigratableDevice.Config deviceConfig() {
        return EmulatedMigratableDevice.Config.defaults(name).withMemory(memory).with(dataSection).withOpsPerSecond(opsPerSecond);
    }

    /** The emulated v2 device's configuration: its migration flags from pre-copy and p2p; DMA logging offered. */
    public EmulatedV2Device.Config v2DeviceConfig() {
        long flags = V2Abi.MIGRATION_STOP_COPY | (preCopy ? V2Abi.MIGRATION_PRE_COPY : 0) | (p2p ? V2Abi.MIGRATION_P2P : 0);
        return new EmulatedV2Device.Config(name, memory, flags, opsPerSecond, 16, p2p ? 8 : 0, true, true);
    }

    /** The emulated device this spec describes, with {@code seed} for its initial state. */
    public EmulatedDevice create(long seed, P2pFabric fabric) {
        if (emulatedProtocol.equals("v2")) {
            EmulatedV2Device d = new EmulatedV2Device(v2DeviceConfig(), seed);
            if (p2p) d.joinFabric(fabric);
            return d;
        }
        return new EmulatedMigratableDevice(deviceConfig(), seed);
    }
}
