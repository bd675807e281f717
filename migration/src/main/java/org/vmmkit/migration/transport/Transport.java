package org.vmmkit.migration.transport;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.time.Duration;

/**
 * How migration connections are made and taken: plain TCP ({@link #PLAIN}) or TLS 1.3 with mutual
 * authentication ({@link TlsTransport}). Both sides of a migration must use the same kind; a peer that does
 * not is refused in the handshake, before either VM changes.
 */
public interface Transport {
    /** Makes {@code socket}, just connected to a destination, a connection (the client side of a handshake). */
    Connection client(SocketChannel socket) throws IOException;

    /** Makes {@code socket}, just accepted from a source, a connection (the server side of a handshake). */
    Connection server(SocketChannel socket) throws IOException;

    /** {@code plain} or {@code tls}, for messages. */
    String kind();

    /** Connects to {@code address} within {@code timeout} and makes it a connection; the socket is closed on failure. */
    default Connection connect(SocketAddress address, Duration timeout) throws IOException {
        SocketChannel socket = open(address, timeout);
        try {
            return client(socket);
        } catch (IOException | RuntimeException e) {
            socket.close();
            throw e;
        }
    }

    /**
     * A socket connected to {@code address}: TCP within {@code timeout}, or a Unix domain socket (a
     * {@link UnixDomainSocketAddress}: the connect is answered at once by the local kernel, or refused). A failure
     * names the address.
     */
    static SocketChannel open(SocketAddress address, Duration timeout) throws IOException {
        if (address instanceof InetSocketAddress inet && inet.isUnresolved()) throw new IOException("cannot resolve host '" + inet.getHostString() + "'");
        boolean unix = address instanceof UnixDomainSocketAddress;
        SocketChannel socket = unix ? SocketChannel.open(StandardProtocolFamily.UNIX) : SocketChannel.open();
        try {
            if (unix) socket.connect(address);
            else socket.socket().connect(address, (int) Math.clamp(timeout.toMillis(), 1, Integer.MAX_VALUE));
            return socket;
        } catch (IOException | RuntimeException e) {
            socket.close();
            if (unix && e instanceof IOException io) {
                String errno = org.vmmkit.core.sys.Errno.nameOfDescription(io.getMessage());
                throw new IOException("connect(unix:" + ((UnixDomainSocketAddress) address).getPath() + ") failed: "
                        + (errno == null ? io.getMessage() : errno + " (" + io.getMessage() + ")"), io);
            }
            throw e;
        }
    }

    /** Whether {@code socket} is a Unix domain socket (a local peer: memfds can be passed to it). */
    static boolean isUnix(SocketChannel socket) {
        try {
            return socket.getLocalAddress() instanceof UnixDomainSocketAddress;
        } catch (IOException e) {
            return false;
        }
    }

    /** TCP as it is: no authentication, no encryption. */
    Transport PLAIN = new Transport() {
        @Override
        public Connection client(SocketChannel socket) {
            return Connection.plain(socket);
        }

        @Override
        public Connection server(SocketChannel socket) {
            return Connection.plain(socket);
        }

        @Override
        public String kind() {
            return "plain";
        }
    };
}
