package org.vmmkit.vmm;

import java.io.IOException;
import java.net.SocketAddress;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.Function;

import org.vmmkit.core.config.ConfigException;
import org.vmmkit.migration.MigrationConfig;
import org.vmmkit.migration.MigrationEvent;
import org.vmmkit.migration.MigrationException;
import org.vmmkit.migration.MigrationSettings;
import org.vmmkit.migration.MigrationSource;
import org.vmmkit.migration.MigrationStats;
import org.vmmkit.migration.MigrationStatus;

/**
 * A source VM's migrations, one at a time: each run on its own thread, cancelled, settled when its outcome is
 * unknown, given new parameters while it runs, and reported (statistics, error, events); with the
 * parameters the next one starts from.
 */
final class OutgoingMigration {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.vmm");

    /** The migration parameters now: the config file's, as migrate-set-parameters changed them (the next migration starts from these). */
    private volatile MigrationSettings parameters;
    /** Who hears the migrations' events (the control endpoint's subscribers); called on the migrating thread, never blocking. */
    private volatile Consumer<MigrationEvent> events = e -> { };
    private volatile MigrationSource migration;
    private volatile Thread thread;
    private volatile String error;
    /**
     * Set when the migration thread ended on an exception the source did not record (its status would stay
     * {@code none} or mid-way, and a client following it would wait for ever): the source's figures, failed.
     * Cleared before {@link #migration} is replaced, so a reader that sees the new source never sees the old value.
     */
    private volatile MigrationStats abandoned;

    OutgoingMigration(MigrationSettings initial) {
        this.parameters = initial;
    }

    MigrationSettings parameters() {
        return parameters;
    }

    void onEvents(Consumer<MigrationEvent> listener) {
        this.events = listener;
    }

    /** Whether a migration's thread runs (from its start to its end, the rollback included). */
    boolean threadRunning() {
        Thread t = thread;
        return t != null && t.isAlive();
    }

    /**
     * Whether the last migration's thread is done, waiting for it where its migration has ended (it still logs and
     * closes its dirty log after the end its events announced: a client that starts the next migration on that
     * event must not be refused). False while a migration is under way.
     */
    private boolean lastThreadDone() {
        Thread t = thread;
        if (t == null || !t.isAlive()) return true;
        MigrationStats last = stats();
        if (last == null || !last.ended()) return false;
        try {
            t.join(java.time.Duration.ofSeconds(10));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return !t.isAlive();
    }

    /** Whether a migration is under way: started and not ended (an unknown outcome has ended). */
    boolean running() {
        return threadRunning() && !stats().ended();
    }

    /** See {@link Machine#setMigrationParameters}. */
    synchronized MigrationSettings setParameters(Map<String, String> changes) {
        for (String key : changes.keySet()) {
            if (!key.equals("max-bandwidth") && !key.equals("downtime-limit")) {
                throw new IllegalArgumentException("migrate-set-parameters: unknown parameter '" + key + "' (it changes max-bandwidth and downtime-limit)");
            }
        }
        MigrationSettings next;
        try {
            next = MigrationConfig.override(parameters, changes);
        } catch (ConfigException e) {
            throw new IllegalArgumentException("migrate-set-parameters: " + e.getMessage(), e);
        }
        parameters = next;
        MigrationSource m = migration;
        if (m != null && threadRunning()) m.setParameters(next.downtimeLimit(), next.maxBandwidth());
        LOG.log(System.Logger.Level.INFO, "migration parameters: downtime limit {0} ms, max bandwidth {1} B/s", next.downtimeLimit().toMillis(),
                next.maxBandwidth());
        return next;
    }

    /**
     * Starts a migration to {@code destination} on its own thread: {@code build} makes its source from the
     * settings (the parameters now, or {@code overrides}) and the listener; {@code after} runs when it ended, or
     * at once when it is refused or cannot be built (so what the caller opened for it, a dirty log, is closed).
     */
    synchronized void start(SocketAddress destination, MigrationSettings overrides, Function<MigrationSettings, MigrationSource> build,
                            Runnable after) {
        boolean started = false;
        try {
            if (!lastThreadDone()) throw new IllegalStateException("a migration is already running");
            launch(destination, build.apply(overrides == null ? parameters : overrides).withListener(events), after);
            started = true;
        } finally {
            if (!started) after.run();
        }
    }

    private void launch(SocketAddress destination, MigrationSource source, Runnable after) {
        Consumer<MigrationEvent> listener = events;
        abandoned = null;
        migration = source;
        error = null;
        thread = Thread.ofPlatform().name("migration").start(() -> {
            try {
                LOG.log(System.Logger.Level.INFO, "migrating to {0}", destination);
                source.migrate(destination); // the VM's status follows it: postmigrate once completed
                LOG.log(System.Logger.Level.INFO, "migration completed: {0}", source.stats());
            } catch (MigrationException | RuntimeException e) {
                error = e.getMessage() != null ? e.getMessage() : e.toString();
                LOG.log(System.Logger.Level.WARNING, error);
                MigrationStats last = source.stats();
                // Only a status the source did not settle is replaced: "unknown" is settled (the VM stays paused
                // until migrate-resolve), and showing it as failed would invite resuming a VM that may run elsewhere.
                if (!last.ended()) {
                    abandoned = last.withStatus(MigrationStatus.FAILED);
                    listener.accept(new MigrationEvent.StatusChange(MigrationStatus.FAILED, null, error));
                }
            } finally {
                after.run();
            }
        });
    }

    /** Cancels a running migration (it rolls back); false if none runs. */
    boolean cancel() {
        MigrationSource m = migration;
        if (m == null || !threadRunning()) return false;
        m.cancel();
        return true;
    }

    /** See {@link Machine#resolveMigration}; {@code state} names the VM's state for the refusal. */
    String resolve(Boolean destinationRuns, SocketAddress askAt, String state) throws IOException {
        MigrationSource m = migration;
        if (m == null || !m.unresolved()) throw new IllegalStateException("no migration outcome is unknown (the VM is " + state + ")");
        MigrationStats after = destinationRuns == null ? m.resolveByAsking(askAt)
                : m.resolve(destinationRuns, destinationRuns ? "the operator says the destination runs the VM" : "the operator says the destination does not run the VM");
        LOG.log(System.Logger.Level.WARNING, "migration outcome resolved: " + m.error());
        return after.status().label();
    }

    /** The statistics of the current or last migration; null before any. */
    MigrationStats stats() {
        MigrationSource m = migration;
        MigrationStats failed = abandoned;
        return m == null ? null : failed != null ? failed : m.stats();
    }

    /** Why the last migration failed or was cancelled (and what the rollback did), or null. */
    String error() {
        MigrationSource m = migration;
        String fromSource = m == null ? null : m.error();
        return fromSource != null ? fromSource : error;
    }

    /** Cancels a running migration and waits (at most 10 s) for its rollback. */
    void close() {
        Thread t = thread;
        if (cancel()) {
            try {
                t.join(10_000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
