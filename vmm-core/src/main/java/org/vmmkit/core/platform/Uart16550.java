package org.vmmkit.core.platform;

import java.nio.charset.StandardCharsets;

/**
 * A 16550A UART as a PC's console port (COM1 is 0x3f8-0x3ff on IRQ 4): the eight registers at offsets 0-7,
 * the divisor latch behind LCR.DLAB, a 16-byte receive FIFO, the four interrupt sources in the 16550's
 * priority order, and loopback (MCR bit 4). What the guest transmits goes to a {@link ConsoleSink} as lines;
 * what the host types arrives through {@link #receive}. The interrupt output is level-triggered on an
 * {@link IrqLine}, driven as IIR changes.
 *
 * <p>There is no wire and no baud-rate clock: a transmitted byte is gone at once (THRE and TEMT always read
 * 1, and the THR-empty interrupt is pending again right after each write, as QEMU's model does), the divisor
 * is kept for the guest but times nothing, and the FIFO's character timeout has elapsed as soon as data sits
 * below the trigger level (IIR reports 0x0c at once, where hardware waits four character times). Parity,
 * framing errors and breaks cannot occur, so the receiver-line-status interrupt comes only from an overrun.
 * The modem inputs outside loopback are those of an attached terminal: DCD, DSR and CTS asserted, no ring.
 * OUT2 does not gate the interrupt (as in QEMU and rust-vmm's vm-superio).
 *
 * <p>Thread-safe: a vCPU thread calls {@link #read}/{@link #write}, a host thread {@link #receive}; one lock
 * orders them. The {@link IrqLine} and the {@link ConsoleSink} are called with that lock held, so the line
 * sees level changes and the sink sees lines in the order they happened; neither may call back into the UART.
 */
public final class Uart16550 {
    /** Register offsets from the base port; RBR/THR/IER share 0 and 1 with the divisor latch. */
    public static final int RBR_THR_DLL = 0, IER_DLM = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;
    /** The receive FIFO's depth. */
    public static final int FIFO_BYTES = 16;
    /** A console line longer than this is delivered in parts of this many bytes. */
    public static final int MAX_LINE = 1024;

    static final int IER_RDA = 0x01, IER_THRE = 0x02, IER_RLS = 0x04, IER_MS = 0x08, IER_BITS = 0x0f;
    static final int IIR_NONE = 0x01, IIR_MS = 0x00, IIR_THRE = 0x02, IIR_RDA = 0x04, IIR_RLS = 0x06, IIR_TIMEOUT = 0x0c,
            IIR_FIFO_ENABLED = 0xc0;
    static final int FCR_ENABLE = 0x01, FCR_CLEAR_RX = 0x02, FCR_TRIGGER = 0xc0, FCR_BITS = FCR_ENABLE | FCR_TRIGGER;
    static final int LCR_DLAB = 0x80;
    static final int MCR_DTR = 0x01, MCR_RTS = 0x02, MCR_OUT1 = 0x04, MCR_OUT2 = 0x08, MCR_LOOP = 0x10, MCR_BITS = 0x1f;
    static final int LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40;
    static final int MSR_DCTS = 0x01, MSR_DDSR = 0x02, MSR_TERI = 0x04, MSR_DDCD = 0x08, MSR_DELTAS = 0x0f,
            MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_RI = 0x40, MSR_DCD = 0x80;
    /** What a terminal on the line asserts: carrier, data set ready, clear to send. */
    static final int TERMINAL_LINES = MSR_DCD | MSR_DSR | MSR_CTS;
    /** Divisor 12: 9600 baud from the PC's 1.8432 MHz clock, what a BIOS leaves. */
    static final int RESET_DLL = 12;
    private static final int[] TRIGGER_LEVELS = {1, 4, 8, 14};

    private final IrqLine irq;
    private final ConsoleSink console;

    // Guarded by this.
    private int dll = RESET_DLL, dlm, ier, fcr, lcr, mcr, scr;
    /** LSR's sticky error bits (OE only: nothing else can happen here); DR, THRE and TEMT are computed. */
    private int lsrErrors;
    private int msr = TERMINAL_LINES;
    /** THR became empty and IIR has not reported it since (QEMU's thr_ipending). */
    private boolean thrPending;
    private final byte[] rx = new byte[FIFO_BYTES];
    private int rxHead, rxCount;
    private final byte[] line = new byte[MAX_LINE];
    private int lineLength;
    /** The level last driven onto {@link #irq}. */
    private boolean level;

    public Uart16550(IrqLine irq, ConsoleSink console) {
        this.irq = irq;
        this.console = console;
    }

