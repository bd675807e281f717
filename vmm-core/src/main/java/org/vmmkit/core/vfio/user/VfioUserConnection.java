package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;

import static org.vmmkit.core.vfio.user.abi.VfioUserAbi.*;

/**
 * The vfio-user message layer on the client side: one UNIX stream socket, one request in flight, every
 * reply checked before anything reads it.
 *
 * <p>A request is built in {@link #out()} and sent with {@link #call}: header and payload go out in one
 * write, because the server reads the header with one 16-byte receive and the body with one more receive
 * without MSG_WAITALL (a message split across writes can be read short). A whole message is at most
 * {@link #MAX_REQUEST} bytes: larger bodies are read short by the peer's library and the stream
 * desynchronises, so callers chunk (the server's advertised {@code max_data_xfer_size} is not the real
 * limit). The reply must be a reply ({@code FLAG_TYPE_REPLY}) to this message id and command, of a size the
 * caller allows; an Error reply becomes a {@link SysException} with the server's errno.
 *
 * <p>Transport failures never hang: every wait is a selector wait bounded by the reply timeout. A server that
 * closes the socket, a timeout or a reply that cannot be framed breaks the connection (the stream can no
 * longer be trusted); every later call then fails at once, naming the first failure. An Error reply or a
 * reply of the wrong size for its command leaves the framing intact and the connection usable.
 *
 * <p>File descriptors: a JDK {@link SocketChannel} neither sends nor receives SCM_RIGHTS, so fds the server
 * attaches (region fds in GET_REGION_INFO replies) are discarded by the kernel. Fd passing (for mmap of
 * regions, DMA_MAP with an fd, IRQ eventfds, twin_socket) plugs in at {@link #send} and {@link #receive}:
 * the same framing over FFM sendmsg/recvmsg with a control buffer, fds taken from the header's receive.
 *
 * <p>Not thread-safe: the device serialises its calls (one request in flight), and {@link #out()} and
 * {@link #in()} are valid only under that lock, {@link #in()} until the next call.
 */
final class VfioUserConnection implements AutoCloseable {
    /** The largest whole message (header + payload) this client sends. */
    static final int MAX_REQUEST = 64 * 1024;
    /** The largest reply payload this client accepts: a REGION_READ reply of {@code CLIENT_MAX_DATA_XFER_SIZE}. */
    static final long CLIENT_MAX_DATA_XFER_SIZE = DEFAULT_MAX_DATA_XFER_SIZE;
    static final long MAX_REPLY_PAYLOAD = REGION_ACCESS.byteSize() + CLIENT_MAX_DATA_XFER_SIZE;

