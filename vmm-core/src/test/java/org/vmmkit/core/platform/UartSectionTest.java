package org.vmmkit.core.platform;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.migration.SectionChunk;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.vmmkit.core.platform.Uart16550.IER_DLM;
import static org.vmmkit.core.platform.Uart16550.IIR_FCR;
import static org.vmmkit.core.platform.Uart16550.LCR;
import static org.vmmkit.core.platform.Uart16550.LSR;
import static org.vmmkit.core.platform.Uart16550.MCR;
import static org.vmmkit.core.platform.Uart16550.MSR;
import static org.vmmkit.core.platform.Uart16550.RBR_THR_DLL;
import static org.vmmkit.core.platform.Uart16550.SCR;

class UartSectionTest {
    // Offsets in format version 1 (UartState's javadoc): the fixed fields, then the FIFO's bytes.
    static final int VERSION = 4, IER = 7, FCR = 8, LSR_AT = 11, MSR_AT = 12, FLAGS = 14, RX_COUNT = 15;

    /** One end: a UART, the levels it drove, its console, and its section. */
    static final class End {
        final List<Boolean> levels = new ArrayList<>();
        final ConsoleLog console = new ConsoleLog(100);
        final Uart16550 uart = new Uart16550(levels::add, console);
        final UartSection section = new UartSection("uart/0x3f8", uart);

        void set(int offset, int value) {
            uart.write(offset, (byte) value);
        }

        int reg(int offset) {
            return uart.read(offset) & 0xff;
        }

        void type(String s) {
            for (byte b : s.getBytes(StandardCharsets.UTF_8)) set(RBR_THR_DLL, b);
        }
    }

    /** A source UART with something in every part of its state, the line high. */
    static End busySource() {
        End src = new End();
        src.set(LCR, 0x83);
        src.set(RBR_THR_DLL, 0x01); // 115200 baud
        src.set(IER_DLM, 0x00);
        src.set(LCR, 0x03);
        src.set(IIR_FCR, 0x81); // FIFO, trigger level 8
        src.set(IER_DLM, 0x0f);
        src.set(MCR, 0x0b);
        src.set(SCR, 0xa5);
        src.type("[   0.000] booting\nseq 41 tick");
        src.uart.receive("pending keys".getBytes(StandardCharsets.US_ASCII));
        return src;
    }

    /** Source step c-style: the section saved whole through the SPI, as stop-and-copy does. */
    static byte[] save(UartSection section) {
        section.startSave();
        section.stop();
        long pending = section.pending();
        SectionChunk chunk = section.nextChunk();
        byte[] bytes = chunk.base().asSlice(chunk.offset(), chunk.length()).toArray(ValueLayout.JAVA_BYTE);
        chunk.release();
        assertEquals(pending, bytes.length);
        section.finishSave();
        return bytes;
    }

    /** The destination's side: the bytes into the loader, the load finished, the VM started. */
    static void load(UartSection section, byte[] bytes) {
        assertTrue(section.canLoad(section.info().version()));
        section.startLoad(section.info().version());
        long at = section.placeChunk(bytes.length);
        MemorySegment.copy(MemorySegment.ofArray(bytes), 0, section.targetSegment(), at, bytes.length);
        section.commitChunk(bytes.length);
        section.finishLoad();
        section.start();
    }

    @Test
    void saveRestoreSaveGivesTheSameBytes() {
        End src = busySource();
        byte[] first = save(src.section);
        End dst = new End();
        load(dst.section, first);
        assertArrayEquals(first, save(dst.section));
        assertEquals(src.uart.state(), dst.uart.state());
        assertEquals("uart-16550", src.section.info().kind());
        assertFalse(src.section.canLoad(UartState.FORMAT_VERSION + 1));
    }

    @Test
    void aRestoredUartContinuesExactlyWhereTheSourceStopped() {
        End src = busySource();
        End dst = new End();
        load(dst.section, save(src.section));
        assertTrue(src.uart.interruptLevel());
        assertEquals(List.of(true), dst.levels, "the restored level is driven onto the destination's line at start");
        // The same guest steps on both ends must read the same values and leave the same state.
        List<Integer> a = new ArrayList<>(), b = new ArrayList<>();
        for (End e : List.of(src, dst)) {
            List<Integer> reads = e == src ? a : b;
            reads.add(e.reg(IIR_FCR));
            reads.add(e.reg(LSR));
            while ((e.reg(LSR) & 0x01) != 0) reads.add(e.reg(RBR_THR_DLL));
            reads.add(e.reg(IIR_FCR));
            reads.add(e.reg(IIR_FCR));
            reads.add(e.reg(MSR));
            reads.add(e.reg(IIR_FCR));
            reads.add(e.reg(SCR));
            e.set(LCR, 0x83);
            reads.add(e.reg(RBR_THR_DLL));
            e.set(LCR, 0x03);
            e.type(" 42\n");
        }
        assertEquals(a, b);
        assertEquals(0xc4, (int) a.get(0), "12 bytes waiting, trigger level 8: received data available");
        byte[] keys = new byte[12];
        for (int i = 0; i < 12; i++) keys[i] = (byte) (int) b.get(2 + i);
        assertEquals("pending keys", new String(keys, StandardCharsets.US_ASCII));
        assertEquals(List.of("[   0.000] booting", "seq 41 tick 42"), texts(src));
        assertEquals(List.of("seq 41 tick 42"), texts(dst), "the partial line continued on the destination");
        assertEquals(src.uart.state(), dst.uart.state());
    }

