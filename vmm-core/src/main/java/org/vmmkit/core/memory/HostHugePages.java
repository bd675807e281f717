package org.vmmkit.core.memory;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What the host offers for huge pages, read from procfs and sysfs: the hugetlbfs pool of 2 MiB pages
 * ({@code /proc/meminfo}, {@code /proc/sys/vm/nr_hugepages}, {@code nr_overcommit_hugepages}) and whether
 * transparent huge pages may back shared memory ({@code /sys/kernel/mm/transparent_hugepage/shmem_enabled}).
 */
public final class HostHugePages {
    private HostHugePages() {}

    /** Where an operator sizes the pool of default-size (2 MiB here) hugetlbfs pages. */
    public static final Path NR_HUGEPAGES = Path.of("/proc/sys/vm/nr_hugepages");
    /** Where the pool may grow past {@link #NR_HUGEPAGES} on demand (surplus pages). */
    public static final Path NR_OVERCOMMIT_HUGEPAGES = Path.of("/proc/sys/vm/nr_overcommit_hugepages");
    /** Whether THP backs shmem (a memfd): {@code always within_size advise [never] deny force}. */
    public static final Path SHMEM_ENABLED = Path.of("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    /** The same for 2 MiB pages alone on kernels with multi-size THP; {@code inherit} defers to {@link #SHMEM_ENABLED}. */
    public static final Path SHMEM_ENABLED_2M = Path.of("/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled");
    private static final Path MEMINFO = Path.of("/proc/meminfo");

    /**
     * The hugetlbfs pool of the default huge page size, in pages: its size, the pages free, those free but
     * reserved by mappings already made, the surplus pages in use, and how many surplus pages it may add.
     */
    public record Pool(long total, long free, long reserved, long surplus, long overcommit, long pageSize) {
        /** Pages a new mapping can still reserve: free and unreserved, plus the surplus the pool may still add. */
        public long available() {
            return Math.max(0, free - reserved) + Math.max(0, overcommit - surplus);
        }
    }

    /** The pool as {@code /proc/meminfo} says now. */
    public static Pool pool() {
        long total = 0, free = 0, reserved = 0, surplus = 0, pageSize = HugePages.HUGE_PAGE_SIZE;
        try {
            for (String line : Files.readAllLines(MEMINFO)) {
                String[] f = line.split("\\s+");
                if (f.length < 2) continue;
                switch (f[0]) {
                    case "HugePages_Total:" -> total = Long.parseLong(f[1]);
                    case "HugePages_Free:" -> free = Long.parseLong(f[1]);
                    case "HugePages_Rsvd:" -> reserved = Long.parseLong(f[1]);
                    case "HugePages_Surp:" -> surplus = Long.parseLong(f[1]);
                    case "Hugepagesize:" -> pageSize = Long.parseLong(f[1]) * 1024;
                    default -> { }
                }
            }
            long overcommit = Files.isReadable(NR_OVERCOMMIT_HUGEPAGES) ? Long.parseLong(Files.readString(NR_OVERCOMMIT_HUGEPAGES).trim()) : 0;
            return new Pool(total, free, reserved, surplus, overcommit, pageSize);
        } catch (IOException e) {
            throw new UncheckedIOException("reading the hugetlbfs pool from " + MEMINFO + " failed", e);
        }
    }

    /**
     * The shmem THP setting that applies to 2 MiB pages: the selected word of {@link #SHMEM_ENABLED_2M} unless it is
     * {@code inherit} (or the file is absent), else of {@link #SHMEM_ENABLED}; {@code "absent"} where the kernel has no THP.
     */
    public static String shmemThp() {
        String perSize = selected(SHMEM_ENABLED_2M);
        if (perSize != null && !perSize.equals("inherit")) return perSize;
        String global = selected(SHMEM_ENABLED);
        return global == null ? "absent" : global;
    }

    /** Whether {@code madvise(MADV_HUGEPAGE)} on a memfd mapping can get transparent huge pages under {@code setting}. */
    public static boolean shmemThpAdvisable(String setting) {
        return switch (setting) {
            case "always", "within_size", "advise", "force" -> true;
            default -> false; // never, deny, absent
        };
    }

    private static String selected(Path file) {
        try {
            if (!Files.isReadable(file)) return null;
            String text = Files.readString(file);
            int open = text.indexOf('['), close = text.indexOf(']');
            return open >= 0 && close > open ? text.substring(open + 1, close) : text.trim();
        } catch (IOException e) {
            return null;
        }
    }
}
