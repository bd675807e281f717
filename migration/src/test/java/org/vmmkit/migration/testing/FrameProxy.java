package org.vmmkit.migration.testing;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicInteger;

import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.OutcomeQuery;
import org.vmmkit.migration.wire.StreamHeader;

/**
 * A TCP proxy between a migration source and its destination that understands frames, so a test can drop,
 * repeat or cut at one exact frame in either direction: the outside judge of the protocol. It forwards the
 * stream header and outcome queries as they are; every frame (40-byte header and payload) goes through
 * {@link Rule}. It can record what the source sent on the first connection (for a replay), end one direction
 * of a connection only, and stop taking connections (a partition). A connection it accepts when the target
 * refuses is closed at once, as a dead destination's would be, and the proxy goes on accepting.
 */
public final class FrameProxy implements AutoCloseable {
    public enum Direction { TO_DESTINATION, TO_SOURCE }

    /**
     * FORWARD it; DROP it; REPEAT it (sent twice); CUT: drop it and close both sides of that connection;
     * PARTITION: stop taking connections, then cut (neither end can reach the other through the proxy again);
     * END_TO_DESTINATION / END_TO_SOURCE: from this frame on nothing more travels that way on this connection
     * and its receiver reads the end of its input (a half-close, a FIN), while the other way keeps flowing until
     * an end closes the connection; this frame is lost if it travels the ended way, forwarded otherwise.
     */
    public enum Action { FORWARD, DROP, REPEAT, CUT, PARTITION, END_TO_DESTINATION, END_TO_SOURCE }

    /**
     * Decides each frame: the connection (0 = the first accepted), the direction, the frame's index in it, its type
     * code. It runs on the thread that pumps that direction of that connection, before the frame goes on, so it
     * may act at that exact point (signal a process) and may block, which holds that direction only.
     */
    @FunctionalInterface
    public interface Rule {
        Action on(int connection, Direction direction, long index, int type);
    }

    private final ServerSocketChannel listener;
    private final Thread acceptor;
    private final SocketAddress target;
    private final Rule rule;
    private final AtomicInteger connections = new AtomicInteger();
    private final CountDownLatch cut = new CountDownLatch(1);
    private final ByteArrayOutputStream recorded = new ByteArrayOutputStream();
    private final boolean record;

    /** A proxy to {@code target} that records the first connection's stream (see {@link #recordedStream}). */
    public FrameProxy(SocketAddress target, Rule rule) throws IOException {
        this(target, rule, true);
    }

    /** With {@code record} false nothing is kept: for long streams whose bytes no test replays. */
    public FrameProxy(SocketAddress target, Rule rule, boolean record) throws IOException {
        this.target = target;
        this.rule = rule;
        this.record = record;
        this.listener = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
        this.acceptor = Thread.ofPlatform().name("frame-proxy").daemon().start(this::acceptLoop);
    }

    public SocketAddress address() throws IOException {
        return listener.getLocalAddress();
    }

    /**
     * Takes no more connections: a later connect is refused (a partition between the two ends). Returns once
     * that holds: the JDK closes a listening socket that a thread is blocked accepting on only when that
     * thread has left accept (until then connections still complete), so this waits for the accept thread.
     */
    public void refuseNewConnections() throws IOException {
        listener.close();
        try {
            acceptor.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while closing the proxy's listener", e);
        }
    }

    /** Counted down when a rule cut a connection. */
    public CountDownLatch cutDone() {
        return cut;
    }

    /** What the source sent on the first connection, as the destination received it. */
    public synchronized byte[] recordedStream() {
        return recorded.toByteArray();
    }

    private void acceptLoop() {
        while (listener.isOpen()) {
            SocketChannel from;
            try {
                from = listener.accept();
            } catch (IOException e) {
                return; // closed
            }
            SocketChannel to;
            try {
                to = SocketChannel.open(target);
            } catch (IOException e) {
                // The target is gone (a killed destination): the source sees its connection end, and asks again later.
                closeQuietly(from);
                continue;
            }
            Link link = new Link(connections.getAndIncrement(), from, to);
            Thread.ofPlatform().daemon().start(() -> pump(link, Direction.TO_DESTINATION));
            Thread.ofPlatform().daemon().start(() -> pump(link, Direction.TO_SOURCE));
        }
    }

    /** One proxied connection: its two sockets, and per direction whether it was ended (guarded by that direction's lock). */
    private final class Link {
        final int index;
        final SocketChannel source, destination;
        private final Object toDestination = new Object(), toSource = new Object();
        private boolean endedToDestination, endedToSource;

