package org.vmmkit.migration.transport;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ByteChannel;
import java.nio.channels.GatheringByteChannel;
import java.nio.channels.SocketChannel;

/**
 * One migration connection as the protocol sees it: bytes in and out, over a TCP socket that is either used
 * as it is ({@link #plain}) or carries TLS ({@link TlsConnection}). Reads and writes may come from two
 * threads at once (a sender writes while the coordinator reads the return path); closing from any thread
 * ends a blocked read or write at once.
 */
public interface Connection extends ByteChannel, GatheringByteChannel {
    /** The TCP socket underneath: for socket options, half-closing, and watching it for EOF. */
    SocketChannel socket();

    /** Who is at the other end: the authenticated identity under TLS, else the address. */
    String peer();

    /** Ends this side's reading (a read blocked in another thread returns end-of-stream) and nothing else. */
    default void shutdownInput() throws IOException {
        socket().shutdownInput();
    }

    @Override
    default long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        long n = 0;
        for (int i = offset; i < offset + length; i++) n += write(srcs[i]);
        return n;
    }

    @Override
    default long write(ByteBuffer[] srcs) throws IOException {
        return write(srcs, 0, srcs.length);
    }

    /** A connection that is the socket itself (no TLS). */
    static Connection plain(SocketChannel socket) {
        return new Connection() {
            @Override
            public SocketChannel socket() {
                return socket;
            }

            @Override
            public String peer() {
                try {
                    return String.valueOf(socket.getRemoteAddress());
                } catch (IOException e) {
                    return "a closed connection";
                }
            }

            @Override
            public int read(ByteBuffer dst) throws IOException {
                return socket.read(dst);
            }

            @Override
            public int write(ByteBuffer src) throws IOException {
                return socket.write(src);
            }

            @Override
            public boolean isOpen() {
                return socket.isOpen();
            }

            @Override
            public void close() throws IOException {
                socket.close();
            }
        };
    }
}
