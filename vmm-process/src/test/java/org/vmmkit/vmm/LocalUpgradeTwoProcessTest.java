package org.vmmkit.vmm;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The local live upgrade between two real vmm processes (software guest: no KVM needed): migrating over a
 * {@code unix:} socket hands the guest-memory memfds over, so no RAM is copied, while an emulated device doing
 * DMA into that memory has its state sent as usual; the destination's guest continues from the source's
 * memory, checked page by page when the stream is loaded. Rolled back — cancelled or with the destination
 * killed before COMMIT — the source runs on its memory, and a second attempt completes.
 */
@Timeout(180)
class LocalUpgradeTwoProcessTest {
    @TempDir Path dir;
    private VmmPair pair;

    static final List<String> CONFIG = List.of(
            "vm.accelerator = software",
            "vm.memory = 128M",
            "workload.size = 16M",
            "workload.pages-per-second = 20000",
            "device.gpu0.memory = 8M",
            "device.gpu0.dma-address = 64M",
            "device.gpu0.dma-size = 4M");

    private void startBoth() throws Exception {
        pair = VmmPair.start(dir, CONFIG, "unix:" + dir.resolve("incoming.sock"), List.of(), List.of());
        assertEquals("unix:" + dir.resolve("incoming.sock"), pair.listen);
        try (ControlClient s = ControlClient.connect(pair.sourceControl)) {
            ControlWaits.awaitPasses(s, 2);
        }
    }

    @AfterEach
    void stopBoth() {
        if (pair != null) pair.close();
    }

    /** The destination runs on the memory the source paused with, consistent page by page, and the device state it stopped with. */
    private long checkDestinationTookOver(long passesBefore) throws Exception {
        try (ControlClient s = ControlClient.connect(pair.sourceControl); ControlClient d = ControlClient.connect(pair.destinationControl)) {
            assertEquals("postmigrate", s.query("query-status").get("status").getAsString());
            assertEquals("running", d.query("query-status").get("status").getAsString());
            JsonObject src = s.query("query-guest"), dst = d.query("query-guest");
            assertTrue(src.get("memory-handed-over").getAsBoolean(), src.toString());
            long incoming = dst.get("incoming-passes").getAsLong();
            assertTrue(incoming >= passesBefore, "the destination read the source's pass counter (" + incoming + "), not a fresh memory's");
            assertEquals("consistent", text(dst.get("incoming-workload-check")), "every workload page as the paused guest left it");
            assertNotNull(text(dst.get("incoming-memory-digest")));
            JsonObject gpuSrc = src.getAsJsonArray("devices").get(0).getAsJsonObject();
            JsonObject gpuDst = dst.getAsJsonArray("devices").get(0).getAsJsonObject();
            assertTrue(gpuSrc.get("dma-writes").getAsLong() > 0, "the source device did DMA into the memory handed over");
            assertEquals(text(gpuSrc.get("state-digest")), text(gpuDst.get("incoming-state-digest")), "device state at resume = at stop");
            assertTrue(gpuSrc.getAsJsonArray("misuse").isEmpty() && gpuDst.getAsJsonArray("misuse").isEmpty());
            ControlWaits.awaitPasses(d, incoming + 2); // the guest continues at the destination
            return incoming;
        }
    }

    /** RAM bytes on the wire: all of them but the device sections' (frame headers and control only). */
    private static long ramBytes(JsonObject stats) {
        return stats.get("transferred").getAsLong() - stats.getAsJsonObject("vfio").get("transferred").getAsLong();
    }

    @Test
    void migratingOverUnixHandsTheGuestMemoryOverAndCopiesNoRam() throws Exception { // over two Unix connections, as --channels 2 asks
        startBoth();
        long before;
        try (ControlClient s = ControlClient.connect(pair.sourceControl)) {
            before = s.query("query-guest").get("passes").getAsLong();
        }
        CliRun run = CliRun.of("migrate", "--to", pair.listen, "--control", pair.sourceControl.toString(), "--json", "--channels", "2");
        assertEquals(0, run.code(), run.toString());
        JsonObject stats = JsonParser.parseString(run.out()).getAsJsonObject();
        assertEquals("completed", stats.get("status").getAsString(), stats.toString());
        JsonObject ram = stats.getAsJsonObject("ram");
        assertTrue(ram.get("memfds-passed").getAsBoolean(), stats.toString());
        assertEquals(0, ram.get("normal").getAsLong(), "no RAM page sent");
        assertEquals(0, ram.get("duplicate").getAsLong(), "no zero page either");
        assertTrue(ramBytes(stats) < 4096, "the stream carried " + ramBytes(stats) + " bytes besides device state: control frames only");
        assertTrue(stats.getAsJsonObject("vfio").get("transferred").getAsLong() >= 8L << 20, "the device state went through the stream");
        checkDestinationTookOver(before);
        assertEquals(Main.FAILED, CliRun.of("migrate", "--to", pair.listen, "--control", pair.sourceControl.toString()).code(),
                "a VM that has migrated away refuses another migration");
    }

