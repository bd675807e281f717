package org.vmmkit.core.platform;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vmmkit.core.platform.Uart16550.IER_DLM;
import static org.vmmkit.core.platform.Uart16550.IIR_FCR;
import static org.vmmkit.core.platform.Uart16550.LCR;
import static org.vmmkit.core.platform.Uart16550.LSR;
import static org.vmmkit.core.platform.Uart16550.MCR;
import static org.vmmkit.core.platform.Uart16550.MSR;
import static org.vmmkit.core.platform.Uart16550.RBR_THR_DLL;
import static org.vmmkit.core.platform.Uart16550.SCR;

class Uart16550Test {
    /** The levels the UART drove, in order. */
    final List<Boolean> levels = new ArrayList<>();
    final ConsoleLog console = new ConsoleLog(100);
    final Uart16550 uart = new Uart16550(high -> levels.add(high), console);

    int reg(int offset) {
        return uart.read(offset) & 0xff;
    }

    void set(int offset, int value) {
        uart.write(offset, (byte) value);
    }

    void type(String s) {
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) set(RBR_THR_DLL, b);
    }

    @Test
    void enablingTheThrEmptyInterruptRaisesTheLineAndReadingIirClearsIt() {
        assertEquals(0x01, reg(IIR_FCR), "nothing pending after reset");
        assertEquals(List.of(), levels);
        set(IER_DLM, 0x02);
        assertEquals(List.of(true), levels);
        assertEquals(0x02, reg(IIR_FCR));
        assertEquals(List.of(true, false), levels, "reading IIR with THRE the source clears it");
        assertEquals(0x01, reg(IIR_FCR));
        set(RBR_THR_DLL, 'a');
        assertEquals(List.of(true, false, true), levels, "THR empties again at once after a write");
        assertEquals(0x02, reg(IIR_FCR));
        set(IER_DLM, 0x00);
        set(IER_DLM, 0x02);
        assertEquals(0x02, reg(IIR_FCR), "re-enabling raises THRE again (the rising edge, as QEMU and Bochs)");
    }

    @Test
    void receivedDataRaisesTheLineUntilRbrIsRead() {
        set(IER_DLM, 0x01);
        assertEquals(0x60, reg(LSR));
        uart.receive((byte) 'x');
        assertTrue(uart.interruptLevel());
        assertEquals(0x04, reg(IIR_FCR));
        assertEquals(0x61, reg(LSR), "DR");
        assertEquals('x', reg(RBR_THR_DLL));
        assertFalse(uart.interruptLevel());
        assertEquals(List.of(true, false), levels);
        assertEquals(0x01, reg(IIR_FCR));
        assertEquals(0x60, reg(LSR));
    }

    @Test
    void theFifoKeepsOrderAndAnOverrunLosesTheSeventeenthByteAndSetsOe() {
        set(IIR_FCR, 0x01);
        assertEquals(16, uart.receiveSpace());
        byte[] bytes = new byte[17];
        for (int i = 0; i < 17; i++) bytes[i] = (byte) ('A' + i);
        uart.receive(bytes);
        assertEquals(0, uart.receiveSpace());
        assertEquals(0x63, reg(LSR), "DR and OE");
        assertEquals(0x61, reg(LSR), "reading LSR clears OE");
        StringBuilder got = new StringBuilder();
        while ((reg(LSR) & 0x01) != 0) got.append((char) reg(RBR_THR_DLL));
        assertEquals("ABCDEFGHIJKLMNOP", got.toString());
    }

    @Test
    void withoutTheFifoTheReceiveBufferHoldsOneByteAndAnOverrunOverwritesIt() {
        assertEquals(1, uart.receiveSpace());
        uart.receive((byte) 1, (byte) 2);
        assertEquals(0x63, reg(LSR));
        assertEquals(2, reg(RBR_THR_DLL));
        assertEquals(0x60, reg(LSR));
    }

    @Test
    void theFifoBelowItsTriggerLevelReportsACharacterTimeoutAndAtItTheDataInterrupt() {
        set(IER_DLM, 0x01);
        set(IIR_FCR, 0xc1); // FIFO on, trigger level 14
        uart.receive(new byte[13]);
        assertEquals(0xcc, reg(IIR_FCR));
        uart.receive((byte) 0);
        assertEquals(0xc4, reg(IIR_FCR));
        set(IIR_FCR, 0xc3); // clear the receive FIFO
        assertEquals(0x60, reg(LSR));
        assertEquals(0xc1, reg(IIR_FCR));
        assertFalse(uart.interruptLevel());
        uart.receive((byte) 7);
        set(IIR_FCR, 0x00); // turning the FIFO off clears it too
        assertEquals(0x01, reg(IIR_FCR));
        assertEquals(0x60, reg(LSR));
    }

    @Test
    void theDivisorLatchSharesOffsetsZeroAndOneWithTheDataAndInterruptEnableRegisters() {
        set(IER_DLM, 0x05);
        set(LCR, 0x83);
        assertEquals(12, reg(RBR_THR_DLL), "the reset divisor: 9600 baud");
        set(RBR_THR_DLL, 0x01);
        set(IER_DLM, 0x02);
        assertEquals(0x01, reg(RBR_THR_DLL));
        assertEquals(0x02, reg(IER_DLM));
        assertEquals(0x83, reg(LCR));
        set(LCR, 0x03);
        assertEquals(0x05, reg(IER_DLM), "IER kept while DLAB was set");
        assertEquals(List.of(), console.lines(), "divisor writes transmit nothing");
        set(LCR, 0x80);
        assertEquals(0x01, reg(RBR_THR_DLL));
        assertEquals(0x02, reg(IER_DLM));
        set(SCR, 0x5a);
        assertEquals(0x5a, reg(SCR));
    }

    @Test
    void iirReportsTheSourcesInThe16550sPriorityOrder() {
        set(IER_DLM, 0x0f);
        // Loopback with every output low: CTS, DSR and DCD drop, three modem-status deltas.
        set(MCR, 0x10);
        // Two bytes into the one-byte receive buffer: the second overruns it.
        set(RBR_THR_DLL, 'p');
        set(RBR_THR_DLL, 'q');
        assertTrue(uart.interruptLevel());
        assertEquals(0x06, reg(IIR_FCR), "receiver line status first");
        assertEquals(0x63, reg(LSR));
        assertEquals(0x04, reg(IIR_FCR), "then received data");
        assertEquals('q', reg(RBR_THR_DLL));
        assertEquals(0x02, reg(IIR_FCR), "then THR empty, cleared by this read");
        assertEquals(0x00, reg(IIR_FCR), "then modem status");
        assertTrue(uart.interruptLevel());
        assertEquals(0x0b, reg(MSR), "DCTS, DDSR, DDCD and no lines");
        assertEquals(0x01, reg(IIR_FCR));
        assertFalse(uart.interruptLevel());
        assertEquals(List.of(true, false), levels, "the line stayed high until the last source was served");
    }

    @Test
    void loopbackWiresModemOutputsToInputsAndTransmitsToTheReceiverNotTheConsole() {
        assertEquals(0xb0, reg(MSR), "a terminal's DCD, DSR, CTS");
        set(MCR, 0x1f);
        assertEquals(0xf0, reg(MSR) & 0xf0, "RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD");
        set(MCR, 0x1b);
        assertEquals(0x04, reg(MSR) & 0x0f, "RI falling: TERI");
        uart.receive((byte) 'h');
        assertEquals(0x60, reg(LSR), "line input is disconnected in loopback");
        assertEquals(0, uart.receiveSpace());
        set(IIR_FCR, 0x01);
        type("ok\n");
        assertEquals(List.of(), console.lines());
        assertEquals('o', reg(RBR_THR_DLL));
        assertEquals('k', reg(RBR_THR_DLL));
        assertEquals('\n', reg(RBR_THR_DLL));
        set(MCR, 0x0b);
        type("out\n");
        assertEquals(List.of("out"), texts());
    }

    @Test
    void transmittedBytesReachTheSinkAsLinesWithoutLineEnds() {
        type("hello\r\nworld\npart");
        assertEquals(List.of("hello", "world"), texts());
        type("ial\n");
        assertEquals(List.of("hello", "world", "partial"), texts());
        type("x".repeat(Uart16550.MAX_LINE + 3) + "\n");
        assertEquals(List.of("hello", "world", "partial", "x".repeat(Uart16550.MAX_LINE), "xxx"), texts(),
                "a line longer than MAX_LINE arrives in parts");
    }

    @Test
    void aRegisterOffsetOutsideTheUartIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> uart.read(8));
        assertTrue(e.getMessage().contains("offset 8"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> uart.write(-1, (byte) 0));
    }

    @Test
    void aHostThreadTypingAndAVcpuThreadReadingLoseNothingAndTheLineAlternates() throws Exception {
        int n = 5_000;
        set(IIR_FCR, 0x01);
        set(IER_DLM, 0x01);
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Thread host = new Thread(() -> {
            int sent = 0;
            while (sent < n) {
                int space = uart.receiveSpace();
                if (space == 0) {
                    Thread.onSpinWait();
                    continue;
                }
                int k = Math.min(space, n - sent);
                byte[] chunk = new byte[k];
                for (int i = 0; i < k; i++) chunk[i] = (byte) (sent + i);
                uart.receive(chunk);
                sent += k;
            }
        }, "host-input");
        host.setUncaughtExceptionHandler((t, e) -> failure.set(e));
        host.start();
        for (int got = 0; got < n; ) {
            if ((reg(LSR) & 0x01) == 0) {
                Thread.onSpinWait();
                continue;
            }
            assertEquals((byte) got, uart.read(RBR_THR_DLL), "byte " + got);
            got++;
        }
        host.join();
        assertNull(failure.get());
        assertEquals(0x60, reg(LSR), "no overrun: the host kept to receiveSpace");
        // Both threads appended to levels under the UART's lock; join() makes the host's appends visible here.
        for (int i = 0; i < levels.size(); i++) assertEquals(i % 2 == 0, levels.get(i), "level change " + i);
    }

    @Test
    void theConsoleLogKeepsTheLastLinesNumberedAndPassesEveryLineOn() {
        List<String> passed = new ArrayList<>();
        ConsoleLog log = new ConsoleLog(3, passed::add);
        for (int i = 0; i < 5; i++) log.line("line " + i);
        assertEquals(List.of(new ConsoleLog.Line(2, "line 2"), new ConsoleLog.Line(3, "line 3"), new ConsoleLog.Line(4, "line 4")),
                log.lines());
        assertEquals(List.of(new ConsoleLog.Line(4, "line 4")), log.since(3));
        assertEquals(3, log.since(-1).size());
        assertEquals(5, log.written());
        assertEquals(5, passed.size());
    }

    private List<String> texts() {
        return console.lines().stream().map(ConsoleLog.Line::text).toList();
    }
}
