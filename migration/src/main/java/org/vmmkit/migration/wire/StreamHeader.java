package org.vmmkit.migration.wire;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ReadableByteChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

import org.vmmkit.core.migration.SectionInfo;

/**
 * The first bytes of a migration stream: what the source is, so the destination can refuse an
 * incompatible VM before it writes anything: its identity ({@code vm}, a UUID; all zeros for none), RAM
 * layout, sections with each one's configuration, and vCPUs. Little-endian; layout in docs/wire-format.md.
 */
public record StreamHeader(int version, int pageSize, List<Range> memory, List<SectionInfo> sections, int vcpus, int channels,
                           long streamId, boolean ramChecksums, Nonce nonce, boolean memfdOffer, java.util.UUID vm) {

    /** Header flag bit 0: RAM frames carry a CRC32C per page. */
    static final int FLAG_RAM_CHECKSUMS = 1;
    /**
     * Header flag bit 1: the source offers its guest-memory memfds (a local live upgrade over a Unix socket);
     * a destination that takes them says so in READY, and no RAM frame follows.
     */
    static final int FLAG_MEMFD_OFFER = 2;

    /** "VMMKITMG" as little-endian bytes. */
    public static final long MAGIC = 0x474D54494B4D4D56L;
    public static final int VERSION = 5;
    /** The identity of a VM that has none (a library's VM, a test's): all zeros. */
    public static final java.util.UUID NO_IDENTITY = new java.util.UUID(0, 0);
    public static final int MAX_CHANNELS = 16;
    /** The most sections a stream carries. */
    public static final int MAX_SECTIONS = 1024 + 256; // every vCPU (at most 1024) is one
    static final int FIXED = 80, MAX_BYTES = 256 * 1024, MAX_REGIONS = 64, MAX_NAME = 256;

    /** A RAM range of the source's guest physical address space. */
    public record Range(long guestAddress, long size) {}


    public StreamHeader {
        memory = List.copyOf(memory);
        sections = List.copyOf(sections);
        java.util.Objects.requireNonNull(vm, "vm identity (NO_IDENTITY for none)");
    }

    /** A header for one channel, of a VM with no identity. */
    public StreamHeader(int version, int pageSize, List<Range> memory, List<SectionInfo> sections, int vcpus) {
        this(version, pageSize, memory, sections, vcpus, 1, 0, true, new Nonce(0, 0), false, NO_IDENTITY);
    }

    /** The same header for a stream of {@code channels} connections named {@code streamId}. */
    public StreamHeader withChannels(int channels, long streamId) {
        return new StreamHeader(version, pageSize, memory, sections, vcpus, channels, streamId, ramChecksums, nonce, memfdOffer, vm);
    }

    /** The same header with RAM page checksums on or off. */
    public StreamHeader withRamChecksums(boolean on) {
        return new StreamHeader(version, pageSize, memory, sections, vcpus, channels, streamId, on, nonce, memfdOffer, vm);
    }

    /** The same header bound to the attempt whose HELLO carried {@code destinationNonce}. */
    public StreamHeader withNonce(Nonce destinationNonce) {
        return new StreamHeader(version, pageSize, memory, sections, vcpus, channels, streamId, ramChecksums, destinationNonce, memfdOffer, vm);
    }

    /** The same header offering the guest-memory memfds or not ({@link #FLAG_MEMFD_OFFER}). */
    public StreamHeader withMemfdOffer(boolean offer) {
        return new StreamHeader(version, pageSize, memory, sections, vcpus, channels, streamId, ramChecksums, nonce, offer, vm);
    }

    /** The same header naming the VM it moves ({@link #NO_IDENTITY}: none). */
    public StreamHeader withVm(java.util.UUID identity) {
        return new StreamHeader(version, pageSize, memory, sections, vcpus, channels, streamId, ramChecksums, nonce, memfdOffer, identity);
    }

    public ByteBuffer encode() {
        int size = FIXED + 16 * memory.size() + 4;
        for (SectionInfo x : sections) size += 16 + pad8(utf8(x.id()).length) + pad8(utf8(x.kind()).length) + pad8(utf8(x.config()).length);
        ByteBuffer b = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(MAGIC).putInt(version).putInt(size).putInt(pageSize).putInt(memory.size()).putInt(sections.size()).putInt(vcpus)
                .putInt(channels).putInt((ramChecksums ? FLAG_RAM_CHECKSUMS : 0) | (memfdOffer ? FLAG_MEMFD_OFFER : 0)).putLong(streamId).putLong(nonce.high()).putLong(nonce.low())
                .putLong(vm.getMostSignificantBits()).putLong(vm.getLeastSignificantBits());
        for (Range r : memory) b.putLong(r.guestAddress()).putLong(r.size());
        for (SectionInfo x : sections) {
            byte[] id = utf8(x.id()), kind = utf8(x.kind()), config = utf8(x.config());
            b.putInt(x.version()).putInt(id.length).putInt(kind.length).putInt(config.length);
            b.put(id).position(b.position() + pad8(id.length) - id.length);
            b.put(kind).position(b.position() + pad8(kind.length) - kind.length);
            b.put(config).position(b.position() + pad8(config.length) - config.length);
        }
        CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, b.position());
        b.putInt((int) crc.getValue());
        return b.flip();
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static int pad8(int n) {
        return (n + 7) & ~7;
    }

    /** Reads and checks a header: magic, version, size bounds, CRC32C, counts. */
    public static StreamHeader read(ReadableByteChannel in) throws IOException {
        long magic = readMagic(in);
        if (magic != MAGIC) throw new WireFormatException("not a vmmkit migration stream: magic 0x" + Long.toHexString(magic));
        return readAfterMagic(in);
    }

    /** The first 8 bytes of a connection: a stream header's magic or an outcome query's ({@link OutcomeQuery#MAGIC}). */
    public static long readMagic(ReadableByteChannel in) throws IOException {
        ByteBuffer magic = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        FrameCodec.readFully(in, magic, "the stream header");
        return magic.getLong(0);
    }

    /** {@link #read} after the magic. */
    public static StreamHeader readAfterMagic(ReadableByteChannel in) throws IOException {
        ByteBuffer fixed = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN);
        fixed.putLong(MAGIC).limit(16);
        FrameCodec.readFully(in, fixed, "the stream header");
        fixed.flip().position(8);
        int version = fixed.getInt();
        if (version != VERSION) {
            throw new WireFormatException("the stream has wire format version " + version + "; this destination reads version "
                    + VERSION + " only");
        }
        int size = fixed.getInt();
        if (size < FIXED + 4 || size > MAX_BYTES) throw new WireFormatException("stream header size " + size + " is out of bounds");
        ByteBuffer b = ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
        b.put(fixed.flip());
        FrameCodec.readFully(in, b, "the stream header");
        CRC32C crc = new CRC32C();
        crc.update(b.array(), 0, size - 4);
        if ((int) crc.getValue() != b.getInt(size - 4)) throw new WireFormatException("stream header CRC32C mismatch");
        b.position(16);
        int pageSize = b.getInt(), regions = b.getInt(), sectionCount = b.getInt(), vcpus = b.getInt(), channels = b.getInt(),
                flags = b.getInt();
        long streamId = b.getLong();
        Nonce nonce = new Nonce(b.getLong(), b.getLong());
        java.util.UUID vm = new java.util.UUID(b.getLong(), b.getLong());
        if (Integer.bitCount(pageSize) != 1 || regions < 0 || regions > MAX_REGIONS || sectionCount < 0 || sectionCount > MAX_SECTIONS
                || vcpus < 0 || vcpus > 1024 || channels < 1 || channels > MAX_CHANNELS || (flags & ~(FLAG_RAM_CHECKSUMS | FLAG_MEMFD_OFFER)) != 0) {
            throw new WireFormatException("stream header: page size " + pageSize + ", " + regions + " regions, " + sectionCount
                    + " sections, " + vcpus + " vCPUs, " + channels + " channels, flags 0x" + Integer.toHexString(flags));
        }
        try {
            List<Range> memory = new ArrayList<>();
            for (int i = 0; i < regions; i++) memory.add(new Range(b.getLong(), b.getLong()));
            List<SectionInfo> devs = new ArrayList<>();
            for (int i = 0; i < sectionCount; i++) {
                int version2 = b.getInt(), idLength = b.getInt(), kindLength = b.getInt(), configLength = b.getInt();
                if (idLength < 1 || idLength > MAX_NAME || kindLength < 1 || kindLength > MAX_NAME || configLength < 0
                        || configLength > SectionInfo.MAX_CONFIG) {
                    throw new WireFormatException("stream header: section " + i + " has an id of " + idLength + " bytes, a kind of " + kindLength
                            + " bytes, a config of " + configLength + " bytes (at most " + MAX_NAME + ", " + MAX_NAME + " and " + SectionInfo.MAX_CONFIG + ")");
                }
                String id = text(b, idLength), kind = text(b, kindLength), config = text(b, configLength);
                try {
                    devs.add(new SectionInfo(id, kind, version2, config));
                } catch (IllegalArgumentException e) {
                    throw new WireFormatException("stream header: section " + i + ": " + e.getMessage());
                }
            }
            if (b.position() != size - 4) throw new WireFormatException("stream header: " + (size - 4 - b.position()) + " stray bytes");
            return new StreamHeader(version, pageSize, memory, devs, vcpus, channels, streamId, (flags & FLAG_RAM_CHECKSUMS) != 0, nonce,
                    (flags & FLAG_MEMFD_OFFER) != 0, vm);
        } catch (java.nio.BufferUnderflowException | IllegalArgumentException e) { // a count or a padding past the end
            throw new WireFormatException("stream header: its counts overrun its " + size + " bytes");
        }
    }

    private static String text(ByteBuffer b, int length) {
        byte[] bytes = new byte[length];
        b.get(bytes);
        b.position(b.position() + pad8(length) - length);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    /**
     * Whether a VM with this layout (the destination's own) can take the stream: same page size, same RAM
     * ranges, same vCPU count (the channels are the stream's, not the VM's; the sections are matched to the
     * destination's loaders by the destination). Names the first difference.
     */
    public void checkCompatibleWith(StreamHeader local) {
        String misfit = "the stream header does not fit this VM: ";
        if (pageSize != local.pageSize) throw new WireFormatException(misfit + "page size " + pageSize + ", here " + local.pageSize);
        if (!memory.equals(local.memory)) {
            throw new WireFormatException(misfit + "memory layout differs: the source has " + describe(memory) + ", this VM " + describe(local.memory));
        }
        if (vcpus != local.vcpus) throw new WireFormatException(misfit + "the source has " + vcpus + " vCPUs, this VM " + local.vcpus);
    }

    private static String describe(List<Range> ranges) {
        StringBuilder s = new StringBuilder("[");
        for (Range r : ranges) {
            if (s.length() > 1) s.append(", ");
            s.append("0x").append(Long.toHexString(r.guestAddress())).append("+").append(r.size() >> 20).append("M");
        }
        return s.append(']').toString();
    }
}
