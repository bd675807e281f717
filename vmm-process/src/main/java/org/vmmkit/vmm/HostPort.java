package org.vmmkit.vmm;

import java.net.InetSocketAddress;

/** A {@code HOST:PORT} argument, checked. */
public record HostPort(String host, int port) {
    public static HostPort parse(String value) {
        int colon = value.lastIndexOf(':');
        if (colon <= 0 || colon == value.length() - 1) throw new IllegalArgumentException("expected HOST:PORT, got '" + value + "'");
        int port;
        try {
            port = Integer.parseInt(value.substring(colon + 1));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("expected HOST:PORT with a numeric port, got '" + value + "'");
        }
        if (port < 0 || port > 65535) throw new IllegalArgumentException("port " + port + " is out of range");
        return new HostPort(value.substring(0, colon), port);
    }

    /**
     * The address with its host looked up now, so that a name that does not resolve is refused by whoever
     * gave it rather than found later on another thread.
     */
    public InetSocketAddress resolve() {
        InetSocketAddress address = new InetSocketAddress(host, port);
        if (address.isUnresolved()) throw new IllegalArgumentException("cannot resolve host '" + host + "'");
        return address;
    }

    @Override
    public String toString() {
        return host + ":" + port;
    }
}
