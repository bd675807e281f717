package org.vmmkit.migration.ram;

import java.lang.foreign.MemorySegment;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.memory.HostHugePagesFixture;
import org.vmmkit.core.memory.HugePages;
import org.vmmkit.dirty.DirtyBitmap;
import org.vmmkit.migration.wire.FrameCodec;
import org.vmmkit.migration.wire.FrameType;
import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;

import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** RAM over loopback TCP: every page arrives, zero pages as addresses only, nothing written outside RAM. */
@Timeout(60)
class RamTransferTest {
    private static final long MIB = 1 << 20, PAGE = 4096;

    private static StreamHeader headerOf(GuestMemory memory) {
        List<StreamHeader.Range> ranges = new ArrayList<>();
        for (GuestRegion r : memory.regions()) ranges.add(new StreamHeader.Range(r.guestAddress(), r.size()));
        return new StreamHeader(StreamHeader.VERSION, (int) PAGE, ranges, List.of(), 1);
    }

    /** Random pages, with every 5th page and one 2 MiB stretch left zero. */
    private static long fill(GuestMemory memory) {
        SplittableRandom random = new SplittableRandom(9);
        long zero = 0;
        for (GuestRegion r : memory.regions()) {
            for (long p = 0; p < r.size() / PAGE; p++) {
                boolean leaveZero = p % 5 == 0 || (p >= 1000 && p < 1512);
                if (leaveZero) {
                    zero++;
                    continue;
                }
                for (long o = 0; o < PAGE; o += 8) r.host().set(JAVA_LONG, p * PAGE + o, random.nextLong());
            }
        }
        return zero;
    }

    @Test
    void everyPageArrivesAndZeroPagesTravelAsAddresses() throws Exception {
        try (GuestMemory source = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(64 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            long zeroPages = fill(source);
            for (GuestRegion r : destination.regions()) r.host().fill((byte) 0xAB); // stale content to be overwritten
            CompletableFuture<long[]> received = CompletableFuture.supplyAsync(() -> {
                try (SocketChannel in = server.accept()) {
                    StreamHeader.read(in).checkCompatibleWith(headerOf(destination));
                    FrameCodec codec = new FrameCodec(64 * MIB);
                    RamReceiver receiver = new RamReceiver(new MemoryViews(destination));
                    while (true) {
                        FrameType t = codec.readHeader(in);
                        if (t == FrameType.COMPLETE) {
                            codec.verify();
                            return new long[] {receiver.ramPages(), receiver.zeroPages()};
                        }
                        receiver.apply(in, codec);
                    }
                } catch (Exception e) {
                    throw new RuntimeException(e);
                }
            });
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                var header = headerOf(source).encode();
                while (header.hasRemaining()) out.write(header);
                FrameCodec codec = new FrameCodec(64 * MIB);
                RamSender sender = new RamSender(new MemoryViews(source), codec, 256);
                for (GuestRegion r : source.regions()) {
                    try (DirtyBitmap all = new DirtyBitmap(r.size() / PAGE)) {
                        all.setAll();
                        sender.send(out, r, all);
                    }
                }
                codec.write(out, FrameType.COMPLETE, sender.frames(), 0, null, null);
                long[] counts = received.get(30, TimeUnit.SECONDS);
                assertEquals(zeroPages, sender.zeroPages());
                assertEquals(64 * MIB / PAGE - zeroPages, sender.ramPages());
                assertEquals(sender.ramPages(), counts[0]);
                assertEquals(sender.zeroPages(), counts[1]);
            }
            for (int i = 0; i < source.regions().size(); i++) {
                assertEquals(-1, source.regions().get(i).host().mismatch(destination.regions().get(i).host()), "region " + i);
            }
        }
    }

