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
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Two real vmm processes (software accelerator: no KVM needed) with one v1 and two v2 emulated devices: the v2
 * devices write each other by peer-to-peer DMA while they run, one offers PRE_COPY and one does not. The migration
 * completes with every device's state at resume equal to the source's at stop, the protocol of each detected, no
 * misuse on either side and no P2P write into a stopped device on either side.
 */
@Timeout(180)
class V2TwoProcessMigrationTest {
    @TempDir Path dir;
    private final List<Demo.Child> children = new ArrayList<>();
    private Path sourceControl, destinationControl;
    private Demo.Child source, destination;

    static final List<String> CONFIG = List.of(
            "vm.memory = 128M",
            "vm.accelerator = software",
            "workload.size = 16M",
            "workload.pages-per-second = 20000",
            "device.gpu0.memory = 4M",
            "device.gpu0.dma-address = 64M",
            "device.gpu0.dma-size = 4M",
            "device.nic0.emulated-protocol = v2",
            "device.nic0.memory = 2M",
            "device.nic0.dma-address = 72M",
            "device.nic0.dma-size = 2M",
            "device.ssd0.emulated-protocol = v2",
            "device.ssd0.pre-copy = false",
            "device.ssd0.memory = 2M",
            "device.ssd0.dma-address = 80M",
            "device.ssd0.dma-size = 2M");

    @AfterEach
    void stopChildren() {
        for (Demo.Child c : children) {
            c.stop(c == source ? sourceControl : destinationControl);
            if (c.process.exitValue() != 0) c.printLogTail();
        }
    }

    private String startBoth() throws Exception {
        Path config = dir.resolve("vm.conf");
        Files.write(config, CONFIG);
        sourceControl = dir.resolve("source.sock");
        destinationControl = dir.resolve("destination.sock");
        destination = Demo.Child.start("destination", dir, false, "incoming", "--config", config.toString(), "--listen", "127.0.0.1:0",
                "--control", destinationControl.toString(), "--record-digest");
        children.add(destination);
        source = Demo.Child.start("source", dir, false, "run", "--config", config.toString(), "--control", sourceControl.toString());
        children.add(source);
        String listen;
        try (ControlClient d = ControlClient.await(destinationControl, Duration.ofSeconds(30), destination.process.toHandle())) {
            listen = d.query("query-status").get("listen").getAsString();
        }
        try (ControlClient s = ControlClient.await(sourceControl, Duration.ofSeconds(30), source.process.toHandle())) {
            // The v2 devices must have written each other before the migration, or "no violation" would say nothing.
            awaitP2pWrites(s, 10);
        }
        return listen;
    }

    private static void awaitP2pWrites(ControlClient c, long more) throws Exception {
        long before = p2pWrites(c.query("query-guest"));
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (p2pWrites(c.query("query-guest")) < before + more) {
            assertTrue(System.nanoTime() < deadline, "the v2 devices made no P2P writes in 30 s");
            Thread.sleep(20);
        }
    }

    @Test
    void oneV1AndTwoV2DevicesMigrateLiveWithEqualStateAndP2pOrderingKept() throws Exception {
        String listen = startBoth();
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("migrate", "--to", listen, "--control", sourceControl.toString(), "--json");
        assertEquals(0, result.getKey(), result.getValue());
        JsonObject stats = JsonParser.parseString(result.getValue()).getAsJsonObject();
        assertEquals("completed", stats.get("status").getAsString(), stats.toString());
        List<String> kinds = new ArrayList<>();
        for (JsonElement e : stats.getAsJsonArray("sections")) kinds.add(e.getAsJsonObject().get("kind").getAsString());
        assertEquals(List.of("vfio-v1", "vfio-v2", "vfio-v2"), kinds, "the protocols detected, in config order");
        checkDestinationTookOver();
    }

    @Test
    void aCancelledMigrationLeavesEveryDeviceRunningAndASecondAttemptCompletes() throws Exception {
        String listen = startBoth();
        try (ControlClient s = ControlClient.connect(sourceControl)) {
            s.execute("migrate", Map.of("uri", "tcp:" + listen, "max-bandwidth", "4M"));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (s.query("query-migrate").get("transferred").getAsLong() < 2L << 20) {
                assertTrue(System.nanoTime() < deadline, "the migration did not get going");
                Thread.sleep(20);
            }
            s.execute("migrate-cancel", null);
            String status;
            while (!(status = s.query("query-migrate").get("status").getAsString()).equals("cancelled")) {
                assertTrue(!status.equals("completed") && !status.equals("failed") && System.nanoTime() < deadline, status);
                Thread.sleep(20);
            }
            assertEquals("running", s.query("query-status").get("status").getAsString());
            JsonObject src = s.query("query-guest");
            for (JsonElement e : src.getAsJsonArray("devices")) {
                JsonObject dev = e.getAsJsonObject();
                assertTrue(dev.getAsJsonArray("misuse").isEmpty(), dev.get("name") + ": " + dev.get("misuse"));
                assertTrue(dev.getAsJsonArray("p2p-violations").isEmpty(), dev.get("name") + ": " + dev.get("p2p-violations"));
            }
            awaitP2pWrites(s, 10); // the rolled-back v2 devices run (and write each other) again
        }
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("migrate", "--to", listen, "--control", sourceControl.toString(), "--json");
        assertEquals(0, result.getKey(), result.getValue());
        checkDestinationTookOver();
    }

    /** Every device's state at resume equals the source's at stop, no misuse, no P2P write into a stopped device, protocols as detected. */
    private void checkDestinationTookOver() throws Exception {
        try (ControlClient s = ControlClient.connect(sourceControl); ControlClient d = ControlClient.connect(destinationControl)) {
            JsonObject src = s.query("query-guest"), dst = d.query("query-guest");
            assertEquals("running", d.query("query-status").get("status").getAsString());
            assertEquals(text(src.get("memory-digest")), text(dst.get("incoming-memory-digest")), "memory at resume = source at pause");
            JsonArray sd = src.getAsJsonArray("devices"), dd = dst.getAsJsonArray("devices");
            for (int i = 0; i < 3; i++) {
                JsonObject a = sd.get(i).getAsJsonObject(), b = dd.get(i).getAsJsonObject();
                String name = a.get("name").getAsString();
                assertNotNull(text(a.get("state-digest")), name);
                assertEquals(text(a.get("state-digest")), text(b.get("incoming-state-digest")), name + ": device state at resume = at stop");
                assertTrue(a.getAsJsonArray("misuse").isEmpty(), name + " source misuse: " + a.get("misuse"));
                assertTrue(b.getAsJsonArray("misuse").isEmpty(), name + " destination misuse: " + b.get("misuse"));
                assertTrue(a.getAsJsonArray("p2p-violations").isEmpty(), name + " source: " + a.get("p2p-violations"));
                assertTrue(b.getAsJsonArray("p2p-violations").isEmpty(), name + " destination: " + b.get("p2p-violations"));
                assertEquals(i == 0 ? "vfio-v1" : "vfio-v2", text(a.get("protocol")), name);
            }
            awaitP2pWrites(d, 10); // the destination's v2 devices run, and write each other again
        }
    }

    private static long p2pWrites(JsonObject guest) {
        long n = 0;
        for (JsonElement e : guest.getAsJsonArray("devices")) n += e.getAsJsonObject().get("p2p-writes").getAsLong();
        return n;
    }

    private static String text(JsonElement e) {
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }
}
