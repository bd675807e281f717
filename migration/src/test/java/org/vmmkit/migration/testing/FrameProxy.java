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
 * {@link Rule}. It can record what the source sent on the first connection (for a replay) and stop taking
 * connections (a partition).
 */
public final class FrameProxy implements AutoCloseable {
    public enum Direction { TO_DESTINATION, TO_SOURCE }

    /**
     * FORWARD it; DROP it; REPEAT it (sent twice); CUT: drop it and close both sides of that connection;
     * PARTITION: stop taking connections, then cut (neither end can reach the other through the proxy again).
     */
    public enum Action { FORWARD, DROP, REPEAT, CUT, PARTITION }

    /** Decides each frame: the connection (0 = the first accepted), the direction, the frame's index in it, its type code. */
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

    public FrameProxy(SocketAddress target, Rule rule) throws IOException {
        this.target = target;
        this.rule = rule;
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
            try {
                SocketChannel from = listener.accept();
                SocketChannel to = SocketChannel.open(target);
                int index = connections.getAndIncrement();
                Thread.ofPlatform().daemon().start(() -> pump(index, from, to, Direction.TO_DESTINATION));
                Thread.ofPlatform().daemon().start(() -> pump(index, to, from, Direction.TO_SOURCE));
            } catch (IOException e) {
                return; // closed
            }
        }
    }

    private void pump(int connection, SocketChannel in, SocketChannel out, Direction direction) {
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
                    forward(connection, out, magic.flip(), fixed.flip(), rest.flip());
                } else if (m == OutcomeQuery.MAGIC) {
                    ByteBuffer rest = ByteBuffer.allocate(20);
                    if (!fill(in, rest)) return;
                    forward(connection, out, magic.flip(), rest.flip());
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
                    case FORWARD -> forward(connection, direction, out, head, payload);
                    case DROP -> { }
                    case REPEAT -> {
                        forward(connection, direction, out, head.duplicate(), payload.duplicate());
                        forward(connection, direction, out, head, payload);
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

    private void forward(int connection, Direction direction, SocketChannel out, ByteBuffer... parts) throws IOException {
        if (direction == Direction.TO_DESTINATION) forward(connection, out, parts);
        else for (ByteBuffer b : parts) while (b.hasRemaining()) out.write(b);
    }

    private void forward(int connection, SocketChannel out, ByteBuffer... parts) throws IOException {
        for (ByteBuffer b : parts) {
            if (connection == 0) {
                synchronized (this) {
                    recorded.write(b.array(), b.arrayOffset() + b.position(), b.remaining());
                }
            }
            while (b.hasRemaining()) out.write(b);
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
