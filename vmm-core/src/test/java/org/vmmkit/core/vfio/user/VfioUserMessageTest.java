package org.vmmkit.core.vfio.user;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.abi.VfioAbi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The message layer and the commands against a scripted server (no peer needed): every reply is checked,
 * a dead, silent or confused server is an error naming the device, the command and the errno, never a hang,
 * and requests are chunked to 64 KiB messages.
 */
@Timeout(30)
class VfioUserMessageTest {
    private static final VfioUserDevice.Options QUICK = new VfioUserDevice.Options(Duration.ofMillis(300));
    private Path dir;
    private FakeServer server;

    @BeforeEach
    void dir() throws IOException {
        dir = Files.createTempDirectory("vmmkit-vu");
    }

    @AfterEach
    void cleanUp() throws IOException {
        if (server != null) server.close();
        Files.deleteIfExists(dir);
    }

    private VfioUserDevice connect(int regionSize, FakeServer.Handler handler, VfioUserDevice.Options options) throws IOException {
        server = FakeServer.start(dir.resolve("fake.sock"), regionSize, handler);
        return VfioUserDevice.connect(server.socket(), "fake0", options);
    }

    private VfioUserDevice connect(FakeServer.Handler handler) throws IOException {
        return connect(4096, handler, QUICK);
    }

    private static FakeServer.Handler onRead(FakeServer.Handler forReads) {
        return (m, s) -> {
            if (m.cmd() == VfioUserAbi.REGION_READ) forReads.handle(m, s);
            else s.standard(m);
        };
    }

    @Test
    void versionIsSentFirstWithNulTerminatedJsonAndTheServersCapabilitiesAreRead() throws IOException {
        try (VfioUserDevice d = connect((m, s) -> s.standard(m))) {
            FakeServer.Message version = server.received.get(0);
            assertEquals(VfioUserAbi.VERSION, version.cmd());
            assertEquals(0, version.body().getShort(0));
            assertEquals(2, version.body().getShort(2));
            assertEquals(0, version.payload()[version.payload().length - 1], "the JSON ends with a NUL counted in msg_size");
            String json = new String(version.payload(), 4, version.payload().length - 5);
            assertTrue(json.contains("\"migration\":{\"pgsize\":4096}"), json);
            assertEquals(1 << 20, d.capabilities().maxDataXferSize());
            assertEquals(8, d.capabilities().maxMsgFds());
            assertEquals(4096, d.capabilities().migrationPgsize().orElseThrow());
            assertEquals(1, d.regionCount());
            assertTrue(d.resettable());
        }
    }

    @Test
    void aServerWithAnotherMajorVersionIsRefused() throws IOException {
        server = FakeServer.start(dir.resolve("fake.sock"), 4096, (m, s) -> s.standard(m));
        server.versionMajor = 1;
        SysException e = assertThrows(SysException.class, () -> VfioUserDevice.connect(server.socket(), "fake0", QUICK));
        assertEquals("EPROTO", e.errnoName());
        assertTrue(e.getMessage().contains("VFIO_USER_VERSION(0.2)") && e.getMessage().contains("version 1.2"), e.getMessage());
    }

    @Test
    void versionDataWithoutItsNulIsRefused() throws IOException {
        server = FakeServer.start(dir.resolve("fake.sock"), 4096, (m, s) -> s.standard(m));
        server.versionNul = false;
        SysException e = assertThrows(SysException.class, () -> VfioUserDevice.connect(server.socket(), "fake0", QUICK));
        assertTrue(e.getMessage().contains("not NUL-terminated"), e.getMessage());
    }

