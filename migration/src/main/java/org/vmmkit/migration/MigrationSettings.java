package org.vmmkit.migration;

import java.time.Duration;

/**
 * How a migration runs: the downtime it may cost, the pre-copy round cap, how many chunks a device may
 * send per round, the RAM frame size and the ring size. (Channels and the bandwidth cap come later.)
 */
public record MigrationSettings(Duration downtimeLimit, int maxIterations, int deviceChunksPerRound, long maxFramePages,
                                int ringSize) {
    public static final MigrationSettings DEFAULT = new MigrationSettings(Duration.ofMillis(300), 30, 16, 256, 1024);

    public MigrationSettings {
        if (downtimeLimit.isNegative() || maxIterations < 1 || deviceChunksPerRound < 1 || maxFramePages < 1
                || Integer.bitCount(ringSize) != 1) {
            throw new IllegalArgumentException("bad migration settings: " + downtimeLimit + ", " + maxIterations + " rounds, "
                    + deviceChunksPerRound + " chunks a round, " + maxFramePages + " pages a frame, ring " + ringSize);
        }
    }
}
