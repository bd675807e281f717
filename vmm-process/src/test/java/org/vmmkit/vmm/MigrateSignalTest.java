package org.vmmkit.vmm;

import java.net.InetSocketAddress;
import org.vmmkit.migration.MigrationStatus;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code vmm migrate} stopped by a signal (a child process; the source VM is a software guest in this JVM,
 * the destination a socket that accepts and never answers, so the migration waits in setup): its shutdown
 * hook cancels the migration, the source runs on, and the process exits with the JVM's status for the
 * signal, 128 + its number, as README says. SIGTERM stands for Ctrl-C's SIGINT: a process started from a
 * JVM that was itself started in the background may inherit SIGINT as ignored; both run the same hook.
 */
@Timeout(60)
class MigrateSignalTest {
    @TempDir Path dir;

    @Test
    void aSignalledMigrateCancelsTheMigrationAndExitsWithTheSignalsStatus() throws Exception {
        Path control = dir.resolve("vmm.sock");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST));
             ControlServer server = new ControlServer(control, machine, () -> {});
             ServerSocketChannel destination = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            int port = ((InetSocketAddress) destination.getLocalAddress()).getPort();
            Demo.Child migrate = Demo.Child.start("migrate", dir, false, "migrate", "--to", "127.0.0.1:" + port, "--control", control.toString());
            try (SocketChannel stream = destination.accept()) { // the migrate command was sent, so the hook is installed
                migrate.process.destroy(); // SIGTERM
                assertTrue(migrate.process.waitFor(30, TimeUnit.SECONDS), "vmm migrate exits on SIGTERM");
            }
            assertEquals(128 + 15, migrate.process.exitValue());
            String log = Files.readString(migrate.log);
            assertTrue(log.contains("vmm: cancelling the migration") && log.contains("vmm: migration cancelled; the source VM keeps running"), log);
            assertEquals(MigrationStatus.CANCELLED, machine.migrationStats().status(), machine.migrationError());
            assertEquals(Machine.Status.RUNNING, machine.status());
        }
    }
}
