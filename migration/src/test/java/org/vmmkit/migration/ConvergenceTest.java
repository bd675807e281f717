package org.vmmkit.migration;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.SoftwareGuest;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The downtime limit is a promise: a guest that rewrites 4 MiB at 160 MB/s (or flat out) behind a 16 MB/s
 * link cannot converge as it is. Each policy keeps the promise its own way — throttle slows the guest until it fits, cancel gives
 * up and leaves the guest running, force breaks it only because it was asked to — and the stats say which.
 * Off KVM: the software guest runs the workload and logs its own writes.
 */
class ConvergenceTest {
    private static final long MIB = 1 << 20;
    /** Paced at 40,000 pages/s, ten times the link: throttling its vCPU time slows it. */
    private static final DirtyingWorkload.Settings HOT = DirtyingWorkload.Settings.range(MIB, 4 * MIB, 0, 40_000);
    /** Flat out: it rewrites all its pages every round however busy the machine is, so it never converges. */
    private static final DirtyingWorkload.Settings FLAT_OUT = DirtyingWorkload.Settings.range(MIB, 4 * MIB, 0, 0);
    private static final MigrationSettings CAPPED = MigrationSettings.DEFAULT.withDowntimeLimit(Duration.ofMillis(100))
            .withMaxBandwidth(16 * MIB).withMaxIterations(20);

    /** A source guest running the hot workload, a destination waiting on a loopback socket. */
    private static final class Ends implements AutoCloseable {
        final GuestMemory sourceRam = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
        final GuestMemory destinationRam = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
        final SoftwareGuest source, destination;
        final ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        final AtomicReference<byte[]> digestAtLoad = new AtomicReference<>();
        final CompletableFuture<Void> started = new CompletableFuture<>();

        Ends(DirtyingWorkload.Settings workload) throws Exception {
            source = new SoftwareGuest(sourceRam, workload);
            destination = new SoftwareGuest(destinationRam, workload);
            source.install();
            source.boot();
            assertTrue(source.awaitPasses(1, Duration.ofSeconds(30)), "the source guest runs");
            MigrationDestination d = new MigrationDestination(destination, List.of(), () -> digestAtLoad.set(LiveMigrationTest.digest(destinationRam)));
            Thread.ofPlatform().daemon().start(() -> {
                try {
                    d.receive(server, Duration.ofSeconds(60));
                    started.complete(null);
                } catch (Throwable t) {
                    started.completeExceptionally(t);
                }
            });
        }

        MigrationSource migration(ConvergencePolicy policy) {
            return new MigrationSource(source, List.of(source), List.of(), CAPPED.withConvergence(policy));
        }

        @Override
        public void close() throws Exception {
            source.shutdown();
            destination.shutdown();
            server.close();
            sourceRam.close();
            destinationRam.close();
        }
    }

    @Test
    void throttleSlowsTheGuestUntilTheEstimateFitsTheLimitAndReportsWhatItCost() throws Exception {
        try (Ends e = new Ends(HOT)) {
            MigrationSource m = e.migration(ConvergencePolicy.THROTTLE);
            MigrationStats s = m.migrate(e.server.getLocalAddress());
            assertEquals(MigrationStatus.COMPLETED, s.status());
            assertTrue(s.expectedDowntimeMillis() <= 100, "stopped with an estimate over the limit: " + s);
            assertFalse(s.stoppedByIterationCap(), s.toString());
            assertTrue(s.convergence().throttlePercent() >= Throttle.INITIAL, "the guest was never throttled: " + s.convergence());
            assertTrue(s.convergence().outcome().startsWith("converged under a " + s.convergence().throttlePercent() + " % throttle"),
                    s.convergence().toString());
            assertTrue(s.convergence().throttledMillis() > 0, s.convergence().toString());
            e.started.get(30, TimeUnit.SECONDS);
            assertArrayEquals(LiveMigrationTest.digest(e.sourceRam), e.digestAtLoad.get(), "the destination loaded what the source paused");
        }
    }

    @Test
    void cancelGivesUpAtTheRoundCapAndTheGuestRunsOnUnthrottled() throws Exception {
        try (Ends e = new Ends(FLAT_OUT)) {
            MigrationSource m = e.migration(ConvergencePolicy.CANCEL);
            MigrationException x = assertThrows(MigrationException.class, () -> m.migrate(e.server.getLocalAddress()));
            assertTrue(x.getMessage().contains("did not converge in 20 rounds") && x.getMessage().contains("migration.convergence = cancel"),
                    x.getMessage());
            MigrationStats s = m.stats();
            assertEquals(MigrationStatus.FAILED, s.status());
            assertEquals("cancelled: did not converge", s.convergence().outcome());
            assertEquals(0, s.convergence().throttlePercent(), "cancel never throttles");
            assertFalse(e.source.logging(), "dirty logging still on after the rollback");
            long passes = DirtyingWorkload.passesDone(e.sourceRam);
            assertTrue(e.source.awaitPasses(passes + 2, Duration.ofSeconds(30)), "the source's guest does not run on");
            assertFalse(e.destination.booted(), "the destination started");
        }
    }

    @Test
    void forceStopsAtTheRoundCapOverTheLimitOnlyBecauseItWasAsked() throws Exception {
        try (Ends e = new Ends(FLAT_OUT)) {
            MigrationSource m = e.migration(ConvergencePolicy.FORCE);
            MigrationStats s = m.migrate(e.server.getLocalAddress());
            assertEquals(MigrationStatus.COMPLETED, s.status());
            assertTrue(s.stoppedByIterationCap(), s.toString());
            assertTrue(s.convergence().outcome().startsWith("forced over the limit"), s.convergence().toString());
            assertEquals(0, s.convergence().throttlePercent(), "force never throttles");
            e.started.get(30, TimeUnit.SECONDS);
            assertArrayEquals(LiveMigrationTest.digest(e.sourceRam), e.digestAtLoad.get());
        }
    }

    @Test
    void theDefaultPolicyIsThrottleAndTheConfigNamesTheChoicesOfABadOne() {
        assertEquals(ConvergencePolicy.THROTTLE, MigrationSettings.DEFAULT.convergence());
        IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> ConvergencePolicy.of("ignore"));
        assertTrue(x.getMessage().contains("'ignore'") && x.getMessage().contains("throttle, cancel or force"), x.getMessage());
    }
}
