package org.vmmkit.vmm;

import java.time.Duration;
import java.util.function.Predicate;

import com.google.gson.JsonObject;
import org.vmmkit.migration.MigrationStatus;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** What the two-process tests wait for through a control endpoint: a guest pass, a migration's state. */
final class ControlWaits {
    private ControlWaits() {}

    /** Until the guest has done {@code passes} passes (at most 30 s); returns the count it reported. */
    static long awaitPasses(ControlClient c, long passes) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        long now;
        while ((now = c.query("query-guest").get("passes").getAsLong()) < passes) {
            assertTrue(System.nanoTime() < deadline, "the guest reached pass " + now + ", not " + passes + ", in 30 s");
            Thread.sleep(20);
        }
        return now;
    }

    /** Until query-migrate's answer satisfies {@code until} (at most 60 s); returns that answer. */
    static JsonObject awaitMigration(ControlClient c, Predicate<JsonObject> until) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (true) {
            JsonObject s = c.query("query-migrate");
            if (until.test(s)) return s;
            assertTrue(System.nanoTime() < deadline, "the migration did not get there in 60 s: " + s);
            Thread.sleep(20);
        }
    }

    /** Whether a query-migrate answer says the migration ended (completed, failed, cancelled or unknown). */
    static boolean ended(JsonObject s) {
        return MigrationStatus.of(s.get("status").getAsString()).ended();
    }
}
