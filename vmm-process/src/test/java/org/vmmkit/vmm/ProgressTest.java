package org.vmmkit.vmm;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** The progress line of {@code vmm migrate}, drawn from the endpoint's events (issue 16 item 8). */
class ProgressTest {
    private static JsonObject event(String json) {
        return JsonParser.parseString(json).getAsJsonObject();
    }

    @Test
    void theProgressLineShowsNoExpectedDowntimeBeforeAnEstimateAndFillsAsRemainingFalls() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        Progress bar = new Progress(new PrintStream(bytes, true, StandardCharsets.UTF_8), true);
        bar.event(event("{\"event\": \"MIGRATION\", \"data\": {\"status\": \"setup\", \"phase\": \"setup\"}}"));
        String setup = bytes.toString(StandardCharsets.UTF_8);
        assertTrue(setup.contains("remaining") && setup.contains("expected downtime -") && !setup.contains("expected downtime 0"), setup);
        bytes.reset();
        // Round 1 half done: 3000 of 4096 pages sent, mostly zero pages costing a few bytes each.
        bar.event(event("{\"event\": \"MIGRATION_PROGRESS\", \"data\": {\"status\": \"active\", \"total-time\": 40, \"expected-downtime\": null,"
                + " \"transferred\": 4194304, \"remaining\": 4194304, \"mbps\": 800.0, \"pass\": 1}}"));
        String half = bytes.toString(StandardCharsets.UTF_8);
        assertTrue(half.contains("[############............]") && half.contains("expected downtime -"), half);
        bytes.reset();
        bar.event(event("{\"event\": \"MIGRATION_PASS\", \"data\": {\"pass\": 1, \"bytes\": 8388608, \"dirty-pages\": 4096, \"expected-downtime\": 12,"
                + " \"downtime-limit\": 300, \"throttle-percent\": 0, \"transferred\": 8388608, \"device-pending\": 0, \"round-time\": 80}}"));
        String pass = bytes.toString(StandardCharsets.UTF_8);
        assertTrue(pass.contains("round 1") && pass.contains("expected downtime 12 ms"), pass);
    }
}
