package org.vmmkit.vmm;

import java.io.IOException;
import java.nio.channels.ServerSocketChannel;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.testbed.guest.SoftwareGuest;
import org.vmmkit.core.kvm.Kvm;
import org.vmmkit.core.kvm.Vm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.testbed.vfio.EmulatedVfioContainer;
import org.vmmkit.dirty.DirtySource;
import org.vmmkit.dirty.KvmDirtyLog;
import org.vmmkit.dirty.VfioIommuDirtyPages;
import org.vmmkit.migration.KvmGuest;
import org.vmmkit.migration.MigrationSettings;
import org.vmmkit.migration.MigrationSource;
import org.vmmkit.migration.MigrationStats;
import org.vmmkit.vfio.migration.DeviceMigrationPlan;
import org.vmmkit.vfio.migration.V1DeviceMigration;
import org.vmmkit.dirty.DeviceDmaLog;
import org.vmmkit.testbed.vfio.EmulatedDevice;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.testbed.vfio.EmulatedV2Device;
import org.vmmkit.testbed.vfio.P2pFabric;
import org.vmmkit.vfio.migration.DeviceSection;
import org.vmmkit.vfio.migration.V2DeviceMigration;

/**
 * One VMM process's VM, wired from its settings: a KVM VM with guest RAM, its vCPUs and the built-in
 * workload (or, where KVM is unusable or the config says so, a {@link SoftwareGuest}); an emulated IOMMU container mapping all guest RAM; the configured devices (DMA through that
 * container); and the migration plan of the devices. It runs as a source (the guest started here; its
 * migrations are an {@link OutgoingMigration}) or as a destination (an empty VM that its {@link IncomingMigration}
 * receives a stream into, and then runs), and reports what a control client asks: status, migration
 * statistics, and the guest's pass counter and digests for verification.
 */
