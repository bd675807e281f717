package org.vmmkit.core.platform;

import java.util.Arrays;

import static org.vmmkit.core.platform.Uart16550.FCR_BITS;
import static org.vmmkit.core.platform.Uart16550.FCR_ENABLE;
import static org.vmmkit.core.platform.Uart16550.FIFO_BYTES;
import static org.vmmkit.core.platform.Uart16550.IER_BITS;
import static org.vmmkit.core.platform.Uart16550.IIR_NONE;
import static org.vmmkit.core.platform.Uart16550.LSR_OE;
import static org.vmmkit.core.platform.Uart16550.MAX_LINE;
import static org.vmmkit.core.platform.Uart16550.MCR_BITS;
import static org.vmmkit.core.platform.Uart16550.MSR_DELTAS;

/**
 * Everything a {@link Uart16550} holds: the registers (LSR and MSR as the guest would read them next), whether
 * THR-empty is pending, the interrupt level, the bytes waiting in the receive FIFO (oldest first) and the
 * console line transmitted so far. Consistent by construction: a value this model could not reach (a FIFO
 * deeper than 16, an LSR that disagrees with the FIFO, a level that disagrees with the registers) is refused,
 * naming the field, so restored state never surprises the guest.
 *
 * <p>{@link #toBytes} (format version 1): magic "UART", version, dll, dlm, ier, fcr, lcr, mcr, lsr, msr, scr,
 * flags (bit 0 THR-empty pending, bit 1 interrupt level), rxCount and that many bytes, a big-endian u16 line
 * length and that many bytes; nothing after.
 */