    @Test
    void zeroPagesCostTheDestinationNoMemory() throws Exception {
        try (GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            destination.regions().get(0).host().asSlice(0, 4 * MIB).fill((byte) 0x11); // an earlier attempt's data, say
            assertEquals(4 * MIB, destination.residentBytes());
            CompletableFuture<Throwable> received = CompletableFuture.supplyAsync(() -> {
                try (SocketChannel in = server.accept()) {
                    FrameCodec codec = new FrameCodec(64 * MIB);
                    RamReceiver receiver = new RamReceiver(new MemoryViews(destination));
                    for (int i = 0; i < 2; i++) {
                        codec.readHeader(in);
                        receiver.apply(in, codec);
                    }
                    return null;
                } catch (Throwable t) {
                    return t;
                }
            });
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                FrameCodec codec = new FrameCodec(64 * MIB);
                codec.write(out, FrameType.ZERO_RUN, 0, 4 * MIB / PAGE, null, null); // over the written pages
                codec.write(out, FrameType.ZERO_RUN, 8 * MIB, 4 * MIB / PAGE, null, null); // over never-written ones
                assertEquals(null, received.get(30, TimeUnit.SECONDS));
            }
            assertEquals(0, destination.residentBytes(), "zero pages are holes: the written ones released, the others never allocated");
            var ram = destination.regions().get(0).host();
            for (long o = 0; o < 4 * MIB; o += 4096) assertEquals(0, ram.get(java.lang.foreign.ValueLayout.JAVA_LONG, o));
        }
    }

    @Test
    void aFrameOutsideTheDestinationsRamIsRefusedAndNothingIsWritten() throws Exception {
        try (GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            destination.regions().get(0).host().fill((byte) 0x11);
            CompletableFuture<Throwable> received = CompletableFuture.supplyAsync(() -> {
                try (SocketChannel in = server.accept()) {
                    FrameCodec codec = new FrameCodec(64 * MIB);
                    RamReceiver receiver = new RamReceiver(new MemoryViews(destination));
                    codec.readHeader(in);
                    receiver.apply(in, codec);
                    return null;
                } catch (Throwable t) {
                    return t;
                }
            });
            try (SocketChannel out = SocketChannel.open(server.getLocalAddress())) {
                // 16 pages starting 8 pages before the end of RAM: the tail lies outside.
                var payload = java.nio.ByteBuffer.allocateDirect((int) (16 * (PAGE + 4))); // 16 pages and their CRC table
                new FrameCodec(64 * MIB).write(out, FrameType.RAM, 16 * MIB - 8 * PAGE, 16, payload, null);
                Throwable t = received.get(30, TimeUnit.SECONDS);
                assertTrue(t instanceof WireFormatException && t.getMessage().contains("targets memory this VM does not have"),
                        String.valueOf(t));
            }
            var ram = destination.regions().get(0).host();
            for (long o = 0; o < ram.byteSize(); o += 4096) assertEquals(0x11, ram.get(java.lang.foreign.ValueLayout.JAVA_BYTE, o));
        }
    }

    @Test
    void aPageTornInPreCopyMustArriveIntactLaterAndIsFatalInStopAndCopy() throws Exception {
        try (GuestMemory source = GuestMemory.create(GuestMemory.standardLayout(4 * MIB));
             GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(4 * MIB));
             java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(java.nio.file.Files.createTempFile("torn", ".bin"),
                     java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE,
                     java.nio.file.StandardOpenOption.DELETE_ON_CLOSE)) {
            fill(source);
            GuestRegion region = source.regions().get(0);
            RamSender sender = new RamSender(new MemoryViews(source), new FrameCodec(64 * MIB), 256);
            // Frame 0: pages 8..11, then the "guest" changes page 9 after its CRC: simulated by changing the stream.
            sender.sendRun(ch, region, 8, 4);
            ch.write(java.nio.ByteBuffer.wrap(new byte[] {42}), FrameCodec.HEADER + PAGE + 17);
            long afterFirst = ch.size();
            // Frame 1: page 9 again, intact (the next round resends what the guest dirtied).
            sender.sendRun(ch, region, 9, 1);
            ch.position(0);
            FrameCodec in = new FrameCodec(64 * MIB);
            RamReceiver receiver = new RamReceiver(new MemoryViews(destination));
            receiver.allowTorn(true);
            in.readHeader(ch);
            receiver.apply(ch, in);
            assertEquals(1, receiver.tornFrames());
            WireFormatException e = assertThrows(WireFormatException.class, receiver::checkNoTornPages);
            assertTrue(e.getMessage().contains("1 pages") && e.getMessage().contains("first at 0x9000"), e.getMessage());
            while (ch.position() < ch.size()) { // the rest of round one (pages 10, 11), then the resent page 9
                in.readHeader(ch);
                receiver.apply(ch, in);
            }
            receiver.checkNoTornPages();
            assertEquals(1, receiver.tornFrames(), "only page 9 was torn, and only once");
            assertEquals(-1, region.host().asSlice(8 * PAGE, 4 * PAGE).mismatch(destination.regions().get(0).host().asSlice(8 * PAGE, 4 * PAGE)));
            // In stop-and-copy the same torn frame is fatal at once.
            ch.position(0);
            FrameCodec again = new FrameCodec(64 * MIB);
            RamReceiver strict = new RamReceiver(new MemoryViews(destination));
            again.readHeader(ch);
            WireFormatException fatal = assertThrows(WireFormatException.class, () -> strict.apply(ch, again));
            assertTrue(fatal.getMessage().contains("the page at 0x9000 fails its CRC32C"), fatal.getMessage());
            assertTrue(afterFirst > 0);
        }
    }

    /** A channel that takes every byte and keeps none: isolates the sender's own allocation from a channel's. */
    private static final class Discard implements java.nio.channels.GatheringByteChannel {
        long bytes;

        public long write(java.nio.ByteBuffer[] srcs, int offset, int length) {
            long n = 0;
            for (int i = offset; i < offset + length; i++) {
                n += srcs[i].remaining();
                srcs[i].position(srcs[i].limit());
            }
            bytes += n;
            return n;
        }

        public long write(java.nio.ByteBuffer[] srcs) {
            return write(srcs, 0, srcs.length);
        }

        public int write(java.nio.ByteBuffer src) {
            int n = src.remaining();
            src.position(src.limit());
            bytes += n;
            return n;
        }

        public boolean isOpen() {
            return true;
        }

        public void close() {
        }
    }

    /** What the host must offer for guest RAM of {@code bytes} backed as {@code pages} says; skips the test where it cannot. */
    private static AutoCloseable hostOffers(HugePages pages, long bytes) {
        return switch (pages) {
            case NONE -> () -> { };
            case HUGETLB -> HostHugePagesFixture.hugetlbPages(bytes / HugePages.HUGE_PAGE_SIZE);
            case THP -> HostHugePagesFixture.shmemThpAdvised();
        };
    }

    @ParameterizedTest(name = "vm.hugepages = {0}")
    @EnumSource(HugePages.class)
    void sendingAGenerationAllocatesNothing(HugePages pages) throws Exception {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        try (AutoCloseable host = hostOffers(pages, 16 * MIB);
             GuestMemory source = GuestMemory.create(List.of(new GuestMemory.Range(0, 16 * MIB)), pages);
             DirtyBitmap bitmap = new DirtyBitmap(16 * MIB / PAGE)) {
            fill(source);
            for (long p = 0; p < bitmap.pages(); p += 3) bitmap.set(p); // many short runs, zero and not
            GuestRegion region = source.regions().get(0);
            RamSender sender = new RamSender(new MemoryViews(source), new FrameCodec(64 * MIB), 256);
            Discard sink = new Discard();
            for (int warm = 0; warm < 20; warm++) sender.send(sink, region, bitmap);
            // Five measured sends of ~1366 frames each. Per-frame allocation would show in every one of them;
            // a deoptimization can materialize a few objects that escape analysis had removed, once. So: at
            // least one send allocates exactly nothing, and all five together far less than a byte a frame.
            long overhead = -(threads.getCurrentThreadAllocatedBytes() - threads.getCurrentThreadAllocatedBytes());
            long framesBefore = sender.frames();
            long min = Long.MAX_VALUE, total = 0;
            for (int round = 0; round < 5; round++) {
                long start = threads.getCurrentThreadAllocatedBytes();
                sender.send(sink, region, bitmap);
                long allocated = threads.getCurrentThreadAllocatedBytes() - start + overhead;
                min = Math.min(min, allocated);
                total += allocated;
            }
            long frames = sender.frames() - framesBefore;
            assertTrue(frames > 5000, "frames " + frames);
            assertEquals(0, min, pages + ": a steady-state send of " + frames / 5 + " frames allocates nothing");
            assertTrue(total < 1024, total + " bytes over " + frames + " frames");
        }
    }

    private static final class MemorySegmentMismatch {
        static long of(java.lang.foreign.MemorySegment a, java.lang.foreign.MemorySegment b, long offset, long length) {
            return java.lang.foreign.MemorySegment.mismatch(a, offset, offset + length, b, offset, offset + length);
        }
    }

    /** Records what is written into one direct buffer, then replays it as a readable channel; allocates nothing itself. */
    private static final class Tape implements java.nio.channels.GatheringByteChannel, java.nio.channels.ReadableByteChannel {
        final java.nio.ByteBuffer bytes;
        int readAt;

        Tape(int capacity) {
            bytes = java.nio.ByteBuffer.allocateDirect(capacity);
        }

        public long write(java.nio.ByteBuffer[] srcs, int offset, int length) {
            long n = 0;
            for (int i = offset; i < offset + length; i++) n += write(srcs[i]);
            return n;
        }

        public long write(java.nio.ByteBuffer[] srcs) {
            return write(srcs, 0, srcs.length);
        }

        public int write(java.nio.ByteBuffer src) {
            int n = src.remaining();
            bytes.put(src);
            return n;
        }

        public int read(java.nio.ByteBuffer dst) {
            if (readAt == bytes.position()) return -1;
            int n = Math.min(dst.remaining(), bytes.position() - readAt);
            dst.put(dst.position(), bytes, readAt, n);
            dst.position(dst.position() + n);
            readAt += n;
            return n;
        }

        public boolean isOpen() {
            return true;
        }

        public void close() {
        }
    }

    @Test
    void theZeroCheckNeverReadsAPageThatWasNeverWritten() throws Exception {
        try (GuestMemory source = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             GuestMemory destination = GuestMemory.create(GuestMemory.standardLayout(16 * MIB));
             DirtyBitmap bitmap = new DirtyBitmap(16 * MIB / PAGE)) {
            var from = source.regions().get(0).host();
            for (long p = 0; p < 64; p++) from.set(java.lang.foreign.ValueLayout.JAVA_LONG, p * PAGE, p + 1); // 256 KiB of data
            from.set(java.lang.foreign.ValueLayout.JAVA_LONG, 8 * MIB + 104, 7); // one page of data amid holes
            from.set(java.lang.foreign.ValueLayout.JAVA_LONG, 12 * MIB, 0); // written, but zero: data in the file, a zero page
            long resident = source.residentBytes();
            assertEquals(66 * PAGE, resident);
            for (long p = 0; p < bitmap.pages(); p++) bitmap.set(p);
            Tape tape = new Tape((int) (2 * MIB));
            RamSender sender = new RamSender(new MemoryViews(source), new FrameCodec(64 * MIB), 256);
            sender.send(tape, source.regions().get(0), bitmap);
            assertEquals(resident, source.residentBytes(), "sending every page allocated none of the holes");
            assertEquals(65, sender.ramPages());
            assertEquals(bitmap.pages() - 65, sender.zeroPages());
            RamReceiver receiver = new RamReceiver(new MemoryViews(destination), true);
            FrameCodec codec = new FrameCodec(64 * MIB);
            for (long f = 0; f < sender.frames(); f++) {
                codec.readHeader(tape);
                receiver.apply(tape, codec);
            }
            var to = destination.regions().get(0).host();
            for (long p = 0; p < bitmap.pages(); p++) assertEquals(-1, MemorySegmentMismatch.of(from, to, p * PAGE, PAGE), "page " + p);
        }
    }

    @ParameterizedTest(name = "vm.hugepages = {0}")
    @EnumSource(HugePages.class)
    void receivingFramesAllocatesNothing(HugePages pages) throws Exception {
        com.sun.management.ThreadMXBean threads = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
        for (boolean checksums : new boolean[] {true, false}) {
            try (AutoCloseable host = hostOffers(pages, 32 * MIB);
                 GuestMemory source = GuestMemory.create(List.of(new GuestMemory.Range(0, 16 * MIB)), pages);
                 GuestMemory destination = GuestMemory.create(List.of(new GuestMemory.Range(0, 16 * MIB)), pages);
                 DirtyBitmap bitmap = new DirtyBitmap(16 * MIB / PAGE)) {
                fill(source);
                for (long p = 0; p < bitmap.pages(); p += 3) bitmap.set(p); // many short runs, zero and not
                Tape tape = new Tape((int) (20 * MIB));
                RamSender sender = new RamSender(new MemoryViews(source), new FrameCodec(64 * MIB), 256, checksums);
                sender.send(tape, source.regions().get(0), bitmap);
                long frames = sender.frames();
                RamReceiver receiver = new RamReceiver(new MemoryViews(destination), checksums);
                PopulateAhead ahead = new PopulateAhead(destination, 8 * MIB); // reported to after every frame, as a destination does
                receiver.populateAhead(ahead);
                FrameCodec codec = new FrameCodec(64 * MIB);
                long min = Long.MAX_VALUE, total = 0;
                for (int round = 0; round < 25; round++) { // 20 to warm up, 5 measured
                    tape.readAt = 0;
                    codec.sequenceFrom(0); // the same recorded frames again: their sequence starts over
                    long start = threads.getCurrentThreadAllocatedBytes();
                    for (long f = 0; f < frames; f++) {
                        codec.readHeader(tape);
                        receiver.apply(tape, codec);
                    }
                    long allocated = threads.getCurrentThreadAllocatedBytes() - start;
                    if (round >= 20) {
                        min = Math.min(min, allocated);
                        total += allocated;
                    }
                }
                ahead.close();
                var from = source.regions().get(0).host();
                var to = destination.regions().get(0).host();
                for (long p = 0; p < bitmap.pages(); p += 3) {
                    assertEquals(-1, MemorySegmentMismatch.of(from, to, p * PAGE, PAGE), "page " + p + " rebuilt by the replayed frames");
                }
                assertEquals(0, min, pages + ", checksums " + checksums + ": a steady-state receive of " + frames + " frames allocates nothing");
                assertTrue(total < 1024, total + " bytes over " + 5 * frames + " frames");
            }
        }
    }

    @Test
    void aZeroRunOnHugetlbFreesWholeHugePagesAndClearsItsEdgesWithoutAllocating() throws Exception {
        long huge = org.vmmkit.core.memory.HugePages.HUGE_PAGE_SIZE;
        try (var pool = org.vmmkit.core.memory.HostHugePagesFixture.hugetlbPages(4);
             GuestMemory destination = GuestMemory.create(List.of(new GuestMemory.Range(0, 4 * huge)), org.vmmkit.core.memory.HugePages.HUGETLB)) {
            var to = destination.regions().get(0).host();
            to.asSlice(0, 2 * huge).fill((byte) 0xAB); // huge pages 0 and 1 hold data; 2 was never written
            to.asSlice(3 * huge, PAGE).fill((byte) 1); // 3 holds one page of data, which the second run zeroes
            assertEquals(3 * huge, destination.residentBytes());
            Tape tape = new Tape(4096);
            FrameCodec writer = new FrameCodec(64 * MIB);
            long[][] runs = {
                    {MIB, huge + huge / 4},             // from the middle of page 0 into page 1: two edges, both mapped
                    {2 * huge + PAGE, 2 * huge - 2 * PAGE}, // inside pages 2 (never written: not allocated) and 3 (the rest zero: freed)
                    {0, 2 * huge},                      // pages 0 and 1 whole: punched, freed
            };
            for (long[] run : runs) writer.write(tape, FrameType.ZERO_RUN, run[0], run[1] / PAGE, null, null);
            RamReceiver receiver = new RamReceiver(new MemoryViews(destination), true);
            FrameCodec codec = new FrameCodec(64 * MIB);
            codec.readHeader(tape);
            receiver.apply(tape, codec);
            assertEquals((byte) 0xAB, to.get(java.lang.foreign.ValueLayout.JAVA_BYTE, MIB - 1), "before the run: untouched");
            assertEquals(-1, to.asSlice(MIB, huge + huge / 4).mismatch(MemorySegment.ofArray(new byte[(int) (huge + huge / 4)])), "the run reads zero");
            assertEquals((byte) 0xAB, to.get(java.lang.foreign.ValueLayout.JAVA_BYTE, MIB + huge + huge / 4), "after the run: untouched");
            assertEquals(3 * huge, destination.residentBytes(), "edges next to data are cleared in place");
            codec.readHeader(tape);
            receiver.apply(tape, codec);
            assertEquals(2 * huge, destination.residentBytes(),
                    "a zero run allocates no never-written huge page, and frees one whose rest reads zero");
            codec.readHeader(tape);
            receiver.apply(tape, codec);
            assertEquals(0, destination.residentBytes(), "whole huge pages of zeros are freed");
            assertEquals(-1, to.mismatch(MemorySegment.ofArray(new byte[(int) (4 * huge)])));
        }
    }

    @Test
    void onHugetlbTheZeroCheckAllocatesNoHoleAndSeesPagesAnotherMappingWrote() throws Exception {
        long huge = org.vmmkit.core.memory.HugePages.HUGE_PAGE_SIZE;
        try (var pool = org.vmmkit.core.memory.HostHugePagesFixture.hugetlbPages(8);
             GuestMemory source = GuestMemory.create(List.of(new GuestMemory.Range(0, 4 * huge)), org.vmmkit.core.memory.HugePages.HUGETLB);
             GuestMemory destination = GuestMemory.create(List.of(new GuestMemory.Range(0, 4 * huge)), org.vmmkit.core.memory.HugePages.HUGETLB);
             DirtyBitmap bitmap = new DirtyBitmap(4 * huge / PAGE)) {
            GuestRegion region = source.regions().get(0);
            var from = region.host();
            for (long p = 0; p < 64; p++) from.set(java.lang.foreign.ValueLayout.JAVA_LONG, p * PAGE, p + 1); // data in huge page 0
            // Huge page 2 written only through a second mapping of the file, as a device process's DMA would:
            // absent from this process's page tables, so mincore alone would call it a hole.
            MemorySegment other = org.vmmkit.core.sys.Libc.mmap(4 * huge, org.vmmkit.core.sys.Libc.PROT_READ | org.vmmkit.core.sys.Libc.PROT_WRITE,
                    org.vmmkit.core.sys.Libc.MAP_SHARED, region.backing().raw(), 0, "second mapping");
            try {
                other.set(java.lang.foreign.ValueLayout.JAVA_LONG, 2 * huge + 3 * PAGE + 16, 99);
            } finally {
                org.vmmkit.core.sys.Libc.munmap(other, "second mapping");
            }
            assertEquals(2 * huge, source.residentBytes());
            for (long p = 0; p < bitmap.pages(); p++) bitmap.set(p);
            Tape tape = new Tape((int) (2 * MIB));
            RamSender sender = new RamSender(new MemoryViews(source), new FrameCodec(64 * MIB), 256);
            sender.send(tape, region, bitmap);
            assertEquals(2 * huge, source.residentBytes(), "the never-written huge pages 1 and 3 were not allocated by the zero check");
            assertEquals(65, sender.ramPages(), "64 pages of page 0 and the one written through the other mapping");
            RamReceiver receiver = new RamReceiver(new MemoryViews(destination), true);
            FrameCodec codec = new FrameCodec(64 * MIB);
            for (long f = 0; f < sender.frames(); f++) {
                codec.readHeader(tape);
                receiver.apply(tape, codec);
            }
            assertEquals(2 * huge, destination.residentBytes(), "the destination allocated only the huge pages holding data");
            var to = destination.regions().get(0).host(); // (reading a hugetlbfs hole through a mapping allocates it: checked last)
            assertEquals(-1, MemorySegmentMismatch.of(from, to, 0, 4 * huge));
            assertEquals(99, to.get(java.lang.foreign.ValueLayout.JAVA_LONG, 2 * huge + 3 * PAGE + 16));
        }
    }

}