public final class Machine implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.vmm");

    /** QEMU's run states, the ones this process goes through. */
    public enum Status {
        RUNNING, PAUSED, INMIGRATE, POSTMIGRATE, FINISH_MIGRATE,
        /** Paused after a handover whose outcome is unknown: the VM may run at the destination (migrate-resolve settles it). */
        POSTMIGRATE_UNKNOWN;

        /** The name the control endpoint shows: {@code postmigrate-unknown}. */
        public String label() {
            return name().toLowerCase().replace('_', '-');
        }
    }

    private final VmmSettings settings;
    private final Kvm kvm; // null with a software guest
    private final GuestMemory memory;
    private final Vm vm; // null with a software guest
    private final SoftwareGuest software; // null with KVM
    private final MigratableVm guest;
    private final DirtyingWorkload workload;
    private final EmulatedVfioContainer container;
    private final List<EmulatedDevice> devices = new ArrayList<>();
    private final P2pFabric fabric = new P2pFabric();
    private final List<VfioUserAttachment> userDevices = new ArrayList<>(); // type = vfio-user
    private final List<Object> deviceOrder = new ArrayList<>(); // every device, in config order, for reports
    private final DeviceMigrationPlan plan;
    private volatile Status status;
    private final OutgoingMigration outgoing; // a source's migrations (a destination has one that never starts)
    private final IncomingMigration incoming; // a destination's; null on a source
    private AutoCloseable jmx; // the migration MBean, following the current migration

    /** A source's identity: configured, or random for the process's lifetime; null on a destination (it asks its IncomingMigration). */
    private final java.util.UUID identity;

    private Machine(VmmSettings settings, boolean asDestination, boolean recordDigest) {
        this.settings = settings;
        this.outgoing = new OutgoingMigration(settings.migration());
        this.identity = asDestination ? null : settings.vm().uuid() != null ? settings.vm().uuid() : java.util.UUID.randomUUID();
        List<AutoCloseable> opened = new ArrayList<>();
        try {
            boolean useKvm = switch (settings.vm().accelerator()) {
                case KVM -> true;
                case SOFTWARE -> false;
                case AUTO -> Kvm.unavailableReason() == null;
            };
            if (useKvm && settings.vm().accelerator() == VmmConfig.Accelerator.AUTO) LOG.log(System.Logger.Level.INFO, "accelerator: kvm");
            if (!useKvm && settings.vm().accelerator() == VmmConfig.Accelerator.AUTO) {
                LOG.log(System.Logger.Level.WARNING, "KVM is unusable here (" + Kvm.unavailableReason()
                        + "): the guest is a SOFTWARE guest, a Java thread rewriting the workload's pages, with no vCPUs");
            }
            this.kvm = useKvm ? Kvm.open() : null;
            if (kvm != null) opened.add(kvm);
            this.memory = GuestMemory.create(GuestMemory.standardLayout(settings.vm().memorySize()), settings.vm().hugePages());
            opened.add(memory);
            this.workload = new DirtyingWorkload(settings.vm().workload());
            if (useKvm) {
                this.vm = kvm.createVm(memory);
                opened.add(vm);
                for (int i = 0; i < settings.vm().vcpus(); i++) vm.createVcpu();
                if (!asDestination) workload.install(memory, vm.vcpus());
                this.software = null;
                this.guest = new KvmGuest(vm, workload);
            } else {
                this.vm = null;
                this.software = new SoftwareGuest(memory, settings.vm().workload());
                if (!asDestination) software.install();
                this.guest = software;
            }
            this.container = new EmulatedVfioContainer("iommu0", GuestMemory.PAGE_SIZE, EmulatedVfioContainer.Tracking.PRECISE);
            for (GuestRegion r : memory.regions()) container.mapDma(r.guestAddress(), r.host(), true, true);
            List<DeviceMigrationPlan.Entry> entries = new ArrayList<>();
            long seed = asDestination ? 1_000_003 : 17;
            for (DeviceSpec spec : settings.devices()) {
                if (spec.kind() == DeviceSpec.Kind.VFIO_USER) {
                    VfioUserAttachment user = VfioUserAttachment.open(spec, memory, asDestination);
                    opened.add(user);
                    userDevices.add(user);
                    deviceOrder.add(user);
                    entries.add(new DeviceMigrationPlan.Entry(user.migrationDevice(), spec.migratable(), spec.migrationProtocol(), spec.shape()));
                    continue;
                }
                EmulatedDevice device = spec.create(seed++, fabric);
                opened.add(device);
                switch (device) {
                    case EmulatedMigratableDevice v1 -> {
                        if (asDestination) v1.recordDigestOnResume();
                        if (spec.dmaSize() > 0) v1.attachDma(container, spec.dmaAddress(), spec.dmaSize());
                    }
                    case EmulatedV2Device v2 -> {
                        if (asDestination) v2.recordDigestOnResume();
                        if (spec.dmaSize() > 0) v2.attachDma(container, spec.dmaAddress(), spec.dmaSize());
                    }
                    default -> throw new IllegalStateException("unknown emulated device " + device.name());
                }
                devices.add(device);
                deviceOrder.add(device);
                entries.add(new DeviceMigrationPlan.Entry(device, spec.migratable(), spec.migrationProtocol(), spec.shape()));
            }
            this.plan = DeviceMigrationPlan.open(entries, V1DeviceMigration.Options.DEFAULT);
            this.status = asDestination ? Status.INMIGRATE : Status.PAUSED;
            this.incoming = asDestination ? new IncomingMigration(settings, guest, memory, workload, plan.devices(), userDevices, recordDigest, this::digest) : null;
            this.jmx = org.vmmkit.migration.MigrationJmx.register("vm", this::migrationStats, this::migrationError);
        } catch (RuntimeException e) {
            for (int i = opened.size() - 1; i >= 0; i--) {
                try {
                    opened.get(i).close();
                } catch (Exception suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
    }

    /** A VM whose guest (the built-in workload) is installed and starts at once. */
    public static Machine source(VmmSettings settings) {
        Machine m = new Machine(settings, false, false);
        m.guest.startLoaded();
        for (VfioUserAttachment u : m.userDevices) u.startDriver();
        m.status = Status.RUNNING;
        LOG.log(System.Logger.Level.INFO, "guest started ({0}): {1} of RAM, {2} device(s)", m.accelerator(), Progress.bytes(settings.vm().memorySize()),
                m.devices.size());
        return m;
    }

    /**
     * An empty VM of the same shape, waiting for a migration stream; with {@code recordDigest} its
     * {@link IncomingMigration} takes a SHA-256 of guest memory once the stream is loaded, before the guest runs.
     */
    public static Machine destination(VmmSettings settings, boolean recordDigest) {
        return new Machine(settings, true, recordDigest);
    }

    /** The run state; during and after a migration it follows the migration's own status, so the two never disagree. */
    public Status status() {
        MigrationStats m = outgoing.stats();
        Status migrated = m == null ? null : switch (m.status()) {
            case COMPLETED -> Status.POSTMIGRATE;
            case DEVICE -> Status.FINISH_MIGRATE;
            case UNKNOWN -> Status.POSTMIGRATE_UNKNOWN;
            default -> null;
        };
        return migrated != null ? migrated : status;
    }

    /** {@code kvm}, or {@code software} for a software guest (a Java thread, no vCPUs). */
    public String accelerator() {
        return vm != null ? "kvm" : "software";
    }

    /**
     * The VM's identity: a source's configured or random one (the same for the process's lifetime); a
     * destination's configured one, or the source's once a stream started it here, null before.
     */
    public java.util.UUID identity() {
        return incoming != null ? incoming.identity() : identity;
    }

    /** Guest RAM in bytes. */
    public long guestRamBytes() {
        return memory.totalSize();
    }

    /** The migration settings: the config file's, with what migrate-set-parameters changed since. */
    public MigrationSettings migrationSettings() {
        return outgoing.parameters();
    }

    /** Where the migrations' events go (the control endpoint's hub); it must return at once. */
    public void onMigrationEvents(java.util.function.Consumer<org.vmmkit.migration.MigrationEvent> listener) {
        outgoing.onEvents(listener);
    }

    /**
     * QEMU's migrate-set-parameters: {@code changes} (max-bandwidth, downtime-limit, valued as the config file
     * writes them) checked by the config file's own checks, kept for the migrations to come, and applied to the
     * one running now (the bandwidth from the next frame, the downtime limit from the next round's estimate).
     * Returns the parameters in force. Another key is an error naming the ones it may change.
     */
    public MigrationSettings setMigrationParameters(Map<String, String> changes) {
        return outgoing.setParameters(changes);
    }

    /**
     * Whether a migration is under way: on a source from its start to its end (an unknown outcome has ended),
     * on a destination while a stream is being received or waits for COMMIT.
     */
    public boolean migrating() {
        return incoming != null ? incoming.receiving() : outgoing.running();
    }

    /** Devices left out of migration, each with why. */
    public List<String> devicesLeftOut() {
        return plan.leftOut();
    }

    /**
     * Starts a migration to {@code destination} (resolved by the caller, who can say which name failed) on its
     * own thread; {@link #migrationStats()} follows it. Refused while one runs or once the VM has migrated away.
     */
    public synchronized void migrate(java.net.SocketAddress destination, MigrationSettings overrides) {
        if (outgoing.running()) throw new IllegalStateException("a migration is already running");
        Status now = status();
        if (now != Status.RUNNING) throw new IllegalStateException("the VM is " + now.label() + ", not running");
        KvmDirtyLog kvmLog = vm == null ? null : new KvmDirtyLog(vm);
        List<DirtySource> dirty = new ArrayList<>(List.of(kvmLog != null ? kvmLog : software, new VfioIommuDirtyPages(container, memory)));
        // v2 devices that log their own DMA are sources too, merged like the IOMMU's bitmap (here the IOMMU tracks
        // as well: the two agree; on a host whose IOMMU cannot track, the device log is what finds those pages).
        for (DeviceSection d : plan.devices()) {
            if (d instanceof V2DeviceMigration) {
                devices.stream().filter(x -> x.name().equals(d.deviceName())).findFirst()
                        .filter(DeviceDmaLog::supported).ifPresent(device -> dirty.add(new DeviceDmaLog(device, memory)));
            }
        }
        for (VfioUserAttachment u : userDevices) dirty.add(u.dirtySource(memory)); // each vfio-user server tracks its own DMA space
        outgoing.start(destination, overrides, s -> new MigrationSource(guest, dirty, plan.devices(), s).withTransport(settings.transport())
                .withIdentity(identity).withMemfdPassing(settings.localMemoryHandover()), () -> {
                    if (kvmLog != null) kvmLog.close();
                });
    }

    /** Cancels a running migration (it rolls back); false if none runs. */
    public boolean cancelMigration() {
        return outgoing.cancel();
    }

    /**
     * Settles a migration whose handover outcome is unknown: {@code destinationRuns} null asks the
     * destination ({@code askAt}, or where it migrated to); true or false is the operator's word. Returns the
     * migration's status after.
     */
    public String resolveMigration(Boolean destinationRuns, java.net.SocketAddress askAt) throws IOException {
        return outgoing.resolve(destinationRuns, askAt, status().label());
    }

    /** What this destination knows of the last stream it received: its nonce and outcome; null before any. */
    public Map<String, Object> incomingStream() {
        return incoming == null ? null : incoming.lastStream();
    }

    /**
     * The statistics of the current or last migration; on a destination, the incoming one's status (none,
     * active while a stream comes, failed after a refused one, completed once the VM runs here, as QEMU's
     * destination says).
     */
    public MigrationStats migrationStats() {
        if (incoming != null) return incoming.stats();
        MigrationStats m = outgoing.stats();
        return m == null ? MigrationStats.none() : m;
    }

    /** Why the last migration failed or was cancelled (and what the rollback did), or null; on a destination, why its last stream was refused. */
    public String migrationError() {
        return incoming != null ? incoming.error() : outgoing.error();
    }

    /** Receives a migration on {@code server} ({@link IncomingMigration#receive}); returns once the VM runs here. */
    public void receive(ServerSocketChannel server) throws IOException {
        incoming.receive(server);
        status = Status.RUNNING;
        for (VfioUserAttachment u : userDevices) u.startDriver();
        LOG.log(System.Logger.Level.INFO, "incoming migration completed; the guest runs here");
    }

    /**
     * After {@link #receive}: answers outcome queries on {@code server} (a source whose acknowledgement was lost
     * asks whether the VM runs here) and refuses further streams, until the socket is closed.
     */
    public void serveOutcomeQueries(ServerSocketChannel server) {
        incoming.serveOutcomeQueries(server);
    }

    /** The guest's pass counter (the workload's progress, kept in guest memory). */
    public long passes() {
        return DirtyingWorkload.passesDone(memory);
    }

    /** SHA-256 of every page of guest memory, now. */
    public String digest() {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            for (GuestRegion r : memory.regions()) sha.update(r.host().asByteBuffer());
            return HexFormat.of().formatHex(sha.digest());
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * What a verification needs: the pass counter; memory and device digests now when the guest is not
     * running (a running guest's would be stale at once); on a destination, the digests taken when the
     * stream was loaded and before anything ran.
     */
    public Map<String, Object> guestReport() {
        Map<String, Object> out = new LinkedHashMap<>();
        Status s = status();
        out.put("status", s.label());
        out.put("passes", passes());
        boolean still = s == Status.POSTMIGRATE || s == Status.PAUSED || s == Status.POSTMIGRATE_UNKNOWN;
        // Memory handed over as memfds is the destination's now: its digest would be stale at once, and reading
        // every page of a sparse guest would allocate the holes of the destination's memory.
        MigrationStats last = outgoing.stats();
        boolean handedOver = last != null && last.memfdsPassed() && s != Status.RUNNING;
        out.put("memory-digest", still && !handedOver ? digest() : null);
        out.put("memory-handed-over", handedOver);
        out.putAll(IncomingMigration.verification(incoming));
        List<Map<String, Object>> devs = new ArrayList<>();
        for (int i = 0; i < deviceOrder.size(); i++) {
            if (deviceOrder.get(i) instanceof VfioUserAttachment u) {
                devs.add(u.report(still));
                continue;
            }
            EmulatedDevice d = (EmulatedDevice) deviceOrder.get(i);
            Map<String, Object> dev = new LinkedHashMap<>();
            dev.put("name", d.name());
            dev.put("migratable", settings.devices().get(i).migratable());
            dev.put("protocol", plan.devices().stream().filter(x -> x.deviceName().equals(d.name())).map(DeviceSection::protocol).findFirst().orElse(null));
            dev.put("state-digest", still ? HexFormat.of().formatHex(d.stateDigest()) : null);
            byte[] atResume = d.digestAtResume();
            dev.put("incoming-state-digest", atResume == null ? null : HexFormat.of().formatHex(atResume));
            dev.put("operations", d.operations());
            dev.put("dma-writes", d.dmaWrites());
            dev.put("misuse", d.misuse());
            dev.put("p2p-writes", d.p2pWrites());
            dev.put("p2p-violations", d.p2pViolations());
            devs.add(dev);
        }
        out.put("devices", devs);
        out.put("accelerator", accelerator());
        out.put("vcpu-failure", vm == null || vm.failure() == null ? null : vm.failure().toString());
        return out;
    }

    @Override
    public void close() {
        outgoing.close();
        try {
            jmx.close();
        } catch (Exception e) {
            LOG.log(System.Logger.Level.WARNING, "unregistering the migration MBean: " + e.getMessage());
        }
        plan.close();
        for (EmulatedDevice d : devices) d.close();
        for (VfioUserAttachment u : userDevices) u.close();
        if (software != null) software.shutdown();
        if (vm != null) vm.close();
        memory.close();
        if (kvm != null) kvm.close();
    }
}