    @Test
    void anErrorReplyNamesTheDeviceTheCommandAndTheErrnoAndTheConnectionGoesOn() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> {
            if (m.body().getLong(0) == 0x10) s.error(m, 22); else s.standard(m);
        }))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0x10));
            assertEquals("EINVAL", e.errnoName());
            assertEquals("VFIO_USER_REGION_READ(region 0, offset 0x10, 4 bytes) on fake0 (vfio-user " + server.socket()
                    + ") failed: EINVAL (Invalid argument)", e.getMessage());
            d.writeInt(0, 0x20, 0x1234_5678);
            assertEquals(0x1234_5678, d.readInt(0, 0x20), "an Error reply leaves the stream in step");
        }
    }

    @Test
    void aReplyWithAnotherMessageIdBreaksTheConnection() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> s.send(m.id() + 1, m.cmd(), VfioUserAbi.FLAG_TYPE_REPLY, 0, new byte[20], 20)))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertEquals("EPROTO", e.errnoName());
            assertTrue(e.getMessage().contains("msg_id"), e.getMessage());
            SysException later = assertThrows(SysException.class, () -> d.readInt(0, 4));
            assertEquals("ENOTCONN", later.errnoName());
            assertTrue(later.getMessage().contains("broke earlier: EPROTO in VFIO_USER_REGION_READ(region 0, offset 0x0, 4 bytes)"), later.getMessage());
        }
    }

    @Test
    void aReplyForAnotherCommandOrOfAnotherTypeIsAProtocolError() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> s.send(m.id(), VfioUserAbi.REGION_WRITE, VfioUserAbi.FLAG_TYPE_REPLY, 0, new byte[20], 20)))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertEquals("EPROTO", e.errnoName());
            assertTrue(e.getMessage().contains("the reply is for VFIO_USER_REGION_WRITE"), e.getMessage());
        }
        server.close();
        try (VfioUserDevice d = connect(onRead((m, s) -> s.send(m.id(), m.cmd(), 0x2, 0, new byte[20], 20)))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertTrue(e.getMessage().contains("type 2"), e.getMessage());
        }
    }

    @Test
    void aReplyLargerThanTheRequestAllowsIsAProtocolError() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> s.send(m.id(), m.cmd(), VfioUserAbi.FLAG_TYPE_REPLY, 0, new byte[24], 24)))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertEquals("EPROTO", e.errnoName());
            assertTrue(e.getMessage().contains("24-byte payload, at most 20"), e.getMessage());
        }
    }

    @Test
    void aReplyThatMovedAnotherCountIsNotBelieved() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> s.reply(m, FakeServer.payload(20).putLong(0).putInt(0).putInt(2))))) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertEquals("EIO", e.errnoName());
            assertTrue(e.getMessage().contains("the reply says region 0, offset 0x0, 2 bytes"), e.getMessage());
        }
    }

    @Test
    void aServerThatHangsUpBeforeReplyingIsAnErrorNotAHang() throws IOException {
        try (VfioUserDevice d = connect(4096, onRead((m, s) -> s.hangUp()), VfioUserDevice.Options.DEFAULT)) {
            SysException e = assertThrows(SysException.class, () -> d.readLong(0, 8));
            assertEquals("ECONNRESET", e.errnoName());
            assertTrue(e.getMessage().startsWith("VFIO_USER_REGION_READ(region 0, offset 0x8, 8 bytes) on fake0 (vfio-user"), e.getMessage());
            assertTrue(e.getMessage().contains("the server closed the connection (end of stream after 0 of 16 bytes of the reply header)"), e.getMessage());
        }
    }

    @Test
    void aReplyCutShortByTheServersDeathIsAnErrorNotAHang() throws IOException {
        try (VfioUserDevice d = connect(4096, onRead((m, s) -> {
            s.send(m.id(), m.cmd(), VfioUserAbi.FLAG_TYPE_REPLY, 0, new byte[16 + 64], 16 + 10);
            s.hangUp();
        }), VfioUserDevice.Options.DEFAULT)) {
            SysException e = assertThrows(SysException.class, () -> d.read(0, 0, Arena.ofAuto().allocate(64)));
            assertTrue(e.getMessage().contains("end of stream after 26 of 80 bytes of the reply payload"), e.getMessage());
        }
    }

    @Test
    void aSilentServerIsATimeoutAndTheConnectionIsClosed() throws IOException, Exception {
        try (VfioUserDevice d = connect(onRead((m, s) -> { /* never answers */ }))) {
            long t0 = System.nanoTime();
            SysException e = assertThrows(SysException.class, () -> d.readInt(0, 0));
            assertEquals("ETIMEDOUT", e.errnoName());
            assertTrue(e.getMessage().contains("no reply header within 300 ms"), e.getMessage());
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(5));
            server.done().get(10, TimeUnit.SECONDS); // the server sees the client go: the socket was closed
        }
    }

    @Test
    void bulkWritesAreChunkedToMessagesOf64KiBAtMostInOrder() throws IOException {
        int size = 200 * 1024;
        try (VfioUserDevice d = connect(256 * 1024, (m, s) -> s.standard(m), QUICK); Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(size);
            for (int i = 0; i < size; i++) src.set(JAVA_BYTE, i, (byte) (i * 31 + (i >> 12)));
            d.write(0, 100, src);
            List<FakeServer.Message> writes = server.received.stream().filter(m -> m.cmd() == VfioUserAbi.REGION_WRITE).toList();
            assertTrue(writes.size() >= 4, writes.size() + " writes");
            long next = 100;
            for (FakeServer.Message w : writes) {
                assertTrue(w.size() <= 64 * 1024, "a " + w.size() + "-byte message");
                assertEquals(next, w.body().getLong(0), "in order, no gap");
                next += w.body().getInt(12);
            }
            assertEquals(100 + size, next);
            MemorySegment back = arena.allocate(size);
            d.read(0, 100, back);
            assertEquals(-1, src.mismatch(back));
        }
    }

    @Test
    void theServersSmallerMaxDataXferSizeBoundsEveryTransfer() throws IOException {
        server = FakeServer.start(dir.resolve("fake.sock"), 64 * 1024, (m, s) -> s.standard(m));
        server.versionJson = "{\"capabilities\":{\"max_data_xfer_size\":4096}}";
        try (VfioUserDevice d = VfioUserDevice.connect(server.socket(), "fake0", QUICK); Arena arena = Arena.ofConfined()) {
            assertFalse(d.capabilities().migration(), "no migration object: the server does not migrate");
            MemorySegment buf = arena.allocate(10_000);
            d.write(0, 0, buf);
            d.read(0, 0, buf);
            for (FakeServer.Message m : server.received) {
                if (m.cmd() == VfioUserAbi.REGION_WRITE || m.cmd() == VfioUserAbi.REGION_READ) {
                    assertTrue(m.body().getInt(12) <= 4096, "count " + m.body().getInt(12));
                }
            }
        }
    }

    @Test
    void anAccessOutsideTheRegionIsRefusedBeforeItIsSent() throws IOException {
        try (VfioUserDevice d = connect((m, s) -> s.standard(m))) {
            d.regionInfo(0);
            int before = server.received.size();
            SysException e = assertThrows(SysException.class, () -> d.readLong(0, 4092));
            assertEquals("EINVAL", e.errnoName());
            assertTrue(e.getMessage().contains("outside the 4096-byte region; not sent"), e.getMessage());
            assertEquals(before, server.received.size());
        }
    }

    @Test
    void regionInfoIsAskedAgainWithTheArgszTheServerWantsAndNothingIsMappable() throws IOException {
        // A region of type (3, 1) with a sparse-mmap cap and a type cap: 32 + 32 + 16 bytes.
        FakeServer.Handler h = (m, s) -> {
            if (m.cmd() != VfioUserAbi.DEVICE_GET_REGION_INFO) {
                s.standard(m);
                return;
            }
            int argsz = m.body().getInt(0);
            int flags = VfioAbi.REGION_INFO_FLAG_READ | VfioAbi.REGION_INFO_FLAG_WRITE | VfioAbi.REGION_INFO_FLAG_MMAP;
            if (argsz < 80) {
                s.reply(m, FakeServer.payload(32).putInt(80).putInt(flags).putInt(0).putInt(0).putLong(0x5000).putLong(0x3000));
                return;
            }
            s.reply(m, FakeServer.payload(80).putInt(80).putInt(flags | VfioAbi.REGION_INFO_FLAG_CAPS).putInt(0).putInt(32)
                    .putLong(0x5000).putLong(0x3000)
                    .putShort((short) VfioAbi.REGION_INFO_CAP_SPARSE_MMAP).putShort((short) 1).putInt(64).putInt(1).putInt(0)
                    .putLong(0x1000).putLong(0x4000)
                    .putShort((short) VfioAbi.REGION_INFO_CAP_TYPE).putShort((short) 1).putInt(0).putInt(3).putInt(1));
        };
        try (VfioUserDevice d = connect(h)) {
            RegionInfo r = d.regionInfo(0);
            List<Integer> asked = server.received.stream().filter(m -> m.cmd() == VfioUserAbi.DEVICE_GET_REGION_INFO)
                    .map(m -> m.body().getInt(0)).toList();
            assertEquals(List.of(32, 80), asked);
            assertEquals(0x5000, r.size());
            assertEquals(new RegionInfo.Type(3, 1), r.type().orElseThrow());
            assertEquals(List.of(new RegionInfo.SparseArea(0x1000, 0x4000)), r.sparseAreas());
            assertTrue(r.readable() && r.writable());
            assertFalse(r.mmappable(), "no fd came with the reply, so the region is not mappable here");
            SysException e = assertThrows(SysException.class, () -> d.mmap(0, 0x1000, 0x4000));
            assertEquals("EOPNOTSUPP", e.errnoName());
            assertTrue(e.getMessage().contains("the migration region's data is reached with VFIO_USER_REGION_READ/WRITE"), e.getMessage());
        }
    }

    @Test
    void aServerCommandBetweenRequestAndReplyIsAnsweredWithAnErrorAndTheReplyStillArrives() throws IOException {
        try (VfioUserDevice d = connect(onRead((m, s) -> {
            s.send(0x4242, VfioUserAbi.DMA_READ, VfioUserAbi.FLAG_TYPE_COMMAND, 0, new byte[16], 16);
            s.standard(m);
        }))) {
            d.writeInt(0, 0, 7);
            assertEquals(7, d.readInt(0, 0));
            d.reset(); // the next message the server reads is our answer to its DMA_READ, then the reset
            FakeServer.Message answer = server.received.get(server.received.size() - 2);
            assertEquals(0x4242, answer.id());
            assertEquals(VfioUserAbi.DMA_READ, answer.cmd());
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY | VfioUserAbi.FLAG_ERROR, answer.flags());
            assertEquals(VfioUserAbi.DEVICE_RESET, server.received.get(server.received.size() - 1).cmd());
        }
    }

    @Test
    void bulkReadsOfTheWholeRegionRoundTrip() throws IOException {
        try (VfioUserDevice d = connect((m, s) -> s.standard(m)); Arena arena = Arena.ofConfined()) {
            byte[] pattern = new byte[4096];
            for (int i = 0; i < pattern.length; i++) pattern[i] = (byte) (i ^ 0x5a);
            d.write(0, 0, MemorySegment.ofArray(pattern));
            MemorySegment back = arena.allocate(4096);
            d.read(0, 0, back);
            assertArrayEquals(pattern, back.toArray(JAVA_BYTE));
        }
    }

    /** Maps {@code host} at IOVA 0x10000 of a device whose server answers DMA_MAP and DIRTY_PAGES (no fd: the memory is not guest RAM). */
    private static FakeServer.Handler withDma(FakeServer.Handler rest) {
        return (m, s) -> {
            if (m.cmd() == VfioUserAbi.DMA_MAP || m.cmd() == VfioUserAbi.DIRTY_PAGES) s.reply(m, FakeServer.payload(0));
            else rest.handle(m, s);
        };
    }

    private static byte[] dmaAccess(long addr, long count, int dataBytes, byte fill) {
        ByteBuffer b = FakeServer.payload(16 + dataBytes).putLong(addr).putLong(count);
        for (int i = 0; i < dataBytes; i++) b.put(fill);
        return b.array();
    }

    /** The client's answers to the server's commands, once the scripted server has read {@code count} of them (it reads them after its handler). */
    private java.util.Map<Integer, FakeServer.Message> answers(int count) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            java.util.Map<Integer, FakeServer.Message> answers = new java.util.HashMap<>();
            synchronized (server.received) {
                for (FakeServer.Message m : server.received) if ((m.flags() & VfioUserAbi.FLAG_TYPE_MASK) == VfioUserAbi.FLAG_TYPE_REPLY) answers.put(m.id(), m);
            }
            if (answers.size() >= count) return answers;
            assertTrue(System.nanoTime() < deadline, "the server received " + answers.size() + " of the client's " + count + " answers");
            Thread.sleep(1); // between looks at the event, not in place of it
        }
    }

    @Test
    void theServersDmaIsServedAgainstTheMappingsBoundsCheckedAndAWriteIsDirty() throws Exception {
        try (VfioUserDevice d = connect(4096, withDma(onRead((m, s) -> {
            s.send(101, VfioUserAbi.DMA_WRITE, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x11000, 16, 16, (byte) 7), 32); // in the mapping
            s.send(102, VfioUserAbi.DMA_WRITE, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x1f000, 8192, 8192, (byte) 9), 16 + 8192); // runs off its end
            s.send(103, VfioUserAbi.DMA_READ, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x11008, 16, 0, (byte) 0), 16);
            s.send(104, VfioUserAbi.DMA_READ, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x1000, 4, 0, (byte) 0), 16); // nothing mapped there
            s.standard(m);
        })), QUICK); Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(0x10000, 4096);
            VfioUserContainer dma = d.dmaSpace(null);
            dma.mapDma(0x10000, host, true, true);
            dma.startDirtyTracking();
            d.readInt(0, 0); // the server's commands come before this reply, and are served
            java.util.Map<Integer, FakeServer.Message> answers = answers(4);
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY, answers.get(101).flags(), "a write inside the mapping is done");
            assertEquals(0x11000, answers.get(101).body().getLong(0));
            assertEquals(16, answers.get(101).body().getLong(8));
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY | VfioUserAbi.FLAG_ERROR, answers.get(102).flags(), "a write off the mapping is refused");
            assertEquals(0, answers.get(102).payload().length);
            assertEquals(32, answers.get(103).payload().length, "a read's reply carries address, count and the bytes");
            for (int i = 0; i < 8; i++) assertEquals(7, answers.get(103).payload()[16 + i], "the bytes the write put there");
            for (int i = 8; i < 16; i++) assertEquals(0, answers.get(103).payload()[16 + i]);
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY | VfioUserAbi.FLAG_ERROR, answers.get(104).flags());
            for (int i = 0; i < 16; i++) assertEquals(7, host.get(JAVA_BYTE, 0x1000 + i));
            assertEquals(0, host.get(JAVA_BYTE, 0xf000), "the refused write changed nothing");
            assertEquals(1, d.dmaWritesServed());
            assertEquals(1, d.dmaReadsServed());
            assertEquals(2, d.serverCommandsRefused());

            MemorySegment bits = arena.allocate(16 * 8, 8);
            dma.getDirtyBitmap(0x10000, 0x10000, 4096, bits);
            assertEquals(1L << 1, bits.get(java.lang.foreign.ValueLayout.JAVA_LONG, 0), "the page the server wrote by DMA_WRITE is dirty, only it");
            dma.getDirtyBitmap(0x10000, 0x10000, 4096, bits);
            assertEquals(0, bits.get(java.lang.foreign.ValueLayout.JAVA_LONG, 0), "and cleared once reported");
        }
    }

    @Test
    void aDmaWriteWhileNoRequestIsInFlightIsServedByTheWatcher() throws Exception {
        try (VfioUserDevice d = connect(4096, withDma((m, s) -> s.standard(m)), QUICK); Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(0x10000, 4096);
            d.dmaSpace(null).mapDma(0x10000, host, true, false); // the device may not write
            server.send(201, VfioUserAbi.DMA_WRITE, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x10000, 4, 4, (byte) 1), 20);
            server.send(202, VfioUserAbi.DMA_READ, VfioUserAbi.FLAG_TYPE_COMMAND, 0, dmaAccess(0x10000, 4, 0, (byte) 0), 16);
            java.util.Map<Integer, FakeServer.Message> answers = answers(2); // the idle client answers the server's commands
            FakeServer.Message write = answers.get(201);
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY | VfioUserAbi.FLAG_ERROR, write.flags(), "a write to a read-only mapping is refused (EPERM)");
            FakeServer.Message read = answers.get(202);
            assertEquals(VfioUserAbi.FLAG_TYPE_REPLY, read.flags());
            assertEquals(0, host.get(JAVA_BYTE, 0));
            d.writeInt(0, 0, 5);
            assertEquals(5, d.readInt(0, 0), "the connection goes on");
        }
    }

    /**
     * Steady state allocates nothing on the calling thread: register reads, chunked writes, and the server's
     * DMA_WRITE and DMA_READ served between a request and its reply (measured with the thread allocation counter
     * after warm-up; the scripted server allocates on its own thread).
     */
    @Test
    void requestsAndServedDmaAllocateNothing() throws IOException {
        byte[] write = dmaAccess(0x10000, 64, 64, (byte) 3), read = dmaAccess(0x10040, 64, 0, (byte) 0);
        try (VfioUserDevice d = connect(4096, withDma(onRead((m, s) -> {
            s.send(301, VfioUserAbi.DMA_WRITE, VfioUserAbi.FLAG_TYPE_COMMAND, 0, write, write.length);
            s.send(302, VfioUserAbi.DMA_READ, VfioUserAbi.FLAG_TYPE_COMMAND, 0, read, read.length);
            s.standard(m);
        })), VfioUserDevice.Options.DEFAULT); Arena arena = Arena.ofConfined()) {
            MemorySegment host = arena.allocate(0x10000, 4096), buf = arena.allocate(4096);
            d.dmaSpace(null).mapDma(0x10000, host, true, true);
            com.sun.management.ThreadMXBean mx = (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();
            long thread = Thread.currentThread().threadId();
            long allocated = Long.MAX_VALUE;
            for (int attempt = 0; attempt < 5 && allocated > 0; attempt++) { // the JIT compiles the loop in the first attempts
                for (int i = 0; i < 5000; i++) {
                    d.readInt(0, 0);
                    d.write(0, 0, buf);
                }
                long before = mx.getThreadAllocatedBytes(thread);
                for (int i = 0; i < 2000; i++) {
                    d.readInt(0, 0);
                    d.write(0, 0, buf);
                }
                allocated = mx.getThreadAllocatedBytes(thread) - before;
            }
            assertEquals(0, allocated, "bytes allocated by 2000 reads (each with a DMA_WRITE and a DMA_READ served) and 2000 4 KiB writes");
            assertTrue(d.dmaWritesServed() > 2000 && d.dmaReadsServed() > 2000);
        }
    }

    /** A v2 server in script: DEVICE_FEATURE echoes (GET MIG_DEVICE_STATE answers RUNNING); the rest as {@code rest} says. */
    private static FakeServer.Handler v2(FakeServer.Handler rest) {
        return (m, s) -> {
            if (m.cmd() == VfioUserAbi.DEVICE_FEATURE) {
                ByteBuffer r = FakeServer.payload(m.payload().length).put(m.payload());
                if (m.body().getInt(4) == (V2Abi.FEATURE_GET | V2Abi.FEATURE_MIG_DEVICE_STATE)) r.putInt(8, MigState.RUNNING.value());
                s.reply(m, r);
            } else if (m.cmd() == VfioUserAbi.MIG_DATA_READ || m.cmd() == VfioUserAbi.MIG_DATA_WRITE) {
                rest.handle(m, s);
            } else {
                s.standard(m);
            }
        };
    }

    @Test
    void migrationDataGoesInMigDataMessagesAndAReadReplyClaimingMoreThanAskedIsRefused() throws IOException {
        int[] claim = {5};
        try (VfioUserDevice d = connect(v2((m, s) -> {
            if (m.cmd() == VfioUserAbi.MIG_DATA_WRITE) {
                s.reply(m, FakeServer.payload(0));
                return;
            }
            int asked = m.body().getInt(4);
            ByteBuffer r = FakeServer.payload(8 + asked); // libvfio-user pads the reply to the size asked
            r.putInt(8 + claim[0]).putInt(claim[0]);
            for (int i = 0; i < Math.min(claim[0], asked); i++) r.put((byte) (i + 1));
            s.reply(m, r);
        }))) {
            assertEquals(VfioUserDevice.MigrationProtocol.V2_FEATURE, d.migrationProtocol());
            assertEquals(MigState.RUNNING, DeviceFeatures.state(d));
            try (Arena arena = Arena.ofConfined(); MigrationData session = d.migrationData(arena.allocate(8))) {
                assertEquals(-1, session.fd(), "not a file descriptor: no splice");
                assertEquals(-Errno.ENOTTY, session.precopyInfoRaw(arena.allocate(24)), "vfio-user has no PRECOPY_INFO");
                MemorySegment dst = arena.allocate(64);
                assertEquals(5, session.readRaw(dst));
                assertArrayEquals(new byte[] {1, 2, 3, 4, 5}, dst.asSlice(0, 5).toArray(JAVA_BYTE));
                FakeServer.Message read = server.received.getLast();
                assertEquals(VfioUserAbi.MIG_DATA_READ, read.cmd());
                assertEquals(8 + 64, read.body().getInt(0), "argsz: the largest reply");
                assertEquals(64, read.body().getInt(4));

                MemorySegment big = arena.allocate(200 << 10);
                long n = session.writeRaw(big);
                assertTrue(n > 0 && n <= (64 << 10) - 24, "one message of at most 64 KiB: " + n);
                FakeServer.Message write = server.received.getLast();
                assertEquals(VfioUserAbi.MIG_DATA_WRITE, write.cmd());
                assertEquals(8 + n, write.body().getInt(0));
                assertEquals(n, write.body().getInt(4));
                assertEquals(8 + n, write.payload().length);

                claim[0] = 65;
                assertEquals(-Errno.EPROTO, session.readRaw(dst), "a reply that says more than was asked is not believed");
            }
        }
    }

    @Test
    void aFeatureReplyForOtherFlagsIsRefusedNamingTheFeature() throws IOException {
        try (VfioUserDevice d = connect((m, s) -> {
            if (m.cmd() != VfioUserAbi.DEVICE_FEATURE) {
                s.standard(m);
                return;
            }
            ByteBuffer r = FakeServer.payload(m.payload().length).put(m.payload());
            if ((m.body().getInt(4) & V2Abi.FEATURE_PROBE) == 0) r.putInt(4, V2Abi.FEATURE_GET | V2Abi.FEATURE_MIGRATION);
            s.reply(m, r);
        })) {
            SysException e = assertThrows(SysException.class, () -> DeviceFeatures.state(d));
            assertEquals("EPROTO", e.errnoName());
            assertTrue(e.getMessage().startsWith("VFIO_USER_DEVICE_FEATURE(GET MIG_DEVICE_STATE) on fake0"), e.getMessage());
        }
    }
}
