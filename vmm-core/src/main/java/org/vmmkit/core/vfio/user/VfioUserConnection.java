package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.sys.UnixSocket;

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
 * <p>Transport failures never hang: every wait is a poll bounded by the reply timeout. A server that
 * closes the socket, a timeout or a reply that cannot be framed breaks the connection (the stream can no
 * longer be trusted); every later call then fails at once, naming the first failure. An Error reply or a
 * reply of the wrong size for its command leaves the framing intact and the connection usable.
 *
 * <p>File descriptors travel as SCM_RIGHTS over FFM {@code sendmsg}/{@code recvmsg} ({@link UnixSocket}): a
 * request's fds (DMA_MAP's memfd, SET_IRQS's eventfds) are attached to its one {@code sendmsg}; a reply's fds
 * (GET_REGION_INFO's region fd) arrive with its header, as the server sends them, and are held for the caller
 * ({@link #receivedFdCount}, {@link #takeFd}) until the next call, which closes any not taken.
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
    private final UnixSocket socket;
    private final long timeoutNanos;
    private final ByteBuffer outBuf = ByteBuffer.allocateDirect(MAX_REQUEST).order(ByteOrder.LITTLE_ENDIAN);
    private final MemorySegment outSeg = MemorySegment.ofBuffer(outBuf);
    private final MemorySegment outPayload = outSeg.asSlice(HEADER_SIZE);
    private final MemorySegment headerSeg = MemorySegment.ofBuffer(ByteBuffer.allocateDirect((int) HEADER_SIZE));
    private final MemorySegment serverReply = MemorySegment.ofBuffer(ByteBuffer.allocateDirect((int) HEADER_SIZE));
    private ByteBuffer inBuf = ByteBuffer.allocateDirect(MAX_REQUEST).order(ByteOrder.LITTLE_ENDIAN);
    private MemorySegment inSeg = MemorySegment.ofBuffer(inBuf);
    private MemorySegment inPayload = inSeg.asSlice(HEADER_SIZE);
    private int nextId;
    private String broken;

    // the request in flight, for messages (described only when something fails)
    private int command;
    private long arg0, arg1, arg2;

    private static final int[] NO_FDS = new int[0];

    private VfioUserConnection(String object, UnixSocket socket, Duration timeout) {
        this.object = object;
        this.socket = socket;
        this.timeoutNanos = timeout.toNanos();
    }

    /** Connects to the server's socket. {@code object} is what errors name, e.g. {@code nic0 (vfio-user /run/nic0.sock)}. */
    static VfioUserConnection connect(Path socket, String object, Duration replyTimeout) {
        return new VfioUserConnection(object, UnixSocket.connect(socket, object), replyTimeout);
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
        return call(cmd, payloadLength, NO_FDS, 0, minReply, maxReply, a0, a1, a2);
    }

    /** {@link #call} with {@code fdCount} fds of {@code fds} attached to the request (SCM_RIGHTS, in its one sendmsg). */
    synchronized long call(int cmd, long payloadLength, int[] fds, int fdCount, long minReply, long maxReply, long a0, long a1, long a2) {
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
        socket.closeReceivedFds(); // the last reply's fds that nobody took
        try {
            send(id, cmd, payloadLength, fds, fdCount, deadline);
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
        } catch (SocketFailure e) {
            throw breakWith(e.errno, "the server has gone, the socket failed: " + e.getMessage() + ": " + Errno.name(e.errno));
        } catch (IOException e) {
            throw breakWith(Errno.EIO, "the socket failed: " + e.getMessage());
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

    /**
     * Header and payload in one sendmsg with the fds attached (the peer reads the header with one receive, which
     * is where it takes the fds from, and the body with one more). A send the socket takes only in part is
     * finished without fds; with one request in flight and messages of at most 64 KiB the socket buffer
     * always has room for a whole one.
     */
    private void send(int id, int cmd, long payloadLength, int[] fds, int fdCount, long deadline) throws IOException {
        long size = HEADER_SIZE + payloadLength;
        outSeg.set(U16, HEADER_MSG_ID, (short) id);
        outSeg.set(U16, HEADER_CMD, (short) cmd);
        outSeg.set(U32, HEADER_MSG_SIZE, (int) size);
        outSeg.set(U32, HEADER_FLAGS, FLAG_TYPE_COMMAND);
        outSeg.set(U32, HEADER_ERROR_NO, 0);
        sendFully(outSeg, size, null, 0, 0, fds, fdCount, deadline, "room in the socket to send the request");
    }

    /** Sends {@code firstLength} bytes of {@code first}, then {@code secondLength} of {@code second} from {@code secondOffset}, fds with the first sendmsg. */
    private void sendFully(MemorySegment first, long firstLength, MemorySegment second, long secondOffset, long secondLength,
                           int[] fds, int fdCount, long deadline, String what) throws IOException {
        long total = firstLength + secondLength;
        long sent = 0;
        while (sent < total) {
            long n;
            if (sent < firstLength) {
                n = socket.send(first, sent, firstLength - sent, second, secondOffset, secondLength, sent == 0 ? fds : NO_FDS, sent == 0 ? fdCount : 0);
            } else {
                long at = sent - firstLength;
                n = socket.send(second, secondOffset + at, secondLength - at, null, 0, 0, NO_FDS, 0);
            }
            if (n == -Errno.EAGAIN) await(Libc.POLLOUT, deadline, what);
            else if (n < 0) throw new SocketFailure((int) -n, "sendmsg failed");
            else sent += n;
        }
    }

    /** Reads one message header (keeping the fds that arrive with it); returns its msg_size, checked to be framable. */
    private long receiveHeader(long deadline) throws IOException {
        fill(headerSeg, 0, HEADER_SIZE, true, deadline, "reply header");
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
        fill(inSeg, HEADER_SIZE, HEADER_SIZE + payload, false, deadline, "reply payload");
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
        MemorySegment reply = serverReply;
        reply.set(U16, HEADER_MSG_ID, (short) id);
        reply.set(U16, HEADER_CMD, (short) cmd);
        reply.set(U32, HEADER_MSG_SIZE, (int) HEADER_SIZE);
        reply.set(U32, HEADER_FLAGS, FLAG_TYPE_REPLY | FLAG_ERROR);
        reply.set(U32, HEADER_ERROR_NO, Errno.EOPNOTSUPP);
        sendFully(reply, HEADER_SIZE, null, 0, 0, NO_FDS, 0, deadline, "room in the socket to answer " + commandName(cmd));
    }

    /** Receives bytes {@code [from, to)} of {@code dst}; fds are kept only from the receives of a header. */
    private void fill(MemorySegment dst, long from, long to, boolean acceptFds, long deadline, String what) throws IOException {
        long at = from;
        while (at < to) {
            long n = socket.receive(dst, at, to - at, acceptFds);
            if (n == 0) throw new EndOfStream("end of stream after " + (at - from) + " of " + (to - from) + " bytes of the " + what);
            if (n == -Errno.EAGAIN) await(Libc.POLLIN, deadline, what);
            else if (n == -Errno.EMSGSIZE) throw new ProtocolError("a message carried more file descriptors than " + UnixSocket.MAX_FDS);
            else if (n < 0) throw new SocketFailure((int) -n, "recvmsg failed");
            else at += n;
        }
    }

    private void await(short events, long deadline, String what) throws IOException {
        long left = deadline - System.nanoTime();
        if (left <= 0) throw new Timeout(what);
        int r = socket.await(events, (int) Math.max(1, Math.min(Integer.MAX_VALUE, TimeUnit.NANOSECONDS.toMillis(left))));
        if (r < 0) throw new SocketFailure(-r, "poll failed");
        socket.woken();
    }

    /** How many fds arrived with the last reply. */
    int receivedFdCount() {
        return socket.receivedFdCount();
    }

    /** Takes the {@code i}-th fd that arrived with the last reply; the caller closes it. */
    int takeFd(int i) {
        return socket.takeFd(i);
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
        socket.close();
    }

    private static final class Timeout extends IOException {
        final String what;

        Timeout(String what) {
            super(what);
            this.what = what;
        }
    }

    private static final class SocketFailure extends IOException {
        final int errno;

        SocketFailure(int errno, String what) {
            super(what);
            this.errno = errno;
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