    /** A guest's IN from base + {@code offset} (0-7). */
    public synchronized byte read(int offset) {
        int value = switch (checked(offset)) {
            case RBR_THR_DLL -> dlab() ? dll : readReceiveBuffer();
            case IER_DLM -> dlab() ? dlm : ier;
            case IIR_FCR -> {
                int id = identify();
                if (id == IIR_THRE) thrPending = false; // reading IIR clears THRE when it is the source
                update();
                yield id | (fifoEnabled() ? IIR_FIFO_ENABLED : 0);
            }
            case LCR -> lcr;
            case MCR -> mcr;
            case LSR -> {
                int lsr = lsr();
                lsrErrors = 0;
                update();
                yield lsr;
            }
            case MSR -> {
                int m = msr;
                msr &= ~MSR_DELTAS;
                update();
                yield m;
            }
            default -> scr;
        };
        return (byte) value;
    }

    /** A guest's OUT of {@code value} to base + {@code offset} (0-7). */
    public synchronized void write(int offset, byte value) {
        int v = value & 0xff;
        switch (checked(offset)) {
            case RBR_THR_DLL -> {
                if (dlab()) dll = v;
                else transmit(v);
            }
            case IER_DLM -> {
                if (dlab()) {
                    dlm = v;
                    return;
                }
                int changed = (ier ^ v) & IER_BITS;
                ier = v & IER_BITS;
                // Enabling the THRE interrupt while THR is empty raises it, even if IIR cleared it before
                // (not in the data sheet; Windows relies on it, QEMU and Bochs do it on the rising edge).
                if ((changed & IER_THRE) != 0) thrPending = (ier & IER_THRE) != 0;
                update();
            }
            case IIR_FCR -> {
                // FCR bits other than FIFO enable are programmed only with FIFO enable set; changing the enable
                // bit clears the FIFOs (the transmit side has nothing to clear here).
                int next = (v & FCR_ENABLE) != 0 ? v & FCR_BITS : 0;
                if (((next ^ fcr) & FCR_ENABLE) != 0 || (v & (FCR_ENABLE | FCR_CLEAR_RX)) == (FCR_ENABLE | FCR_CLEAR_RX)) {
                    rxHead = rxCount = 0;
                }
                fcr = next;
                update();
            }
            case LCR -> lcr = v;
            case MCR -> {
                int before = msr & ~MSR_DELTAS;
                mcr = v & MCR_BITS;
                int now = modemInputs(mcr);
                int deltas = msr & MSR_DELTAS;
                if (((before ^ now) & MSR_CTS) != 0) deltas |= MSR_DCTS;
                if (((before ^ now) & MSR_DSR) != 0) deltas |= MSR_DDSR;
                if (((before ^ now) & MSR_DCD) != 0) deltas |= MSR_DDCD;
                if ((before & MSR_RI) != 0 && (now & MSR_RI) == 0) deltas |= MSR_TERI;
                msr = now | deltas;
                update();
            }
            case LSR, MSR -> {
                // read-only (the LSR's factory-test write does nothing useful on a console)
            }
            default -> scr = v;
        }
    }

    /**
     * Bytes from the host's side of the line, in order, as a terminal would send them: each goes into the
     * receive FIFO (the receive buffer with the FIFO off); one that finds it full is lost and sets LSR.OE, as
     * on hardware. In loopback the line input is disconnected and the bytes are dropped. See {@link #receiveSpace}.
     */
    public synchronized void receive(byte... bytes) {
        if (loopback()) return;
        for (byte b : bytes) receiveByte(b);
        update();
    }

    /** How many bytes {@link #receive} takes now without an overrun (0 in loopback). */
    public synchronized int receiveSpace() {
        return loopback() ? 0 : (fifoEnabled() ? FIFO_BYTES : 1) - rxCount;
    }

    /** Whether the UART is asking for an interrupt (the level on its {@link IrqLine}). */
    public synchronized boolean interruptLevel() {
        return level;
    }

    /** Drives the current level onto the line again: a restored UART's line starts low on a fresh irqchip. */
    public synchronized void driveIrqLine() {
        irq.set(level);
    }

    /** The whole state, for migration. */
    public synchronized UartState state() {
        byte[] fifo = new byte[rxCount];
        for (int i = 0; i < rxCount; i++) fifo[i] = rx[(rxHead + i) % FIFO_BYTES];
        return new UartState(dll, dlm, ier, fcr, lcr, mcr, lsr(), msr, scr, thrPending, level, fifo,
                java.util.Arrays.copyOf(line, lineLength));
    }

