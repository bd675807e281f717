package org.vmmkit.migration;

import java.io.Closeable;
import java.io.IOException;
import java.time.Duration;
import java.util.List;

import org.vmmkit.migration.pipeline.MigrationThreads;

/**
 * Closes connections unless disarmed in time: turns a peer that stopped answering into a failed read or
 * accept, where waiting is only safe while nothing has changed. Disarming and firing exclude each other, so
 * exactly one of "disarmed in time" and "fired" holds.
 */
final class Watchdog implements AutoCloseable {
    private final java.util.concurrent.ScheduledFuture<?> timer;
    private boolean disarmed, fired; // guarded by this

    /** Arms a timer on the process's migration threads ({@link MigrationThreads}: no thread is made per watchdog). */
    Watchdog(String name, Duration timeout, List<? extends Closeable> connections) {
        this.timer = MigrationThreads.after(timeout, name, () -> {
            synchronized (this) {
                if (disarmed) return;
                fired = true;
            }
            for (Closeable c : connections) {
                try {
                    c.close();
                } catch (IOException ignored) {
                    // closing is the whole job; one that fails to close is already unusable
                }
            }
        });
    }

    /** Stops the watchdog; false if it fired first (the connections are closed). */
    synchronized boolean disarm() {
        if (fired) return false;
        disarmed = true;
        timer.cancel(false);
        return true;
    }

    /** Whether it fired: a failed read is then the timeout's doing. */
    synchronized boolean fired() {
        return fired;
    }

    @Override
    public void close() {
        disarm();
    }
}