        Link(int index, SocketChannel source, SocketChannel destination) {
            this.index = index;
            this.source = source;
            this.destination = destination;
        }

        SocketChannel in(Direction d) {
            return d == Direction.TO_DESTINATION ? source : destination;
        }

        SocketChannel out(Direction d) {
            return d == Direction.TO_DESTINATION ? destination : source;
        }

        private Object lock(Direction d) {
            return d == Direction.TO_DESTINATION ? toDestination : toSource;
        }

        /** Ends direction {@code d}: its receiver reads the end of its input; later frames that way are discarded. */
        void end(Direction d) {
            synchronized (lock(d)) {
                if (d == Direction.TO_DESTINATION) endedToDestination = true;
                else endedToSource = true;
                try {
                    out(d).shutdownOutput();
                } catch (IOException e) {
                    // already closed: that direction has ended anyway
                }
            }
        }

        /** Writes {@code parts} in direction {@code d}, whole, unless that direction was ended. */
        void write(Direction d, ByteBuffer... parts) throws IOException {
            synchronized (lock(d)) {
                if (d == Direction.TO_DESTINATION ? endedToDestination : endedToSource) return;
                SocketChannel out = out(d);
                for (ByteBuffer b : parts) {
                    if (record && index == 0 && d == Direction.TO_DESTINATION) {
                        synchronized (FrameProxy.this) {
                            recorded.write(b.array(), b.arrayOffset() + b.position(), b.remaining());
                        }
                    }
                    while (b.hasRemaining()) out.write(b);
                }
            }
        }
    }

    private static void closeQuietly(SocketChannel c) {
        try {
            c.close();
        } catch (IOException ignored) {
            // closing is all that is wanted
        }
    }

    private void pump(Link link, Direction direction) {
        SocketChannel in = link.in(direction), out = link.out(direction);
        int connection = link.index;
        try {
            ByteBuffer head = ByteBuffer.allocate(FrameCodec.HEADER).order(ByteOrder.LITTLE_ENDIAN);
            if (direction == Direction.TO_DESTINATION) {
                ByteBuffer magic = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                if (!fill(in, magic)) return;
                long m = magic.getLong(0);
                if (m == StreamHeader.MAGIC) {
                    ByteBuffer fixed = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
                    if (!fill(in, fixed)) return;
                    ByteBuffer rest = ByteBuffer.allocate(fixed.getInt(4) - 16);
                    if (!fill(in, rest)) return;
                    link.write(direction, magic.flip(), fixed.flip(), rest.flip());
                } else if (m == OutcomeQuery.MAGIC) {
                    ByteBuffer rest = ByteBuffer.allocate(20);
                    if (!fill(in, rest)) return;
                    link.write(direction, magic.flip(), rest.flip());
                } else {
                    head.put(magic.flip()); // a further channel: its first frame began there
                }
            }
            for (long index = 0; ; index++) {
                if (!fill(in, head)) return;
                head.flip();
                long length = head.getLong(24);
                ByteBuffer payload = ByteBuffer.allocate((int) length);
                if (!fill(in, payload)) return;
                payload.flip();
                Action action = rule.on(connection, direction, index, Short.toUnsignedInt(head.getShort(0)));
                switch (action) {
                    case FORWARD -> link.write(direction, head, payload);
                    case DROP -> { }
                    case REPEAT -> {
                        link.write(direction, head.duplicate(), payload.duplicate());
                        link.write(direction, head, payload);
                    }
                    case END_TO_DESTINATION, END_TO_SOURCE -> {
                        Direction ended = action == Action.END_TO_DESTINATION ? Direction.TO_DESTINATION : Direction.TO_SOURCE;
                        link.end(ended);
                        link.write(direction, head, payload); // discarded if this frame travels the ended way
                    }
                    case CUT, PARTITION -> {
                        if (action == Action.PARTITION) refuseNewConnections();
                        in.close();
                        out.close();
                        cut.countDown();
                        return;
                    }
                }
                head.clear();
            }
        } catch (IOException e) {
            // one side closed: close the other, as a real connection would
        } finally {
            try {
                out.close();
                in.close();
            } catch (IOException ignored) {
                // already closed
            }
        }
    }

    private static boolean fill(SocketChannel in, ByteBuffer dst) throws IOException {
        while (dst.hasRemaining()) if (in.read(dst) < 0) return false;
        return true;
    }

    @Override
    public void close() throws IOException {
        listener.close();
    }
}
