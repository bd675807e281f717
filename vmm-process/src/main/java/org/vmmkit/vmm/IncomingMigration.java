package org.vmmkit.vmm;

import java.io.IOException;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.migration.MigrationDestination;
import org.vmmkit.migration.MigrationException;
import org.vmmkit.migration.MigrationStats;
import org.vmmkit.migration.MigrationStatus;
import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.vfio.migration.DeviceSection;

/**
 * A destination VM's incoming migration: streams received on a listening socket until one starts the VM (a
 * refused one leaves it unstarted, and the next is awaited), outcome queries answered after, and what it
 * reports: its status, the last refusal, the last stream, and the verification figures taken when the stream
 * was loaded, before anything ran.
 */
final class IncomingMigration {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.vmm");

    private final MigrationDestination destination;
    private final GuestMemory memory;
    private final DirtyingWorkload workload;
    private final List<VfioUserAttachment> userDevices;
    private final boolean recordDigest;
    private final Supplier<String> digest;
    private volatile String error; // why the last stream was refused
    /** None until a stream came, failed after a refused one, completed once the VM runs here. */
    private volatile MigrationStatus status = MigrationStatus.NONE;
    private volatile String memoryDigest;
    private volatile long passes = -1;
    private volatile long workloadMismatch = -2; // -2: not checked; -1: consistent; else the first page that is not
    private volatile long digestMillis = -1;

    /**
     * The destination of {@code guest} (its {@code memory}, the built-in {@code workload}) with {@code sections};
     * with {@code recordDigest} it takes {@code digest} of guest memory and checks the workload's pages once the
     * stream is loaded and before the guest runs (for a verification; it lengthens the downtime by the time it takes).
     */
    IncomingMigration(VmmSettings settings, MigratableVm guest, GuestMemory memory, DirtyingWorkload workload, List<DeviceSection> sections,
                      List<VfioUserAttachment> userDevices, boolean recordDigest, Supplier<String> digest) {
        this.memory = memory;
        this.workload = workload;
        this.userDevices = userDevices;
        this.recordDigest = recordDigest;
        this.digest = digest;
        this.destination = new MigrationDestination(guest, sections, this::recordLoaded).withTransport(settings.transport())
                .withIdentity(settings.vm().uuid()).withPopulateAhead(settings.populateAhead()).withPrealloc(settings.incomingPrealloc())
                // A vfio-user server was given this VM's own memfds for its DMA: it would not follow a swap of the memory.
                .withMemfdPassing(settings.localMemoryHandover() && userDevices.isEmpty());
    }

    /** Everything is loaded and nothing runs yet: the figures a verification compares with the source's. */
    private void recordLoaded() {
        passes = DirtyingWorkload.passesDone(memory);
        // Verification only (it reads every workload page: with memory handed over as memfds, a first
        // touch of each in this process, which lengthens the downtime as the digest does).
        if (recordDigest) workloadMismatch = workload.firstMismatchMidPass(memory, passes);
        for (VfioUserAttachment u : userDevices) u.recordIncoming();
        if (recordDigest) {
            long start = System.nanoTime();
            memoryDigest = digest.get();
            digestMillis = (System.nanoTime() - start) / 1_000_000;
        }
    }

    /** The VM's identity: configured, or the source's once a stream started it here; null before either. */
    java.util.UUID identity() {
        return destination.identity();
    }

    /** Whether a stream is being received or waits for COMMIT. */
    boolean receiving() {
        return destination.lastStream() != null && destination.outcomeOf(destination.lastStream()) == HandoverOutcome.IN_PROGRESS;
    }

    /** QEMU's destination statistics: the status alone (active while a stream comes). */
    MigrationStats stats() {
        return MigrationStats.none().withStatus(receiving() ? MigrationStatus.ACTIVE : status);
    }

    /** Why the last stream was refused, or null. */
    String error() {
        return error;
    }

    /** The last stream received here: its nonce and outcome; null before any. */
    Map<String, Object> lastStream() {
        if (destination.lastStream() == null) return null;
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("stream", destination.lastStream().toString());
        out.put("outcome", destination.outcomeOf(destination.lastStream()).name().toLowerCase().replace('_', '-'));
        return out;
    }

    /**
     * Receives streams on {@code server}: a failed or refused one leaves the VM unstarted and waits for the next
     * connection; returns once the VM runs.
     */
    void receive(ServerSocketChannel server) throws IOException {
        while (true) {
            try {
                destination.receive(server, Duration.ofDays(365));
                error = null;
                status = MigrationStatus.COMPLETED;
                return;
            } catch (MigrationException e) {
                error = e.getMessage();
                status = MigrationStatus.FAILED;
                LOG.log(System.Logger.Level.WARNING, e.getMessage() + "; waiting for another attempt");
                if (!server.isOpen()) throw new IOException("the listening socket closed", e);
            }
        }
    }

    /** After {@link #receive}: see {@link MigrationDestination#serveOutcomeQueries}. */
    void serveOutcomeQueries(ServerSocketChannel server) {
        destination.serveOutcomeQueries(server);
    }

    /** query-guest's {@code incoming-*} fields: what {@code incoming} (null on a source: all null) took when its stream was loaded. */
    static Map<String, Object> verification(IncomingMigration incoming) {
        Map<String, Object> out = new LinkedHashMap<>();
        boolean loaded = incoming != null;
        out.put("incoming-memory-digest", loaded ? incoming.memoryDigest : null);
        out.put("incoming-passes", loaded && incoming.passes >= 0 ? incoming.passes : null);
        long mismatch = loaded ? incoming.workloadMismatch : -2;
        out.put("incoming-workload-check", mismatch == -2 ? null : mismatch == -1 ? "consistent"
                : "page " + mismatch + " holds neither pass " + incoming.passes + " nor " + (incoming.passes + 1));
        out.put("incoming-digest-time", loaded && incoming.digestMillis >= 0 ? incoming.digestMillis : null);
        return out;
    }
}
