package org.vmmkit.core.memory;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.sys.Libc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Guest RAM on huge pages (vm.hugepages): hugetlbfs reserved at creation, or shmem THP advised. */
class HugePagesTest {
    private static final long MIB = 1L << 20, HUGE = HugePages.HUGE_PAGE_SIZE;

    @Test
    void hugetlbRangesMustBeWhole2MibPages() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> GuestMemory.create(List.of(new GuestMemory.Range(0, 3 * MIB)), HugePages.HUGETLB));
        assertTrue(e.getMessage().contains("vm.hugepages = hugetlb") && e.getMessage().contains("3145728 bytes is not a multiple of 2 MiB"),
                e.getMessage());
    }

    @Test
    void aShortPoolIsRefusedNamingNrHugepagesAndThePagesNeeded() {
        long pages = HostHugePages.pool().available() + 1; // one more than the host has: refused before anything is mapped
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> GuestMemory.create(List.of(new GuestMemory.Range(0, pages * HUGE)), HugePages.HUGETLB));
        assertTrue(e.getMessage().contains("needs " + pages + " free 2 MiB huge pages"), e.getMessage());
        assertTrue(e.getMessage().contains("raise /proc/sys/vm/nr_hugepages by at least 1"), e.getMessage());
    }

    @Test
    void hugetlbRamIsReservedAtCreationAndCosts2MibPerPageTouched() {
        try (HostHugePagesFixture pool = HostHugePagesFixture.hugetlbPages(4);
             GuestMemory mem = GuestMemory.create(List.of(new GuestMemory.Range(0, 4 * HUGE)), HugePages.HUGETLB)) {
            GuestRegion r = mem.regions().get(0);
            assertEquals(HUGE, mem.backingPageSize(r));
            assertEquals(HugePages.HUGETLB, mem.hugePages());
            assertEquals(HUGE, Libc.blockSize(r.backing()), "hugetlbfs gives its page size as the block size");
            assertTrue(HostHugePages.pool().reserved() >= 4, "the mapping reserved its four pages: " + HostHugePages.pool());
            assertEquals(0, mem.residentBytes(), "reserved, not yet allocated");
            mem.writeLong(HUGE + 8, 42);
            assertEquals(HUGE, mem.residentBytes(), "one write allocates one whole huge page");
            assertEquals(42, mem.readLong(HUGE + 8));
            Libc.madvise(r.host().asSlice(HUGE, HUGE), Libc.MADV_REMOVE, "test");
            assertEquals(0, mem.residentBytes(), "a whole huge page punched is freed");
        }
    }

    @Test
    void aWrappedHugetlbfsFileIsSeenAsHugePages() {
        try (HostHugePagesFixture pool = HostHugePagesFixture.hugetlbPages(1);
             GuestMemory host = GuestMemory.create(List.of(new GuestMemory.Range(0, HUGE)), HugePages.HUGETLB);
             GuestMemory wrapped = GuestMemory.wrap(List.of(new GuestMemory.HostRegion(0, host.regions().get(0).host(), host.regions().get(0).backing())))) {
            assertEquals(HUGE, wrapped.backingPageSize(wrapped.regions().get(0)));
        }
        try (GuestMemory base = GuestMemory.create(GuestMemory.standardLayout(4 * MIB))) {
            assertEquals(GuestMemory.PAGE_SIZE, base.backingPageSize(base.regions().get(0)));
        }
    }

    @Test
    void thpRamGets2MibPagesWhereShmemThpIsAdvisedAndFreesOnlyWholeOnes() throws Exception {
        try (HostHugePagesFixture thp = HostHugePagesFixture.shmemThpAdvised();
             GuestMemory mem = GuestMemory.create(List.of(new GuestMemory.Range(0, 8 * MIB)), HugePages.THP)) {
            GuestRegion r = mem.regions().get(0);
            assertEquals(GuestMemory.PAGE_SIZE, mem.backingPageSize(r), "shmem splits its huge pages as needed: 4 KiB semantics");
            Libc.madvise(r.host(), Libc.MADV_POPULATE_WRITE, "test");
            long pmdMapped = smapsField(r.host(), "ShmemPmdMapped:");
            assertTrue(pmdMapped >= 2 * MIB, "populated advised shmem is mapped in 2 MiB pages: ShmemPmdMapped " + pmdMapped + " bytes");
            r.host().set(ValueLayout.JAVA_LONG, 4 * MIB + 4096, 5);
            Libc.madvise(r.host().asSlice(4 * MIB + 4096, 4096), Libc.MADV_REMOVE, "test"); // a 4 KiB punch inside a huge page
            assertEquals(0, r.host().get(ValueLayout.JAVA_LONG, 4 * MIB + 4096));
            // Measured on 6.18: the part of a shmem huge page punched is zeroed, the page not split, nothing freed;
            // only whole huge pages punched are (what a destination's zero runs cost on thp, docs/architecture.md).
            assertEquals(8 * MIB, mem.residentBytes(), "a 4 KiB punch inside a shmem huge page frees nothing");
            Libc.madvise(r.host().asSlice(4 * MIB, HUGE), Libc.MADV_REMOVE, "test");
            assertEquals(6 * MIB, mem.residentBytes(), "a whole huge page punched is freed");
        }
    }

    /** A field of /proc/self/smaps for the mapping starting at {@code mapping}'s address, in bytes. */
    private static long smapsField(MemorySegment mapping, String field) throws Exception {
        boolean inside = false;
        for (String line : Files.readAllLines(Path.of("/proc/self/smaps"))) {
            String[] f = line.split("\\s+");
            if (f[0].contains("-") && f.length >= 5) {
                inside = Long.parseUnsignedLong(f[0].substring(0, f[0].indexOf('-')), 16) == mapping.address();
            } else if (inside && f[0].equals(field)) {
                return Long.parseLong(f[1]) * 1024;
            }
        }
        throw new AssertionError("no mapping at 0x" + Long.toHexString(mapping.address()) + " in /proc/self/smaps");
    }
}
