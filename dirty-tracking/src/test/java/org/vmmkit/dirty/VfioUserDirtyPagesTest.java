package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.vfio.user.RequiresVfioUser;
import org.vmmkit.core.vfio.user.VfioUserContainer;
import org.vmmkit.core.vfio.user.VfioUserDevice;
import org.vmmkit.core.vfio.user.VfioUserPeer;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The dirty pages of a device nobody here wrote, merged by {@link DirtyTracker} through the unchanged
 * {@link VfioIommuDirtyPages} over a vfio-user device's DMA space. libvfio-user's sample device, when its
 * BAR0 timer fires, triggers its INTx (an eventfd we passed with SET_IRQS), then writes 4 KiB at the start
 * of its second DMA region directly through the memfd we passed with DMA_MAP (the server tracks that page:
 * GET_BITMAP reports it), and 4 KiB at the start of its first region through DMA_WRITE messages (the client
 * does those writes and tracks the page), reading both back (DMA_READ messages for the first).
 */
@RequiresVfioUser
@Timeout(60)
class VfioUserDirtyPagesTest {
    private static final int BAR0 = 0;
    private static final long FIRST = 0x100000, SECOND = 0x200000, SIZE = 0x100000;

    @RegisterExtension
    final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();

    @Test
    void pagesTheDeviceWroteDirectlyAndByMessageAreBothInTheMergedBitmap() throws Exception {
        VfioUserPeer.SampleServer server = servers.start("sample");
        try (GuestMemory memory = GuestMemory.create(List.of(new GuestMemory.Range(0, 4L << 20)));
             VfioUserDevice device = server.connect();
             Fd intx = Libc.eventfd(0, Libc.EFD_NONBLOCK, "intx");
             Arena arena = Arena.ofConfined()) {
            GuestRegion ram = memory.regions().getFirst();
            VfioUserContainer dma = device.dmaSpace(memory);
            dma.mapDma(FIRST, ram.host().asSlice(FIRST, SIZE), true, true); // the sample's region 0: DMA by messages
            dma.mapDma(SECOND, ram.host().asSlice(SECOND, SIZE), true, true); // its region 1: direct, through our memfd
            device.setIrqEventfds(VfioUserAbi.PCI_INTX_IRQ_INDEX, intx);
            DirtyTracker tracker = new DirtyTracker(memory, List.of(new VfioIommuDirtyPages(dma, memory)));
            tracker.start();
            assertEquals(1, tracker.sync(), "generation 1 reports everything; from now on only what is written");

            device.writeLong(BAR0, 0, System.currentTimeMillis() / 1000 + 2); // the timer fires in 1-2 s
            awaitReadable(intx, arena, Duration.ofSeconds(20));
            // The server is single-threaded: it answers this only after its DMA, which follows the interrupt.
            device.writeLong(BAR0, 0, System.currentTimeMillis() / 1000 + 3600);
            assertEquals(4, device.dmaWritesServed(), "4 DMA_WRITEs of 1 KiB into the first region");
            assertEquals(2, device.dmaReadsServed(), "2 DMA_READs of 2 KiB back");

            tracker.sync();
            List<Long> dirty = new ArrayList<>();
            DirtyBitmap bits = tracker.bitmap(ram);
            for (long p = bits.nextSet(0); p >= 0; p = bits.nextSet(p + 1)) dirty.add(p);
            assertEquals(List.of(FIRST / 4096, SECOND / 4096), dirty,
                    "the first region's page (written by message, tracked by the client) and the second's (written directly, reported by the server)");
            for (long base : List.of(FIRST, SECOND)) {
                for (int i = 0; i < 4; i++) {
                    MemorySegment kib = ram.host().asSlice(base + i * 1024L, 1024);
                    for (long b = 0; b < 1024; b++) assertEquals((byte) ('A' + i), kib.get(JAVA_BYTE, b), "guest RAM at 0x" + Long.toHexString(base + i * 1024L + b));
                }
            }
            assertEquals(0, device.serverCommandsRefused());
            tracker.sync();
            assertEquals(-1, tracker.bitmap(ram).nextSet(0), "read and cleared: nothing new");
            tracker.stop();
            dma.close();
        }
        assertEquals(0, server.awaitExit(Duration.ofSeconds(10)), server.logTail());
    }

    /** Waits for the eventfd to be signalled (poll with a deadline), then reads it. */
    static void awaitReadable(Fd eventfd, Arena arena, Duration limit) {
        MemorySegment pfd = arena.allocate(Libc.POLLFD);
        pfd.set(JAVA_INT, Libc.POLL_FD, eventfd.raw());
        pfd.set(JAVA_SHORT, Libc.POLL_EVENTS, Libc.POLLIN);
        int r = Libc.pollRaw(pfd, 1, (int) limit.toMillis());
        assertTrue(r == 1, "the interrupt's eventfd was not signalled within " + limit + " (poll: " + r + ")");
        assertTrue(Libc.readRaw(eventfd.raw(), arena.allocate(8)) == 8);
    }
}
