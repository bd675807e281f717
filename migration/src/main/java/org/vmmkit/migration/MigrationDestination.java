package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.RamReceiver;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;
import org.vmmkit.vfio.migration.V1DeviceMigration;

/**
 * The destination side: reads and checks the stream header against its own VM, answers READY, applies
 * every frame (RAM straight into guest memory, on every channel; device chunks straight into the resuming
 * devices' data sections in the source's order,
 * vCPU state), and only at COMPLETE — with no page left torn, every vCPU's state present and every device's
 * final chunk loaded — restores the vCPUs, resumes the devices, starts the VM and answers ACK_COMPLETE.
 * Any failure is answered with ERROR and its reason; the VM is never started from an incomplete stream.
 */
public final class MigrationDestination {
    private static final long MAX_CHUNK = 64L << 20, MAX_VCPU_STATE = 64 * 1024;

    private final MigratableVm vm;
    private final List<V1DeviceMigration> devices;
    private final Runnable beforeStart;

    /** {@code beforeStart} runs when everything is loaded and nothing runs yet (for a digest, a log line). */
    public MigrationDestination(Vm vm, List<V1DeviceMigration> devices, ExitHandler handler, Runnable beforeStart) {
        this(new KvmGuest(vm, handler), devices, beforeStart);
    }

    /** For any {@link MigratableVm}; {@code beforeStart} as above. */
    public MigrationDestination(MigratableVm vm, List<V1DeviceMigration> devices, Runnable beforeStart) {
        this.vm = vm;
        this.devices = List.copyOf(devices);
        this.beforeStart = beforeStart;
    }

    /** Where the connections after the first come from (a listening socket). */
    @FunctionalInterface
    public interface Acceptor {
        SocketChannel accept() throws IOException;
    }

    /** Receives a one-channel migration on {@code channel}; returns once the VM runs and the source has been told. */
    public void receive(SocketChannel channel) throws MigrationException {
        receive(channel, () -> {
            throw new IOException("this destination was given one connection; the source asks for more channels");
        });
    }

    /**
     * Accepts the first connection on {@code server} and, if the stream has several channels, the others
     * (each within {@code acceptTimeout}); receives the migration; closes the connections.
     */
    public void receive(ServerSocketChannel server, Duration acceptTimeout) throws MigrationException {
        Acceptor acceptor = () -> {
            server.socket().setSoTimeout((int) Math.clamp(acceptTimeout.toMillis(), 1, Integer.MAX_VALUE));
            try {
                return server.socket().accept().getChannel();
            } catch (java.net.SocketTimeoutException e) {
                throw new IOException("no connection on " + server.getLocalAddress() + " within " + acceptTimeout.toMillis() + " ms", e);
            }
        };
        SocketChannel first;
        try {
            first = acceptor.accept();
        } catch (IOException e) {
            throw new MigrationException("incoming migration failed: " + e.getMessage() + "; the VM was not started", e);
        }
        try (first) {
            receive(first, acceptor);
        } catch (IOException e) {
            // closing the first connection after the outcome was decided
        }
    }

