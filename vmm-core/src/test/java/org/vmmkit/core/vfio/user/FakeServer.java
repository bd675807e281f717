package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

/**
 * A scripted vfio-user server on a UNIX socket, for the client's message layer: by default a well-behaved
 * device with one read-write region backed by a byte array; a test replaces the answer to any command to
 * make it misbehave (another id, an Error reply, silence, a closed socket, a truncated reply). Records every
 * message it received. One client, served on its own thread with blocking reads.
 */
final class FakeServer implements AutoCloseable {

    record Message(int id, int cmd, int size, int flags, byte[] payload) {
        ByteBuffer body() {
            return ByteBuffer.wrap(payload).order(ByteOrder.LITTLE_ENDIAN);
        }
    }

    /** Answers one message; the default answers are {@link FakeServer#standard}. */
    @FunctionalInterface
    interface Handler {
        void handle(Message m, FakeServer s) throws IOException;
    }

    final byte[] region;
    final List<Message> received = Collections.synchronizedList(new ArrayList<>());
    volatile String versionJson = "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576,\"migration\":{\"pgsize\":4096}}}";
    volatile int versionMajor = 0, versionMinor = 2;
    volatile boolean versionNul = true;
    private final Path socket;
    private final ServerSocketChannel listener;
    private final Handler handler;
    private final CompletableFuture<Void> done = new CompletableFuture<>();
    private volatile SocketChannel client;

    private FakeServer(Path socket, int regionSize, Handler handler) throws IOException {
        this.socket = socket;
        this.region = new byte[regionSize];
        this.handler = handler;
        Files.deleteIfExists(socket);
        listener = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        listener.bind(UnixDomainSocketAddress.of(socket));
        Thread t = new Thread(this::serve, "fake-vfio-user-server");
        t.setDaemon(true);
        t.start();
    }

    /** A server whose handler sees every message first; it calls {@link #standard} for those it leaves alone. */
    static FakeServer start(Path socket, int regionSize, Handler handler) throws IOException {
        return new FakeServer(socket, regionSize, handler);
    }

    Path socket() {
        return socket;
    }

    /** Completes when the serving thread ends (the client went, or the test closed the connection). */
    CompletableFuture<Void> done() {
        return done;
    }

    private void serve() {
        try (SocketChannel c = listener.accept()) {
            client = c;
            while (true) {
                ByteBuffer h = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
                if (!readFully(c, h)) break;
                h.flip();
                int id = Short.toUnsignedInt(h.getShort()), cmd = Short.toUnsignedInt(h.getShort()), size = h.getInt(), flags = h.getInt();
                ByteBuffer body = ByteBuffer.allocate(size - 16);
                if (!readFully(c, body)) break;
                Message m = new Message(id, cmd, size, flags, body.array());
                received.add(m);
                if ((flags & VfioUserAbi.FLAG_TYPE_MASK) == VfioUserAbi.FLAG_TYPE_REPLY) continue; // the client answering one of ours
                handler.handle(m, this);
                if (!c.isOpen()) break;
            }
        } catch (IOException e) {
            // the test closed the connection or the client went: done
        } finally {
            done.complete(null);
        }
    }

    private static boolean readFully(SocketChannel c, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) if (c.read(b) < 0) return false;
        return true;
    }

    /** The well-behaved answer: VERSION, DEVICE_GET_INFO (one region), GET_REGION_INFO, REGION_READ/WRITE, RESET. */
    void standard(Message m) throws IOException {
        ByteBuffer in = m.body();
        switch (m.cmd()) {
            case VfioUserAbi.VERSION -> {
                byte[] json = versionJson.getBytes(StandardCharsets.UTF_8);
                ByteBuffer r = payload(4 + json.length + (versionNul ? 1 : 0));
                r.putShort((short) versionMajor).putShort((short) versionMinor).put(json);
                reply(m, r);
            }
            case VfioUserAbi.DEVICE_GET_INFO -> reply(m, payload(16).putInt(16)
                    .putInt(VfioAbi.DEVICE_FLAGS_RESET | VfioAbi.DEVICE_FLAGS_PCI).putInt(1).putInt(0));
            case VfioUserAbi.DEVICE_GET_REGION_INFO -> {
                int index = in.getInt(8);
                if (index != 0) {
                    error(m, Errno.EINVAL);
                    return;
                }
                reply(m, payload(32).putInt(32).putInt(VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE)
                        .putInt(0).putInt(0).putLong(region.length).putLong(0));
            }
            case VfioUserAbi.REGION_READ -> {
                long offset = in.getLong(0);
                int count = in.getInt(12);
                reply(m, payload(16 + count).putLong(offset).putInt(0).putInt(count).put(region, (int) offset, count));
            }
            case VfioUserAbi.REGION_WRITE -> {
                long offset = in.getLong(0);
                int count = in.getInt(12);
                in.position(16).get(region, (int) offset, count);
                reply(m, payload(16).putLong(offset).putInt(0).putInt(count));
            }
            case VfioUserAbi.DEVICE_RESET -> reply(m, payload(0));
            default -> error(m, Errno.EINVAL);
        }
    }

    static ByteBuffer payload(int size) {
        return ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
    }

    void reply(Message m, ByteBuffer payload) throws IOException {
        send(m.id(), m.cmd(), VfioUserAbi.FLAG_TYPE_REPLY, 0, payload.array(), payload.array().length);
    }

    void error(Message m, int errno) throws IOException {
        send(m.id(), m.cmd(), VfioUserAbi.FLAG_TYPE_REPLY | VfioUserAbi.FLAG_ERROR, errno, new byte[0], 0);
    }

    /** A message as given, header and {@code length} bytes of {@code payload}; msg_size says {@code 16 + payload.length}. */
    void send(int id, int cmd, int flags, int errno, byte[] payload, int length) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(16 + length).order(ByteOrder.LITTLE_ENDIAN);
        b.putShort((short) id).putShort((short) cmd).putInt(16 + payload.length).putInt(flags).putInt(errno).put(payload, 0, length).flip();
        while (b.hasRemaining()) client.write(b);
    }

    /** Closes the connection to the client (the server "dies"). */
    void hangUp() throws IOException {
        client.close();
    }

    @Override
    public void close() throws IOException {
        SocketChannel c = client;
        if (c != null) c.close();
        listener.close();
        Files.deleteIfExists(socket);
    }
}
