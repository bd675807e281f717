package org.vmmkit.vmm;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.vmmkit.core.vfio.user.RequiresVfioUser;
import org.vmmkit.core.vfio.user.VfioUserPeer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A device nobody here wrote, migrated live between two real vmm processes: libvfio-user's sample server A
 * serves the source's device, sample server B the destination's ({@code device.sample0.type = vfio-user}, each
 * process naming its own server's socket). The source's sample driver sets BAR0 an hour ahead, maps guest RAM
 * for the device's DMA with memfds, takes INTx on an eventfd and rewrites BAR1 while guest and device run.
 * Everything is checked through the control endpoints. The guest is a KVM guest where /dev/kvm is usable,
 * else the software guest ({@code vm.accelerator = auto}); the device path is the same.
 */
@RequiresVfioUser
@Timeout(180)
class VfioUserTwoProcessMigrationTest {
    @TempDir Path dir;
    @RegisterExtension final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();
    private final List<Demo.Child> children = new ArrayList<>();
    private Path sourceControl, destinationControl;
    private Demo.Child source, destination;
    private VfioUserPeer.SampleServer serverA, serverB;
    private String listen;

    static List<String> config(Path socket, String driver) {
        return List.of(
                "vm.memory = 128M",
                "workload.size = 32M",
                "workload.pages-per-second = 20000",
                "device.sample0.type = vfio-user",
                "device.sample0.socket = " + socket,
                "device.sample0.driver = " + driver,
                "device.sample0.ops-per-second = 200",
                "device.sample0.dma-address = 64M",
                "device.sample0.dma-size = 2M");
    }

    private void startBoth() throws Exception {
        startBoth("libvfio-user-sample");
    }

    private void startBoth(String driver) throws Exception {
        startBoth(driver, VfioUserPeer.Era.V1, List.of());
    }

    /** Sample servers A and B of {@code era}, then the destination and source processes, each config with {@code extra} lines. */
    private void startBoth(String driver, VfioUserPeer.Era era, List<String> extra) throws Exception {
        serverA = servers.start("sampleA", era);
        serverB = servers.start("sampleB", era);
        Path srcConfig = dir.resolve("source.conf"), dstConfig = dir.resolve("destination.conf");
        Files.write(srcConfig, concat(config(serverA.socket(), driver), extra));
        Files.write(dstConfig, concat(config(serverB.socket(), driver), extra));
        sourceControl = dir.resolve("source.sock");
        destinationControl = dir.resolve("destination.sock");
        destination = Demo.Child.start("destination", dir, false, "incoming", "--config", dstConfig.toString(), "--listen", "127.0.0.1:0",
                "--control", destinationControl.toString(), "--record-digest");
        children.add(destination);
        source = Demo.Child.start("source", dir, false, "run", "--config", srcConfig.toString(), "--control", sourceControl.toString());
        children.add(source);
        try (ControlClient d = ControlClient.await(destinationControl, Duration.ofSeconds(30), destination.process.toHandle())) {
            listen = d.query("query-status").get("listen").getAsString();
        }
        try (ControlClient s = ControlClient.await(sourceControl, Duration.ofSeconds(30), source.process.toHandle())) {
            ControlWaits.awaitPasses(s, 2);
            awaitBar1Writes(s, 1); // the device runs and its driver writes BAR1
        }
    }

    private static List<String> concat(List<String> a, List<String> b) {
        List<String> out = new ArrayList<>(a);
        out.addAll(b);
        return out;
    }

    @AfterEach
    void stopChildren() {
        for (Demo.Child c : children) {
            c.stop(c == source ? sourceControl : destinationControl);
            if (c.process.exitValue() != 0) c.printLogTail();
        }
    }

    private static JsonObject device(ControlClient c) throws Exception {
        return c.query("query-guest").getAsJsonArray("devices").get(0).getAsJsonObject();
    }

    private static long awaitBar1Writes(ControlClient c, long writes) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        long now;
        while ((now = device(c).get("bar1-writes").getAsLong()) < writes) {
            assertTrue(System.nanoTime() < deadline, "the driver wrote BAR1 " + now + " times, not " + writes + ", in 30 s");
            Thread.sleep(20);
        }
        return now;
    }

    private static List<String> states(JsonObject device) {
        List<String> out = new ArrayList<>();
        for (JsonElement e : device.getAsJsonArray("states")) out.add(e.getAsString());
        return out;
    }

    private static String text(JsonElement e) {
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }

    /**
     * BAR1 on B at resume = the last BAR1 written on A before its device stopped = BAR1 on A at the stop; guest
     * memory at resume = at pause; the device states; nothing refused; the guest runs on at B.
     */
    private void checkTheDeviceAndGuestMoved(List<String> sourceStates, List<String> destinationStates) throws Exception {
        try (ControlClient s = ControlClient.connect(sourceControl); ControlClient d = ControlClient.connect(destinationControl)) {
            JsonObject src = s.query("query-guest"), dst = d.query("query-guest");
            assertEquals("postmigrate", s.query("query-status").get("status").getAsString());
            assertEquals("running", d.query("query-status").get("status").getAsString());
            assertNotNull(text(src.get("memory-digest")));
            assertEquals(text(src.get("memory-digest")), text(dst.get("incoming-memory-digest")), "guest memory at resume = source at pause");
            JsonObject a = src.getAsJsonArray("devices").get(0).getAsJsonObject(), b = dst.getAsJsonArray("devices").get(0).getAsJsonObject();
            String lastWritten = text(a.get("bar1-last-written"));
            assertNotNull(lastWritten, "the driver wrote BAR1 while the device ran");
            assertTrue(a.get("bar1-writes").getAsLong() > 0);
            assertEquals(lastWritten, text(a.get("state-digest")), "BAR1 on A at its stop is the last pattern written while it ran");
            assertEquals(lastWritten, text(b.get("incoming-state-digest")), "BAR1 on B at resume is the last BAR1 written on A before the stop");
            assertEquals(sourceStates, states(a));
            assertEquals(destinationStates, states(b));
            assertTrue(a.get("twin-socket").getAsBoolean() && b.get("twin-socket").getAsBoolean());
            assertTrue(a.getAsJsonArray("misuse").isEmpty() && b.getAsJsonArray("misuse").isEmpty(), a + " " + b);
            long paused = src.get("passes").getAsLong();
            assertEquals(paused, dst.get("incoming-passes").getAsLong());
            ControlWaits.awaitPasses(d, paused + 2);
            awaitBar1Writes(d, b.get("bar1-writes").getAsLong() + 1); // B's device runs and is driven
        }
    }

    @Test
    void theSampleDeviceMigratesLiveFromServerAToServerBBetweenTwoProcesses() throws Exception {
        startBoth();
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("migrate", "--to", listen, "--control", sourceControl.toString(), "--json");
        assertEquals(0, result.getKey(), result.getValue());
        JsonObject stats = JsonParser.parseString(result.getValue()).getAsJsonObject();
        assertEquals("completed", stats.get("status").getAsString());
        JsonArray devices = stats.getAsJsonObject("vfio").getAsJsonArray("devices");
        assertEquals("sample0", devices.get(0).getAsJsonObject().get("name").getAsString());
        assertTrue(devices.get(0).getAsJsonObject().get("transferred").getAsLong() >= 0x3000 + 0x3008,
                "pre-copy BAR1, stop-and-copy BAR1 and BAR0: " + stats);
        checkTheDeviceAndGuestMoved(List.of("running", "pre-copy", "stop-and-copy", "stopped"), List.of("running", "resuming", "running"));
        source.stop(sourceControl);
        assertEquals(0, serverA.awaitExit(Duration.ofSeconds(10)), "A's server exits cleanly when the source lets its device go\n" + serverA.logTail());
    }

    /**
     * The v2-era sample (DEVICE_FEATURE, MIG_DATA_READ/WRITE), detected as such, with pre-copy off (its destination
     * takes exactly the stop-copy stream): the device runs untouched while guest RAM is copied, then RUNNING → STOP →
     * STOP_COPY on A, its 0x3008 bytes read with MIG_DATA_READ and written to B with MIG_DATA_WRITE in RESUMING. Its
     * DMA space's dirty pages come from DMA logging (a v2 server has no DIRTY_PAGES). No rollback case: the v2 sample
     * server aborts on the way back to RUNNING; rollback is shown on the emulated v2 device (V2TwoProcessMigrationTest).
     */
    @Test
    void theV2SampleDeviceMigratesLiveWithoutPrecopyFromServerAToServerB() throws Exception {
        VfioUserPeer.assumeAvailable("theV2SampleDeviceMigratesLiveWithoutPrecopyFromServerAToServerB",
                VfioUserPeer.unavailableReason(VfioUserPeer.Era.V2));
        startBoth("libvfio-user-sample", VfioUserPeer.Era.V2, List.of("device.sample0.pre-copy = false"));
        try (ControlClient s = ControlClient.connect(sourceControl)) {
            JsonObject a = device(s);
            assertEquals("v2", text(a.get("protocol")), a.toString());
            assertEquals("messages", text(a.get("migration-data")), a.toString());
        }
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("migrate", "--to", listen, "--control", sourceControl.toString(), "--json");
        assertEquals(0, result.getKey(), result.getValue());
        JsonObject stats = JsonParser.parseString(result.getValue()).getAsJsonObject();
        assertEquals("completed", stats.get("status").getAsString());
        JsonObject moved = stats.getAsJsonObject("vfio").getAsJsonArray("devices").get(0).getAsJsonObject();
        assertEquals("sample0", moved.get("name").getAsString());
        assertEquals(0x3008, moved.get("transferred").getAsLong(), "only the stop-copy stream, BAR1 and BAR0: " + stats);
        checkTheDeviceAndGuestMoved(List.of("running", "stopped", "stop-and-copy", "stopped"),
                List.of("running", "stopped", "resuming", "stopped", "running"));
        source.stop(sourceControl);
        assertEquals(0, serverA.awaitExit(Duration.ofSeconds(10)), "A's server exits cleanly when the source lets its device go\n" + serverA.logTail());
    }

    @Test
    void aMigrationCancelledInPrecopyLeavesTheDeviceRunningAndASecondOneCompletes() throws Exception {
        startBoth();
        try (ControlClient s = ControlClient.connect(sourceControl); ControlClient d = ControlClient.connect(destinationControl)) {
            s.execute("migrate", Map.of("uri", "tcp:" + listen, "max-bandwidth", "8M"));
            ControlWaits.awaitMigration(s, m -> m.get("status").getAsString().equals("active") && m.get("transferred").getAsLong() > 4L << 20);
            s.execute("migrate-cancel", null);
            JsonObject cancelled = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("cancelled", cancelled.get("status").getAsString(), cancelled.toString());
            assertEquals("running", s.query("query-status").get("status").getAsString());
            assertEquals(List.of("running", "pre-copy", "running"), states(device(s)), "A's device is back to running from pre-copy");
            long writes = device(s).get("bar1-writes").getAsLong();
            awaitBar1Writes(s, writes + 2); // and runs: its driver writes BAR1 again
            ControlWaits.awaitPasses(s, s.query("query-guest").get("passes").getAsLong() + 2);
            assertEquals("inmigrate", d.query("query-status").get("status").getAsString(), "the destination did not start from a cut stream");

            s.execute("migrate", Map.of("uri", "tcp:" + listen));
            JsonObject second = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("completed", second.get("status").getAsString(), second.toString());
        }
        // The cut first stream left B's device resuming: it was reset (never run with partial state), then resumed from the second.
        checkTheDeviceAndGuestMoved(List.of("running", "pre-copy", "running", "pre-copy", "stop-and-copy", "stopped"),
                List.of("running", "resuming", "reset: running", "resuming", "running"));
    }

    @Test
    void aDeviceServerKilledMidMigrationRollsBackNamingTheDeviceAndTheGuestRunsOn() throws Exception {
        startBoth();
        try (ControlClient s = ControlClient.connect(sourceControl); ControlClient d = ControlClient.connect(destinationControl)) {
            s.execute("migrate", Map.of("uri", "tcp:" + listen, "max-bandwidth", "8M"));
            ControlWaits.awaitMigration(s, m -> m.get("status").getAsString().equals("active") && m.get("transferred").getAsLong() > 4L << 20);
            serverA.kill();
            JsonObject failed = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("failed", failed.get("status").getAsString(), failed.toString());
            String why = failed.get("error-desc").getAsString();
            assertTrue(why.contains("sample0"), "names the device: " + why);
            assertTrue(why.contains("the server closed the connection") || why.contains("the server has gone"), "says why: " + why);
            assertTrue(why.contains("rolled back"), why);
            assertEquals("running", s.query("query-status").get("status").getAsString());
            ControlWaits.awaitPasses(s, s.query("query-guest").get("passes").getAsLong() + 2); // the guest runs on
            assertEquals("inmigrate", d.query("query-status").get("status").getAsString());
        }
    }

    /**
     * The device's own DMA during pre-copy: when the migration starts tracking, the sample's timer is set to fire
     * 1-2 s later; its handler raises INTx and writes the first page of its second DMA region directly through the
     * memfd (the server tracks it: GET_BITMAP) and of its first by DMA_WRITE messages (the client tracks it).
     * Both pages are in what the device's dirty source reported into the merged bitmap, and reach B: guest memory
     * at B's resume equals A's at pause. The cap and two rounds keep pre-copy well past the timer (round 1 alone
     * sends the 32 MiB workload at 8 MiB/s); the interrupt count says the timer did fire.
     */
    @Test
    void pagesTheDeviceWritesDuringPrecopyAreInTheMergedBitmapAndReachTheDestination() throws Exception {
        startBoth("libvfio-user-sample-dma");
        try (ControlClient s = ControlClient.connect(sourceControl)) {
            s.execute("migrate", Map.of("uri", "tcp:" + listen, "max-bandwidth", "8M", "max-iterations", 2, "convergence", "force"));
            JsonObject done = ControlWaits.awaitMigration(s, ControlWaits::ended);
            assertEquals("completed", done.get("status").getAsString(), done.toString());
            JsonObject a = device(s);
            assertEquals(1, a.get("interrupts").getAsLong(), "the device's timer fired once, during the migration: " + a);
            assertEquals(4, a.get("dma-writes").getAsLong(), "4 DMA_WRITE messages of 1 KiB into the first region: " + a);
            assertEquals(2, a.get("dma-reads").getAsLong());
            List<String> reported = new ArrayList<>();
            for (JsonElement e : a.getAsJsonArray("device-dirty-pages")) reported.add(e.getAsString());
            assertTrue(reported.contains("0x4000000"), "the first region's page, written by DMA_WRITE messages: " + reported);
            assertTrue(reported.contains("0x4100000"), "the second region's page, written directly through the memfd: " + reported);
        }
        checkTheDeviceAndGuestMoved(List.of("running", "pre-copy", "stop-and-copy", "stopped"), List.of("running", "resuming", "running"));
    }
}
