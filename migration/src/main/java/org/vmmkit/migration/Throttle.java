package org.vmmkit.migration;

import java.time.Duration;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.MigratableVm;

/**
 * Auto-converge: lets the guest run 10 ms at a time and holds it paused between, for a share of its time (20 %
 * first, 10 points more each time it is raised, at most 99 %: then 990 ms held per 10 ms run), as QEMU's
 * cpu-throttle does, from its own thread, so the guest dirties memory more slowly than it is sent.
 * {@link #stop} leaves the guest running and returns only once the thread is done with it, so the
 * coordinator's own pause (stop-and-copy) or a rollback never races with it.
 */
final class Throttle {
    static final int INITIAL = 20, STEP = 10, MAX = 99;
    private static final long RUN_NANOS = Duration.ofMillis(10).toNanos();

    private final MigratableVm vm;
    private volatile int percent;
    private volatile boolean stopped;
    private volatile long throttledNanos;
    private Thread thread;

    Throttle(MigratableVm vm) {
        this.vm = vm;
    }

    /** Starts throttling at 20 %, or raises it by 10 points; returns the new share. */
    synchronized int raise() {
        percent = percent == 0 ? INITIAL : Math.min(MAX, percent + STEP);
        if (thread == null) thread = Thread.ofPlatform().name("migration-throttle").daemon().start(this::run);
        return percent;
    }

    int percent() {
        return percent;
    }

    /** Whether the throttle is as strong as it gets. */
    boolean atMaximum() {
        return percent >= MAX;
    }

    /** How long the guest has been held paused by the throttle. */
    Duration throttled() {
        return Duration.ofNanos(throttledNanos);
    }

    private void run() {
        while (!stopped) {
            int share = percent;
            long hold = RUN_NANOS * share / (100 - share);
            long start = System.nanoTime();
            vm.pause();
            try {
                // Held until the share is served or stop() unparks it (a spurious wake-up only shortens one hold).
                if (!stopped) LockSupport.parkNanos(hold);
            } finally {
                vm.resume();
                throttledNanos += System.nanoTime() - start;
            }
            if (!stopped) LockSupport.parkNanos(RUN_NANOS);
        }
    }

    /** Stops throttling: the guest runs unthrottled when this returns (no-op if it never started). */
    void stop() throws InterruptedException {
        Thread t;
        synchronized (this) {
            stopped = true;
            t = thread;
        }
        if (t != null) {
            LockSupport.unpark(t);
            t.join();
        }
    }
}
