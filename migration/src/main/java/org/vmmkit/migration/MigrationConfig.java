package org.vmmkit.migration;

import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigException;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.migration.transport.TlsTransport;
import org.vmmkit.migration.transport.Transport;
import org.vmmkit.migration.wire.StreamHeader;

/** The {@code migration} section of the config file: its keys and the {@link MigrationSettings} they make. */
public final class MigrationConfig {
    private MigrationConfig() {}

    public static final ConfigKey<Duration> DOWNTIME_LIMIT = ConfigKey.duration("migration.downtime-limit", "300ms",
            "Longest pause the guest may see: pre-copy stops once the expected downtime is under it.");
    public static final ConfigKey<Long> MAX_ITERATIONS = ConfigKey.count("migration.max-iterations", "30",
            "Pre-copy rounds before the convergence policy decides (`migration.convergence`); the stats say so.");
    public static final ConfigKey<ConvergencePolicy> CONVERGENCE = new ConfigKey<>("migration.convergence", "throttle",
            "When the expected downtime stays over the limit: `throttle` slows the guest (vCPUs held paused a growing share of their time between 10 ms runs, from 20 % up to 99 %) and cancels at the round cap if even that does not fit; `cancel` gives up at the round cap (the guest runs on here); `force` stops and copies at the round cap over the limit. The stats say which was applied and what the throttle cost.",
            ConvergencePolicy::of);
    public static final ConfigKey<Long> MAX_BANDWIDTH = ConfigKey.size("migration.max-bandwidth", "0",
            "Send rate cap in bytes per second over all channels (e.g. 100M); 0 is unlimited.");
    public static final ConfigKey<Long> CHANNELS = ConfigKey.count("migration.channels", "1",
            "TCP connections: RAM is spread over all of them, device data and control go in order on the first.");
    public static final ConfigKey<Long> DEVICE_CHUNKS_PER_ROUND = ConfigKey.count("migration.device-chunks-per-round", "16",
            "Device state chunks each device may send per pre-copy round.");

    public static final ConfigKey<Boolean> RAM_CHECKSUMS = ConfigKey.flag("migration.ram-checksums", "true",
            "A CRC32C per RAM page, checked by the destination (corruption beyond TCP's is caught); false trusts TCP as QEMU does, for throughput.");

    public static final ConfigKey<Boolean> POPULATE_AHEAD = ConfigKey.flag("migration.populate-ahead", "true",
            "Destination: a thread populates guest RAM (MADV_POPULATE_WRITE) just ahead of the incoming pages, so no page is first touched inside a socket read; false leaves the first touch to the receive path. Not on hugetlbfs memory (one fault per 2 MiB there: measured faster without).");

    public static final ConfigKey<Boolean> INCOMING_PREALLOC = ConfigKey.flag("migration.incoming-prealloc", "false",
            "Destination: populate all guest RAM while `incoming` waits for a stream (QEMU's -mem-prealloc): every page is ready before the first frame, but the whole guest costs host memory until zero pages arrive.");

    public static final ConfigKey<Boolean> LOCAL_MEMORY_HANDOVER = ConfigKey.flag("migration.local-memory-handover", "true",
            "Over a `unix:` socket, hand guest memory over as memfds instead of copying it (a local live upgrade: no RAM copied). Either end set to false makes it copy RAM as over TCP: a source does not offer its memfds, a destination declines them (as it always does with a vfio-user device).");

    public static final ConfigKey<Boolean> TLS = ConfigKey.flag("migration.tls", "false",
            "TLS 1.3 with mutual authentication on every migration connection, both ends alike (the keys below); false is plain TCP, unauthenticated and unencrypted.");
    public static final ConfigKey<String> TLS_CERTIFICATE = ConfigKey.text("migration.tls.certificate", "",
            "This side's certificate chain, PEM (with `migration.tls.key`); or use `migration.tls.keystore`.");
    public static final ConfigKey<String> TLS_KEY = ConfigKey.text("migration.tls.key", "",
            "This side's private key, unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`).");
    public static final ConfigKey<String> TLS_KEYSTORE = ConfigKey.text("migration.tls.keystore", "",
            "This side's key and certificate chain as a PKCS#12 file, instead of the two PEM files.");
    public static final ConfigKey<String> TLS_KEYSTORE_PASSWORD = ConfigKey.text("migration.tls.keystore-password", "",
            "The PKCS#12 file's password.");
    public static final ConfigKey<String> TLS_CA = ConfigKey.text("migration.tls.ca", "",
            "PEM file of the CA certificates the peer's certificate must chain to.");
    public static final ConfigKey<String> TLS_AUTHZ = ConfigKey.text("migration.tls.authz", "",
            "Peers allowed, comma-separated: a distinguished name (`CN=host-a,O=example`) or a name matched against the certificate's CN and DNS names; empty allows any certificate the CA signed.");

    public static final List<ConfigKey<?>> KEYS = List.of(DOWNTIME_LIMIT, MAX_ITERATIONS, CONVERGENCE, MAX_BANDWIDTH, CHANNELS, DEVICE_CHUNKS_PER_ROUND,
            RAM_CHECKSUMS, POPULATE_AHEAD, INCOMING_PREALLOC, LOCAL_MEMORY_HANDOVER, TLS, TLS_CERTIFICATE, TLS_KEY, TLS_KEYSTORE, TLS_KEYSTORE_PASSWORD, TLS_CA, TLS_AUTHZ);

