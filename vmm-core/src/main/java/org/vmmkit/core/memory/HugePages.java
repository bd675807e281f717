package org.vmmkit.core.memory;

/**
 * What backs guest RAM (config {@code vm.hugepages}): {@link #NONE}, a memfd of base (4 KiB) pages; {@link #HUGETLB},
 * a memfd of 2 MiB hugetlbfs pages from the host's pool ({@code /proc/sys/vm/nr_hugepages}), reserved when the RAM is
 * mapped; {@link #THP}, the base memfd with {@code madvise(MADV_HUGEPAGE)}, which gets 2 MiB transparent huge pages
 * where the host's {@code shmem_enabled} allows them. Huge pages make a fresh destination take one page fault per
 * 2 MiB instead of per 4 KiB (see docs/architecture.md for what they cost).
 */
public enum HugePages {
    /** A memfd of base pages (the default). */
    NONE("none"),
    /** A hugetlbfs memfd of 2 MiB pages, reserved from the host's pool when mapped. */
    HUGETLB("hugetlb"),
    /** A base memfd advised {@code MADV_HUGEPAGE}: transparent huge pages where the host allows them for shmem. */
    THP("thp");

    /** The size of a huge page in either huge mode. */
    public static final long HUGE_PAGE_SIZE = 2L << 20;

    private final String configValue;

    HugePages(String configValue) {
        this.configValue = configValue;
    }

    /** The value as the config file spells it. */
    public String configValue() {
        return configValue;
    }

    /** Parses {@code none}, {@code hugetlb} or {@code thp}. */
    public static HugePages parse(String value) {
        for (HugePages h : values()) if (h.configValue.equals(value)) return h;
        throw new IllegalArgumentException("expected none, hugetlb or thp");
    }
}
