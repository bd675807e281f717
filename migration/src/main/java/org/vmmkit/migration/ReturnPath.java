package org.vmmkit.migration;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;

/** The source's reading of the destination's answers on the first connection (HELLO, READY, ROUND_ACK, PREPARED, ACK_COMPLETE, ERROR). */
final class ReturnPath {
    private final Connection channel;
    private final FrameCodec back = new FrameCodec(1 << 20);

    ReturnPath(Connection channel) {
        this.channel = channel;
    }

    /** The destination's ERROR: it says its VM does not run and will not from this stream. */
    static final class RefusedByDestination extends IOException {
        RefusedByDestination(String message) {
            super(message);
        }
    }

    /** The destination's first frame: the nonce this attempt's header must carry. */
    Nonce hello() throws IOException {
        FrameType t = back.readHeader(channel);
        back.skipPayload(channel);
        if (t != FrameType.HELLO) {
            throw new WireFormatException("the destination opened with " + t + ", not HELLO: not a vmmkit destination of wire format " + StreamHeader.VERSION);
        }
        return new Nonce(back.a(), back.b());
    }

    /**
     * Reads the destination's next answer: {@code expected} (its payload returned, flipped), or an ERROR whose
     * reason is thrown as {@link RefusedByDestination}.
     */
    ByteBuffer expect(FrameType expected, String phase) throws IOException {
        FrameType t = back.readHeader(channel);
        ByteBuffer payload = ByteBuffer.allocate((int) back.length()); // the return path's limit bounds it
        back.readPayload(channel, payload);
        back.verify();
        if (t == expected) return payload.flip();
        if (t == FrameType.ERROR) {
            throw new RefusedByDestination("the destination refused in " + phase + ": " + new String(payload.array(), 0, payload.position(), StandardCharsets.UTF_8));
        }
        throw new IOException("the destination answered " + t + " in " + phase + " where " + expected + " was due");
    }

    /**
     * After {@code failure} of a write or a wait (a connection reset, a broken pipe): the destination's ERROR, if
     * it sent one before closing (it refuses what it cannot take with ERROR, then closes, which resets the
     * source's writes), read within {@code wait}; else {@code failure} itself. So the source reports the
     * destination's reason, not the reset it caused.
     */
    Throwable reasonFor(Throwable failure, Duration wait, List<? extends java.io.Closeable> connections, String phase) {
        if (failure instanceof RefusedByDestination || !(failure instanceof IOException || failure.getCause() instanceof IOException)) return failure;
        try {
            within(wait, connections, "ERROR", () -> {
                FrameType t;
                ByteBuffer payload;
                do { // past the acknowledgements of rounds the source no longer waits for
                    t = back.readHeader(channel);
                    payload = ByteBuffer.allocate((int) back.length());
                    back.readPayload(channel, payload);
                    back.verify();
                } while (t == FrameType.ROUND_ACK);
                if (t == FrameType.ERROR) {
                    throw new RefusedByDestination("the destination refused in " + phase + ": "
                            + new String(payload.array(), 0, payload.position(), StandardCharsets.UTF_8));
                }
            });
        } catch (RefusedByDestination refused) {
            refused.addSuppressed(failure);
            return refused;
        } catch (IOException | RuntimeException nothingSaid) {
            // no reason to be had: the failure is all there is
        }
        return failure;
    }

    /**
     * Waits at most {@code timeout} for the destination's ROUND_ACK of {@code round} (an ERROR instead is thrown as
     * {@link RefusedByDestination}); closes {@code connections} if it does not come.
     */
    void roundAck(long round, Duration timeout, List<? extends java.io.Closeable> connections) throws IOException {
        within(timeout, connections, "ROUND_ACK " + round, () -> {
            expect(FrameType.ROUND_ACK, "pre-copy round " + round);
            if (back.a() != round) throw new WireFormatException("the destination acknowledged round " + back.a() + " where round " + round + " was due");
        });
    }

    /** The {@code a} of the answer read last (ACK_COMPLETE: the destination's resident guest RAM in bytes). */
    long lastA() {
        return back.a();
    }

    /** A read of the return path that may take at most {@code timeout}. */
    @FunctionalInterface
    interface Read {
        void run() throws IOException;
    }

    /**
     * Runs {@code read} under a watchdog that closes {@code connections} after {@code timeout} (so a silent
     * destination ends the read); a read ended that way says it waited for {@code what}. For waits that are
     * safe to give up only while nothing has changed, or while rolling back is still allowed.
     */
    static void within(Duration timeout, List<? extends java.io.Closeable> connections, String what, Read read) throws IOException {
        try (Watchdog watchdog = new Watchdog("migration-" + what + "-watchdog", timeout, connections)) {
            try {
                read.run();
            } catch (IOException e) {
                if (watchdog.fired()) throw new IOException("the destination did not answer " + what + " within " + timeout.toMillis() + " ms", e);
                throw e;
            }
            if (!watchdog.disarm()) throw new IOException("the destination answered " + what + " only after " + timeout.toMillis() + " ms");
        }
    }
}
