package org.vmmkit.vmm;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.vmmkit.migration.MigrationEvent;

/**
 * The control endpoint's events, pushed to the sessions that subscribed, one JSON line each, QMP's shape:
 * {@code {"event": NAME, "data": {...}, "timestamp": {"seconds": S, "microseconds": U}}}. Publishing never
 * blocks: each subscriber has a bounded queue and its own writer thread, and a subscriber whose queue is full
 * (it reads too slowly) or whose socket fails (it went away) is dropped, its connection closed. Events:
 * {@code MIGRATION} (a state change), {@code MIGRATION_PASS} (a pre-copy round done), and, while a migration
 * runs and nothing else was sent for {@link #PROGRESS_EVERY_MILLIS} ms, {@code MIGRATION_PROGRESS} (the live
 * figures a progress line shows).
 */
final class EventHub {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.vmm");
    /** Events a subscriber may have unread before it is dropped. */
    static final int QUEUE = 1024;
    static final long PROGRESS_EVERY_MILLIS = 500;
    private static final String DROP = "drop";

    private final List<Subscriber> subscribers = new CopyOnWriteArrayList<>();
    private final Supplier<Map<String, Object>> progress;

    /** {@code progress}: the live figures of the running migration, or null when none runs. */
    EventHub(Supplier<Map<String, Object>> progress) {
        this.progress = progress;
    }

    /** A session's subscription: its events go out on {@code out} (answers too, under the same lock: see {@link #write}). */
    final class Subscriber {
        private final SocketChannel channel;
        private final OutputStream out;
        private final BlockingQueue<Object> queue = new ArrayBlockingQueue<>(QUEUE); // Pending events, or DROP
        private volatile boolean dropped;
        private final java.util.concurrent.CountDownLatch answered = new java.util.concurrent.CountDownLatch(1);

        private Subscriber(SocketChannel channel, OutputStream out) {
            this.channel = channel;
            this.out = out;
        }

        private void offer(Pending event) {
            if (!dropped && !queue.offer(event)) drop("its queue of " + QUEUE + " events is full (it reads too slowly)");
        }

        /** Lets events go out: called once subscribe's answer is written, so that the answer comes first. */
        void start() {
            answered.countDown();
        }

        private void run() {
            try {
                answered.await(); // events published meanwhile wait in the queue
                while (!dropped) {
                    Object next = queue.poll(PROGRESS_EVERY_MILLIS, TimeUnit.MILLISECONDS);
                    if (next == DROP) return;
                    String line;
                    if (next instanceof Pending p) {
                        line = p.line();
                    } else {
                        Map<String, Object> now = progress.get();
                        if (now == null) continue;
                        line = format("MIGRATION_PROGRESS", now, nowMicros());
                    }
                    write(out, line);
                }
            } catch (IOException e) {
                drop("writing to it failed: " + e.getMessage());
            } catch (InterruptedException e) {
                drop("interrupted");
            }
        }

        /** Ends the subscription: no more events, the connection closed (which also ends its session). */
        void drop(String why) {
            if (dropped) return;
            dropped = true;
            subscribers.remove(this);
            queue.clear();
            queue.offer(DROP);
            answered.countDown();
            LOG.log(System.Logger.Level.INFO, "control endpoint: an event subscriber was dropped: " + why);
            try {
                channel.close();
            } catch (IOException ignored) {
                // closing is the drop; nothing more to do
            }
        }

        /** Ends the subscription without closing the connection (the session ended it). */
        void end() {
            if (dropped) return;
            dropped = true;
            subscribers.remove(this);
            queue.clear();
            queue.offer(DROP);
            answered.countDown();
        }
    }

    /** Subscribes the session on {@code channel}, writing to {@code out}; its events go out once {@link Subscriber#start} is called. */
    Subscriber subscribe(SocketChannel channel, OutputStream out) {
        Subscriber s = new Subscriber(channel, out);
        subscribers.add(s);
        Thread.ofPlatform().name("control-events").daemon().start(s::run);
        return s;
    }

    /** One line to a session's output, whole: events and answers never interleave within a line. */
    static void write(OutputStream out, String line) throws IOException {
        byte[] bytes = (line + "\n").getBytes(StandardCharsets.UTF_8);
        synchronized (out) {
            out.write(bytes);
            out.flush();
        }
    }

    /**
     * A migration's event, to every subscriber as the endpoint's {@code MIGRATION} or {@code MIGRATION_PASS},
     * without blocking. Called on the migrating thread, which only queues the event (and when it came): each
     * subscriber's own thread turns it into JSON (issue #12: the first event's pattern switch and JSON, code no
     * rehearsal runs, took 5–6 ms of a migration's setup on the migrating thread).
     */
    void migration(MigrationEvent e) {
        if (subscribers.isEmpty()) return;
        Pending event = new Pending(e, nowMicros());
        for (Subscriber s : subscribers) s.offer(event);
    }

    /** An event told and not yet written: the event and when it came (microseconds since the epoch). */
    private record Pending(MigrationEvent event, long micros) {
        String line() {
            return switch (event) {
                case MigrationEvent.StatusChange c -> {
                    Map<String, Object> data = new LinkedHashMap<>();
                    data.put("status", c.status().label());
                    if (c.phase() != null) data.put("phase", c.phase());
                    if (c.reason() != null) data.put("reason", c.reason());
                    yield format("MIGRATION", data, micros);
                }
                case MigrationEvent.Pass p -> {
                    Map<String, Object> data = new LinkedHashMap<>();
                    data.put("pass", p.round());
                    data.put("bytes", p.bytes());
                    data.put("dirty-pages", p.dirtyPages());
                    data.put("expected-downtime", p.expectedDowntimeMicros() / 1000);
                    data.put("downtime-limit", p.downtimeLimitMicros() / 1000);
                    data.put("throttle-percent", p.throttlePercent());
                    data.put("transferred", p.transferred());
                    data.put("device-pending", p.remaining());
                    data.put("round-time", p.roundMicros() / 1000);
                    yield format("MIGRATION_PASS", data, micros);
                }
            };
        }
    }

    private static String format(String name, Map<String, Object> data, long micros) {
        Map<String, Object> event = new LinkedHashMap<>();
        event.put("event", name);
        event.put("data", data);
        event.put("timestamp", Map.of("seconds", micros / 1_000_000, "microseconds", micros % 1_000_000));
        return ControlServer.GSON.toJson(event);
    }

    private static long nowMicros() {
        return java.time.Instant.now().toEpochMilli() * 1000;
    }
}