    /**
     * Takes {@code state} over (a {@link UartState} is consistent by construction). The line is not driven:
     * {@link #driveIrqLine} does that when the VM starts.
     */
    public synchronized void restore(UartState state) {
        dll = state.dll();
        dlm = state.dlm();
        ier = state.ier();
        fcr = state.fcr();
        lcr = state.lcr();
        mcr = state.mcr();
        lsrErrors = state.lsr() & LSR_OE;
        msr = state.msr();
        scr = state.scr();
        thrPending = state.thrPending();
        byte[] fifo = state.rxFifo();
        rxHead = 0;
        rxCount = fifo.length;
        System.arraycopy(fifo, 0, rx, 0, fifo.length);
        byte[] partial = state.partialLine();
        lineLength = partial.length;
        System.arraycopy(partial, 0, line, 0, partial.length);
        level = state.irqLevel();
    }

    /**
     * The interrupt the 16550 reports in IIR (its low nibble), highest priority first: receiver line status,
     * received data (or the FIFO's character timeout), THR empty, modem status; {@code IIR_NONE} for none.
     */
    static int identify(int ier, int lsr, int rxCount, int fcr, boolean thrPending, int msr) {
        if ((ier & IER_RLS) != 0 && (lsr & LSR_OE) != 0) return IIR_RLS;
        if ((ier & IER_RDA) != 0 && rxCount > 0) {
            return (fcr & FCR_ENABLE) != 0 && rxCount < TRIGGER_LEVELS[(fcr & FCR_TRIGGER) >> 6] ? IIR_TIMEOUT : IIR_RDA;
        }
        if ((ier & IER_THRE) != 0 && thrPending) return IIR_THRE;
        if ((ier & IER_MS) != 0 && (msr & MSR_DELTAS) != 0) return IIR_MS;
        return IIR_NONE;
    }

    /** MSR's line bits for {@code mcr}: wired back from MCR in loopback, the terminal's otherwise. */
    static int modemInputs(int mcr) {
        if ((mcr & MCR_LOOP) == 0) return TERMINAL_LINES;
        int lines = 0;
        if ((mcr & MCR_RTS) != 0) lines |= MSR_CTS;
        if ((mcr & MCR_DTR) != 0) lines |= MSR_DSR;
        if ((mcr & MCR_OUT1) != 0) lines |= MSR_RI;
        if ((mcr & MCR_OUT2) != 0) lines |= MSR_DCD;
        return lines;
    }

    /** LSR as read: DR while data is waiting, THRE and TEMT always (transmission is instantaneous), OE if sticky. */
    static int lsrFor(int rxCount, int errors) {
        return LSR_THRE | LSR_TEMT | (rxCount > 0 ? LSR_DR : 0) | errors;
    }

    private static int checked(int offset) {
        if (offset < 0 || offset > 7) throw new IllegalArgumentException("16550 register offset " + offset + ": the UART has 0-7");
        return offset;
    }

    private boolean dlab() {
        return (lcr & LCR_DLAB) != 0;
    }

    private boolean fifoEnabled() {
        return (fcr & FCR_ENABLE) != 0;
    }

    private boolean loopback() {
        return (mcr & MCR_LOOP) != 0;
    }

    private int lsr() {
        return lsrFor(rxCount, lsrErrors);
    }

    private int identify() {
        return identify(ier, lsr(), rxCount, fcr, thrPending, msr);
    }

    private int readReceiveBuffer() {
        if (rxCount == 0) return 0;
        int b = rx[rxHead] & 0xff;
        rxHead = (rxHead + 1) % FIFO_BYTES;
        rxCount--;
        update();
        return b;
    }

    private void receiveByte(byte b) {
        if (!fifoEnabled() && rxCount == 1) {
            lsrErrors |= LSR_OE; // the 16450-mode receive buffer is overwritten
            rx[rxHead] = b;
        } else if (rxCount == (fifoEnabled() ? FIFO_BYTES : 1)) {
            lsrErrors |= LSR_OE; // the FIFO keeps its bytes; the one in the shift register is lost
        } else {
            rx[(rxHead + rxCount) % FIFO_BYTES] = b;
            rxCount++;
        }
    }

    private void transmit(int v) {
        thrPending = false;
        if (loopback()) receiveByte((byte) v);
        else emit(v);
        thrPending = true; // already sent: THR is empty again
        update();
    }

    private void emit(int v) {
        if (v == '\n') {
            flushLine();
        } else if (v != '\r') {
            line[lineLength++] = (byte) v;
            if (lineLength == MAX_LINE) flushLine();
        }
    }

    private void flushLine() {
        String text = new String(line, 0, lineLength, StandardCharsets.UTF_8);
        lineLength = 0;
        console.line(text);
    }

    private void update() {
        boolean high = identify() != IIR_NONE;
        if (high != level) {
            level = high;
            irq.set(high);
        }
    }
}
