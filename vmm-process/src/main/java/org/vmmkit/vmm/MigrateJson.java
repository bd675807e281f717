package org.vmmkit.vmm;

import java.util.ArrayList;
import org.vmmkit.migration.MigrationStatus;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.migration.MigrationStats;

/**
 * {@link MigrationStats} as the JSON of {@code query-migrate} and {@code vmm migrate --json}, named after
 * QEMU's query-migrate fields where one corresponds (README documents each field).
 */
public final class MigrateJson {
    private MigrateJson() {}

    /** The JSON of {@code s}: a migration of a guest of {@code guestRamBytes}, which failed for {@code error} (null if it did not). */
    public static Map<String, Object> of(MigrationStats s, long guestRamBytes, String error) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("status", s.status().label());
        out.put("total-time", s.totalMillis());
        out.put("setup-time", s.setupMillis());
        out.put("downtime", s.status() == MigrationStatus.COMPLETED ? s.downtimeMillis() : null);
        out.put("expected-downtime", s.expectedDowntimeMillis() < 0 ? null : s.expectedDowntimeMillis()); // null: no estimate yet
        out.put("transferred", s.transferredBytes());
        Map<String, Object> ram = new LinkedHashMap<>();
        ram.put("total", guestRamBytes);
        ram.put("remaining", s.remainingBytes());
        ram.put("normal", s.ramPages());
        ram.put("normal-bytes", s.ramPages() * GuestMemory.PAGE_SIZE);
        ram.put("duplicate", s.zeroPages());
        ram.put("dirty-pages-rate", s.dirtyPagesRate());
        ram.put("dirty-sync-count", s.rounds());
        ram.put("mbps", Math.round(s.throughputMbps() * 10) / 10.0);
        ram.put("page-size", GuestMemory.PAGE_SIZE);
        ram.put("destination-resident", s.destinationResidentBytes() < 0 ? null : s.destinationResidentBytes());
        ram.put("memfds-passed", s.memfdsPassed());
        out.put("ram", ram);
        Map<String, Object> vfio = new LinkedHashMap<>();
        long vfioBytes = 0;
        List<Map<String, Object>> devices = new ArrayList<>(), sections = new ArrayList<>();
        for (MigrationStats.SectionStats d : s.sections()) {
            Map<String, Object> dev = new LinkedHashMap<>();
            dev.put("name", d.id());
            dev.put("transferred", d.bytes());
            dev.put("chunks", d.chunks());
            if (d.kind().startsWith("vfio")) {
                devices.add(dev);
                vfioBytes += d.bytes();
            }
            Map<String, Object> section = new LinkedHashMap<>(dev);
            section.put("kind", d.kind());
            sections.add(section);
        }
        vfio.put("transferred", vfioBytes);
        vfio.put("devices", devices);
        out.put("vfio", vfio);
        out.put("sections", sections);
        out.put("stopped-by-iteration-cap", s.stoppedByIterationCap());
        Map<String, Object> convergence = new LinkedHashMap<>();
        convergence.put("policy", s.convergence().policy().label());
        convergence.put("outcome", s.convergence().outcome());
        convergence.put("throttle-percent", s.convergence().throttlePercent());
        convergence.put("throttled-time", s.convergence().throttledMillis());
        out.put("convergence", convergence);
        out.put("error-desc", error);
        return out;
    }

    /**
     * What {@code vmm migrate --json} prints when it has no statistics to show: the control endpoint could
     * not be reached, refused the command, or went away. Only the two fields it can fill, so nothing looks measured.
     */
    public static Map<String, Object> notFollowed(String error) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("status", "failed");
        out.put("error-desc", error);
        return out;
    }
}
