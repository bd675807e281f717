package org.vmmkit.core.memory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** This process's mappings as the kernel lists them in {@code /proc/self/maps}: what a guard-page test checks. */
public final class ProcMaps {
    private ProcMaps() {
    }

    /** The permissions ({@code rw-s}, {@code ---p}, ...) of the mapping holding {@code address}, or null if none does. */
    public static String permissionsAt(long address) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
                String[] fields = line.split("\\s+", 3);
                int dash = fields[0].indexOf('-');
                long start = Long.parseUnsignedLong(fields[0].substring(0, dash), 16);
                long end = Long.parseUnsignedLong(fields[0].substring(dash + 1), 16);
                if (Long.compareUnsigned(address, start) >= 0 && Long.compareUnsigned(address, end) < 0) return fields[1];
            }
            return null;
        } catch (IOException e) {
            throw new UncheckedIOException("reading /proc/self/maps failed", e);
        }
    }

    /** The process's address space (VmSize of /proc/self/status), in KiB. */
    public static long vmSizeKb() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmSize:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
            throw new IllegalStateException("/proc/self/status has no VmSize line");
        } catch (IOException e) {
            throw new UncheckedIOException("reading /proc/self/status failed", e);
        }
    }

    /** A line for an assertion message: what lies just before, at the start, at the end and just after {@code [start, end)}. */
    public static String around(long start, long end) {
        return String.format("[0x%x, 0x%x): before %s, first %s, last %s, after %s", start, end, permissionsAt(start - 1),
                permissionsAt(start), permissionsAt(end - 1), permissionsAt(end));
    }
}
