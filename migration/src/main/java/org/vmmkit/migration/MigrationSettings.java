package org.vmmkit.migration;

import java.time.Duration;

/**
 * How a migration runs: the downtime it may cost, the pre-copy round cap, how many chunks a device may
 * send per round, the RAM frame size, the ring size, and the bandwidth cap in bytes per second (0 =
 * unlimited). (Several channels come later.)
 */
public record MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages,
                                int ringSize, long maxBandwidth) {
    public static final MigrationSettings DEFAULT = new MigrationSettings(Duration.ofMillis(300), 30, 16, 256, 1024, 0);

    public MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages, int ringSize) {
        this(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, 0);
    }

    public MigrationSettings withMaxBandwidth(long bytesPerSecond) {
        return new MigrationSettings(downtimeLimit, maxIterations, deviceChunksPerRound, maxFramePages, ringSize, bytesPerSecond);
    }

    public MigrationSettings {
        if (downtimeLimit.isNegative() || maxIterations < 1 || deviceChunksPerRound < 1 || maxFramePages < 1
                || Integer.bitCount(ringSize) != 1 || maxBandwidth < 0) {
            throw new IllegalArgumentException("bad migration settings: " + downtimeLimit + ", " + maxIterations + " rounds, "
                    + deviceChunksPerRound + " chunks a round, " + maxFramePages + " pages a frame, ring " + ringSize);
        }
    }
}
