package org.vmmkit.migration;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.function.BooleanSupplier;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.migration.transport.Connection;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.Nonce;

/**
 * The source's half of a stream's opening, before anything changes on either side: HELLO and its nonce, the
 * stream header (layout, sections, identity, the memfd offer), the further channels, READY.
 */
final class SourceHandshake {
    private final MigrationSettings settings;
    private final List<SectionSaver> sections;
    private final MigratableVm vm;
    private final Transport transport;
    private final UUID identity;
    private final Duration readyTimeout;

    SourceHandshake(MigrationSettings settings, List<SectionSaver> sections, MigratableVm vm, Transport transport, UUID identity, Duration readyTimeout) {
        this.settings = settings;
        this.sections = sections;
        this.vm = vm;
        this.transport = transport;
        this.identity = identity;
        this.readyTimeout = readyTimeout;
    }

    /** The further channels' connections, made (and handshaken) when the destination is ready to accept them. */
    @FunctionalInterface
    interface FurtherChannels {
        Connection open(int index) throws IOException;
    }


    /**
     * The first connection to {@code destination} with the transport's handshake, and the connect alone, timed apart from the handshake: SYN to SYN-ACK is a round trip that the two kernels
     * answer, with no work of the destination's in it (see {@link #open}).
     */
    static Connected connect(java.net.SocketAddress destination, Transport transport, Duration timeout) throws IOException {
        if (destination instanceof java.net.InetSocketAddress inet && inet.isUnresolved()) {
            throw new IOException("cannot resolve host '" + inet.getHostString() + "'");
        }
        long before = System.nanoTime();
        java.nio.channels.SocketChannel socket = Transport.open(destination, timeout);
        long connectMicros = Math.max(1, (System.nanoTime() - before) / 1000);
        try {
            return new Connected(transport.client(socket), connectMicros);
        } catch (IOException | RuntimeException e) {
            try {
                socket.close();
            } catch (IOException ignored) {
                // the handshake failed already; that is what is reported
            }
            throw e;
        }
    }

    /** The first connection, and how long its connect took (microseconds, at least 1). */
    record Connected(Connection connection, long connectMicros) {}

    /**
     * What the opening learnt: the destination's nonce, where it takes the memfds (null: RAM is copied), the downtime floor;
     * and how long its steps took (microseconds, for the setup line): until HELLO arrived, writing the header and opening the
     * further channels, and from then until READY arrived (the destination's checks and set-up, and a network round trip).
     */
    record Opened(Nonce nonce, String memfdsTo, long floorMicros, long helloMicros, long headerMicros, long readyMicros) {}

    /**
     * HELLO (the nonce), the stream header, the further channels (each opened and announced with CHANNEL once
     * the destination can accept it), READY. Nothing has changed on either side before READY, so a
     * destination that does not answer in time (a stuck or foreign listener) is given up on. Says the
     * destination's nonce, where it takes the memfds (when it does), and the floor of every downtime estimate: the handover (COMPLETE to PREPARED, COMMIT to ACK_COMPLETE) costs at least
     * two network round trips, taken from the first connection's TCP connect. Header to READY is no measure of
     * the network: it holds the destination's own set-up (header checks, channels accepted, threads started;
     * 100 ms in a fresh process, against tens of microseconds on loopback), work the handover does not repeat.
     * Only where the connections were made by the caller (no connect timed) is header to READY used.
     */
    Opened open(List<Connection> channels, FurtherChannels further, ReturnPath back, boolean memfdPassing, long connectMicros,
                BooleanSupplier cancelled) throws IOException {
        Connection channel = channels.get(0);
        GuestMemory memory = vm.memory();
        boolean offer = memfdPassing && Transport.isUnix(channel.socket()) && MemfdHandoff.possible(memory);
        Nonce[] nonce = new Nonce[1];
        String[] memfdsTo = new String[1];
        long begun = System.nanoTime();
        long streamId = new java.security.SecureRandom().nextLong();
        long[] helloRead = new long[1], headerSent = new long[1];
        ReturnPath.within(readyTimeout, channels, "READY", () -> {
            nonce[0] = back.hello();
            helloRead[0] = System.nanoTime();
            List<SectionInfo> infos = new ArrayList<>();
            for (SectionSaver x : sections) infos.add(x.info());
            ByteBuffer header = MigrationSource.headerOf(memory, infos, vm.vcpuCount()).withChannels(settings.channels(), streamId)
                    .withRamChecksums(settings.ramChecksums()).withNonce(nonce[0]).withMemfdOffer(offer).withVm(identity).encode();
            while (header.hasRemaining()) channel.write(header);
            for (int i = 1; i < settings.channels(); i++) {
                Connection c;
                try {
                    c = further.open(i);
                } catch (IOException e) {
                    throw new IOException("opening channel " + i + " of " + settings.channels() + " (" + transport.kind() + "): " + e.getMessage(), e);
                }
                channels.add(c);
                MigrationSource.noDelay(c.socket());
                if (cancelled.getAsBoolean()) c.close();
                new FrameCodec(0).write(c, FrameType.CHANNEL, streamId, i, null, null);
            }
            headerSent[0] = System.nanoTime();
            ByteBuffer ready = back.expect(FrameType.READY, "setup");
            if (back.lastA() == 1) { // the destination takes the memfds, at the address READY names
                if (!offer) throw new IOException("the destination asked for memfds that were not offered");
                memfdsTo[0] = java.nio.charset.StandardCharsets.UTF_8.decode(ready).toString();
            }
        });
        long readyRead = System.nanoTime();
        return new Opened(nonce[0], memfdsTo[0], connectMicros > 0 ? 2 * connectMicros : Math.max(1, (readyRead - headerSent[0]) / 1000),
                (helloRead[0] - begun) / 1000, (headerSent[0] - helloRead[0]) / 1000, (readyRead - headerSent[0]) / 1000);
    }
}