    private final String object;
    private final SocketChannel channel;
    private final Selector selector;
    private final SelectionKey key;
    private final long timeoutNanos;
    private final ByteBuffer outBuf = ByteBuffer.allocateDirect(MAX_REQUEST).order(ByteOrder.LITTLE_ENDIAN);
    private final MemorySegment outSeg = MemorySegment.ofBuffer(outBuf);
    private final MemorySegment outPayload = outSeg.asSlice(HEADER_SIZE);
    private final ByteBuffer headerBuf = ByteBuffer.allocateDirect((int) HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    private final MemorySegment headerSeg = MemorySegment.ofBuffer(headerBuf);
    private ByteBuffer inBuf = ByteBuffer.allocateDirect(MAX_REQUEST).order(ByteOrder.LITTLE_ENDIAN);
    private MemorySegment inSeg = MemorySegment.ofBuffer(inBuf);
    private MemorySegment inPayload = inSeg.asSlice(HEADER_SIZE);
    private int nextId;
    private String broken;

    // the request in flight, for messages (described only when something fails)
    private int command;
    private long arg0, arg1, arg2;

    private VfioUserConnection(String object, SocketChannel channel, Duration timeout) throws IOException {
        this.object = object;
        this.channel = channel;
        this.timeoutNanos = timeout.toNanos();
        channel.configureBlocking(false);
        this.selector = Selector.open();
        this.key = channel.register(selector, 0);
    }

    /** Connects to the server's socket. {@code object} is what errors name, e.g. {@code nic0 (vfio-user /run/nic0.sock)}. */
    static VfioUserConnection connect(Path socket, String object, Duration replyTimeout) {
        SocketChannel ch = null;
        try {
            ch = SocketChannel.open(StandardProtocolFamily.UNIX);
            ch.connect(UnixDomainSocketAddress.of(socket));
            return new VfioUserConnection(object, ch, replyTimeout);
        } catch (IOException e) {
            if (ch != null) {
                try {
                    ch.close();
                } catch (IOException ignored) {
                    // the connect failure is what matters
                }
            }
            throw new SysException("connect(" + socket + ")", connectErrno(e), object, e.getMessage());
        }
    }

    private static int connectErrno(IOException e) {
        String m = String.valueOf(e.getMessage());
        if (m.contains("refused")) return Errno.ECONNREFUSED;
        if (m.contains("No such file")) return Errno.ENOENT;
        if (m.contains("denied")) return Errno.EACCES;
        return Errno.EIO;
    }

    String object() {
        return object;
    }

    /** The request payload area (after the header), {@code MAX_REQUEST - 16} bytes. */
    MemorySegment out() {
        return outPayload;
    }

    /** The last reply's payload area (after its header); the first {@link #call} result bytes are the payload. */
    MemorySegment in() {
        return inPayload;
    }

    long maxRequestPayload() {
        return MAX_REQUEST - HEADER_SIZE;
    }

    /**
     * Sends the request whose {@code payloadLength} bytes are in {@link #out()} and returns the length of the
     * reply payload, now in {@link #in()}. {@code arg0..2} describe the request in errors (see {@link #what}).
     */
    long call(int cmd, long payloadLength, long minReply, long maxReply, long a0, long a1, long a2) {
        command = cmd;
        arg0 = a0;
        arg1 = a1;
        arg2 = a2;
        if (broken != null) throw new SysException(what(), Errno.ENOTCONN, object, "the connection broke earlier: " + broken);
        if (payloadLength < 0 || payloadLength > maxRequestPayload()) {
            throw new IllegalArgumentException(what() + ": a " + payloadLength + "-byte payload exceeds the " + MAX_REQUEST + "-byte message limit");
        }
        if (maxReply > MAX_REPLY_PAYLOAD) throw new IllegalArgumentException(what() + ": replies are at most " + MAX_REPLY_PAYLOAD + " bytes");
        int id = nextId++ & 0xffff;
        long deadline = System.nanoTime() + timeoutNanos;
        try {
            send(id, cmd, payloadLength, deadline);
            while (true) {
                long size = receiveHeader(deadline);
                int flags = headerSeg.get(U32, HEADER_FLAGS);
                int type = flags & FLAG_TYPE_MASK;
                if (type == FLAG_TYPE_COMMAND) { // a server-to-client request between our request and its reply
                    serverCommand(size, deadline);
                    continue;
                }
                int replyId = Short.toUnsignedInt(headerSeg.get(U16, HEADER_MSG_ID));
                int replyCmd = Short.toUnsignedInt(headerSeg.get(U16, HEADER_CMD));
                if (type != FLAG_TYPE_REPLY) throw protocol("a message of type " + type + " (flags 0x" + Integer.toHexString(flags) + ") came instead of the reply");
                if (replyId != id) throw protocol("the reply has msg_id " + replyId + ", the request " + id);
                if (replyCmd != cmd) throw protocol("the reply is for " + commandName(replyCmd) + ", msg_id " + id);
                long payload = size - HEADER_SIZE;
                long allowed = (flags & FLAG_ERROR) != 0 ? MAX_REQUEST : maxReply;
                if (payload > allowed) throw protocol("the reply has a " + payload + "-byte payload, at most " + allowed + " expected");
                receiveBody(payload, deadline);
                if ((flags & FLAG_ERROR) != 0) {
                    int errno = headerSeg.get(U32, HEADER_ERROR_NO);
                    throw new SysException(what(), errno == 0 ? Errno.EIO : errno, object,
                            errno == 0 ? "the server replied with the Error flag and no errno" : null);
                }
                if (payload < minReply) {
                    throw new SysException(what(), Errno.EPROTO, object, "the reply has a " + payload + "-byte payload, at least " + minReply + " expected");
                }
                return payload;
            }
        } catch (Timeout t) {
            throw breakWith(Errno.ETIMEDOUT, "no " + t.what + " within " + TimeUnit.NANOSECONDS.toMillis(timeoutNanos)
                    + " ms; the connection is closed, a late reply would desynchronise the stream");
        } catch (EndOfStream e) {
            throw breakWith(Errno.ECONNRESET, "the server closed the connection (" + e.getMessage() + ")");
        } catch (ProtocolError p) {
            throw breakWith(Errno.EPROTO, p.getMessage());
        } catch (IOException e) {
            throw breakWith(e.getMessage() != null && e.getMessage().contains("Broken pipe") ? Errno.EPIPE : Errno.ECONNRESET,
                    "the server has gone, the socket failed: " + e.getMessage());
        }
    }

    /** The request as errors name it, e.g. {@code VFIO_USER_REGION_READ(region 9, offset 0x8, 8 bytes)}. */
    String what() {
        String args = switch (command) {
            case REGION_READ, REGION_WRITE -> "region " + arg0 + ", offset 0x" + Long.toHexString(arg1) + ", " + arg2 + " bytes";
            case DEVICE_GET_REGION_INFO -> "index=" + arg0 + ", argsz=" + arg1;
            case VERSION -> arg0 + "." + arg1;
            default -> "";
        };
        return commandName(command) + "(" + args + ")";
    }

    /** Header and payload in one write (the peer reads the header with one receive, the body with one more). */
    private void send(int id, int cmd, long payloadLength, long deadline) throws IOException {
        long size = HEADER_SIZE + payloadLength;
        outSeg.set(U16, HEADER_MSG_ID, (short) id);
        outSeg.set(U16, HEADER_CMD, (short) cmd);
        outSeg.set(U32, HEADER_MSG_SIZE, (int) size);
        outSeg.set(U32, HEADER_FLAGS, FLAG_TYPE_COMMAND);
        outSeg.set(U32, HEADER_ERROR_NO, 0);
        outBuf.clear().limit((int) size);
        // SCM_RIGHTS plugs in here: sendmsg with the fds attached to this one write.
        while (outBuf.hasRemaining()) {
            if (channel.write(outBuf) == 0) await(SelectionKey.OP_WRITE, deadline, "room in the socket to send the request");
        }
    }

    /** Reads one message header; returns its msg_size, checked to be framable. */
    private long receiveHeader(long deadline) throws IOException {
        headerBuf.clear();
        // SCM_RIGHTS plugs in here: the server attaches fds to the header's receive.
        fill(headerBuf, deadline, "reply header");
        long size = Integer.toUnsignedLong(headerSeg.get(U32, HEADER_MSG_SIZE));
        if (size < HEADER_SIZE) throw protocol("a message with msg_size " + size + ", less than its own " + HEADER_SIZE + "-byte header");
        if (size - HEADER_SIZE > MAX_REPLY_PAYLOAD) throw protocol("a message with msg_size " + size + ", more than this client accepts (" + (HEADER_SIZE + MAX_REPLY_PAYLOAD) + ")");
        return size;
    }

    private void receiveBody(long payload, long deadline) throws IOException {
        if (HEADER_SIZE + payload > inBuf.capacity()) {
            inBuf = ByteBuffer.allocateDirect((int) (HEADER_SIZE + Math.max(payload, 2L * inBuf.capacity()))).order(ByteOrder.LITTLE_ENDIAN);
            inSeg = MemorySegment.ofBuffer(inBuf);
            inPayload = inSeg.asSlice(HEADER_SIZE);
        }
        MemorySegment.copy(headerSeg, 0, inSeg, 0, HEADER_SIZE);
        inBuf.clear().position((int) HEADER_SIZE).limit((int) (HEADER_SIZE + payload));
        fill(inBuf, deadline, "reply payload");
    }

    /**
     * A command from the server (DMA_READ/DMA_WRITE arrive this way without twin_socket). This increment maps
     * no DMA, so the server has no reason to send one: it is answered with an Error reply (EOPNOTSUPP) unless it
     * asked for none, and the wait for our reply goes on. Server-to-client DMA handling plugs in here.
     */
    private void serverCommand(long size, long deadline) throws IOException {
        int id = Short.toUnsignedInt(headerSeg.get(U16, HEADER_MSG_ID));
        int cmd = Short.toUnsignedInt(headerSeg.get(U16, HEADER_CMD));
        int flags = headerSeg.get(U32, HEADER_FLAGS);
        long payload = size - HEADER_SIZE;
        receiveBody(payload, deadline);
        if ((flags & FLAG_NO_REPLY) != 0) return;
        ByteBuffer reply = ByteBuffer.allocate((int) HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
        reply.putShort((short) id).putShort((short) cmd).putInt((int) HEADER_SIZE)
                .putInt(FLAG_TYPE_REPLY | FLAG_ERROR).putInt(Errno.EOPNOTSUPP).flip();
        while (reply.hasRemaining()) {
            if (channel.write(reply) == 0) await(SelectionKey.OP_WRITE, deadline, "room in the socket to answer " + commandName(cmd));
        }
    }

    private void fill(ByteBuffer dst, long deadline, String what) throws IOException {
        int start = dst.position();
        while (dst.hasRemaining()) {
            int n = channel.read(dst);
            if (n < 0) throw new EndOfStream("end of stream after " + (dst.position() - start) + " of " + (dst.limit() - start) + " bytes of the " + what);
            if (n == 0) await(SelectionKey.OP_READ, deadline, what);
        }
    }

    private void await(int op, long deadline, String what) throws IOException {
        long left = deadline - System.nanoTime();
        if (left <= 0) throw new Timeout(what);
        key.interestOps(op);
        selector.select(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
        selector.selectedKeys().clear();
    }

    private SysException breakWith(int errno, String detail) {
        broken = Errno.name(errno) + " in " + what() + ": " + detail;
        closeQuietly();
        return new SysException(what(), errno, object, detail);
    }

    private static ProtocolError protocol(String what) {
        return new ProtocolError(what);
    }

    /** Whether a transport failure has closed the connection. */
    boolean broken() {
        return broken != null;
    }

    @Override
    public void close() {
        if (broken == null) broken = "the connection was closed";
        closeQuietly();
    }

    private void closeQuietly() {
        try {
            selector.close();
        } catch (IOException ignored) {
            // closing: nothing more to do with it
        }
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing: nothing more to do with it
        }
    }

    private static final class Timeout extends IOException {
        final String what;

        Timeout(String what) {
            super(what);
            this.what = what;
        }
    }

    private static final class EndOfStream extends IOException {
        EndOfStream(String what) {
            super(what);
        }
    }

    private static final class ProtocolError extends IOException {
        ProtocolError(String what) {
            super(what);
        }
    }
}
