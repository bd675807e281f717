package org.vmmkit.migration;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.kvm.Vcpu;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.DeviceProducer;
import org.vmmkit.migration.pipeline.MemoryProducer;
import org.vmmkit.migration.pipeline.TransferRing;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.vfio.migration.DeviceState;
import org.vmmkit.vfio.migration.V1DeviceMigration;

/**
 * The source side of a live migration, the pre-copy coordinator: setup (header, READY, dirty tracking,
 * devices to pre-copy), rounds that sync and merge the dirty bitmaps, queue dirty memory and drain device
 * pre-copy data together through the ring, then measure bandwidth and estimate the downtime of stopping
 * now; stop-and-copy once that estimate is under the limit or at the round cap (pause vCPUs, devices to
 * stop-and-copy, the final sync, the rest of memory and every device until pending is 0, vCPU state,
 * COMPLETE); and the handover, which waits for the destination's ACK_COMPLETE. Any failure before that
 * acknowledgement rolls the source back: devices running, vCPUs resumed, dirty tracking stopped.
 */
public final class MigrationSource {
    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    private final Vm vm;
    private final GuestMemory memory;
    private final List<DirtySource> dirtySources;
    private final List<V1DeviceMigration> devices;
    private final MigrationSettings settings;

    public MigrationSource(Vm vm, List<DirtySource> dirtySources, List<V1DeviceMigration> devices, MigrationSettings settings) {
        this.vm = vm;
        this.memory = vm.memory();
        this.dirtySources = List.copyOf(dirtySources);
        this.devices = List.copyOf(devices);
        this.settings = settings;
    }

    /** The stream header this VM sends: its layout, devices and vCPUs. */
    public static StreamHeader headerOf(GuestMemory memory, List<V1DeviceMigration> devices, int vcpus) {
        List<StreamHeader.Range> ranges = new ArrayList<>();
        for (GuestRegion r : memory.regions()) ranges.add(new StreamHeader.Range(r.guestAddress(), r.size()));
        List<StreamHeader.Device> devs = new ArrayList<>();
        for (V1DeviceMigration d : devices) devs.add(new StreamHeader.Device(d.deviceId(), d.deviceName()));
        return new StreamHeader(StreamHeader.VERSION, (int) PAGE, ranges, devs, vcpus);
    }

    private volatile boolean cancelled;
    private volatile SocketChannel active;

    /**
     * Cancels the migration from any thread: it is rolled back like a failure. The connection is closed,
     * which ends a blocked write or read at once (a destination that stopped answering cannot hold the
     * source); no ABANDON is written, since the sender thread may be in the middle of a frame, and the
     * destination treats the cut stream as incomplete and does not start.
     */
    public void cancel() {
        cancelled = true;
        SocketChannel channel = active;
        if (channel != null) {
            try {
                channel.close();
            } catch (IOException ignored) {
                // closing is all that is needed; a failure to close changes nothing here
            }
        }
    }

    private void checkCancelled() {
        if (cancelled) throw new java.util.concurrent.CancellationException("cancelled");
    }

