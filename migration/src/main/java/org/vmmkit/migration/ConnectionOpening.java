package org.vmmkit.migration;

import java.io.EOFException;
import java.io.IOException;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;

/**
 * How the destination takes connections: accepting within a time, accepting further channels while watching
 * the first, and a connection's opening (the transport's handshake, HELLO, the magic that says whether a
 * stream or an outcome query follows), which a peer that says nothing may not drag out.
 */
final class ConnectionOpening {
    private ConnectionOpening() {}

    /**
     * An opened connection: the transport over it, its return path (its own sequence), what the peer sent first, and
     * when ({@code System.nanoTime}) the opening began and HELLO was written (for the destination's set-up line).
     */
    record Opened(Connection connection, FrameCodec back, long magic, long begunNanos, long helloNanos) {}

    /**
     * The opening of {@code raw}: the handshake, HELLO with {@code nonce}, and the magic, all within
     * {@code wait}; a peer that connects and then says nothing is dropped rather than holding the destination.
     */
    static Opened open(SocketChannel raw, Transport transport, Nonce nonce, Duration wait) throws IOException {
        long begun = System.nanoTime();
        try (Watchdog opening = new Watchdog("migration-opening-watchdog", wait, List.of(raw))) {
            MigrationSource.noDelay(raw);
            Connection channel;
            try {
                channel = transport.server(raw);
            } catch (IOException e) {
                throw new IOException("the " + transport.kind() + " handshake with " + remote(raw) + " failed: " + e.getMessage(), e);
            }
            FrameCodec back = new FrameCodec(0);
            back.write(channel, FrameType.HELLO, nonce.high(), nonce.low(), null, null);
            long hello = System.nanoTime();
            long magic = StreamHeader.readMagic(channel);
            if (!opening.disarm()) throw new IOException("no stream header within " + wait.toMillis() + " ms");
            return new Opened(channel, back, magic, begun, hello);
        }
    }

    static SocketChannel acceptWithin(ServerSocketChannel server, Duration timeout) throws IOException {
        if (server.getLocalAddress() instanceof java.net.UnixDomainSocketAddress) return acceptUnixWithin(server, timeout);
        server.socket().setSoTimeout((int) Math.clamp(timeout.toMillis(), 1, Integer.MAX_VALUE));
        try {
            return server.socket().accept().getChannel();
        } catch (SocketTimeoutException e) {
            throw new IOException("no connection on " + server.getLocalAddress() + " within " + timeout.toMillis() + " ms", e);
        }
    }

    /** {@link #acceptWithin} for a Unix domain socket, which has no {@code socket()} view to set a timeout on: a selector waits. */
    private static SocketChannel acceptUnixWithin(ServerSocketChannel server, Duration timeout) throws IOException {
        long deadline = System.nanoTime() + timeout.toNanos();
        server.configureBlocking(false);
        try (Selector selector = Selector.open()) {
            server.register(selector, SelectionKey.OP_ACCEPT);
            while (true) {
                SocketChannel c = server.accept(); // in blocking mode, whatever the server's mode
                if (c != null) return c;
                long left = deadline - System.nanoTime();
                if (left <= 0) throw new IOException("no connection on " + server.getLocalAddress() + " within " + timeout.toMillis() + " ms");
                selector.select(Math.clamp(left / 1_000_000, 1, 1000)); // at most a second: a closed server ends the loop
                if (!server.isOpen()) throw new java.nio.channels.ClosedChannelException();
            }
        } finally {
            if (server.isOpen()) server.configureBlocking(true);
        }
    }

    /**
     * The next connection on {@code server}, while watching {@code first}: a first connection that closes (or
     * sends anything before READY) ends the wait at once, as does the deadline, so a stream that announced
     * channels it never opens cannot hold the destination.
     */
    static SocketChannel acceptWhileWatching(ServerSocketChannel server, SocketChannel first, long deadlineNanos) throws IOException {
        server.configureBlocking(false);
        first.configureBlocking(false);
        try (Selector selector = Selector.open()) {
            server.register(selector, SelectionKey.OP_ACCEPT);
            first.register(selector, SelectionKey.OP_READ);
            ByteBuffer one = ByteBuffer.allocate(1);
            while (true) {
                SocketChannel c = server.accept(); // in blocking mode, whatever the server's mode
                if (c != null) return c;
                int n = first.read(one);
                if (n < 0) throw new EOFException("the first connection closed while the stream's further channels were awaited");
                if (n > 0) throw new WireFormatException("the source wrote on the first connection before READY");
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) throw new IOException("the stream's further channels did not all connect in time");
                selector.select(Math.max(1, left / 1_000_000));
            }
        } finally {
            // The selector is closed (its keys with it) before this runs, so both may block again.
            first.configureBlocking(true);
            server.configureBlocking(true);
        }
    }

    static String remote(SocketChannel c) {
        try {
            return String.valueOf(c.getRemoteAddress());
        } catch (IOException e) {
            return "a closed connection";
        }
    }

    /** A frame of {@code type} on the return path with {@code reason} (at most 64 KiB of it) as its payload. */
    static void answer(Connection channel, FrameCodec back, FrameType type, String reason) throws IOException {
        byte[] text = reason.getBytes(StandardCharsets.UTF_8);
        ByteBuffer payload = reason.isEmpty() ? null : ByteBuffer.wrap(text, 0, Math.min(text.length, 64 * 1024));
        back.write(channel, type, 0, 0, payload, null);
    }
}
