package org.vmmkit.migration;

import java.time.Duration;

import org.vmmkit.migration.wire.StreamHeader;

/**
 * How a migration runs: the downtime it may cost, the pre-copy round cap, how many chunks a device may
 * send per round, the RAM frame size, the ring size, the bandwidth cap in bytes per second (0 = unlimited)
 * the number of connections (RAM spread over all of them; device data and control in order on the first),
 * whether RAM pages carry a CRC32C each, and what happens when pre-copy cannot meet the downtime limit
 * ({@link ConvergencePolicy}).
 */
public record MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages,
                                int ringSize, long maxBandwidth, int channels, boolean ramChecksums, ConvergencePolicy convergence) {
    public static final MigrationSettings DEFAULT = new MigrationSettings(Duration.ofMillis(300), 30, 16, 256, 1024, 0, 1, true,
            ConvergencePolicy.THROTTLE);

    /** All but the convergence policy, which is the default's (throttle). */
    public MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages, int ringSize,
                             long maxBandwidth, int channels, boolean ramChecksums) {
        this(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, channels, ramChecksums,
                ConvergencePolicy.THROTTLE);
    }

    public MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages, int ringSize) {
        this(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, 0, 1, true, ConvergencePolicy.THROTTLE);
    }

    /** RAM pages with a CRC32C each (true, the default) or trusted to TCP as QEMU does (false, faster). */
    public MigrationSettings withRamChecksums(boolean on) {
        return new MigrationSettings(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, channels, on, convergence);
    }

    public MigrationSettings {
        if (downtimeLimit.isNegative() || maxIterations < 1 || deviceChunksPerRound < 1 || maxFramePages < 1
                || Integer.bitCount(ringSize) != 1 || maxBandwidth < 0 || channels < 1 || channels > StreamHeader.MAX_CHANNELS
                || convergence == null) {
            throw new IllegalArgumentException("bad migration settings: downtime limit " + downtimeLimit + ", " + maxIterations + " rounds, "
                    + deviceChunksPerRound + " chunks a round, " + maxFramePages + " pages a frame, ring " + ringSize
                    + " (a power of two), max bandwidth " + maxBandwidth + ", " + channels + " channels (1 to "
                    + StreamHeader.MAX_CHANNELS + "), convergence " + convergence);
        }
    }

    public MigrationSettings withDowntimeLimit(Duration limit) {
        return new MigrationSettings(limit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, channels, ramChecksums, convergence);
    }

    public MigrationSettings withMaxIterations(int rounds) {
        return new MigrationSettings(downtimeLimit, rounds, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, channels, ramChecksums, convergence);
    }

    public MigrationSettings withMaxBandwidth(long bytesPerSecond) {
        return new MigrationSettings(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, bytesPerSecond, channels, ramChecksums, convergence);
    }

    public MigrationSettings withDeviceChunksPerRound(int chunks) {
        return new MigrationSettings(downtimeLimit, maxIterations, chunks, maxFramePages, ringSize, maxBandwidth, channels, ramChecksums, convergence);
    }

    public MigrationSettings withChannels(int count) {
        return new MigrationSettings(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, count, ramChecksums, convergence);
    }

    /** What pre-copy does when the downtime limit cannot be met. */
    public MigrationSettings withConvergence(ConvergencePolicy policy) {
        return new MigrationSettings(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, maxBandwidth, channels, ramChecksums,
                policy);
    }
}
