package org.vmmkit.core.memory;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GuestMemoryTest {

    @Test
    void eightGibVmIsReservedLazily() throws Exception {
        long before = rssKb();
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(8L << 30))) {
            assertEquals(8L << 30, mem.totalSize());
            assertEquals(2, mem.regions().size());
            assertEquals(GuestMemory.HIGH_RAM_START, mem.regions().get(1).guestAddress());
            mem.writeLong((8L << 30) + (1L << 30) - 8, 0x1234);
            assertEquals(0x1234, mem.readLong((8L << 30) + (1L << 30) - 8));
            // Creating and touching one page must not have faulted in the 8 GiB (allow 64 MiB of noise).
            assertTrue(rssKb() - before < 64 * 1024, "RSS grew by " + (rssKb() - before) + " KiB");
        }
    }

    @Test
    void residentBytesCountWhatWasWrittenAndNotWhatWasPunched() {
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(64L << 20))) {
            assertEquals(0, mem.residentBytes(), "a fresh VM's RAM costs nothing");
            var host = mem.regions().get(0).host();
            host.asSlice(0, 8L << 20).fill((byte) 1);
            assertEquals(8L << 20, mem.residentBytes());
            org.vmmkit.core.sys.Libc.madvise(host.asSlice(0, 4L << 20), org.vmmkit.core.sys.Libc.MADV_REMOVE, "test");
            assertEquals(4L << 20, mem.residentBytes(), "punched pages are freed");
            assertEquals(0, host.get(java.lang.foreign.ValueLayout.JAVA_LONG, 0), "and read as zero");
        }
    }

    @Test
    void adoptedBackingsAreMappedAtTheSameAddressesWithoutTouchingAPage() {
        try (GuestMemory source = GuestMemory.create(GuestMemory.standardLayout(32L << 20));
             GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(32L << 20))) {
            source.writeLong(1L << 20, 0x5eedL);
            long sourceResident = source.residentBytes();
            destination.writeLong(2L << 20, 0xdeadL); // the destination's own page, which the adopted view must not show
            var view = destination.slice(0, 32L << 20); // a view taken before, as KVM's slots and DMA maps are
            List<org.vmmkit.core.sys.Fd> passed = List.of(dup(source.regions().get(0).backing()));
            destination.adoptBackings(passed);
            assertEquals(sourceResident, source.residentBytes(), "adopting allocated nothing in the source's file");
            assertEquals(0x5eedL, view.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 1L << 20), "the earlier view reaches the source's pages");
            assertEquals(0, destination.readLong(2L << 20)); // (reading a hole of a shared memfd allocates a page: one more below)
            sourceResident += 4096;
            assertEquals(passed.get(0), destination.regions().get(0).backing());

            destination.dropAdoptedBackings();
            assertEquals(0xdeadL, view.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, 2L << 20), "dropped: the own pages again");
            assertTrue(passed.get(0).isClosed(), "the adopted file is closed");
            assertEquals(0x5eedL, source.readLong(1L << 20));
            assertEquals(sourceResident, source.residentBytes());
        }
    }

    @Test
    void aBackingSmallerThanItsRegionIsRefusedWithBothSizes() {
        try (GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(8L << 20))) {
            org.vmmkit.core.sys.Fd small = org.vmmkit.core.sys.Libc.memfdCreate("small");
            small.truncate(4L << 20);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> destination.adoptBackings(List.of(small)));
            assertTrue(e.getMessage().contains("4194304 bytes") && e.getMessage().contains("8388608"), e.getMessage());
            small.close();
        }
    }

    /** Another fd of the same file, as SCM_RIGHTS gives the receiver. */
    private static org.vmmkit.core.sys.Fd dup(org.vmmkit.core.sys.Fd fd) {
        return org.vmmkit.core.sys.Libc.open("/proc/self/fd/" + fd.raw(), org.vmmkit.core.sys.Libc.O_RDWR | org.vmmkit.core.sys.Libc.O_CLOEXEC);
    }

    @Test
    void memoryTheHostMappedIsWrappedAndLeftToTheHost() {
        org.vmmkit.core.sys.Fd file = org.vmmkit.core.sys.Libc.memfdCreate("host-ram");
        file.truncate(4L << 20);
        var mapping = org.vmmkit.core.sys.Libc.mmap(4L << 20, org.vmmkit.core.sys.Libc.PROT_READ | org.vmmkit.core.sys.Libc.PROT_WRITE,
                org.vmmkit.core.sys.Libc.MAP_SHARED, file.raw(), 0, "host-ram");
        try {
            GuestMemory mem = GuestMemory.wrap(List.of(new GuestMemory.HostRegion(1L << 20, mapping, file)));
            mem.writeLong((1L << 20) + 4096, 0xABCDL);
            assertEquals(0xABCDL, mapping.get(java.lang.foreign.ValueLayout.JAVA_LONG, 4096), "guest address 1 MiB + 4 KiB is the host's offset 4 KiB");
            assertEquals(4096, mem.residentBytes());
            mem.close();
            assertEquals(0xABCDL, mapping.get(java.lang.foreign.ValueLayout.JAVA_LONG, 4096), "closing left the host's mapping alone");
            assertTrue(file.raw() >= 0 && org.vmmkit.core.sys.Libc.allocatedBytes(file) == 4096, "and its file open");
        } finally {
            org.vmmkit.core.sys.Libc.munmap(mapping, "host-ram");
            file.close();
        }
    }

    @Test
    void accessInTheHoleBelowFourGibNamesTheAddress() {
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(4L << 30))) {
            GuestMemoryException e = assertThrows(GuestMemoryException.class, () -> mem.writeLong(0xC000_0000L, 1));
            assertTrue(e.getMessage().contains("0xc0000000"), e.getMessage());
        }
    }

    @Test
    void sliceAcrossTheEndOfARegionIsRefused() {
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(1L << 20))) {
            GuestMemoryException e = assertThrows(GuestMemoryException.class, () -> mem.slice((1L << 20) - 4, 8));
            assertTrue(e.getMessage().contains("crosses the end"), e.getMessage());
            assertThrows(GuestMemoryException.class, () -> mem.slice(-8, 8));
            assertThrows(GuestMemoryException.class, () -> mem.slice(0, -1));
            assertThrows(GuestMemoryException.class, () -> mem.slice(Long.MAX_VALUE, 1));
        }
    }

    @Test
    void memoryIsSharedThroughTheMemfd() {
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(1L << 20))) {
            mem.write(0x2000, new byte[] {1, 2, 3, 4});
            GuestRegion r = mem.regionOf(0x2000);
            var other = r.backing().mmap(r.size(), org.vmmkit.core.sys.Libc.PROT_READ, org.vmmkit.core.sys.Libc.MAP_SHARED, 0);
            try {
                assertArrayEquals(new byte[] {1, 2, 3, 4}, other.asSlice(0x2000, 4).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE));
            } finally {
                org.vmmkit.core.sys.Libc.munmap(other, "second mapping");
            }
        }
    }

    @Test
    void hostMappingsAre2MibAligned() {
        for (int i = 0; i < 5; i++) {
            try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout((4L << 30) + (6L << 20)))) {
                for (GuestRegion r : mem.regions()) assertEquals(0, r.host().address() % GuestMemory.HOST_ALIGNMENT, r.toString());
            }
        }
    }

    @Test
    void everyRegionSitsBetweenInaccessibleGuardPages() {
        // Two regions (below and above the hole) of a size that is not a multiple of 2 MiB, so the slop differs.
        try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout((3L << 30) + (6L << 20) + 4096))) {
            for (GuestRegion r : mem.regions()) {
                long start = r.host().address(), end = start + r.size();
                String where = r + " at " + ProcMaps.around(start, end);
                assertEquals("---p", ProcMaps.permissionsAt(start - GuestMemory.PAGE_SIZE), "the page before " + where);
                assertEquals("rw-s", ProcMaps.permissionsAt(start), where);
                assertEquals("rw-s", ProcMaps.permissionsAt(end - 1), where);
                assertEquals("---p", ProcMaps.permissionsAt(end), "the page after " + where);
            }
        }
    }

    @Test
    void closingReleasesTheRegionsAndTheirGuards() {
        long before = ProcMaps.vmSizeKb();
        for (int i = 0; i < 200; i++) {
            try (GuestMemory mem = GuestMemory.create(GuestMemory.standardLayout(1L << 20))) {
                mem.writeLong(0, i);
            }
        }
        long grown = ProcMaps.vmSizeKb() - before;
        // A leaked reservation would cost 5 MiB of address space each: 1000 MiB here.
        assertTrue(grown < 128 * 1024, "the address space grew by " + grown + " KiB over 200 closed 1 MiB VMs");
    }

    @Test
    void overlappingRangesAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> GuestMemory.create(java.util.List.of(
                new GuestMemory.Range(0, 1 << 20), new GuestMemory.Range(1 << 19, 1 << 20))));
    }

    private static long rssKb() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
        }
        throw new IllegalStateException("no VmRSS");
    }
}