    /**
     * The transport the config gives: plain TCP, or TLS with the key material it names (loaded now, so a
     * missing or malformed file is an error at start naming the key and why).
     */
    public static Transport transport(Config config) {
        if (!config.get(TLS)) return Transport.PLAIN;
        String keystore = config.get(TLS_KEYSTORE), certificate = config.get(TLS_CERTIFICATE), key = config.get(TLS_KEY), ca = config.get(TLS_CA);
        if (ca.isEmpty()) throw config.invalid(TLS_CA, "is needed with migration.tls = true");
        if (keystore.isEmpty() && (certificate.isEmpty() || key.isEmpty())) {
            throw config.invalid(TLS_KEYSTORE, "or migration.tls.certificate and migration.tls.key are needed with migration.tls = true");
        }
        List<String> allowed = new java.util.ArrayList<>();
        for (String a : config.get(TLS_AUTHZ).split(",")) if (!a.isBlank()) allowed.add(a.strip());
        try {
            return TlsTransport.load(new TlsTransport.Settings(certificate.isEmpty() ? null : Path.of(certificate), key.isEmpty() ? null : Path.of(key),
                    keystore.isEmpty() ? null : Path.of(keystore), config.get(TLS_KEYSTORE_PASSWORD), Path.of(ca), allowed));
        } catch (IllegalArgumentException e) {
            throw config.invalid(TLS, e.getMessage());
        }
    }

    /** The keys a single migration may override (the {@code migrate} command's arguments, without {@code migration.}). */
    public static final List<ConfigKey<?>> PER_MIGRATION = List.of(CHANNELS, MAX_BANDWIDTH, DOWNTIME_LIMIT, MAX_ITERATIONS, CONVERGENCE);

    /**
     * {@code base} with {@code overrides} applied (each named as its key without {@code migration.}, valued as
     * a config file writes it): parsed and checked exactly as the config file's values are — one validation
     * path, whatever the source. An unknown name or a bad value is a {@link ConfigException} naming it.
     */
    public static MigrationSettings override(MigrationSettings base, java.util.Map<String, String> overrides) {
        java.util.Map<String, String> values = new java.util.LinkedHashMap<>();
        values.put(DOWNTIME_LIMIT.name(), base.downtimeLimit().toMillis() + "ms");
        values.put(MAX_ITERATIONS.name(), Integer.toString(base.maxIterations()));
        values.put(CONVERGENCE.name(), base.convergence().label());
        values.put(MAX_BANDWIDTH.name(), Long.toString(base.maxBandwidth()));
        values.put(CHANNELS.name(), Integer.toString(base.channels()));
        values.put(DEVICE_CHUNKS_PER_ROUND.name(), Integer.toString(base.deviceChunksPerRound()));
        values.put(RAM_CHECKSUMS.name(), Boolean.toString(base.ramChecksums()));
        for (var e : overrides.entrySet()) {
            String key = "migration." + e.getKey();
            if (PER_MIGRATION.stream().noneMatch(k -> k.name().equals(key))) {
                throw new ConfigException("unknown migration setting '" + e.getKey() + "' (one migration may set "
                        + PER_MIGRATION.stream().map(k -> k.name().substring("migration.".length())).toList() + ")");
            }
            values.put(key, e.getValue());
        }
        List<String> lines = new java.util.ArrayList<>();
        values.forEach((k, v) -> lines.add(k + "=" + v));
        MigrationSettings s = from(Config.load(KEYS, null, lines));
        // What no key sets stays as the base has it.
        return new MigrationSettings(s.downtimeLimit(), s.maxIterations(), s.deviceChunksPerRound(), base.maxFramePages(), base.ringSize(),
                s.maxBandwidth(), s.channels(), s.ramChecksums(), s.convergence());
    }

    /** The settings the config gives, each value checked against its key's bounds. */
    public static MigrationSettings from(Config config) {
        long rounds = config.get(MAX_ITERATIONS);
        if (rounds < 1 || rounds > 100_000) throw config.invalid(MAX_ITERATIONS, "must be between 1 and 100000");
        long channels = config.get(CHANNELS);
        if (channels < 1 || channels > StreamHeader.MAX_CHANNELS) {
            throw config.invalid(CHANNELS, "must be between 1 and " + StreamHeader.MAX_CHANNELS);
        }
        long chunks = config.get(DEVICE_CHUNKS_PER_ROUND);
        if (chunks < 1 || chunks > 1_000_000) throw config.invalid(DEVICE_CHUNKS_PER_ROUND, "must be between 1 and 1000000");
        long bandwidth = config.get(MAX_BANDWIDTH);
        if (bandwidth != 0 && bandwidth < 1 << 20) throw config.invalid(MAX_BANDWIDTH, "must be 0 (unlimited) or at least 1M per second");
        return MigrationSettings.DEFAULT.withDowntimeLimit(config.get(DOWNTIME_LIMIT)).withMaxIterations((int) rounds)
                .withMaxBandwidth(bandwidth).withChannels((int) channels).withDeviceChunksPerRound((int) chunks)
                .withRamChecksums(config.get(RAM_CHECKSUMS)).withConvergence(config.get(CONVERGENCE));
    }
}
