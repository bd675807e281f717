package org.vmmkit.vmm;

import java.io.IOException;
import java.net.ConnectException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.attribute.BasicFileAttributes;

/**
 * The file of a Unix socket this process serves on. Before the bind, {@link #makeRoom} replaces only a stale
 * socket (one nobody accepts on) and refuses a live one or a file that is not a socket; after it, the file is
 * known by its identity (device and inode), so that {@link #deleteIfOwn} never removes a file another process
 * has since bound at the same path.
 */
record SocketFile(Path path, Object identity) {
    private static final int S_IFMT = 0170000, S_IFSOCK = 0140000;

    /** Leaves nothing at {@code path}: deletes a stale socket there; throws if a process answers on it or it is not a socket. */
    static void makeRoom(Path path) throws IOException {
        makeRoom(path, "control endpoint");
    }

    /** {@link #makeRoom(Path)} for a socket that is {@code what} (its messages say so). */
    static void makeRoom(Path path, String what) throws IOException {
        int mode;
        try {
            mode = (Integer) Files.getAttribute(path, "unix:mode", LinkOption.NOFOLLOW_LINKS);
        } catch (NoSuchFileException nothingThere) {
            return;
        }
        if ((mode & S_IFMT) != S_IFSOCK) throw new IOException(what + " " + path + " exists and is not a socket; not replacing it");
        try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
            probe.connect(UnixDomainSocketAddress.of(path));
        } catch (ConnectException refused) {
            Files.deleteIfExists(path); // stale: its process is gone
            return;
        } catch (IOException e) {
            throw new IOException("cannot check whether control endpoint " + path + " is in use: " + e.getMessage(), e);
        }
        throw new IOException(what + " " + path + " is in use by another process");
    }

    /** The socket file just bound at {@code path}, with its identity now. */
    static SocketFile bound(Path path) throws IOException {
        return new SocketFile(path, identityOf(path));
    }

    /**
     * Deletes the file if it is still the one bound here. Call it before closing the socket: while the socket
     * is open its inode cannot be reused, so an equal identity means the same file.
     */
    void deleteIfOwn() throws IOException {
        Object now;
        try {
            now = identityOf(path);
        } catch (NoSuchFileException gone) {
            return;
        }
        if (identity.equals(now)) Files.deleteIfExists(path);
    }

    private static Object identityOf(Path path) throws IOException {
        Object key = Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS).fileKey();
        if (key == null) throw new IOException("the file system of " + path + " gives files no identity");
        return key;
    }
}
