package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.SoftwareGuest;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a migration tells its listener, and the live figures at those moments (issue 16, items 8 and
 * migrate-set-parameters): a 16 MiB software guest, 12 MiB of it zero, with a 2 MiB working set at 5,000
 * pages/s, migrated on loopback.
 */
@Timeout(120)
class MigrationEventsTest {
    private static final long MIB = 1 << 20;
    private static final DirtyingWorkload.Settings WORKLOAD = DirtyingWorkload.Settings.range(MIB, 2 * MIB, 0, 5_000);

    /** Migrates a fresh guest under {@code settings}, {@code listener} hearing every event with the source at hand. */
    private static MigrationStats migrate(MigrationSettings settings, java.util.function.BiConsumer<MigrationSource, MigrationEvent> listener)
            throws Exception {
        try (GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            SoftwareGuest source = new SoftwareGuest(sourceRam, WORKLOAD), destination = new SoftwareGuest(destinationRam, WORKLOAD);
            try {
                source.install();
                source.boot();
                assertTrue(source.awaitPasses(1, Duration.ofSeconds(30)), "the source guest runs");
                CompletableFuture<Void> started = new CompletableFuture<>();
                Thread.ofPlatform().daemon().start(() -> {
                    try {
                        new MigrationDestination(destination, List.of(), null).receive(server, Duration.ofSeconds(60));
                        started.complete(null);
                    } catch (Throwable t) {
                        started.completeExceptionally(t);
                    }
                });
                MigrationSource[] m = new MigrationSource[1];
                m[0] = new MigrationSource(source, List.of(source), List.of(), settings).withListener(e -> listener.accept(m[0], e));
                MigrationStats s = m[0].migrate(server.getLocalAddress());
                started.get(30, TimeUnit.SECONDS);
                return s;
            } finally {
                source.shutdown();
                destination.shutdown();
            }
        }
    }

    @Test
    void remainingCountsAZeroPageAsDoneOnceItsAddressIsSentAndNoDowntimeIsExpectedBeforeAnEstimate() throws Exception {
        List<String> seen = new CopyOnWriteArrayList<>();
        MigrationStats end = migrate(MigrationSettings.DEFAULT, (m, e) -> {
            MigrationStats now = m.stats();
            switch (e) {
                case MigrationEvent.StatusChange c when c.status() == MigrationStatus.ACTIVE ->
                        seen.add("active: expected " + now.expectedDowntimeMillis());
                case MigrationEvent.Pass p when p.round() == 1 -> seen.add("pass 1: remaining " + now.remainingBytes() + ", expected "
                        + (now.expectedDowntimeMillis() >= 0 ? "estimated" : now.expectedDowntimeMillis()));
                default -> { }
            }
        });
        assertEquals(MigrationStatus.COMPLETED, end.status());
        assertTrue(end.zeroPages() > 2000, "most of the guest is zero pages: " + end);
        // Before: remaining at the end of round 1 still counted each zero page as 4 KiB less the few bytes its address cost.
        assertEquals(List.of("active: expected -1", "pass 1: remaining 0, expected estimated"), seen);
    }

    @Test
    void raisingTheBandwidthCapWhileItRunsTakesEffectAtOnce() throws Exception {
        List<MigrationEvent.Pass> passes = new CopyOnWriteArrayList<>();
        // At 1 MiB/s round 1 alone (the 2 MiB working set and 3,000 zero pages) would take over 2 s.
        MigrationStats end = migrate(MigrationSettings.DEFAULT.withMaxBandwidth(MIB), (m, e) -> {
            if (e instanceof MigrationEvent.StatusChange c && c.status() == MigrationStatus.ACTIVE) m.setParameters(Duration.ofMillis(300), 0);
            if (e instanceof MigrationEvent.Pass p) passes.add(p);
        });
        assertEquals(MigrationStatus.COMPLETED, end.status());
        MigrationEvent.Pass first = passes.getFirst();
        assertTrue(first.bytes() > 2 * MIB, first.toString());
        assertTrue(first.roundMicros() * 2 < first.bytes(), "round 1 ran at over twice the old cap of 1 MiB/s (bytes per us): " + first);
    }
}
