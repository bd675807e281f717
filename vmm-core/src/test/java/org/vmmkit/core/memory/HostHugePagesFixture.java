package org.vmmkit.core.memory;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.api.Assumptions;

/**
 * Test fixture: makes the host offer huge pages for a test and puts its settings back on {@link #close}. A test
 * that cannot have them (not root, a kernel without hugetlbfs or shmem THP, memory too fragmented for the pool
 * to grow) is skipped, saying so on stderr with {@code !!!} and in the skip reason.
 */
public final class HostHugePagesFixture implements AutoCloseable {
    private final Path file;
    private final String previous; // null: nothing was changed

    private HostHugePagesFixture(Path file, String previous) {
        this.file = file;
        this.previous = previous;
    }

    /** At least {@code pages} hugetlbfs pages available to a new mapping: the pool raised (as root) if it has fewer. */
    public static HostHugePagesFixture hugetlbPages(long pages) {
        HostHugePages.Pool pool = HostHugePages.pool();
        if (pool.available() >= pages) return new HostHugePagesFixture(null, null);
        String before = read(HostHugePages.NR_HUGEPAGES);
        long want = pool.total() + pages - pool.available();
        HostHugePagesFixture fixture = new HostHugePagesFixture(HostHugePages.NR_HUGEPAGES, before);
        if (!write(HostHugePages.NR_HUGEPAGES, Long.toString(want)) || HostHugePages.pool().available() < pages) {
            fixture.close();
            skip("needs " + pages + " free 2 MiB hugetlbfs pages and could not reserve them (" + HostHugePages.NR_HUGEPAGES + " = " + before
                    + ", HugePages_Free " + pool.free() + "; writing " + want + " needs root and unfragmented memory)");
        }
        return fixture;
    }

    /** Shmem THP for advised mappings ({@code shmem_enabled} = advise, as root) unless the host allows it already. */
    public static HostHugePagesFixture shmemThpAdvised() {
        if (HostHugePages.shmemThpAdvisable(HostHugePages.shmemThp())) return new HostHugePagesFixture(null, null);
        String before = selected(HostHugePages.SHMEM_ENABLED);
        if (before == null) skip("needs transparent huge pages for shmem: this kernel has no " + HostHugePages.SHMEM_ENABLED);
        HostHugePagesFixture fixture = new HostHugePagesFixture(HostHugePages.SHMEM_ENABLED, before);
        if (!write(HostHugePages.SHMEM_ENABLED, "advise") || !HostHugePages.shmemThpAdvisable(HostHugePages.shmemThp())) {
            fixture.close();
            skip("needs shmem THP for advised mappings and could not set " + HostHugePages.SHMEM_ENABLED + " to advise (it is " + before
                    + "; the 2 MiB setting " + HostHugePages.SHMEM_ENABLED_2M + " says " + HostHugePages.shmemThp() + "; writing needs root)");
        }
        return fixture;
    }

    private static void skip(String why) {
        System.err.println("!!! SKIPPED: " + why);
        Assumptions.abort(why);
    }

    private static String read(Path file) {
        try {
            return Files.readString(file).trim();
        } catch (IOException e) {
            return "unreadable (" + e.getMessage() + ")";
        }
    }

    private static String selected(Path file) {
        if (!Files.isReadable(file)) return null;
        String text = read(file);
        int open = text.indexOf('['), close = text.indexOf(']');
        return open >= 0 && close > open ? text.substring(open + 1, close) : text;
    }

    private static boolean write(Path file, String value) {
        try {
            Files.writeString(file, value);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    /** Puts back what was changed. */
    @Override
    public void close() {
        if (file != null && previous != null && !write(file, previous)) {
            System.err.println("!!! could not restore " + file + " to " + previous);
        }
    }
}
