package org.vmmkit.migration;

import java.time.Duration;
import java.util.List;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.migration.wire.StreamHeader;

/** The {@code migration} section of the config file: its keys and the {@link MigrationSettings} they make. */
public final class MigrationConfig {
    private MigrationConfig() {}

    public static final ConfigKey<Duration> DOWNTIME_LIMIT = ConfigKey.duration("migration.downtime-limit", "300ms",
            "Longest pause the guest may see: pre-copy stops once the expected downtime is under it.");
    public static final ConfigKey<Long> MAX_ITERATIONS = ConfigKey.count("migration.max-iterations", "30",
            "Pre-copy rounds before stop-and-copy starts anyway (a workload that cannot converge); the stats say so.");
    public static final ConfigKey<Long> MAX_BANDWIDTH = ConfigKey.size("migration.max-bandwidth", "0",
            "Send rate cap in bytes per second over all channels (e.g. 100M); 0 is unlimited.");
    public static final ConfigKey<Long> CHANNELS = ConfigKey.count("migration.channels", "1",
            "TCP connections: RAM is spread over all of them, device data and control go in order on the first.");
    public static final ConfigKey<Long> DEVICE_CHUNKS_PER_ROUND = ConfigKey.count("migration.device-chunks-per-round", "16",
            "Device state chunks each device may send per pre-copy round.");

    public static final ConfigKey<Boolean> RAM_CHECKSUMS = ConfigKey.flag("migration.ram-checksums", "true",
            "A CRC32C per RAM page, checked by the destination (corruption beyond TCP's is caught); false trusts TCP as QEMU does, for throughput.");

    public static final List<ConfigKey<?>> KEYS = List.of(DOWNTIME_LIMIT, MAX_ITERATIONS, MAX_BANDWIDTH, CHANNELS, DEVICE_CHUNKS_PER_ROUND,
            RAM_CHECKSUMS);

    /** The settings the config gives, each value checked against its key's bounds. */
    public static MigrationSettings from(Config config) {
        long rounds = config.get(MAX_ITERATIONS);
        if (rounds < 1 || rounds > 100_000) throw config.invalid(MAX_ITERATIONS, "must be between 1 and 100000");
        long channels = config.get(CHANNELS);
        if (channels < 1 || channels > StreamHeader.MAX_CHANNELS) {
            throw config.invalid(CHANNELS, "must be between 1 and " + StreamHeader.MAX_CHANNELS);
        }
        long chunks = config.get(DEVICE_CHUNKS_PER_ROUND);
        if (chunks < 1 || chunks > 1_000_000) throw config.invalid(DEVICE_CHUNKS_PER_ROUND, "must be between 1 and 1000000");
        long bandwidth = config.get(MAX_BANDWIDTH);
        if (bandwidth != 0 && bandwidth < 1 << 20) throw config.invalid(MAX_BANDWIDTH, "must be 0 (unlimited) or at least 1M per second");
        return MigrationSettings.DEFAULT.withDowntimeLimit(config.get(DOWNTIME_LIMIT)).withMaxIterations((int) rounds)
                .withMaxBandwidth(bandwidth).withChannels((int) channels).withDeviceChunksPerRound((int) chunks)
                .withRamChecksums(config.get(RAM_CHECKSUMS));
    }
}
