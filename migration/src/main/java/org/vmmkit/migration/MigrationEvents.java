package org.vmmkit.migration;

import jdk.jfr.Category;
import jdk.jfr.DataAmount;
import jdk.jfr.Description;
import jdk.jfr.Event;
import jdk.jfr.Label;
import jdk.jfr.Name;
import jdk.jfr.StackTrace;
import jdk.jfr.Timespan;

/**
 * The JFR events of a migration: on the source one per phase (setup, pre-copy, stop-and-copy, handover) and
 * one per pre-copy round; on the destination one per incoming stream.
 */
final class MigrationEvents {
    private MigrationEvents() {}

    @Name("org.vmmkit.migration.Phase")
    @Label("Migration Phase")
    @Category({"vmmkit", "Migration"})
    @Description("One phase of a live migration on the source")
    @StackTrace(false)
    static final class Phase extends Event {
        @Label("Phase") String phase;
        @Label("Outcome") String outcome;
    }

    @Name("org.vmmkit.migration.Round")
    @Label("Migration Round")
    @Category({"vmmkit", "Migration"})
    @Description("One pre-copy round: the dirty sync, the pages and device chunks sent, the downtime estimate")
    @StackTrace(false)
    static final class Round extends Event {
        @Label("Round") long round;
        @Label("Dirty Pages") long dirtyPages;
        @Label("Sent") @DataAmount long bytes;
        @Label("Device Pending") @DataAmount long devicePending;
        @Label("Expected Downtime") @Timespan(Timespan.MICROSECONDS) long expectedDowntime;
    }

    @Name("org.vmmkit.migration.Incoming")
    @Label("Incoming Migration")
    @Category({"vmmkit", "Migration"})
    @Description("One incoming stream on the destination, from its header to its outcome (started, or not and why)")
    @StackTrace(false)
    static final class Incoming extends Event {
        @Label("Stream") String stream;
        @Label("Outcome") String outcome;
        @Label("Reason") String reason;
        @Label("Frames") long frames;
    }
}