    @Test
    void aCancelledLocalUpgradeLeavesTheSourceRunningOnItsMemoryAndASecondAttemptCompletes() throws Exception {
        startBoth();
        try (ControlClient s = ControlClient.connect(pair.sourceControl); ControlClient d = ControlClient.connect(pair.destinationControl)) {
            // The device's 8 MiB at 2 MiB/s: seconds of pre-copy after the memfds were handed over.
            s.execute("migrate", Map.of("uri", pair.listen, "max-bandwidth", "2M"));
            ControlWaits.awaitMigration(s, m -> m.get("transferred").getAsLong() > 1L << 20);
            s.execute("migrate-cancel", null);
            JsonObject cancelled = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("cancelled", cancelled.get("status").getAsString(), cancelled.toString());
            assertTrue(cancelled.getAsJsonObject("ram").get("memfds-passed").getAsBoolean(), "it was cancelled after the hand-over");
            assertEquals("running", s.query("query-status").get("status").getAsString());
            assertFalse(s.query("query-guest").get("memory-handed-over").getAsBoolean());
            long passes = s.query("query-guest").get("passes").getAsLong();
            ControlWaits.awaitPasses(s, passes + 2);
            assertEquals("inmigrate", d.query("query-status").get("status").getAsString(), "the destination did not start from a cut stream");

            long before = s.query("query-guest").get("passes").getAsLong();
            s.execute("migrate", Map.of("uri", pair.listen));
            JsonObject second = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("completed", second.get("status").getAsString(), second.toString());
            assertEquals(0, second.getAsJsonObject("ram").get("normal").getAsLong());
            checkDestinationTookOver(before);
        }
    }

    @Test
    void whenTheDestinationDiesBeforeCommitTheSourceRunsOnItsMemory() throws Exception {
        startBoth();
        try (ControlClient s = ControlClient.connect(pair.sourceControl)) {
            s.execute("migrate", Map.of("uri", pair.listen, "max-bandwidth", "2M"));
            ControlWaits.awaitMigration(s, m -> m.get("transferred").getAsLong() > 1L << 20);
            pair.destination.process.destroyForcibly();
            JsonObject failed = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("failed", failed.get("status").getAsString(), failed.toString());
            assertTrue(failed.getAsJsonObject("ram").get("memfds-passed").getAsBoolean(), "it died after the hand-over");
            assertTrue(failed.get("error-desc").getAsString().contains("rolled back"), failed.get("error-desc").getAsString());
            assertEquals("running", s.query("query-status").get("status").getAsString());
            long passes = s.query("query-guest").get("passes").getAsLong();
            ControlWaits.awaitPasses(s, passes + 3);
        }
        // The source's memory is whole: a fresh destination takes it and finds every page consistent.
        Path again = dir.resolve("again");
        java.nio.file.Files.createDirectories(again);
        Demo.Child next = Demo.Child.start("destination2", again, false, "incoming", "--config", dir.resolve("vm.conf").toString(),
                "--listen", "unix:" + again.resolve("incoming.sock"), "--control", again.resolve("destination.sock").toString(), "--record-digest");
        try (ControlClient d = ControlClient.await(again.resolve("destination.sock"), Duration.ofSeconds(30), next.process.toHandle());
             ControlClient s = ControlClient.connect(pair.sourceControl)) {
            s.execute("migrate", Map.of("uri", "unix:" + again.resolve("incoming.sock")));
            JsonObject second = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("completed", second.get("status").getAsString(), second.toString());
            JsonObject dst = d.query("query-guest");
            assertEquals("consistent", text(dst.get("incoming-workload-check")), dst.toString());
            ControlWaits.awaitPasses(d, dst.get("incoming-passes").getAsLong() + 2);
        } finally {
            next.stop(again.resolve("destination.sock"));
        }
    }

    private static String text(JsonElement e) {
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }
}
