package org.vmmkit.migration.wire;

import java.io.EOFException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;

import org.vmmkit.core.migration.SectionInfo;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class WireFormatTest {
    @TempDir Path dir;

    private static final StreamHeader SOURCE = new StreamHeader(StreamHeader.VERSION, 4096,
            List.of(new StreamHeader.Range(0, 3L << 30), new StreamHeader.Range(4L << 30, 1L << 30)),
            List.of(new SectionInfo("emulated-gpu0", "vfio-v1", 1, "protocol=v1;regions=0:4K;memory=16M"), new SectionInfo("serial0", "host-uart", 7)), 2)
            .withChannels(3, 0x1234_5678_9abcL).withVm(java.util.UUID.fromString("6f1c2c1e-3b0a-4c53-9d3e-2a8f7a0d51b4"));

    private FileChannel channel(String name) throws Exception {
        return FileChannel.open(dir.resolve(name), StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
    }

    private FileChannel withBytes(ByteBuffer bytes) throws Exception {
        FileChannel ch = channel("s" + System.nanoTime());
        while (bytes.hasRemaining()) ch.write(bytes);
        return ch.position(0);
    }

    @Test
    void theStreamHeaderRoundTripsAndMatchesAnEqualVm() throws Exception {
        try (FileChannel ch = withBytes(SOURCE.encode())) {
            StreamHeader read = StreamHeader.read(ch);
            assertEquals(SOURCE, read);
            read.checkCompatibleWith(SOURCE);
        }
    }

    @Test
    void theHeaderCarriesTheVmIdentityAndEachSectionsConfiguration() throws Exception {
        try (FileChannel ch = withBytes(SOURCE.encode())) {
            StreamHeader read = StreamHeader.read(ch);
            assertEquals(SOURCE.vm(), read.vm());
            assertEquals("protocol=v1;regions=0:4K;memory=16M", read.sections().get(0).config());
            assertEquals("", read.sections().get(1).config());
        }
        ByteBuffer b = SOURCE.encode().order(ByteOrder.LITTLE_ENDIAN);
        assertEquals(SOURCE.vm().getMostSignificantBits(), b.getLong(64), "the identity at offset 64, after the nonce");
        int configLength = StreamHeader.FIXED + 16 * SOURCE.memory().size() + 12; // the first section's, after its version, id and kind lengths
        assertEquals("protocol=v1;regions=0:4K;memory=16M".length(), b.getInt(configLength));
        b.putInt(configLength, SectionInfo.MAX_CONFIG + 1);
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(b.array(), 0, b.limit() - 4);
        b.putInt(b.limit() - 4, (int) crc.getValue());
        try (FileChannel ch = withBytes(b)) {
            String why = assertThrows(WireFormatException.class, () -> StreamHeader.read(ch)).getMessage();
            assertTrue(why.contains("section 0 has an id of 13 bytes, a kind of 7 bytes, a config of 1025 bytes"), why);
        }
    }

    @Test
    void theHeaderCarriesTheRamChecksumAndMemfdOfferFlagsAndRefusesUnknownFlags() throws Exception {
        StreamHeader off = SOURCE.withRamChecksums(false);
        try (FileChannel ch = withBytes(off.encode())) {
            assertEquals(false, StreamHeader.read(ch).ramChecksums());
        }
        StreamHeader offer = SOURCE.withMemfdOffer(true);
        assertEquals(0x3, offer.encode().order(ByteOrder.LITTLE_ENDIAN).getInt(36), "bit 1: the memfd offer");
        try (FileChannel ch = withBytes(offer.encode())) {
            assertEquals(offer, StreamHeader.read(ch));
        }
        ByteBuffer b = SOURCE.encode();
        b.order(ByteOrder.LITTLE_ENDIAN).putInt(36, 0x5);
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(b.array(), 0, b.limit() - 4);
        b.putInt(b.limit() - 4, (int) crc.getValue());
        try (FileChannel ch = withBytes(b)) {
            assertTrue(assertThrows(WireFormatException.class, () -> StreamHeader.read(ch)).getMessage().contains("flags 0x5"));
        }
    }

    @Test
    void aDestinationRefusesAVersionItDoesNotKnow() throws Exception {
        ByteBuffer b = SOURCE.encode();
        b.order(ByteOrder.LITTLE_ENDIAN).putInt(8, StreamHeader.VERSION + 1);
        try (FileChannel ch = withBytes(b)) {
            WireFormatException e = assertThrows(WireFormatException.class, () -> StreamHeader.read(ch));
            assertTrue(e.getMessage().contains("version " + (StreamHeader.VERSION + 1) + "; this destination reads version " + StreamHeader.VERSION + " only"), e.getMessage());
        }
    }

    @Test
    void aForeignOrDamagedHeaderIsRefused() throws Exception {
        ByteBuffer b = SOURCE.encode();
        b.put(0, (byte) 'X');
        try (FileChannel ch = withBytes(b)) {
            assertTrue(assertThrows(WireFormatException.class, () -> StreamHeader.read(ch)).getMessage().contains("magic"));
        }
        ByteBuffer c = SOURCE.encode();
        c.put(40, (byte) (c.get(40) ^ 1));
        try (FileChannel ch = withBytes(c)) {
            assertTrue(assertThrows(WireFormatException.class, () -> StreamHeader.read(ch)).getMessage().contains("CRC32C"));
        }
        ByteBuffer d = SOURCE.encode();
        d.limit(d.limit() - 7);
        try (FileChannel ch = withBytes(d)) {
            assertTrue(assertThrows(EOFException.class, () -> StreamHeader.read(ch)).getMessage().contains("stream header"));
        }
    }

    /**
     * Found by StreamFuzzTest (seed 231572 of its first 1,000,000-input run): a name length whose padding runs
     * past the header's end threw the buffer's IllegalArgumentException ("newPosition > limit"), naming nothing.
     */
    @Test
    void aNameWhosePaddingOverrunsTheHeaderIsRefusedNamingTheHeader() throws Exception {
        ByteBuffer b = SOURCE.encode().order(ByteOrder.LITTLE_ENDIAN);
        int kindLength = b.limit() - 4 - 16 - 8 - 8; // the last section's: before its config length, id (8 padded), kind (16 padded) and no config
        assertEquals("host-uart".length(), b.getInt(kindLength));
        b.putInt(kindLength, 17); // 17 bytes fit before the end, their padding to 24 does not
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(b.array(), 0, b.limit() - 4);
        b.putInt(b.limit() - 4, (int) crc.getValue());
        try (FileChannel ch = withBytes(b)) {
            WireFormatException e = assertThrows(WireFormatException.class, () -> StreamHeader.read(ch));
            assertEquals("stream header: its counts overrun its " + b.limit() + " bytes", e.getMessage());
        }
    }

    @Test
    void anIncompatibleVmIsNamedBeforeAnythingIsWritten() {
        StreamHeader small = new StreamHeader(1, 4096, List.of(new StreamHeader.Range(0, 1L << 30)), SOURCE.sections(), 2);
        WireFormatException e = assertThrows(WireFormatException.class, () -> SOURCE.checkCompatibleWith(small));
        assertTrue(e.getMessage().contains("memory layout differs") && e.getMessage().contains("0x100000000+1024M"), e.getMessage());
        StreamHeader oneVcpu = new StreamHeader(1, 4096, SOURCE.memory(), SOURCE.sections(), 1);
        assertTrue(assertThrows(WireFormatException.class, () -> SOURCE.checkCompatibleWith(oneVcpu)).getMessage()
                .contains("2 vCPUs, this VM 1"));
    }

    @Test
    void framesRoundTripWithTheirCrc() throws Exception {
        ByteBuffer pages = ByteBuffer.allocateDirect(8192);
        for (int i = 0; i < 8192; i++) pages.put(i, (byte) i);
        ByteBuffer part1 = ByteBuffer.allocateDirect(100), part2 = ByteBuffer.allocateDirect(28);
        FrameCodec out = new FrameCodec(1 << 20), in = new FrameCodec(1 << 20);
        try (FileChannel ch = channel("frames")) {
            out.write(ch, FrameType.RAM, 0x200000, 2, pages, null);
            out.write(ch, FrameType.ZERO_RUN, 0x400000, 512, null, null);
            out.write(ch, FrameType.SECTION_CHUNK, 1, 7, part1, part2);
            out.write(ch, FrameType.COMPLETE, 3, 0, null, null);
            ch.position(0);
            assertEquals(FrameType.RAM, in.readHeader(ch));
            assertEquals(0x200000, in.a());
            assertEquals(2, in.b());
            ByteBuffer got = ByteBuffer.allocateDirect((int) in.length());
            in.readPayload(ch, got);
            in.verify();
            assertEquals(pages.flip(), got.flip());
            assertEquals(FrameType.ZERO_RUN, in.readHeader(ch));
            assertEquals(0, in.length());
            in.verify();
            assertEquals(FrameType.SECTION_CHUNK, in.readHeader(ch));
            assertEquals(128, in.length());
            in.readPayload(ch, ByteBuffer.allocateDirect(128));
            in.verify();
            assertEquals(FrameType.COMPLETE, in.readHeader(ch));
            in.verify();
            assertEquals(4, in.framesRead());
        }
    }

    @Test
    void aFlippedPayloadBitFailsTheCrc() throws Exception {
        FrameCodec out = new FrameCodec(1 << 20), in = new FrameCodec(1 << 20);
        try (FileChannel ch = channel("flip")) {
            out.write(ch, FrameType.RAM, 0x1000, 1, ByteBuffer.allocateDirect(4096), null);
            ch.write(ByteBuffer.wrap(new byte[] {1}), FrameCodec.HEADER + 100);
            ch.position(0);
            in.readHeader(ch);
            in.readPayload(ch, ByteBuffer.allocateDirect(4096));
            WireFormatException e = assertThrows(WireFormatException.class, in::verify);
            assertTrue(e.getMessage().contains("frame 0 (RAM, a=0x1000, 4096 bytes) payload fails its CRC32C"), e.getMessage());
        }
    }

    /** A hand-made frame header with a correct header CRC, to test what the reader does with its fields. */
    private static ByteBuffer rawHeader(int type, int flags, long length) {
        ByteBuffer h = ByteBuffer.allocate(FrameCodec.HEADER).order(ByteOrder.LITTLE_ENDIAN);
        h.putShort((short) type).putShort((short) flags).putInt(0).putLong(0).putLong(0).putLong(length).putInt(0);
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(h.array(), 0, 36);
        h.putInt((int) crc.getValue());
        return h.flip();
    }

    /** A whole frame of any type code: header with {@code sequence} and both CRCs right, then the payload. */
    private static ByteBuffer rawFrame(int type, int flags, int sequence, ByteBuffer payload) {
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        crc.update(payload.duplicate());
        ByteBuffer f = ByteBuffer.allocate(FrameCodec.HEADER + payload.remaining()).order(ByteOrder.LITTLE_ENDIAN);
        f.putShort((short) type).putShort((short) flags).putInt(sequence).putLong(0).putLong(0).putLong(payload.remaining())
                .putInt((int) crc.getValue());
        crc.reset();
        crc.update(f.array(), 0, 36);
        f.putInt((int) crc.getValue()).put(payload.duplicate());
        return f.flip();
    }

    @Test
    void aSkippableFrameJustOverSixtyFourMibIsSkippedWholeAndTheNextFrameReads() throws Exception {
        long limit = (64L << 20) + 64; // the destination's limit
        ByteBuffer payload = ByteBuffer.allocate((int) limit);
        for (int i = 0; i < payload.capacity(); i += 4096) payload.put(i, (byte) i);
        ByteBuffer stream = ByteBuffer.allocate((int) limit + 2 * FrameCodec.HEADER);
        stream.put(rawFrame(30, FrameCodec.FLAG_SKIPPABLE, 0, payload)).put(rawFrame(FrameType.COMPLETE.code(), 0, 1, ByteBuffer.allocate(0))).flip();
        try (FileChannel ch = withBytes(stream)) {
            FrameCodec in = new FrameCodec(limit);
            assertEquals(null, in.readHeader(ch));
            in.skipPayload(ch);
            assertEquals(FrameType.COMPLETE, in.readHeader(ch), "the frame after the skipped one is read as a frame");
        }
    }

    @Test
    void aFrameDroppedRepeatedOrMovedIsCaughtByItsSequence() throws Exception {
        ByteBuffer[] frames = new ByteBuffer[3];
        for (int i = 0; i < 3; i++) frames[i] = rawFrame(FrameType.END_OF_ROUND.code(), 0, i, ByteBuffer.allocate(0));
        int[][] orders = {{0, 2}, {0, 1, 1}, {1, 0}};
        for (int[] order : orders) {
            ByteBuffer stream = ByteBuffer.allocate(order.length * FrameCodec.HEADER);
            for (int i : order) stream.put(frames[i].duplicate());
            try (FileChannel ch = withBytes(stream.flip())) {
                FrameCodec in = new FrameCodec(1 << 20);
                WireFormatException e = assertThrows(WireFormatException.class, () -> {
                    for (int i = 0; i < order.length; i++) in.readHeader(ch);
                });
                assertTrue(e.getMessage().contains("a frame was dropped, repeated or moved"), e.getMessage());
            }
        }
    }

    @Test
    void aCorruptHeaderIsRefusedBeforeAnyFieldIsUsed() throws Exception {
        ByteBuffer h = rawHeader(FrameType.RAM.code(), 0, 4096);
        h.put(8, (byte) 0x40); // the address
        try (FileChannel ch = withBytes(h)) {
            WireFormatException e = assertThrows(WireFormatException.class, () -> new FrameCodec(1 << 20).readHeader(ch));
            assertTrue(e.getMessage().contains("frame 0 header fails its CRC32C"), e.getMessage());
        }
    }

    @Test
    void anUnknownFrameTypeIsRefusedUnlessSkippable() throws Exception {
        try (FileChannel ch = withBytes(rawHeader(30, 0, 0))) {
            WireFormatException e = assertThrows(WireFormatException.class, () -> new FrameCodec(1 << 20).readHeader(ch));
            assertTrue(e.getMessage().contains("type 30, unknown"), e.getMessage());
        }
        try (FileChannel ch = withBytes(rawHeader(30, FrameCodec.FLAG_SKIPPABLE, 0))) {
            assertEquals(null, new FrameCodec(1 << 20).readHeader(ch));
        }
    }

    @Test
    void anAnnouncedLengthOverTheLimitIsRefusedBeforeAnyPayloadIsRead() throws Exception {
        try (FileChannel ch = withBytes(rawHeader(FrameType.RAM.code(), 0, Long.MAX_VALUE))) {
            WireFormatException e = assertThrows(WireFormatException.class, () -> new FrameCodec(64L << 20).readHeader(ch));
            assertTrue(e.getMessage().contains("announces " + Long.MAX_VALUE + " bytes"), e.getMessage());
        }
        try (FileChannel ch = withBytes(rawHeader(FrameType.RAM.code(), 4, 0))) {
            assertTrue(assertThrows(WireFormatException.class, () -> new FrameCodec(1 << 20).readHeader(ch)).getMessage()
                    .contains("reserved bits"));
        }
    }

    @Test
    void aStreamCutInsideAFrameIsAnEofNotAHang() throws Exception {
        FrameCodec out = new FrameCodec(1 << 20), in = new FrameCodec(1 << 20);
        try (FileChannel ch = channel("cut")) {
            out.write(ch, FrameType.RAM, 0x1000, 1, ByteBuffer.allocateDirect(4096), null);
            ch.truncate(FrameCodec.HEADER + 1000);
            ch.position(0);
            in.readHeader(ch);
            EOFException e = assertThrows(EOFException.class, () -> in.readPayload(ch, ByteBuffer.allocateDirect(4096)));
            assertTrue(e.getMessage().contains("frame 0 (RAM) payload") && e.getMessage().contains("3096 bytes missing"), e.getMessage());
        }
    }
}
