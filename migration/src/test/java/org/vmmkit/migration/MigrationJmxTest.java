package org.vmmkit.migration;

import java.lang.management.ManagementFactory;
import java.util.List;

import javax.management.MBeanServer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.migration.HandoverTest.Destination;
import org.vmmkit.migration.testing.FakeGuest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The statistics as JMX attributes: what a monitoring agent reads follows the migration (no KVM). */
@Timeout(60)
class MigrationJmxTest {
    @Test
    void theMigrationsStatisticsAreReadableAsMBeanAttributes() throws Exception {
        MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        try (FakeGuest src = FakeGuest.source(HandoverTest.SIZE, 41); Destination dst = new Destination()) {
            MigrationSource source = new MigrationSource(src, List.of(), List.of(), MigrationSettings.DEFAULT);
            try (AutoCloseable registration = MigrationJmx.register("test vm", source::stats, source::error)) {
                assertEquals("none", server.getAttribute(MigrationJmx.nameOf("test vm"), "Status"));
                MigrationStats stats = source.migrate(dst.address());
                assertEquals("completed", server.getAttribute(MigrationJmx.nameOf("test vm"), "Status"));
                assertEquals(stats.transferredBytes(), server.getAttribute(MigrationJmx.nameOf("test vm"), "TransferredBytes"));
                assertTrue((Long) server.getAttribute(MigrationJmx.nameOf("test vm"), "Rounds") >= 1);
            }
            assertFalse(server.isRegistered(MigrationJmx.nameOf("test vm")), "closing unregisters it");
        }
    }
}
