package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
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
 * <p>Server commands (DMA_READ/DMA_WRITE) are served while a call waits for its reply and, by a watcher thread
 * ({@link #startServingIdle}), while none is in flight; both hold this connection's lock, so the socket is
 * read by one thread at a time and a reply is always read by its call.
 *
 * <p>The device serialises its calls (one request in flight), and {@link #out()} and {@link #in()} are valid
 * only under its lock, {@link #in()} until the next call; {@link #call} itself holds this connection's lock.
 */
final class VfioUserConnection implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.core.vfio.user");
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
    private final MemorySegment serverReply = MemorySegment.ofBuffer(ByteBuffer.allocateDirect((int) (HEADER_SIZE + DMA_ACCESS_DATA)));
    private ByteBuffer inBuf = ByteBuffer.allocateDirect(MAX_REQUEST).order(ByteOrder.LITTLE_ENDIAN);
    private MemorySegment inSeg = MemorySegment.ofBuffer(inBuf);
    private MemorySegment inPayload = inSeg.asSlice(HEADER_SIZE);
    private int nextId;
    private volatile String broken;
    private int brokenErrno;
    private String unreported; // why the idle watcher broke the connection, until a call has said so
    private volatile boolean closing;
    private Thread watcher;
    private volatile UnixSocket commands; // twin-socket mode: the server's command socket
    private final Object dmaLock = new Object();
    private final MemorySegment cmdHeader = MemorySegment.ofBuffer(ByteBuffer.allocateDirect((int) HEADER_SIZE));
    private MemorySegment cmdSeg = MemorySegment.ofBuffer(ByteBuffer.allocateDirect(MAX_REQUEST));
    private DmaRegion[] dmaRegions = new DmaRegion[0];
    private long dmaReads, dmaWrites, refusedServerCommands;
    private String lastRefusal;

    // the request in flight, for messages (described only when something fails)
    private int command;
    private long arg0, arg1, arg2;

    private static final int[] NO_FDS = new int[0];
    private static final String ANSWER_ROOM = "room in the socket to answer the server's command";

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
        if (broken != null) {
            if (unreported != null) { // the idle watcher found the server gone: the first call after says so as it happened
                SysException e = new SysException(what(), brokenErrno, object, unreported);
                unreported = null;
                throw e;
            }
            throw new SysException(what(), Errno.ENOTCONN, object, "the connection broke earlier: " + broken);
        }
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
                long size = receiveHeader(socket, headerSeg, deadline);
                int flags = headerSeg.get(U32, HEADER_FLAGS);
                int type = flags & FLAG_TYPE_MASK;
                if (type == FLAG_TYPE_COMMAND) { // a server-to-client request between our request and its reply
                    serverCommand(socket, headerSeg, size, deadline);
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
            case DMA_MAP -> "iova 0x" + Long.toHexString(arg0) + ", " + arg1 + " bytes, " + (arg2 < 0 ? "no fd" : "fd " + arg2);
            case DMA_UNMAP -> "iova 0x" + Long.toHexString(arg0) + ", " + arg1 + " bytes";
            case DIRTY_PAGES -> arg0 == 1 ? "START" : arg0 == 2 ? "STOP" : "GET_BITMAP, iova 0x" + Long.toHexString(arg1) + ", " + arg2 + " bytes";
            case DEVICE_SET_IRQS -> "index " + arg0 + ", count " + arg1 + ", " + arg2 + " eventfds";
            case DEVICE_FEATURE -> featureWhat((int) arg0) + ((int) arg0 == (org.vmmkit.core.vfio.abi.V2Abi.FEATURE_GET | org.vmmkit.core.vfio.abi.V2Abi.FEATURE_DMA_LOGGING_REPORT)
                    ? ", iova 0x" + Long.toHexString(arg1) + ", " + arg2 + " bytes" : "");
            case MIG_DATA_READ, MIG_DATA_WRITE -> arg0 + " bytes";
            default -> "";
        };
        return commandName(command) + "(" + args + ")";
    }

    /** A DEVICE_FEATURE's flags as errors name them, e.g. {@code SET MIG_DEVICE_STATE}. */
    static String featureWhat(int flags) {
        StringBuilder b = new StringBuilder();
        if ((flags & org.vmmkit.core.vfio.abi.V2Abi.FEATURE_PROBE) != 0) b.append("PROBE ");
        if ((flags & org.vmmkit.core.vfio.abi.V2Abi.FEATURE_GET) != 0) b.append("GET ");
        if ((flags & org.vmmkit.core.vfio.abi.V2Abi.FEATURE_SET) != 0) b.append("SET ");
        return b.append(org.vmmkit.core.vfio.v2.DeviceFeatures.featureName(flags & org.vmmkit.core.vfio.abi.V2Abi.FEATURE_MASK)).toString();
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
        sendFully(socket, outSeg, size, null, 0, 0, fds, fdCount, deadline, "room in the socket to send the request");
    }

    /** Sends {@code firstLength} bytes of {@code first}, then {@code secondLength} of {@code second} from {@code secondOffset}, fds with the first sendmsg. */
    private void sendFully(UnixSocket s, MemorySegment first, long firstLength, MemorySegment second, long secondOffset, long secondLength,
                           int[] fds, int fdCount, long deadline, String what) throws IOException {
        long total = firstLength + secondLength;
        long sent = 0;
        while (sent < total) {
            long n;
            if (sent < firstLength) {
                n = s.send(first, sent, firstLength - sent, second, secondOffset, secondLength, sent == 0 ? fds : NO_FDS, sent == 0 ? fdCount : 0);
            } else {
                long at = sent - firstLength;
                n = s.send(second, secondOffset + at, secondLength - at, null, 0, 0, NO_FDS, 0);
            }
            if (n == -Errno.EAGAIN) await(s, Libc.POLLOUT, deadline, what);
            else if (n < 0) throw new SocketFailure((int) -n, "sendmsg failed");
            else sent += n;
        }
    }

    /** Reads one message header (keeping the fds that arrive with it); returns its msg_size, checked to be framable. */
    private long receiveHeader(UnixSocket s, MemorySegment header, long deadline) throws IOException {
        fill(s, header, 0, HEADER_SIZE, true, deadline, s == socket ? "reply header" : "command header");
        long size = Integer.toUnsignedLong(header.get(U32, HEADER_MSG_SIZE));
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
        fill(socket, inSeg, HEADER_SIZE, HEADER_SIZE + payload, false, deadline, "reply payload");
    }

    /**
     * A command from the server: DMA_READ or DMA_WRITE (without twin_socket they arrive on this socket, between
     * our request and its reply or while no request is in flight). Served against the DMA regions the client
     * mapped ({@link #dmaRegions}): the range must lie in one region that allows the access, and the count must
     * not exceed our {@code max_data_xfer_size}; a DMA_WRITE marks its pages dirty in that region. Anything else
     * (another command, a malformed request, a range no region holds) is answered with an Error reply naming
     * the errno, so the server never waits for an answer, and is logged naming this device, the command and the
     * range. Read replies go out as one sendmsg of the header and the bytes straight from guest memory.
     */
    private void serverCommand(UnixSocket s, MemorySegment header, long size, long deadline) throws IOException {
        synchronized (dmaLock) {
            serveCommand(s, header, size, deadline);
        }
    }

    private void serveCommand(UnixSocket s, MemorySegment header, long size, long deadline) throws IOException {
        int id = Short.toUnsignedInt(header.get(U16, HEADER_MSG_ID));
        int cmd = Short.toUnsignedInt(header.get(U16, HEADER_CMD));
        int flags = header.get(U32, HEADER_FLAGS);
        long payload = size - HEADER_SIZE;
        if (HEADER_SIZE + payload > cmdSeg.byteSize()) {
            cmdSeg = MemorySegment.ofBuffer(ByteBuffer.allocateDirect((int) (HEADER_SIZE + payload))); // once, up to our max_data_xfer_size
        }
        fill(s, cmdSeg, HEADER_SIZE, HEADER_SIZE + payload, false, deadline, "server command's payload"); // a constant: no allocation
        boolean noReply = (flags & FLAG_NO_REPLY) != 0;
        int errno;
        String why;
        if (cmd != DMA_READ && cmd != DMA_WRITE) {
            errno = Errno.EOPNOTSUPP;
            why = "a server may send only VFIO_USER_DMA_READ and VFIO_USER_DMA_WRITE";
            serverRefused(cmd, -1, payload, errno, why);
            if (!noReply) reply(s, id, cmd, errno, 0, null, 0, 0, deadline);
            return;
        }
        if (payload < DMA_ACCESS_DATA) {
            serverRefused(cmd, -1, payload, Errno.EINVAL, "a " + payload + "-byte payload, shorter than its address and count");
            if (!noReply) reply(s, id, cmd, Errno.EINVAL, 0, null, 0, 0, deadline);
            return;
        }
        long addr = cmdSeg.get(U64, HEADER_SIZE + DMA_ACCESS_ADDR);
        long count = cmdSeg.get(U64, HEADER_SIZE + DMA_ACCESS_COUNT);
        DmaRegion region = null;
        if (count < 0 || count > CLIENT_MAX_DATA_XFER_SIZE) {
            errno = Errno.EINVAL;
            why = "the count exceeds our max_data_xfer_size " + CLIENT_MAX_DATA_XFER_SIZE;
        } else if (cmd == DMA_WRITE && payload != DMA_ACCESS_DATA + count) {
            errno = Errno.EINVAL;
            why = "a " + payload + "-byte payload for " + count + " bytes of data";
        } else if (cmd == DMA_READ && payload != DMA_ACCESS_DATA) {
            errno = Errno.EINVAL;
            why = "a " + payload + "-byte payload; a read carries only its address and count";
        } else if ((region = regionFor(addr, count)) == null) {
            errno = Errno.EFAULT;
            why = "no DMA region this client mapped holds it";
        } else if (cmd == DMA_WRITE ? !region.writable() : !region.readable()) {
            errno = Errno.EPERM;
            why = "the region was mapped " + (region.writable() ? "write-only" : "read-only");
        } else {
            errno = 0;
            why = null;
        }
        if (errno != 0) {
            serverRefused(cmd, addr, count, errno, why);
            if (!noReply) reply(s, id, cmd, errno, 0, null, 0, 0, deadline);
            return;
        }
        long at = addr - region.iova();
        if (cmd == DMA_WRITE) {
            MemorySegment.copy(cmdSeg, HEADER_SIZE + DMA_ACCESS_DATA, region.host(), at, count);
            region.markWritten(at, count);
            dmaWrites++;
        } else {
            dmaReads++;
        }
        if (noReply) return;
        serverReply.set(U64, HEADER_SIZE + DMA_ACCESS_ADDR, addr);
        serverReply.set(U64, HEADER_SIZE + DMA_ACCESS_COUNT, count);
        if (cmd == DMA_READ) reply(s, id, cmd, 0, DMA_ACCESS_DATA, region.host(), at, count, deadline);
        else reply(s, id, cmd, 0, DMA_ACCESS_DATA, null, 0, 0, deadline);
    }

    /** The region holding all of {@code [addr, addr + count)}, or null. */
    private DmaRegion regionFor(long addr, long count) {
        for (DmaRegion r : dmaRegions) {
            if (addr >= r.iova() && count <= r.size() && addr - r.iova() <= r.size() - count) return r;
        }
        return null;
    }

    /** A reply to a server command: the header, {@code fixed} bytes already in {@link #serverReply}, then {@code data} (one sendmsg). */
    private void reply(UnixSocket s, int id, int cmd, int errno, long fixed, MemorySegment data, long dataOffset, long dataLength, long deadline) throws IOException {
        long size = HEADER_SIZE + fixed + dataLength;
        serverReply.set(U16, HEADER_MSG_ID, (short) id);
        serverReply.set(U16, HEADER_CMD, (short) cmd);
        serverReply.set(U32, HEADER_MSG_SIZE, (int) (errno != 0 ? HEADER_SIZE : size));
        serverReply.set(U32, HEADER_FLAGS, FLAG_TYPE_REPLY | (errno != 0 ? FLAG_ERROR : 0));
        serverReply.set(U32, HEADER_ERROR_NO, errno);
        if (errno != 0) sendFully(s, serverReply, HEADER_SIZE, null, 0, 0, NO_FDS, 0, deadline, ANSWER_ROOM);
        else sendFully(s, serverReply, HEADER_SIZE + fixed, data, dataOffset, dataLength, NO_FDS, 0, deadline, ANSWER_ROOM);
    }

    private void serverRefused(int cmd, long addr, long count, int errno, String why) {
        refusedServerCommands++;
        String what = commandName(cmd) + (addr < 0 ? "" : "(addr 0x" + Long.toHexString(addr) + ", " + count + " bytes)");
        lastRefusal = what + ": " + Errno.name(errno) + ": " + why;
        LOG.log(System.Logger.Level.WARNING, "{0}: the server''s {1} is refused with {2}: {3}", object, what, Errno.name(errno), why);
    }

    /**
     * The lock server commands are served under: the DMA regions, their written-page records and the counters
     * are read and written only under it (a thread that drains written pages takes it too).
     */
    Object dmaLock() {
        return dmaLock;
    }

    /** The DMA regions server commands are served against; replaced whole by the container. */
    void dmaRegions(DmaRegion[] regions) {
        synchronized (dmaLock) {
            this.dmaRegions = regions;
        }
    }

    /** Server DMA_READs and DMA_WRITEs served, and server commands refused (with the last refusal), for reports. */
    long dmaReadsServed() {
        synchronized (dmaLock) {
            return dmaReads;
        }
    }

    long dmaWritesServed() {
        synchronized (dmaLock) {
            return dmaWrites;
        }
    }

    long serverCommandsRefused() {
        synchronized (dmaLock) {
            return refusedServerCommands;
        }
    }

    String lastRefusal() {
        synchronized (dmaLock) {
            return lastRefusal;
        }
    }

    /**
     * Twin-socket mode (negotiated in VERSION): the server sends its commands on {@code commandSocket}, the
     * client end of a socket pair it passed with its VERSION reply, never on the request socket. Without it a
     * server command and a client request can cross (the server then reads our request where it expects its
     * reply: libvfio-user fails its DMA with EPROTO); with it, server DMA is served on its own socket, under
     * {@link #dmaLock} only, while a request waits for its reply.
     */
    synchronized void useCommandSocket(Fd commandSocket) {
        if (watcher != null) throw new IllegalStateException("the idle watcher already runs");
        this.commands = UnixSocket.of(commandSocket);
    }

    /** Whether server commands have their own socket (twin-socket mode). */
    boolean twinSocket() {
        return commands != null;
    }

    /**
     * Starts the thread that serves the server's commands. In twin-socket mode it watches the command socket and
     * serves each command under {@link #dmaLock} alone. Otherwise commands arrive on the request socket, between
     * a request and its reply (the call serves them) or while no request is in flight: the server DMAs when its
     * device does (a timer, an interrupt), and a server that is not answered stalls. Then the thread waits on the
     * socket without the lock; when something is readable it takes the lock (then no reply can be pending: a
     * reply is read by the call that holds the lock) and serves one message. Either way it notices a server that
     * died while idle: the next call then fails at once with why.
     */
    void startServingIdle() {
        watcher = Thread.ofPlatform().daemon().name("vfio-user " + object).start(commands != null ? this::serveCommandSocket : this::serveIdle);
    }

    private void serveCommandSocket() {
        long limit = timeoutNanos;
        while (true) {
            int r = commands.watch();
            if (closing) return;
            if (r == 0) continue;
            String failure;
            int errno;
            try {
                if (r < 0) throw new SocketFailure(-r, "poll failed");
                long deadline = System.nanoTime() + limit;
                long size = receiveHeader(commands, cmdHeader, deadline);
                int flags = cmdHeader.get(U32, HEADER_FLAGS);
                if ((flags & FLAG_TYPE_MASK) != FLAG_TYPE_COMMAND) {
                    throw protocol("a " + commandName(Short.toUnsignedInt(cmdHeader.get(U16, HEADER_CMD))) + " message of type "
                            + (flags & FLAG_TYPE_MASK) + " arrived on the command socket");
                }
                serverCommand(commands, cmdHeader, size, deadline);
                continue;
            } catch (Timeout t) {
                errno = Errno.ETIMEDOUT;
                failure = "the server sent part of a command and then nothing for " + TimeUnit.NANOSECONDS.toMillis(limit) + " ms (" + t.what + ")";
            } catch (EndOfStream e) {
                errno = Errno.ECONNRESET;
                failure = "the server closed the connection (its command socket: " + e.getMessage() + ")";
            } catch (ProtocolError p) {
                errno = Errno.EPROTO;
                failure = p.getMessage() + " (command socket)";
            } catch (SocketFailure e) {
                errno = e.errno;
                failure = "the server has gone, its command socket failed: " + e.getMessage() + ": " + Errno.name(e.errno);
            } catch (IOException | RuntimeException e) {
                errno = Errno.EIO;
                failure = "serving the server's command failed: " + e;
            }
            if (closing) return;
            synchronized (this) {
                if (broken == null) breakIdle(errno, failure);
            }
            return;
        }
    }

    private void serveIdle() {
        while (true) {
            int r = socket.watch();
            if (closing) return;
            synchronized (this) {
                if (broken != null || closing) return;
                if (r < 0) {
                    breakIdle(-r, "poll failed: " + Errno.name(-r));
                    return;
                }
                int now = socket.await(Libc.POLLIN, 0);
                if (now <= 0) continue; // a call took what was there (its reply), or the watch was woken
                long deadline = System.nanoTime() + timeoutNanos;
                try {
                    long size = receiveHeader(socket, headerSeg, deadline);
                    int flags = headerSeg.get(U32, HEADER_FLAGS);
                    if ((flags & FLAG_TYPE_MASK) != FLAG_TYPE_COMMAND) {
                        throw protocol("a " + commandName(Short.toUnsignedInt(headerSeg.get(U16, HEADER_CMD))) + " message of type "
                                + (flags & FLAG_TYPE_MASK) + " arrived while no request was in flight");
                    }
                    serverCommand(socket, headerSeg, size, deadline);
                } catch (Timeout t) {
                    breakIdle(Errno.ETIMEDOUT, "the server sent part of a message and then nothing for "
                            + TimeUnit.NANOSECONDS.toMillis(timeoutNanos) + " ms (" + t.what + ")");
                    return;
                } catch (EndOfStream e) {
                    breakIdle(Errno.ECONNRESET, "the server closed the connection (" + e.getMessage() + ", while no request was in flight)");
                    return;
                } catch (ProtocolError p) {
                    breakIdle(Errno.EPROTO, p.getMessage());
                    return;
                } catch (SocketFailure e) {
                    breakIdle(e.errno, "the server has gone, the socket failed while no request was in flight: " + e.getMessage() + ": " + Errno.name(e.errno));
                    return;
                } catch (IOException | RuntimeException e) {
                    breakIdle(Errno.EIO, "serving the server's command failed: " + e);
                    return;
                }
            }
        }
    }

    /** Breaks the connection from the idle watcher; the next call reports it with {@code errno}. */
    private void breakIdle(int errno, String detail) {
        broken = Errno.name(errno) + " while idle: " + detail;
        brokenErrno = errno;
        unreported = detail;
        LOG.log(System.Logger.Level.WARNING, "{0}: {1}", object, broken);
        socket.shutdown();
        if (commands != null) commands.shutdown();
    }

    /** Receives bytes {@code [from, to)} of {@code dst}; fds are kept only from the receives of a header. */
    private void fill(UnixSocket s, MemorySegment dst, long from, long to, boolean acceptFds, long deadline, String what) throws IOException {
        long at = from;
        while (at < to) {
            long n = s.receive(dst, at, to - at, acceptFds);
            if (n == 0) throw new EndOfStream("end of stream after " + (at - from) + " of " + (to - from) + " bytes of the " + what);
            if (n == -Errno.EAGAIN) await(s, Libc.POLLIN, deadline, what);
            else if (n == -Errno.EMSGSIZE) throw new ProtocolError("a message carried more file descriptors than " + UnixSocket.MAX_FDS);
            else if (n < 0) throw new SocketFailure((int) -n, "recvmsg failed");
            else at += n;
        }
    }

    private void await(UnixSocket s, short events, long deadline, String what) throws IOException {
        long left = deadline - System.nanoTime();
        if (left <= 0) throw new Timeout(what);
        int r = s.await(events, (int) Math.max(1, Math.min(Integer.MAX_VALUE, TimeUnit.NANOSECONDS.toMillis(left))));
        if (r < 0) throw new SocketFailure(-r, "poll failed");
    }

    /** How many fds arrived with the last reply. */
    int receivedFdCount() {
        return socket.receivedFdCount();
    }

    /** Takes the {@code i}-th fd that arrived with the last reply; the caller closes it. */
    int takeFd(int i) {
        return socket.takeFd(i);
    }

    /** Breaks the connection: shut down (the server sees us go), the fd kept until {@link #close} (the watcher may poll it). */
    private SysException breakWith(int errno, String detail) {
        broken = Errno.name(errno) + " in " + what() + ": " + detail;
        socket.shutdown();
        if (commands != null) commands.shutdown();
        return new SysException(what(), errno, object, detail);
    }

    private static ProtocolError protocol(String what) {
        return new ProtocolError(what);
    }

    /** Whether a transport failure has closed the connection. */
    boolean broken() {
        return broken != null;
    }

    /** Stops the idle watcher, then closes the socket (the server sees its client go). */
    @Override
    public void close() {
        closing = true;
        UnixSocket c = commands;
        (c != null ? c : socket).wake();
        Thread w = watcher;
        if (w != null && w != Thread.currentThread()) {
            try {
                w.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        synchronized (this) {
            if (broken == null) broken = "the connection was closed";
            socket.close();
            if (c != null) c.close();
        }
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
