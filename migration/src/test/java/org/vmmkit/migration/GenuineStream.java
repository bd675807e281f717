package org.vmmkit.migration;

import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.testing.FrameProxy;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;

/**
 * The genuine stream {@link StreamFuzzTest} mutates: a small real migration — a {@link FakeGuest} of 1 MiB,
 * one emulated v1 device with 32 KiB of memory, one channel, RAM page checksums on — recorded by a
 * {@link FrameProxy} on its way to a destination whose HELLO nonce is fixed, so the recording can be
 * replayed to a destination with the same nonce. Saved as {@value #RESOURCE} in the test resources.
 *
 * <p>To record it again (after a wire format change), from the repository root:
 * <pre>
 * mvn -o -pl migration -am test -Dtest=StreamFuzzTest#recordTheGenuineStream -Dfuzz.record=true -Dsurefire.failIfNoSpecifiedTests=false
 * </pre>
 * which writes {@code migration/src/test/resources/streams/}; commit the file.
 */
final class GenuineStream {
    static final String RESOURCE = "/streams/fakeguest-1mib-gpu.stream";
    static final int GUEST_SIZE = 1 << 20;
    static final long GUEST_SEED = 20261201;
    static final long SOURCE_DEVICE_SEED = 1, DESTINATION_DEVICE_SEED = 2;
    /** The destination's HELLO nonce the recording carries back. */
    static final Nonce NONCE = new Nonce(0x66757a7a5f6e6f6eL, 0x63655f7665727333L);

    private GenuineStream() {
    }

    /** The emulated device on both ends: small, idle (its memory changes only by migration), mmap'd data section. */
    static EmulatedMigratableDevice.Config deviceConfig() {
        return new EmulatedMigratableDevice.Config("fuzz-gpu0", 32 << 10, 16 << 10, EmulatedMigratableDevice.DataSection.MMAP, 0, 0);
    }

    /** The source guest, the same every time. */
    static FakeGuest sourceGuest() {
        return FakeGuest.source(GUEST_SIZE, GUEST_SEED);
    }

    static EmulatedMigratableDevice sourceDevice() {
        return new EmulatedMigratableDevice(deviceConfig(), SOURCE_DEVICE_SEED);
    }

    /** A destination device as it is before a stream arrives (its memory differs from the source's). */
    static EmulatedMigratableDevice destinationDevice() {
        return new EmulatedMigratableDevice(deviceConfig(), DESTINATION_DEVICE_SEED);
    }

    /** The recorded stream, from the test resources. */
    static byte[] load() throws IOException {
        try (InputStream in = GenuineStream.class.getResourceAsStream(RESOURCE)) {
            if (in == null) throw new IOException("test resource " + RESOURCE + " is missing: record it (see GenuineStream)");
            return in.readAllBytes();
        }
    }

    /**
     * Migrates the source guest and device through a recording proxy to a destination with the fixed nonce,
     * checks that the destination got exactly the source's state, and returns what the source sent on its
     * connection (header, frames, COMMIT).
     */
    static byte[] record() throws Exception {
        try (FakeGuest src = sourceGuest(); FakeGuest dst = FakeGuest.destination(GUEST_SIZE);
             EmulatedMigratableDevice a = sourceDevice(); EmulatedMigratableDevice b = destinationDevice();
             V1DeviceMigration am = V1DeviceMigration.open(a, 0, V1DeviceMigration.Options.DEFAULT);
             V1DeviceMigration bm = V1DeviceMigration.open(b, 0, V1DeviceMigration.Options.DEFAULT);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
             FrameProxy proxy = new FrameProxy(server.getLocalAddress(), (c, d, i, t) -> FrameProxy.Action.FORWARD)) {
            MigrationDestination destination = new MigrationDestination(dst, List.of(bm), null).withNonces(() -> NONCE);
            CompletableFuture<Void> received = new CompletableFuture<>();
            Thread.ofPlatform().name("genuine-stream-destination").daemon().start(() -> {
                try {
                    destination.receive(server, Duration.ofSeconds(30));
                    received.complete(null);
                } catch (Throwable t) {
                    received.completeExceptionally(t);
                }
            });
            byte[] sourceDigest = a.stateDigest();
            MigrationStats stats = new MigrationSource(src, List.of(), List.of(am), MigrationSettings.DEFAULT).migrate(proxy.address());
            received.get(30, TimeUnit.SECONDS);
            if (stats.status() != MigrationStatus.COMPLETED || !dst.equalsSource(src) || !Arrays.equals(sourceDigest, b.stateDigest())) {
                throw new IllegalStateException("recording the genuine stream: the migration ended " + stats.status()
                        + " and the destination does not hold the source's state");
            }
            return proxy.recordedStream();
        }
    }

    /** Records the stream into {@code args[0]} (default: the migration module's test resources, from the repository root). */
    public static void main(String[] args) throws Exception {
        Path target = Path.of(args.length > 0 ? args[0] : "migration/src/test/resources" + RESOURCE);
        Files.createDirectories(target.getParent());
        Files.write(target, record());
        System.out.println("recorded " + Files.size(target) + " bytes to " + target);
    }
}
