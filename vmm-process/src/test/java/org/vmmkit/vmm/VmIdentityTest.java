package org.vmmkit.vmm;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;

import com.google.gson.JsonObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Issue 16 item 7: the stream header carries the VM's identity and each device's configuration, and the
 * destination checks both before anything moves; a misfit is refused in setup naming both values, and the
 * source reports the destination's reason. Software guests in this JVM, a destination on loopback.
 */
@Timeout(120)
class VmIdentityTest {
    @TempDir Path dir;

    private static List<String> with(String... sets) {
        List<String> all = new ArrayList<>(CliRun.SOFTWARE_GUEST);
        all.addAll(List.of(sets));
        return all;
    }

    /** What a migration ended with, and who each end was after it (the source's identity as query-status shows it). */
    private record Result(JsonObject end, UUID source, UUID destination, String statusUuid) {}

    /** Migrates a source of {@code sourceSets} to a destination of {@code destinationSets}. */
    private Result migrate(List<String> sourceSets, List<String> destinationSets) throws Exception {
        Path socket = dir.resolve("source-" + System.nanoTime() + ".sock");
        try (Machine source = Machine.source(VmmSettings.load(null, sourceSets));
             Machine destination = Machine.destination(VmmSettings.load(null, destinationSets), false);
             ControlServer server = new ControlServer(socket, source, () -> { });
             ServerSocketChannel listen = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            Thread receiver = Thread.ofPlatform().daemon().start(() -> {
                try {
                    destination.receive(listen);
                } catch (IOException ignored) {
                    // the listening socket closed at the end of the test
                }
            });
            UUID before = source.identity();
            JsonObject end = Main.watch(socket, Map.of("uri", "tcp:127.0.0.1:" + ((InetSocketAddress) listen.getLocalAddress()).getPort()), false);
            if (end.get("status").getAsString().equals("completed")) receiver.join(30_000); // the destination runs: it has taken the identity
            assertEquals(before, source.identity(), "a source's identity is the same for the process's lifetime");
            try (ControlClient c = ControlClient.connect(socket)) {
                return new Result(end, source.identity(), destination.identity(), c.query("query-status").get("uuid").getAsString());
            }
        }
    }

    private static String refusal(JsonObject end) {
        assertEquals("failed", end.get("status").getAsString(), end.toString());
        return end.get("error-desc").getAsString();
    }

    @Test
    void aDeviceConfiguredDifferentlyAtTheDestinationIsRefusedInSetupNamingBothValues() throws Exception {
        String why = refusal(migrate(with("device.gpu0.memory=1M"), with("device.gpu0.memory=2M")).end());
        assertTrue(why.contains("migration failed in setup: the destination refused in setup: "), why);
        assertTrue(why.contains("section gpu0 (vfio-v1) is configured differently: memory=1M at the source, memory=2M here"), why);
        assertTrue(!why.contains("reset"), "the source reports the destination's reason, not the reset: " + why);
    }

    @Test
    void aDestinationStartedAsAnotherVmIsRefusedInSetupNamingBothIdentities() throws Exception {
        UUID a = UUID.randomUUID(), b = UUID.randomUUID();
        String why = refusal(migrate(with("vm.uuid=" + a), with("vm.uuid=" + b)).end());
        assertTrue(why.contains("the destination refused in setup: ") && why.contains("the source VM is " + a + ", this destination was started as " + b), why);
    }

    @Test
    void aDestinationWithoutAnIdentityTakesTheSourcesAndStatusShowsIt() throws Exception {
        Result r = migrate(CliRun.SOFTWARE_GUEST, CliRun.SOFTWARE_GUEST);
        assertEquals("completed", r.end().get("status").getAsString(), r.end().toString());
        assertNotNull(r.source(), "a source without vm.uuid has a random one");
        assertEquals(r.source(), r.destination(), "the destination took the source's identity");
        assertEquals(r.source().toString(), r.statusUuid(), "query-status shows it");
        UUID same = UUID.randomUUID();
        Result configured = migrate(with("vm.uuid=" + same), with("vm.uuid=" + same));
        assertEquals("completed", configured.end().get("status").getAsString(), "a destination started as the source's VM takes its stream");
        assertEquals(same, configured.source());
    }

    @Test
    void anIncomingVmHasNoIdentityUntilAStreamStartsIt() {
        try (Machine destination = Machine.destination(VmmSettings.load(null, CliRun.SOFTWARE_GUEST), false)) {
            assertNull(destination.identity());
        }
    }
}
