package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.List;

import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.Vcpu;
import org.vmmkit.core.kvm.VcpuState;
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
 * every frame (RAM straight into guest memory, device chunks to the resuming devices in the source's order,
 * vCPU state), and only at COMPLETE — with no page left torn, every vCPU's state present and every device's
 * final chunk loaded — restores the vCPUs, resumes the devices, starts the VM and answers ACK_COMPLETE.
 * Any failure is answered with ERROR and its reason; the VM is never started from an incomplete stream.
 */
public final class MigrationDestination {
    private static final long MAX_CHUNK = 64L << 20, MAX_VCPU_STATE = 64 * 1024;

    private final Vm vm;
    private final List<V1DeviceMigration> devices;
    private final ExitHandler handler;
    private final Runnable beforeStart;

    /** {@code beforeStart} runs when everything is loaded and nothing runs yet (for a digest, a log line). */
    public MigrationDestination(Vm vm, List<V1DeviceMigration> devices, ExitHandler handler, Runnable beforeStart) {
        this.vm = vm;
        this.devices = List.copyOf(devices);
        this.handler = handler;
        this.beforeStart = beforeStart;
    }

    /** Receives one migration; returns once the VM runs and the source has been told. */
    public void receive(SocketChannel channel) throws MigrationException {
        FrameCodec codec = new FrameCodec(MAX_CHUNK + 64);
        boolean resuming = false;
        try {
            StreamHeader header = StreamHeader.read(channel);
            header.checkCompatibleWith(MigrationSource.headerOf(vm.memory(), devices, vm.vcpus().size()));
            answer(channel, FrameType.READY, "");
            for (V1DeviceMigration d : devices) d.startResume();
            resuming = true;
            RamReceiver ram = new RamReceiver(new MemoryViews(vm.memory()));
            ram.allowTorn(true); // the torn check at COMPLETE catches what the source did not send again
            ByteBuffer chunk = ByteBuffer.allocateDirect(1 << 20);
            long[] nextSequence = new long[devices.size()];
            VcpuState[] states = new VcpuState[vm.vcpus().size()];
            while (true) {
                FrameType t = codec.readHeader(channel);
                if (t == null) { // skippable and unknown: read past it
                    codec.readPayload(channel, ByteBuffer.allocate((int) Math.min(codec.length(), MAX_CHUNK)));
                    continue;
                }
                switch (t) {
                    case RAM, ZERO_RUN -> ram.apply(channel, codec);
                    case DEVICE_CHUNK -> {
                        int id = (int) codec.a();
                        if (codec.a() < 0 || id >= devices.size() || codec.b() != nextSequence[id]) {
                            throw new WireFormatException("device chunk for device " + codec.a() + " with sequence " + codec.b()
                                    + (id >= 0 && id < devices.size() ? " where " + nextSequence[id] + " was due" : ": no such device"));
                        }
                        if (chunk.capacity() < codec.length()) chunk = ByteBuffer.allocateDirect((int) codec.length());
                        chunk.clear().limit((int) codec.length());
                        codec.readPayload(channel, chunk);
                        codec.verify();
                        devices.get(id).loadChunk(MemorySegment.ofBuffer(chunk.flip()));
                        nextSequence[id]++;
                    }
                    case VCPU_STATE -> {
                        int id = (int) codec.a();
                        if (id < 0 || id >= states.length || codec.length() > MAX_VCPU_STATE) {
                            throw new WireFormatException("vCPU state for vCPU " + codec.a() + " (" + codec.length() + " bytes)");
                        }
                        ByteBuffer bytes = ByteBuffer.allocate((int) codec.length());
                        codec.readPayload(channel, bytes);
                        codec.verify();
                        states[id] = VcpuState.fromBytes(bytes.array());
                    }
                    case END_OF_ROUND -> codec.verify();
                    case COMPLETE -> {
                        codec.verify();
                        ram.checkNoTornPages();
                        for (int i = 0; i < states.length; i++) {
                            if (states[i] == null) throw new WireFormatException("the stream completed without vCPU " + i + "'s state");
                        }
                        if (beforeStart != null) beforeStart.run();
                        List<Vcpu> vcpus = vm.vcpus();
                        for (int i = 0; i < states.length; i++) vcpus.get(i).restore(states[i]);
                        for (V1DeviceMigration d : devices) d.completeResume(); // refuses a device without its final chunk
                        resuming = false;
                        vm.start(handler);
                        answer(channel, FrameType.ACK_COMPLETE, "");
                        return;
                    }
                    case ABANDON -> throw new MigrationException("the source abandoned the migration");
                    default -> throw new WireFormatException("frame " + t + " does not belong in a migration stream");
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
        }
    }

    private static void answer(SocketChannel channel, FrameType type, String reason) throws IOException {
        ByteBuffer payload = reason.isEmpty() ? null : ByteBuffer.wrap(reason.getBytes(StandardCharsets.UTF_8));
        new FrameCodec(1 << 20).write(channel, type, 0, 0, payload, null);
    }
}
