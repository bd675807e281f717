package org.vmmkit.migration.pipeline;

import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(30)
class MigrationThreadsTest {
    @Test
    void aHelperRunsOnAThreadAnEarlierHelperLeftIdleAndCarriesItsNameOnlyWhileItRuns() throws Exception {
        CompletableFuture<Thread> first = new CompletableFuture<>();
        MigrationThreads.start("migration-test-first", () -> first.complete(Thread.currentThread())).get(10, TimeUnit.SECONDS);
        Thread idle = first.get();
        // Once the first helper's future ended its thread is idle again: the next helper is handed to it, not to a new thread
        // (the pool makes a thread only when none is idle). Other tests may take idle threads meanwhile, so ask a few times.
        boolean reused = false;
        for (int i = 0; i < 20 && !reused; i++) {
            CompletableFuture<Thread> next = new CompletableFuture<>();
            CompletableFuture<String> name = new CompletableFuture<>();
            MigrationThreads.start("migration-test-next", () -> {
                next.complete(Thread.currentThread());
                name.complete(Thread.currentThread().getName());
            }).get(10, TimeUnit.SECONDS);
            assertEquals("migration-test-next", name.get());
            reused = next.get() == idle;
        }
        assertTrue(reused, "a helper ran on the idle thread an earlier one left");
        assertTrue(idle.isDaemon(), "pooled threads never keep the process alive");
        assertFalse(idle.getName().startsWith("migration-test"), "an idle thread does not keep the last helper's name: " + idle.getName());
    }

    @Test
    void aTimerRunsItsTaskOnceDueAndACancelledOneNever() throws Exception {
        CountDownLatch fired = new CountDownLatch(1);
        AtomicBoolean cancelledRan = new AtomicBoolean();
        ScheduledFuture<?> cancelled = MigrationThreads.after(Duration.ofMillis(50), "migration-test-cancelled", () -> cancelledRan.set(true));
        assertTrue(cancelled.cancel(false));
        CompletableFuture<String> name = new CompletableFuture<>();
        MigrationThreads.after(Duration.ofMillis(100), "migration-test-timer", () -> {
            name.complete(Thread.currentThread().getName());
            fired.countDown();
        });
        assertTrue(fired.await(10, TimeUnit.SECONDS), "the due timer ran");
        assertEquals("migration-test-timer", name.get());
        // The cancelled timer was due before the one that ran, and the timer thread runs them in order of their time.
        assertFalse(cancelledRan.get(), "a cancelled timer never runs");
    }
}