    /**
     * Receives a migration whose header arrives on {@code channel}; the stream's further channels are taken
     * from {@code more} (each must begin with a CHANNEL frame naming this stream) and closed at the end.
     * Returns once the VM runs and the source has been told.
     */
    public void receive(SocketChannel channel, Acceptor more) throws MigrationException {
        FrameCodec codec = new FrameCodec(MAX_CHUNK + 64);
        boolean resuming = false;
        List<RamChannel> extras = new ArrayList<>();
        MigrationSource.noDelay(channel);
        try {
            StreamHeader header = StreamHeader.read(channel);
            header.checkCompatibleWith(MigrationSource.headerOf(vm.memory(), devices, vm.vcpuCount()));
            SocketChannel[] byIndex = new SocketChannel[header.channels()];
            for (int i = 1; i < header.channels(); i++) {
                SocketChannel c = more.accept();
                extras.add(new RamChannel(c, vm, channel, header.ramChecksums()));
                FrameCodec hello = new FrameCodec(0);
                if (hello.readHeader(c) != FrameType.CHANNEL || hello.a() != header.streamId() || hello.b() < 1
                        || hello.b() >= header.channels() || byIndex[(int) hello.b()] != null) {
                    throw new WireFormatException("connection " + i + " is not channel 1.." + (header.channels() - 1) + " of stream "
                            + Long.toHexString(header.streamId()) + ": it began with " + hello.type() + " a=" + Long.toHexString(hello.a())
                            + " b=" + hello.b());
                }
                hello.verify();
                byIndex[(int) hello.b()] = c;
            }
            answer(channel, FrameType.READY, "");
            for (V1DeviceMigration d : devices) d.startResume();
            resuming = true;
            for (RamChannel e : extras) e.start();
            RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), header.ramChecksums());
            ram.allowTorn(true); // the torn check at COMPLETE catches what the source did not send again
            long[] nextSequence = new long[devices.size()];
            // ByteBuffer views of the devices' data sections (or staging buffers), made once each.
            java.util.IdentityHashMap<MemorySegment, ByteBuffer> sectionViews = new java.util.IdentityHashMap<>();
            byte[][] states = new byte[vm.vcpuCount()][];
            while (true) {
                FrameType t;
                try {
                    t = codec.readHeader(channel);
                } catch (IOException e) {
                    for (RamChannel x : extras) x.throwIfFailed(); // a RAM channel's failure ends the first channel's input
                    throw e;
                }
                if (t == null) { // skippable and unknown: read past it
                    codec.readPayload(channel, ByteBuffer.allocate((int) Math.min(codec.length(), MAX_CHUNK)));
                    continue;
                }
                switch (t) {
                    case RAM, ZERO_RUN -> ram.apply(channel, codec);
                    case DEVICE_CHUNK -> {
                        int id = (int) codec.a();
                        if (codec.a() < 0 || codec.a() >= devices.size() || codec.b() != nextSequence[id]) {
                            throw new WireFormatException("device chunk for device " + codec.a() + " with sequence " + codec.b()
                                    + (codec.a() >= 0 && codec.a() < devices.size() ? " where " + nextSequence[id] + " was due" : ": no such device"));
                        }
                        // Straight into the device's data section at data_offset (checked there), committed only
                        // once the payload's CRC holds.
                        V1DeviceMigration device = devices.get(id);
                        long at = device.placeChunk(codec.length());
                        ByteBuffer target = sectionViews.computeIfAbsent(device.targetSegment(), MemorySegment::asByteBuffer);
                        target.limit((int) (at + codec.length())).position((int) at);
                        codec.readPayload(channel, target);
                        codec.verify();
                        device.commitChunk(codec.length());
                        nextSequence[id]++;
                    }
                    case VCPU_STATE -> {
                        int id = (int) codec.a();
                        if (codec.a() < 0 || codec.a() >= states.length || codec.length() > MAX_VCPU_STATE) {
                            throw new WireFormatException("vCPU state for vCPU " + codec.a() + " (" + codec.length() + " bytes)");
                        }
                        ByteBuffer bytes = ByteBuffer.allocate((int) codec.length());
                        codec.readPayload(channel, bytes);
                        codec.verify();
                        states[id] = bytes.array();
                    }
                    case END_OF_ROUND -> codec.verify();
                    case COMPLETE -> {
                        codec.verify();
                        ram.checkNoTornPages();
                        for (RamChannel x : extras) x.awaitComplete(EXTRA_CHANNEL_WAIT);
                        for (int i = 0; i < states.length; i++) {
                            if (states[i] == null) throw new WireFormatException("the stream completed without vCPU " + i + "'s state");
                        }
                        if (beforeStart != null) beforeStart.run();
                        for (int i = 0; i < states.length; i++) vm.restoreVcpu(i, states[i]);
                        for (V1DeviceMigration d : devices) d.completeResume(); // refuses a device without its final chunk
                        resuming = false;
                        vm.startLoaded();
                        answer(channel, FrameType.ACK_COMPLETE, "");
                        return;
                    }
                    case ABANDON -> throw new MigrationException("the source abandoned the migration");
                    default -> throw new WireFormatException("frame " + t + " does not belong on the first channel of a migration stream");
                }
            }
        } catch (Throwable failure) {
            if (resuming) for (V1DeviceMigration d : devices) d.abortResume();
            try {
                answer(channel, FrameType.ERROR, failure.getMessage() == null ? failure.toString() : failure.getMessage());
            } catch (IOException | RuntimeException ignored) {
                // the connection may be what failed; the error is thrown below either way
            }
            throw failure instanceof MigrationException m ? m
                    : new MigrationException("incoming migration failed: " + failure.getMessage() + "; the VM was not started", failure);
        } finally {
            for (RamChannel x : extras) x.close();
        }
    }

    private static final Duration EXTRA_CHANNEL_WAIT = Duration.ofSeconds(60);

    /**
     * One further channel: a thread applying its RAM and ZERO_RUN frames (its own torn-page record: a page
     * always travels on the same channel) until its COMPLETE. A failure ends the first channel's input, so
     * the main loop stops reading and reports it.
     */
    private static final class RamChannel {
        private final SocketChannel in;
        private final MigratableVm vm;
        private final SocketChannel first;
        private final java.util.concurrent.CountDownLatch done = new java.util.concurrent.CountDownLatch(1);
        private volatile Throwable failure;

        private final boolean ramChecksums;

        RamChannel(SocketChannel in, MigratableVm vm, SocketChannel first, boolean ramChecksums) {
            this.ramChecksums = ramChecksums;
            this.in = in;
            this.vm = vm;
            this.first = first;
        }

        void start() {
            Thread.ofPlatform().name("migration-receiver-ram").daemon().start(this::run);
        }

        private void run() {
            try {
                FrameCodec codec = new FrameCodec(MAX_CHUNK + 64);
                RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()), ramChecksums);
                ram.allowTorn(true);
                while (true) {
                    FrameType t = codec.readHeader(in);
                    if (t == FrameType.RAM || t == FrameType.ZERO_RUN) {
                        ram.apply(in, codec);
                    } else if (t == FrameType.COMPLETE) {
                        codec.verify();
                        ram.checkNoTornPages();
                        return;
                    } else {
                        throw new WireFormatException("frame " + t + " on a RAM channel, which carries RAM, ZERO_RUN and COMPLETE only");
                    }
                }
            } catch (Throwable t) {
                failure = t;
                try {
                    first.shutdownInput();
                } catch (IOException ignored) {
                    // the first channel may be gone already; its reader fails either way
                }
            } finally {
                done.countDown();
            }
        }

        void throwIfFailed() throws IOException {
            Throwable t = failure;
            if (t != null) throw new IOException("a RAM channel failed: " + t.getMessage(), t);
        }

        void awaitComplete(Duration timeout) throws IOException, InterruptedException {
            if (!done.await(timeout.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS)) {
                throw new IOException("a RAM channel did not complete within " + timeout.toMillis() + " ms of the first channel's COMPLETE");
            }
            throwIfFailed();
        }

        void close() {
            try {
                in.close();
            } catch (IOException ignored) {
                // closing ends the thread's read; nothing else depends on it
            }
        }
    }

    private static void answer(SocketChannel channel, FrameType type, String reason) throws IOException {
        ByteBuffer payload = reason.isEmpty() ? null : ByteBuffer.wrap(reason.getBytes(StandardCharsets.UTF_8));
        new FrameCodec(1 << 20).write(channel, type, 0, 0, payload, null);
    }
}
