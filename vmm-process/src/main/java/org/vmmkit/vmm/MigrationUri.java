package org.vmmkit.vmm;

import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnixDomainSocketAddress;
import java.nio.file.Path;

/**
 * Where a migration goes or is taken, as QEMU writes it: {@code tcp:HOST:PORT}, {@code unix:PATH}, or a plain
 * {@code HOST:PORT} (TCP). An IPv6 literal is written in brackets ({@code tcp:[::1]:4444}, {@code [::1]:4444}).
 * The one parser for {@code vmm migrate --to}, {@code vmm incoming --listen} and the control commands' {@code uri};
 * a bad form is refused with the input named.
 */
public sealed interface MigrationUri {
    /** A TCP address; {@code host} is a name or an address, an IPv6 literal without its brackets. */
    record Tcp(String host, int port) implements MigrationUri {
        /**
         * The address with its host looked up now, so that a name that does not resolve is refused by whoever gave
         * it rather than found later on another thread.
         */
        @Override
        public InetSocketAddress address() {
            InetSocketAddress address = new InetSocketAddress(host, port);
            if (address.isUnresolved()) throw new IllegalArgumentException("cannot resolve host '" + host + "'");
            return address;
        }

        /** {@code HOST:PORT}, an IPv6 literal in brackets. */
        @Override
        public String toString() {
            return (host.contains(":") ? "[" + host + "]" : host) + ":" + port;
        }
    }

    /** A Unix domain socket at {@code path}: on the same host, where guest memory can be handed over (a local live upgrade). */
    record Unix(Path path) implements MigrationUri {
        @Override
        public UnixDomainSocketAddress address() {
            return UnixDomainSocketAddress.of(path);
        }

        /** {@code unix:PATH}. */
        @Override
        public String toString() {
            return "unix:" + path;
        }
    }

    /** The socket address (a TCP host is resolved now: an IllegalArgumentException names one that does not resolve). */
    SocketAddress address();

    /** The URI as the control commands take it: {@code tcp:HOST:PORT} or {@code unix:PATH}. */
    default String uri() {
        return this instanceof Tcp ? "tcp:" + this : toString();
    }

    /** QEMU's migration URI schemes this VMM does not take. */
    java.util.Set<String> OTHER_SCHEMES = java.util.Set.of("exec", "fd", "file", "rdma", "vsock", "channels");

    /** Parses {@code text}; an IllegalArgumentException says what was expected and quotes the input. */
    static MigrationUri parse(String text) {
        if (text == null || text.isBlank()) throw new IllegalArgumentException("expected tcp:HOST:PORT, unix:PATH or HOST:PORT, got '" + text + "'");
        if (text.startsWith("unix:")) {
            String path = text.substring(5);
            if (path.isEmpty()) throw new IllegalArgumentException("expected unix:PATH, got '" + text + "' (no path)");
            if (path.indexOf('\0') >= 0) throw new IllegalArgumentException("a unix: path cannot hold a NUL byte: '" + text.replace('\0', '?') + "'");
            return new Unix(Path.of(path));
        }
        if (text.startsWith("tcp:")) return hostPort(text.substring(4), text);
        int colon = text.indexOf(':');
        if (colon > 0 && OTHER_SCHEMES.contains(text.substring(0, colon)) && !text.substring(colon + 1).matches("\\d+")) {
            // One of QEMU's other transports rather than a host followed by its port.
            throw new IllegalArgumentException("unsupported migration URI '" + text + "': expected tcp:HOST:PORT, unix:PATH or HOST:PORT");
        }
        return hostPort(text, text);
    }

    private static Tcp hostPort(String value, String input) {
        String host, port;
        if (value.startsWith("[")) {
            int close = value.indexOf(']');
            if (close < 0 || close + 1 >= value.length() || value.charAt(close + 1) != ':') {
                throw new IllegalArgumentException("expected [IPv6]:PORT, got '" + input + "'");
            }
            host = value.substring(1, close);
            port = value.substring(close + 2);
            if (host.isEmpty() || !host.contains(":")) throw new IllegalArgumentException("expected an IPv6 address in brackets, got '" + input + "'");
        } else {
            int colon = value.lastIndexOf(':');
            if (colon <= 0 || colon == value.length() - 1) throw new IllegalArgumentException("expected HOST:PORT, got '" + input + "'");
            host = value.substring(0, colon);
            port = value.substring(colon + 1);
            if (host.contains(":")) {
                throw new IllegalArgumentException("an IPv6 address takes brackets: [" + host + "]:" + port + ", got '" + input + "'");
            }
        }
        if (!port.matches("\\d{1,5}")) throw new IllegalArgumentException("expected HOST:PORT with a numeric port, got '" + input + "'");
        int p = Integer.parseInt(port);
        if (p > 65535) throw new IllegalArgumentException("port " + p + " is out of range in '" + input + "'");
        return new Tcp(host, p);
    }
}
