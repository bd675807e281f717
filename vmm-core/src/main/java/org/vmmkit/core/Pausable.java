package org.vmmkit.core;

import java.time.Duration;

/**
 * A component that can be stopped in place and started again without losing state: vCPUs, devices.
 * Migration pauses every component before stop-and-copy and resumes them on rollback.
 */
public interface Pausable {
    /** Stops the component; returns only when it has stopped. Returns how long that took. */
    Duration pause();

    /** Starts a paused component again where it stopped. */
    void resume();
}