    @Test
    void everyTruncationIsRefusedNamingTheSectionAndTheField() {
        byte[] bytes = save(busySource().section);
        for (int n = 0; n < bytes.length; n++) {
            End dst = new End();
            byte[] cut = Arrays.copyOf(bytes, n);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dst.section, cut), "length " + n);
            assertTrue(e.getMessage().startsWith("section uart/0x3f8 (uart-16550 v1): 16550 state is truncated: field "), e.getMessage());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(new End().section, Arrays.copyOf(bytes, RX_COUNT + 3)));
        assertTrue(e.getMessage().contains("field rxFifo needs 12 bytes at offset 16 of 18"), e.getMessage());
        byte[] longer = Arrays.copyOf(bytes, bytes.length + 1);
        e = assertThrows(IllegalArgumentException.class, () -> load(new End().section, longer));
        assertTrue(e.getMessage().contains("1 bytes after the last field"), e.getMessage());
    }

    @Test
    void hostileValuesAreRefusedNamingTheFieldAndLeaveTheUartAsItWas() {
        byte[] good = save(busySource().section);
        refused(good, VERSION, 2, "field version 2");
        refused(good, 0, 'X', "field magic");
        refused(good, IER, 0xff, "field ier 255");
        refused(good, FCR, 0x06, "field fcr 6");
        refused(good, RX_COUNT, 200, "field rxCount 200");
        refused(good, LSR_AT, 0x60, "field lsr 96"); // DR missing while the FIFO holds bytes
        refused(good, MSR_AT, 0x30, "field msr 48");
        refused(good, FLAGS, 0x80, "field flags 128");
        refused(good, FLAGS, good[FLAGS] & ~2, "field irqLevel 0");
        byte[] lineEnd = good.clone();
        lineEnd[lineEnd.length - 3] = '\n';
        refusedBytes(lineEnd, "field partialLine");
        byte[] hugeLine = good.clone();
        int lengthAt = RX_COUNT + 1 + good[RX_COUNT];
        hugeLine[lengthAt] = (byte) 0xff;
        refusedBytes(hugeLine, "field partialLineLength 65");
        // With the FIFO off only one byte may wait.
        End noFifo = new End();
        noFifo.uart.receive((byte) 1);
        byte[] one = save(noFifo.section);
        byte[] two = Arrays.copyOf(one, one.length + 1);
        two[RX_COUNT] = 2;
        System.arraycopy(one, RX_COUNT + 2, two, RX_COUNT + 3, one.length - RX_COUNT - 2);
        refusedBytes(two, "field rxCount 2");
    }

    @Test
    void randomlyCorruptedStateIsRefusedOrLoadedButNeverThrowsAnythingElse() {
        byte[] good = save(busySource().section);
        Random random = new Random(15);
        int loaded = 0;
        for (int i = 0; i < 20_000; i++) {
            byte[] bad = good.clone();
            for (int k = 1 + random.nextInt(3); k > 0; k--) bad[random.nextInt(bad.length)] = (byte) random.nextInt(256);
            End dst = new End();
            try {
                load(dst.section, bad);
                loaded++;
                assertArrayEquals(bad, save(dst.section), "what loads saves back the same");
            } catch (IllegalArgumentException e) {
                assertTrue(e.getMessage().startsWith("section uart/0x3f8 (uart-16550 v1): 16550 state"), e.getMessage());
            } catch (RuntimeException e) {
                fail("corruption " + i + " threw " + e, e);
            }
        }
        assertTrue(loaded > 0, "some corruptions are valid states (the scratch register, the divisor)");
    }

    private static void refused(byte[] good, int offset, int value, String expected) {
        byte[] bad = good.clone();
        bad[offset] = (byte) value;
        refusedBytes(bad, expected);
    }

    private static void refusedBytes(byte[] bad, String expected) {
        End dst = new End();
        dst.set(SCR, 0x11);
        UartState before = dst.uart.state();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> load(dst.section, bad));
        assertTrue(e.getMessage().startsWith("section uart/0x3f8 (uart-16550 v1): "), e.getMessage());
        assertTrue(e.getMessage().contains(expected), "expected '" + expected + "' in: " + e.getMessage());
        assertEquals(before, dst.uart.state());
        assertEquals(List.of(), dst.levels);
    }

    private static List<String> texts(End e) {
        return e.console.lines().stream().map(ConsoleLog.Line::text).toList();
    }
}
