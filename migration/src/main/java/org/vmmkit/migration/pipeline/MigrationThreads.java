package org.vmmkit.migration.pipeline;

import java.time.Duration;
import java.util.concurrent.Future;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.SynchronousQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The process's daemon threads that migrations run their helpers on (senders, the overlapped start of dirty
 * tracking, watchdog timers), made once and then reused, so that a migration's setup never waits for a
 * thread to be created.
 *
 * <p>Why (issue #12): {@code Thread.start} returns only once the new thread has been scheduled and has
 * begun, which on a loaded 2-core host took 0.1–18 ms per thread (measured: 20 starts in a fresh JVM),
 * and a setup started three or four (a watchdog on each side, a sender per channel). Handing a task to an
 * idle pooled thread only unparks it. The start-up {@code Rehearsal} leaves idle threads behind for the
 * first real migration; idle threads are kept (parked) for the life of the process, their number bounded by
 * the most helpers that ever ran at once.
 */
public final class MigrationThreads {
    private static final AtomicInteger COUNT = new AtomicInteger();
    private static final String IDLE = "migration-idle";

    private static final ThreadPoolExecutor POOL = new ThreadPoolExecutor(0, Integer.MAX_VALUE, Long.MAX_VALUE, TimeUnit.NANOSECONDS,
            new SynchronousQueue<>(), task -> Thread.ofPlatform().name(IDLE + "-" + COUNT.incrementAndGet()).daemon().unstarted(task));

    /** One thread that only fires timers; what a timer does runs on a pooled thread, so no timer delays another. */
    private static final ScheduledThreadPoolExecutor TIMER = new ScheduledThreadPoolExecutor(1,
            task -> Thread.ofPlatform().name("migration-timer").daemon().unstarted(task));

    static {
        TIMER.setRemoveOnCancelPolicy(true); // a disarmed watchdog's task goes at once, not after its 30 s
    }

    private MigrationThreads() {}

    /** Runs {@code task} on a pooled thread named {@code name} while it runs; the future says when it ended. */
    public static Future<?> start(String name, Runnable task) {
        return POOL.submit(() -> {
            Thread self = Thread.currentThread();
            String before = self.getName();
            self.setName(name);
            try {
                task.run();
            } finally {
                self.setName(before);
            }
        });
    }

    /** Runs {@code task} on a pooled thread named {@code name} after {@code delay}, unless cancelled first. */
    public static ScheduledFuture<?> after(Duration delay, String name, Runnable task) {
        return TIMER.schedule(() -> {
            start(name, task);
        }, delay.toNanos(), TimeUnit.NANOSECONDS);
    }
}
