package org.vmmkit.migration.transport;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;

import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;

/**
 * A TLS connection: an {@link SSLEngine} over a blocking TCP socket. Writes are sealed into records and sent
 * from a direct buffer; reads open records straight into the caller's buffer when it has room for a whole
 * record (guest RAM, a device's data section), so a large payload is copied once, by the decryption.
 *
 * <p>Threads: one writer and one reader may run at once ({@code SSLEngine}'s wrap and unwrap may run
 * concurrently). Everything that writes to the socket — application data, and the handshake messages a read
 * may call for (a TLS 1.3 KeyUpdate) — holds {@code writeLock}, so records never interleave. {@link #close}
 * takes no lock: it closes the socket, which ends a blocked read or write in another thread at once (no
 * close_notify is sent; the migration protocol's own COMPLETE and acknowledgements say where a stream
 * ends, so a truncation cannot pass for an end).
 */
public final class TlsConnection implements Connection {
    private static final ByteBuffer EMPTY = ByteBuffer.allocate(0);

    private final SocketChannel socket;
    private final SSLEngine engine;
    private final Object writeLock = new Object(), readLock = new Object();
    private final ByteBuffer netOut; // guarded by writeLock
    private final ByteBuffer netIn, appIn; // guarded by readLock; appIn holds opened bytes not yet read (read mode)
    private final String peer;

    private TlsConnection(SocketChannel socket, SSLEngine engine) {
        this.socket = socket;
        this.engine = engine;
        int packet = engine.getSession().getPacketBufferSize(), app = engine.getSession().getApplicationBufferSize();
        this.netOut = ByteBuffer.allocateDirect(Math.max(packet * 16, 256 * 1024));
        this.netIn = ByteBuffer.allocateDirect(Math.max(packet * 16, 256 * 1024));
        this.appIn = ByteBuffer.allocateDirect(app).flip();
        this.peer = null;
    }

    private TlsConnection(TlsConnection handshaken, String peer) {
        this.socket = handshaken.socket;
        this.engine = handshaken.engine;
        this.netOut = handshaken.netOut;
        this.netIn = handshaken.netIn;
        this.appIn = handshaken.appIn;
        this.peer = peer;
    }

    /**
     * Runs the handshake on {@code socket} with {@code engine} (client or server mode set; its trust manager
     * verifies and authorizes the peer). Closes the socket on any failure.
     */
    static TlsConnection handshake(SocketChannel socket, SSLEngine engine) throws IOException {
        TlsConnection c = new TlsConnection(socket, engine);
        try {
            engine.beginHandshake();
            while (true) {
                switch (engine.getHandshakeStatus()) {
                    case NEED_WRAP -> c.sendHandshake();
                    case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> {
                        synchronized (c.readLock) {
                            if (!c.openRecord(null)) throw new EOFException("the peer closed the connection during the TLS handshake");
                        }
                    }
                    case NEED_TASK -> c.runTasks();
                    case FINISHED, NOT_HANDSHAKING -> {
                        return new TlsConnection(c, peerOf(engine));
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            socket.close();
            throw e;
        }
    }

    private static String peerOf(SSLEngine engine) throws IOException {
        java.security.cert.Certificate[] chain = engine.getSession().getPeerCertificates();
        return ((java.security.cert.X509Certificate) chain[0]).getSubjectX500Principal().getName();
    }

    @Override
    public SocketChannel socket() {
        return socket;
    }

    @Override
    public String peer() {
        return peer;
    }

    @Override
    public int write(ByteBuffer src) throws IOException {
        int before = src.remaining();
        synchronized (writeLock) {
            while (src.hasRemaining()) {
                netOut.clear();
                // Seal as many records as fit, then one socket write: fewer system calls than a write per record.
                while (src.hasRemaining() && netOut.remaining() >= engine.getSession().getPacketBufferSize()) {
                    SSLEngineResult r = engine.wrap(src, netOut);
                    if (r.getStatus() != SSLEngineResult.Status.OK) throw new SSLException("TLS wrap to " + peer + ": " + r.getStatus());
                }
                flushNetOut();
            }
        }
        return before;
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        synchronized (readLock) {
            while (true) {
                if (appIn.hasRemaining()) {
                    int n = Math.min(appIn.remaining(), dst.remaining());
                    int limit = appIn.limit();
                    appIn.limit(appIn.position() + n);
                    dst.put(appIn);
                    appIn.limit(limit);
                    return n;
                }
                if (!dst.hasRemaining()) return 0;
                // Straight into dst when a whole record fits there; else through appIn.
                boolean direct = dst.remaining() >= engine.getSession().getApplicationBufferSize();
                int before = dst.position();
                if (!openRecord(direct ? dst : null)) return -1;
                if (direct && dst.position() > before) return dst.position() - before;
            }
        }
    }

    /**
     * Opens the next record (reading from the socket as needed) into {@code into}, or into appIn when null.
     * Returns false at the end of the stream. Handles what a record may call for (handshake messages to send,
     * tasks to run). Holds readLock.
     */
    private boolean openRecord(ByteBuffer into) throws IOException {
        ByteBuffer target = into != null ? into : appIn.compact();
        try {
            while (true) {
                netIn.flip();
                SSLEngineResult r;
                try {
                    r = engine.unwrap(netIn, target);
                } finally {
                    netIn.compact();
                }
                switch (r.getStatus()) {
                    case OK -> {
                        followUp(r);
                        if (r.bytesProduced() > 0 || r.getHandshakeStatus() != SSLEngineResult.HandshakeStatus.NOT_HANDSHAKING
                                && r.getHandshakeStatus() != SSLEngineResult.HandshakeStatus.NEED_UNWRAP) {
                            return true;
                        }
                    }
                    case BUFFER_UNDERFLOW -> {
                        if (socket.read(netIn) < 0) return false;
                    }
                    case BUFFER_OVERFLOW -> throw new SSLException("TLS record from " + peer + " larger than the buffer");
                    case CLOSED -> {
                        return false;
                    }
                }
            }
        } finally {
            if (into == null) appIn.flip();
        }
    }

    private void followUp(SSLEngineResult r) throws IOException {
        SSLEngineResult.HandshakeStatus h = r.getHandshakeStatus();
        while (h == SSLEngineResult.HandshakeStatus.NEED_TASK || h == SSLEngineResult.HandshakeStatus.NEED_WRAP && peer != null) {
            if (h == SSLEngineResult.HandshakeStatus.NEED_TASK) runTasks();
            else sendHandshake(); // after the handshake: a KeyUpdate answer, say
            h = engine.getHandshakeStatus();
        }
    }

    private void sendHandshake() throws IOException {
        synchronized (writeLock) {
            netOut.clear();
            SSLEngineResult r = engine.wrap(EMPTY, netOut);
            if (r.getStatus() != SSLEngineResult.Status.OK && r.getStatus() != SSLEngineResult.Status.CLOSED) {
                throw new SSLException("TLS handshake wrap: " + r.getStatus());
            }
            flushNetOut();
        }
    }

    private void runTasks() {
        Runnable task;
        while ((task = engine.getDelegatedTask()) != null) task.run();
    }

    private void flushNetOut() throws IOException {
        netOut.flip();
        while (netOut.hasRemaining()) socket.write(netOut);
    }

    @Override
    public boolean isOpen() {
        return socket.isOpen();
    }

    @Override
    public void close() throws IOException {
        socket.close();
    }
}
