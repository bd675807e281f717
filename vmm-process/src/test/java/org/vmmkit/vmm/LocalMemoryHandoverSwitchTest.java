package org.vmmkit.vmm;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;

import com.google.gson.JsonObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code migration.local-memory-handover = false} on either end turns the local live upgrade's memfd hand-over
 * off: a {@code unix:} migration then copies guest RAM as over TCP and completes, the destination's guest
 * consistent page by page. Software guests in this JVM, the destination on a Unix socket.
 */
@Timeout(120)
class LocalMemoryHandoverSwitchTest {
    @TempDir Path dir;

    private static List<String> with(String... sets) {
        List<String> all = new ArrayList<>(CliRun.SOFTWARE_GUEST);
        all.addAll(List.of(sets));
        return all;
    }

    /** What a migration over a Unix socket ended with, and the two guests' reports after it. */
    private record Result(JsonObject end, Map<String, Object> source, Map<String, Object> destination, Machine.Status destinationStatus) {}

    private Result migrateOverUnix(List<String> sourceSets, List<String> destinationSets) throws Exception {
        Path control = dir.resolve("source.sock"), incoming = dir.resolve("incoming.sock");
        try (Machine source = Machine.source(VmmSettings.load(null, sourceSets));
             Machine destination = Machine.destination(VmmSettings.load(null, destinationSets), true);
             ControlServer server = new ControlServer(control, source, () -> { });
             ServerSocketChannel listen = ServerSocketChannel.open(StandardProtocolFamily.UNIX).bind(UnixDomainSocketAddress.of(incoming))) {
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread receiver = Thread.ofPlatform().daemon().start(() -> {
                try {
                    destination.receive(listen); // returns once the guest runs here
                } catch (IOException | RuntimeException e) {
                    failure.set(e);
                }
            });
            JsonObject end = Main.watch(control, Map.of("uri", "unix:" + incoming), false);
            assertEquals("completed", end.get("status").getAsString(), end.toString());
            receiver.join(); // the source completed: the destination acknowledged, its receive returns (the class's timeout bounds it)
            assertNull(failure.get());
            return new Result(end, source.guestReport(), destination.guestReport(), destination.status());
        }
    }

    private static void assertRamCopied(Result r) {
        JsonObject ram = r.end().getAsJsonObject("ram");
        assertFalse(ram.get("memfds-passed").getAsBoolean(), r.end().toString());
        assertTrue(ram.get("normal").getAsLong() > 0, "RAM pages went over the socket: " + r.end());
        assertTrue(r.end().get("transferred").getAsLong() - r.end().getAsJsonObject("vfio").get("transferred").getAsLong()
                >= ram.get("normal-bytes").getAsLong(), "their bytes are on the wire: " + r.end());
        assertEquals(Machine.Status.RUNNING, r.destinationStatus());
        assertEquals("consistent", r.destination().get("incoming-workload-check"), "every workload page as the paused guest left it");
        assertEquals(false, r.source().get("memory-handed-over"));
        assertEquals(r.source().get("memory-digest"), r.destination().get("incoming-memory-digest"), "the destination holds the source's memory");
    }

    @Test
    void aSourceWithTheHandoverOffCopiesRamOverAUnixSocket() throws Exception {
        assertRamCopied(migrateOverUnix(with("migration.local-memory-handover=false"), CliRun.SOFTWARE_GUEST));
    }

    @Test
    void aDestinationWithTheHandoverOffDeclinesTheMemfdsAndRamIsCopied() throws Exception {
        assertRamCopied(migrateOverUnix(CliRun.SOFTWARE_GUEST, with("migration.local-memory-handover=false")));
    }

    @Test
    void byDefaultAUnixMigrationHandsTheMemoryOver() throws Exception {
        Result r = migrateOverUnix(CliRun.SOFTWARE_GUEST, CliRun.SOFTWARE_GUEST);
        JsonObject ram = r.end().getAsJsonObject("ram");
        assertTrue(ram.get("memfds-passed").getAsBoolean(), r.end().toString());
        assertEquals(0, ram.get("normal").getAsLong(), "no RAM page sent");
        assertEquals(Machine.Status.RUNNING, r.destinationStatus());
        assertEquals(true, r.source().get("memory-handed-over"));
    }
}