public record UartState(int dll, int dlm, int ier, int fcr, int lcr, int mcr, int lsr, int msr, int scr,
                        boolean thrPending, boolean irqLevel, byte[] rxFifo, byte[] partialLine) {
    public static final int FORMAT_VERSION = 1;
    static final int MAGIC = 0x55415254; // "UART"
    private static final int FLAG_THR_PENDING = 1, FLAG_IRQ_LEVEL = 2;

    public UartState {
        checkByte("dll", dll);
        checkByte("dlm", dlm);
        checkByte("lcr", lcr);
        checkByte("scr", scr);
        if ((ier & ~IER_BITS) != 0) throw refused("ier", ier, "has bits outside 0-3, which the 16550 does not have");
        if ((fcr & ~FCR_BITS) != 0 || ((fcr & FCR_ENABLE) == 0 && fcr != 0)) {
            throw refused("fcr", fcr, "is not FIFO enable with a trigger level (0x01, 0x41, 0x81, 0xc1) or 0");
        }
        if ((mcr & ~MCR_BITS) != 0) throw refused("mcr", mcr, "has bits outside 0-4, which the 16550 does not have");
        int depth = (fcr & FCR_ENABLE) != 0 ? FIFO_BYTES : 1;
        if (rxFifo.length > depth) {
            throw refused("rxCount", rxFifo.length, "is more than the " + depth + " byte" + (depth == 1 ? " the receive buffer holds with the FIFO off"
                    : "s the FIFO holds"));
        }
        int expectedLsr = Uart16550.lsrFor(rxFifo.length, lsr & LSR_OE);
        if (lsr != expectedLsr) {
            throw refused("lsr", lsr, "is not what the receiver gives (0x" + Integer.toHexString(expectedLsr)
                    + ": THRE and TEMT, DR while the FIFO holds data, and OE alone may be added)");
        }
        int lines = Uart16550.modemInputs(mcr);
        if ((msr & ~MSR_DELTAS) != lines) {
            throw refused("msr", msr, "has modem lines 0x" + Integer.toHexString(msr & ~MSR_DELTAS) + " where MCR 0x"
                    + Integer.toHexString(mcr) + " gives 0x" + Integer.toHexString(lines));
        }
        if (partialLine.length >= MAX_LINE) throw refused("partialLine", partialLine.length, "bytes: a line is delivered at " + MAX_LINE);
        for (int i = 0; i < partialLine.length; i++) {
            if (partialLine[i] == '\n' || partialLine[i] == '\r') throw refused("partialLine", i, "is the offset of a line end, which ends a line");
        }
        int iir = Uart16550.identify(ier, lsr, rxFifo.length, fcr, thrPending, msr);
        if (irqLevel != (iir != IIR_NONE)) {
            throw refused("irqLevel", irqLevel ? 1 : 0, "disagrees with the registers, which give IIR 0x" + Integer.toHexString(iir));
        }
        rxFifo = rxFifo.clone();
        partialLine = partialLine.clone();
    }

    @Override
    public byte[] rxFifo() {
        return rxFifo.clone();
    }

    @Override
    public byte[] partialLine() {
        return partialLine.clone();
    }

    public byte[] toBytes() {
        byte[] out = new byte[4 + 1 + 9 + 1 + 1 + rxFifo.length + 2 + partialLine.length];
        int at = 0;
        for (int shift = 24; shift >= 0; shift -= 8) out[at++] = (byte) (MAGIC >>> shift);
        for (int v : new int[] {FORMAT_VERSION, dll, dlm, ier, fcr, lcr, mcr, lsr, msr, scr,
                (thrPending ? FLAG_THR_PENDING : 0) | (irqLevel ? FLAG_IRQ_LEVEL : 0), rxFifo.length}) {
            out[at++] = (byte) v;
        }
        System.arraycopy(rxFifo, 0, out, at, rxFifo.length);
        at += rxFifo.length;
        out[at++] = (byte) (partialLine.length >>> 8);
        out[at++] = (byte) partialLine.length;
        System.arraycopy(partialLine, 0, out, at, partialLine.length);
        return out;
    }

    /** Reads {@link #toBytes}; anything else is refused with an {@link IllegalArgumentException} naming the field. */
    public static UartState fromBytes(byte[] bytes) {
        Reader in = new Reader(bytes);
        int magic = in.u8("magic") << 24 | in.u8("magic") << 16 | in.u8("magic") << 8 | in.u8("magic");
        if (magic != MAGIC) throw refused("magic", magic, "is not 16550 state (\"UART\")");
        int version = in.u8("version");
        if (version != FORMAT_VERSION) throw refused("version", version, "is not one this build reads (" + FORMAT_VERSION + ")");
        int dll = in.u8("dll"), dlm = in.u8("dlm"), ier = in.u8("ier"), fcr = in.u8("fcr"), lcr = in.u8("lcr"),
                mcr = in.u8("mcr"), lsr = in.u8("lsr"), msr = in.u8("msr"), scr = in.u8("scr"), flags = in.u8("flags");
        if ((flags & ~(FLAG_THR_PENDING | FLAG_IRQ_LEVEL)) != 0) throw refused("flags", flags, "has bits other than 0 and 1");
        int rxCount = in.u8("rxCount");
        if (rxCount > FIFO_BYTES) throw refused("rxCount", rxCount, "is more than the " + FIFO_BYTES + " bytes the FIFO holds");
        byte[] rx = in.bytes(rxCount, "rxFifo");
        int lineLength = in.u8("partialLineLength") << 8 | in.u8("partialLineLength");
        if (lineLength >= MAX_LINE) throw refused("partialLineLength", lineLength, "is not below " + MAX_LINE);
        byte[] line = in.bytes(lineLength, "partialLine");
        if (in.remaining() != 0) throw new IllegalArgumentException("16550 state: " + in.remaining() + " bytes after the last field (partialLine)");
        return new UartState(dll, dlm, ier, fcr, lcr, mcr, lsr, msr, scr, (flags & FLAG_THR_PENDING) != 0,
                (flags & FLAG_IRQ_LEVEL) != 0, rx, line);
    }

    private static void checkByte(String field, int value) {
        if (value < 0 || value > 0xff) throw refused(field, value, "is not a byte");
    }

    private static IllegalArgumentException refused(String field, int value, String why) {
        return new IllegalArgumentException("16550 state: field " + field + " " + value + " (0x" + Integer.toHexString(value) + ") " + why);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof UartState s && Arrays.equals(s.toBytes(), toBytes());
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(toBytes());
    }

    @Override
    public String toString() {
        return "UartState[ier=0x" + Integer.toHexString(ier) + ", lsr=0x" + Integer.toHexString(lsr) + ", " + rxFifo.length
                + " bytes waiting, " + partialLine.length + " bytes of a line, irq " + (irqLevel ? "high" : "low") + "]";
    }

    /** Reads fields off the front of the bytes, refusing (naming the field) any that would run past the end. */
    private static final class Reader {
        private final byte[] bytes;
        private int at;

        Reader(byte[] bytes) {
            this.bytes = bytes;
        }

        int u8(String field) {
            need(1, field);
            return bytes[at++] & 0xff;
        }

        byte[] bytes(int n, String field) {
            need(n, field);
            byte[] out = Arrays.copyOfRange(bytes, at, at + n);
            at += n;
            return out;
        }

        int remaining() {
            return bytes.length - at;
        }

        private void need(int n, String field) {
            if (n > bytes.length - at) {
                throw new IllegalArgumentException("16550 state is truncated: field " + field + " needs " + n + " byte" + (n == 1 ? "" : "s")
                        + " at offset " + at + " of " + bytes.length);
            }
        }
    }
}
