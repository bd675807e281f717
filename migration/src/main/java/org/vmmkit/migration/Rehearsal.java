package org.vmmkit.migration;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.memory.GuestMemory;

/**
 * One migration of a tiny in-memory VM (4 MiB, one page of data, one vCPU state) between two threads of this
 * process over loopback, run once when a vmm process starts, off the critical path. It takes the cost of a
 * cold JVM — class loading, static initialisers (the stream id's {@code SecureRandom}, the Disruptor, the
 * codecs), the first interpreted pass through every step on both sides — before a real migration asks for
 * it: measured with {@code vmm migrate -v}'s setup line, a fresh process spent about 230 ms of its 285 ms
 * setup in that (the handshake's code on both ends, 51 ms creating the first ring), where QEMU, C code,
 * reports 1 ms. It uses plain TCP whatever the process's transport (TLS's own classes stay cold), then
 * rehearses a local live upgrade the same way (a Unix socket, the memfds handed over: its FFM calls are bound
 * and its code run once, which took about 160 ms of a first local upgrade's downtime and setup), and logs
 * nothing; a failure is logged as a warning and changes nothing else.
 */
public final class Rehearsal {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");
    private static final long SIZE = 4L << 20;

    private Rehearsal() {}

    /** Starts the rehearsal on a daemon thread of its own. */
    public static Thread inBackground() {
        return Thread.ofPlatform().name("migration-rehearsal").daemon().start(() -> {
            try {
                run();
                runLocal();
            } catch (Exception | Error e) {
                LOG.log(System.Logger.Level.WARNING, "the start-up rehearsal migration failed (the first real migration's setup will be slower): " + e);
            }
        });
    }

    /** Runs the rehearsal and returns once the rehearsal VM runs at its destination. */
    static void run() throws Exception {
        try (GuestMemory from = GuestMemory.create(GuestMemory.standardLayout(SIZE));
             GuestMemory to = GuestMemory.create(GuestMemory.standardLayout(SIZE));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            migrateOnce(server, from, to, false);
            if (to.readLong(SIZE / 2) != 0x5eed) throw new IOException("the rehearsal's page did not arrive");
        }
    }

    /**
     * One migration of {@code from}, holding one page of data and the rest zero (RAM and ZERO_RUN frames both),
     * to {@code to} through {@code server}, the memfds handed over where {@code memfds}; throws the destination's failure.
     */
    private static void migrateOnce(ServerSocketChannel server, GuestMemory from, GuestMemory to, boolean memfds) throws Exception {
        from.writeLong(SIZE / 2, 0x5eed);
        MigrationDestination destination = new MigrationDestination(new StillVm(to), List.of(), null).withMemfdPassing(memfds).quiet();
        Exception[] failed = new Exception[1];
        Thread receiver = Thread.ofPlatform().name("migration-rehearsal-destination").daemon().start(() -> {
            try {
                destination.receive(server, Duration.ofSeconds(30));
            } catch (MigrationException e) {
                failed[0] = e;
            }
        });
        new MigrationSource(new StillVm(from), List.of(), List.of(), MigrationSettings.DEFAULT).quiet().migrate(server.getLocalAddress());
        receiver.join();
        if (failed[0] != null) throw failed[0];
    }

    /** The local live upgrade's rehearsal: over a Unix socket in a fresh temporary directory, the memfds handed over. */
    static void runLocal() throws Exception {
        java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("vmmkit-rehearsal-");
        java.nio.file.Path path = dir.resolve("r.sock");
        try (GuestMemory from = GuestMemory.create(GuestMemory.standardLayout(SIZE));
             GuestMemory to = GuestMemory.create(GuestMemory.standardLayout(SIZE));
             ServerSocketChannel server = ServerSocketChannel.open(java.net.StandardProtocolFamily.UNIX).bind(java.net.UnixDomainSocketAddress.of(path))) {
            migrateOnce(server, from, to, true);
            if (to.readLong(SIZE / 2) != 0x5eed) throw new IOException("the local rehearsal's memory was not handed over");
        } finally {
            java.nio.file.Files.deleteIfExists(path);
            java.nio.file.Files.deleteIfExists(dir);
        }
    }

    /** A VM that never runs: guest memory and one vCPU's worth of fixed state. */
    private record StillVm(GuestMemory memory) implements MigratableVm {
        @Override
        public Duration pause() {
            return Duration.ZERO;
        }

        @Override
        public void resume() {}

        @Override
        public int vcpuCount() {
            return 1;
        }

        @Override
        public byte[] saveVcpu(int index) {
            return new byte[64];
        }

        @Override
        public void restoreVcpu(int index, byte[] state) {}

        @Override
        public void startLoaded() {}
    }
}