    /** Migrates over {@code channel}; returns the statistics once the destination runs, or throws after rolling back. */
    public MigrationStats migrate(SocketChannel channel) throws MigrationException {
        active = channel;
        if (cancelled) cancel();
        long start = System.nanoTime();
        String phase = "setup";
        boolean paused = false, saving = false;
        long pauseStart = 0, setupNanos = 0, expected = 0, rounds = 0, lastDirtyRate = 0;
        boolean capped = false;
        FrameCodec back = new FrameCodec(1 << 20);
        DirtyTracker tracker = new DirtyTracker(memory, dirtySources);
        TransferRing ring = null;
        try {
            ByteBuffer header = headerOf(memory, devices, vm.vcpus().size()).encode();
            while (header.hasRemaining()) channel.write(header);
            expectFromDestination(channel, back, FrameType.READY, "setup");
            tracker.start();
            saving = true;
            for (V1DeviceMigration d : devices) d.startPrecopy();
            ring = new TransferRing(settings.ringSize(), channel, new MemoryViews(memory), settings.maxFramePages(), settings.maxBandwidth());
            MemoryProducer producer = new MemoryProducer(ring, memory, settings.maxFramePages());
            List<DeviceProducer> deviceProducers = new ArrayList<>();
            for (V1DeviceMigration d : devices) deviceProducers.add(new DeviceProducer(d, ring));
            setupNanos = System.nanoTime() - start;

            phase = "pre-copy";
            while (true) {
                checkCancelled();
                rounds++;
                long roundStart = System.nanoTime();
                long bytesBefore = sentBytes(ring);
                tracker.sync();
                long dirty = tracker.dirtyPages();
                List<Thread> threads = new ArrayList<>();
                List<Throwable> deviceErrors = new java.util.concurrent.CopyOnWriteArrayList<>();
                for (DeviceProducer p : deviceProducers) {
                    threads.add(Thread.ofPlatform().name("device-producer").start(() -> {
                        try {
                            p.drain(settings.deviceChunksPerRound());
                        } catch (Throwable t) {
                            deviceErrors.add(t);
                        }
                    }));
                }
                producer.publish(tracker);
                for (Thread t : threads) t.join();
                if (!deviceErrors.isEmpty()) throw deviceErrors.get(0);
                ring.publishControl(FrameType.END_OF_ROUND, rounds, 0);
                ring.awaitSent(60, TimeUnit.SECONDS);
                long roundNanos = Math.max(1, System.nanoTime() - roundStart);
                long bytes = sentBytes(ring) - bytesBefore;
                double bytesPerNano = Math.max(bytes, 1) / (double) roundNanos;
                lastDirtyRate = (long) (dirty * 1e9 / roundNanos);
                // Stopping now would send what was dirtied during this round (about as much as this round
                // found, at this rate) plus every device's pending bytes, at the bandwidth just measured.
                long pendingDevices = 0;
                for (V1DeviceMigration d : devices) pendingDevices += d.pendingBytes();
                long expectedMicros = (long) ((dirty * PAGE + pendingDevices) / bytesPerNano / 1e3);
                expected = expectedMicros / 1000;
                LOG.log(System.Logger.Level.DEBUG, "round {0}: {1} dirty pages, {2} bytes in {3} us, {4} bytes pending on devices, expected downtime {5} us",
                        rounds, dirty, bytes, roundNanos / 1000, pendingDevices, expectedMicros);
                if (expectedMicros <= settings.downtimeLimit().toNanos() / 1000) break;
                if (rounds >= settings.maxIterations()) {
                    capped = true;
                    break;
                }
            }

            checkCancelled();
            phase = "stop-and-copy";
            pauseStart = System.nanoTime();
            vm.pause();
            paused = true;
            for (V1DeviceMigration d : devices) d.enterStopAndCopy();
            tracker.sync();
            producer.publish(tracker);
            for (int i = 0; i < devices.size(); i++) {
                if (deviceProducers.get(i).drain(0) != 0) throw new IllegalStateException("device " + devices.get(i).deviceName() + " still has data");
                devices.get(i).transition(DeviceState.STOP);
            }
            for (Vcpu v : vm.vcpus()) ring.publishControl(FrameType.VCPU_STATE, v.id(), 0, ByteBuffer.wrap(v.state().toBytes()));
            ring.publishControl(FrameType.COMPLETE, ring.framesWritten(), 0);
            ring.awaitSent(60, TimeUnit.SECONDS);

            phase = "handover";
            expectFromDestination(channel, back, FrameType.ACK_COMPLETE, "handover");
            long downtime = System.nanoTime() - pauseStart;
            tracker.stop();
            long total = System.nanoTime() - start;
            long transferred = sentBytes(ring);
            return new MigrationStats("completed", total / 1_000_000, setupNanos / 1_000_000, downtime / 1_000_000, expected, transferred,
                    rounds, ring.ramPages(), ring.zeroPages(), ring.deviceBytes(), lastDirtyRate,
                    transferred * 8 / 1e6 / Math.max(total / 1e9, 1e-9), capped);
        } catch (Throwable failure) {
            String rollback = rollBack(saving, paused, tracker);
            String where = phase + (rounds > 0 ? " after " + rounds + " round" + (rounds == 1 ? "" : "s") + " (expected downtime "
                    + expected + " ms)" : "");
            if (cancelled) throw new MigrationException("migration cancelled in " + where + "; " + rollback, failure);
            throw new MigrationException("migration failed in " + where + ": " + failure.getMessage() + "; " + rollback, failure);
        } finally {
            if (ring != null) ring.close();
            tracker.close();
        }
    }

    private static long sentBytes(TransferRing ring) {
        return (ring.ramPages() * (PAGE + 4)) + ring.deviceBytes() + ring.framesWritten() * FrameCodec.HEADER;
    }

    /** Reads the destination's answer: the expected type, or an ERROR whose reason is thrown. */
    private static void expectFromDestination(SocketChannel channel, FrameCodec back, FrameType expected, String phase) throws IOException {
        FrameType t = back.readHeader(channel);
        ByteBuffer payload = ByteBuffer.allocate((int) Math.min(back.length(), 1 << 20));
        back.readPayload(channel, payload);
        back.verify();
        if (t == expected) return;
        if (t == FrameType.ERROR) {
            throw new IOException("the destination refused in " + phase + ": " + new String(payload.array(), 0, payload.position(), StandardCharsets.UTF_8));
        }
        throw new IOException("the destination answered " + t + " in " + phase + " where " + expected + " was due");
    }

    /** Puts the source back as it was: devices running, vCPUs resumed, tracking stopped. Says what it did. */
    private String rollBack(boolean saving, boolean paused, DirtyTracker tracker) {
        List<String> done = new ArrayList<>();
        if (saving) {
            for (V1DeviceMigration d : devices) {
                try {
                    done.add(d.cancelSave());
                } catch (RuntimeException e) {
                    done.add("device " + d.deviceName() + " could not be put back: " + e.getMessage());
                }
            }
        }
        if (paused) {
            vm.resume();
            done.add("vCPUs resumed");
        }
        try {
            tracker.stop();
            done.add("dirty tracking stopped");
        } catch (RuntimeException e) {
            done.add("stopping dirty tracking failed: " + e.getMessage());
        }
        return "rolled back: " + String.join(", ", done);
    }
}
