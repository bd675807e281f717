package org.vmmkit.vmm;

import org.vmmkit.migration.MigrationStatus;

import java.io.IOException;
import java.nio.file.Path;

/**
 * The shutdown hook of {@code vmm migrate} (and the demo): on Ctrl-C (SIGINT) or SIGTERM it cancels the
 * migration this process started and waits for the source's rollback. The JVM then exits with 128 + the
 * signal's number (130, 143) whatever the hook does: {@code System.exit} from a hook blocks for ever, and
 * {@code Runtime.halt} would cut short the JVM's own hooks; README says so.
 * <p>
 * It is installed before the migrate command is sent, and the two are ordered by this object's lock: a
 * signal before the command keeps it from being sent, a signal after it cancels the migration. So there is
 * no moment at which the process can exit and leave a migration running that nobody watches.
 */
final class CancelOnShutdown implements AutoCloseable {
    /** Sends the migrate command. */
    interface Start {
        void run() throws IOException;
    }

    private final Path control;
    private final Thread hook;
    private boolean started, shuttingDown; // guarded by this

    private CancelOnShutdown(Path control) {
        this.control = control;
        this.hook = new Thread(this::cancel, "cancel-migration");
    }

    static CancelOnShutdown install(Path control) {
        CancelOnShutdown c = new CancelOnShutdown(control);
        Runtime.getRuntime().addShutdownHook(c.hook);
        return c;
    }

    /** Runs {@code start} unless the process is already shutting down (then it throws and nothing is sent). */
    synchronized void start(Start start) throws IOException {
        if (shuttingDown) throw new IOException("interrupted before the migration was started; nothing was sent");
        start.run();
        started = true;
    }

    private void cancel() {
        synchronized (this) {
            shuttingDown = true;
            if (!started) return;
        }
        try (ControlClient c = ControlClient.connect(control)) {
            c.subscribe(); // before the cancel: its end is an event this connection will see
            c.execute("migrate-cancel", null);
            System.err.println("\nvmm: cancelling the migration ...");
            java.util.concurrent.CompletableFuture<MigrationStatus> end = new java.util.concurrent.CompletableFuture<>();
            Thread.ofPlatform().daemon().name("cancel-migration-events").start(() -> {
                try {
                    MigrationStatus s = MigrationStatus.of(c.query("query-migrate").get("status").getAsString());
                    while (!s.ended() && s != MigrationStatus.NONE) {
                        com.google.gson.JsonObject e = c.nextEvent();
                        if (e.get("event").getAsString().equals("MIGRATION")) s = MigrationStatus.of(e.getAsJsonObject("data").get("status").getAsString());
                    }
                    end.complete(s);
                } catch (IOException | RuntimeException e) {
                    end.completeExceptionally(e);
                }
            });
            MigrationStatus s = end.get(10, java.util.concurrent.TimeUnit.SECONDS); // the JVM is exiting: not for ever
            System.err.println(s == MigrationStatus.UNKNOWN ? "vmm: cancel came after the decision point: the outcome is unknown and the"
                    + " source VM stays paused (migrate-resolve settles it)" : "vmm: migration " + s + "; the source VM keeps running");
        } catch (IOException | InterruptedException | java.util.concurrent.TimeoutException e) {
            System.err.println("vmm: cancel failed: " + e.getMessage());
        } catch (java.util.concurrent.ExecutionException e) {
            System.err.println("vmm: cancel failed: " + e.getCause().getMessage());
        }
    }

    /** Removes the hook once the migration has ended; while the hook runs, it is left to finish. */
    @Override
    public void close() {
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException shuttingDown) {
            // the hook is running: it cancels
        }
    }
}
