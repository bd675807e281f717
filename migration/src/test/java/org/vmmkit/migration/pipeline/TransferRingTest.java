package org.vmmkit.migration.pipeline;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.migration.ram.MemoryViews;
import org.vmmkit.migration.ram.RamReceiver;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.WireFormatException;
import org.vmmkit.core.vfio.v1.DeviceState;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Memory and device state together through the ring over loopback TCP: the device's DMA dirties guest
 * memory during pre-copy (tracked by the emulated IOMMU), memory and device producers run concurrently in
 * each round, one sender writes everything; the destination ends equal to the source at stop.
 */
@Timeout(60)
class TransferRingTest {
    private static final long MIB = 1 << 20, PAGE = 4096;

    @Test
    void memoryAndDeviceStateArriveTogetherThroughTheRing() throws Exception {
        EmulatedMigratableDevice.Config config = EmulatedMigratableDevice.Config.defaults("gpu0").withMemory(8 * MIB).withOpsPerSecond(20_000);
        try (GuestMemory source = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(32 * MIB));
             EmulatedMigratableDevice a = new EmulatedMigratableDevice(config, 1);
             EmulatedMigratableDevice b = new EmulatedMigratableDevice(config, 2).recordDigestOnResume();
             V1DeviceMigration src = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration dst = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            GuestRegion region = source.regions().get(0);
            SplittableRandom random = new SplittableRandom(3);
            for (long o = 0; o < region.size(); o += 64) region.host().set(JAVA_LONG, o, random.nextLong());
            destination.regions().get(0).host().fill((byte) 0x5A);
            EmulatedVfioContainer container = new EmulatedVfioContainer("emulated-container", PAGE, EmulatedVfioContainer.Tracking.PRECISE);
            container.mapDma(0, region.host(), true, true);
            a.attachDma(container, MIB, 16 * MIB);

            CompletableFuture<long[]> received = CompletableFuture.supplyAsync(() -> receive(server, destination, dst));

            try (SocketChannel out = SocketChannel.open(server.getLocalAddress());
                 DirtyTracker tracker = new DirtyTracker(source, List.of(new VfioIommuDirtyPages(container, source)));
                 TransferRing ring = new TransferRing(1024, out, new MemoryViews(source), 256)) {
                MemoryProducer memory = new MemoryProducer(ring, source, 256);
                SectionProducer device = new SectionProducer(src, 0, ring);
                tracker.start();
                src.startPrecopy();
                for (int round = 1; round <= 3; round++) {
                    tracker.sync();
                    Thread deviceThread = Thread.ofPlatform().start(() -> device.drain(4));
                    memory.publish(tracker);
                    deviceThread.join();
                    ring.publishControl(FrameType.END_OF_ROUND, round, 0);
                    ring.awaitSent(20, TimeUnit.SECONDS);
                    Thread.sleep(10); // the device keeps running and DMA-ing meanwhile
                }
                assertTrue(a.dmaWrites() > 0, "the device wrote guest memory during pre-copy");
                src.enterStopAndCopy(); // the device stops: no more DMA, no more state changes
                tracker.sync();
                memory.publish(tracker);
                assertEquals(0, device.drain(0));
                src.transition(DeviceState.STOP);
                byte[] atStop = a.stateDigest();
                ring.publishControl(FrameType.COMPLETE, ring.framesWritten(), 0);
                ring.awaitSent(20, TimeUnit.SECONDS);
                long[] counts = received.get(30, TimeUnit.SECONDS);
                assertTrue(ring.sectionChunks() > 3 && counts[0] > 0, "chunks " + ring.sectionChunks() + ", RAM pages " + counts[0]);
                assertEquals(-1, region.host().mismatch(destination.regions().get(0).host()), "guest memory equal at stop");
                assertArrayEquals(atStop, b.digestAtResume(), "device state equal at stop");
                assertEquals(List.of(), a.misuse());
                assertEquals(List.of(), b.misuse());
                System.out.printf("ring: %d frames, %d device chunks (%d bytes), %d RAM pages, %d torn RAM frames resent%n",
                        ring.framesWritten(), ring.sectionChunks(), ring.sectionBytes(), counts[0], counts[1]);
            }
        }
    }

    /** The destination: RAM into guest memory, device chunks to the resuming device in order, COMPLETE checks all. */
    private static long[] receive(ServerSocketChannel server, GuestMemory destination, V1DeviceMigration dst) {
        try (SocketChannel in = server.accept()) {
            FrameCodec codec = new FrameCodec(64 * MIB);
            RamReceiver ram = new RamReceiver(new MemoryViews(destination));
            ram.allowTorn(true);
            ByteBuffer chunk = ByteBuffer.allocateDirect((int) (8 * MIB));
            long expectedSequence = 0;
            dst.startResume();
            while (true) {
                FrameType t = codec.readHeader(in);
                switch (t) {
                    case RAM, ZERO_RUN -> ram.apply(in, codec);
                    case SECTION_CHUNK -> {
                        if (codec.a() != 0 || codec.b() != expectedSequence || codec.length() > chunk.capacity()) {
                            throw new WireFormatException("device chunk for device " + codec.a() + " sequence " + codec.b()
                                    + " (expected 0/" + expectedSequence + "), " + codec.length() + " bytes");
                        }
                        chunk.clear().limit((int) codec.length());
                        codec.readPayload(in, chunk);
                        codec.verify();
                        dst.loadChunk(java.lang.foreign.MemorySegment.ofBuffer(chunk.flip()));
                        expectedSequence++;
                    }
                    case END_OF_ROUND -> codec.verify();
                    case COMPLETE -> {
                        codec.verify();
                        ram.checkNoTornPages();
                        dst.completeResume();
                        return new long[] {ram.ramPages(), ram.tornFrames()};
                    }
                    default -> throw new WireFormatException("unexpected frame " + t);
                }
            }
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }
}
