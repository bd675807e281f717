package org.vmmkit.core.memory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GuardedMappingTest {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    @Test
    void anAnonymousMappingSitsBetweenInaccessiblePages() {
        try (GuardedMapping m = GuardedMapping.anonymous(5 * PAGE, "test buffer")) {
            long start = m.segment().address(), end = start + m.segment().byteSize();
            assertEquals(0, start % PAGE);
            assertEquals("---p", ProcMaps.permissionsAt(start - PAGE), ProcMaps.around(start, end));
            assertEquals("rw-p", ProcMaps.permissionsAt(start), ProcMaps.around(start, end));
            assertEquals("rw-p", ProcMaps.permissionsAt(end - 1), ProcMaps.around(start, end));
            assertEquals("---p", ProcMaps.permissionsAt(end), ProcMaps.around(start, end));
            m.segment().set(ValueLayout.JAVA_LONG, 5 * PAGE - 8, 42); // the last bytes are usable
            assertEquals(42, m.segment().get(ValueLayout.JAVA_LONG, 5 * PAGE - 8));
        }
    }

    @Test
    void anArenaBoundMappingIsUnmappedWithItsGuardsWhenTheArenaCloses() throws Exception {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = GuardedMapping.anonymous(3 * PAGE, arena, "test section");
            assertEquals(3 * PAGE, s.byteSize());
            assertEquals("---p", ProcMaps.permissionsAt(s.address() - PAGE));
            assertEquals("---p", ProcMaps.permissionsAt(s.address() + 3 * PAGE));
        }
        // Unmapped, guards and all: 500 sections of 1 MiB (each in 1 MiB + 2 pages of address space) leave the
        // process's address space as it was, give or take what the JVM maps meanwhile.
        long before = ProcMaps.vmSizeKb();
        for (int i = 0; i < 500; i++) {
            try (Arena arena = Arena.ofConfined()) {
                GuardedMapping.anonymous(1 << 20, arena, "test section").set(ValueLayout.JAVA_BYTE, 0, (byte) 1);
            }
        }
        long grown = ProcMaps.vmSizeKb() - before;
        assertTrue(grown < 128 * 1024, "the address space grew by " + grown + " KiB over 500 MiB of closed sections");
    }

    @Test
    void aUseAfterTheArenaClosedIsAnExceptionNotAFault() {
        Arena arena = Arena.ofShared();
        MemorySegment s = GuardedMapping.anonymous(PAGE, arena, "test section");
        arena.close();
        assertThrows(IllegalStateException.class, () -> s.get(ValueLayout.JAVA_BYTE, 0));
    }

    @Test
    void aSharedMappingOfPartialPagesIsRefusedNamingTheFile() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> GuardedMapping.shared(new org.vmmkit.core.sys.Fd(-1, "nothing"), PAGE + 1, PAGE));
        assertTrue(e.getMessage().contains("nothing (fd -1)"), e.getMessage());
    }
}
