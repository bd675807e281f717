package org.vmmkit.core.memory;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;

/**
 * Memory mapped between inaccessible guard pages. The mapping is placed inside a larger PROT_NONE
 * reservation that stays around it for its whole life, so an access that runs off either end — a native
 * copy, a kernel {@code read()} into a view with a wrong length, a device's DMA at a bad offset — faults at
 * once instead of landing in whatever the allocator put next to it. The reservation costs address space
 * only (anonymous, MAP_NORESERVE, never touched); closing unmaps the reservation, mapping and guards at once.
 */
public final class GuardedMapping implements AutoCloseable {
    private static final long PAGE = GuestMemory.PAGE_SIZE;

    private final MemorySegment reservation, segment;
    private final String object;
    private boolean closed;

    private GuardedMapping(MemorySegment reservation, MemorySegment segment, String object) {
        this.reservation = reservation;
        this.segment = segment;
        this.object = object;
    }

    /**
     * {@code size} bytes of {@code fd} (from offset 0) mapped shared and read-write at an address aligned to
     * {@code alignment} (a power of two, at least a page), with at least one guard page right before and
     * right after. {@code size} must be a whole number of pages, so the guards touch the mapping's ends.
     */
    public static GuardedMapping shared(Fd fd, long size, long alignment) {
        return map(fd, size, alignment, fd.describe());
    }

    /**
     * {@code size} bytes (rounded up to whole pages; the tail past {@code size} belongs to this mapping and
     * nothing else) of zeroed anonymous private read-write memory, page-aligned, between guard pages.
     */
    public static GuardedMapping anonymous(long size, String object) {
        return map(null, (size + PAGE - 1) & -PAGE, PAGE, object);
    }

    /**
     * {@link #anonymous(long, String)} whose lifetime is {@code arena}'s: the segment (exactly {@code size}
     * bytes) is accessible until the arena closes, and closing the arena unmaps it with its guards, so a
     * use after close is an {@link IllegalStateException}, not a fault.
     */
    public static MemorySegment anonymous(long size, Arena arena, String object) {
        GuardedMapping m = anonymous(size, object);
        try {
            return m.segment.asSlice(0, size).reinterpret(arena, ignored -> m.close());
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
    }

    /**
     * Reserves {@code size + 2 × alignment} of PROT_NONE address space and maps the memory with MAP_FIXED at
     * the first {@code alignment} boundary at least one page into it: at most {@code alignment} lies before
     * that boundary, so at least {@code alignment} (≥ a page) is left after the end.
     */
    private static GuardedMapping map(Fd fd, long size, long alignment, String object) {
        if (size <= 0 || size % PAGE != 0 || Long.bitCount(alignment) != 1 || alignment < PAGE) {
            throw new IllegalArgumentException("a guarded mapping of " + object + " needs whole pages and a power-of-two alignment of at least a page: "
                    + size + " bytes, alignment " + alignment);
        }
        MemorySegment reservation = Libc.mmap(0, size + 2 * alignment, Libc.PROT_NONE,
                Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0, object + " reservation");
        long at = (reservation.address() + PAGE + alignment - 1) & -alignment;
        try {
            MemorySegment segment = fd == null
                    ? Libc.mmap(at, size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED, -1, 0, object)
                    : Libc.mmap(at, size, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED | Libc.MAP_FIXED, fd.raw(), 0, object);
            return new GuardedMapping(reservation, segment, object);
        } catch (RuntimeException e) {
            Libc.munmap(reservation, object + " reservation");
            throw e;
        }
    }

    /** The mapped memory (global scope: valid until {@link #close}). */
    public MemorySegment segment() {
        return segment;
    }

    /** Unmaps the mapping and its guards (the whole reservation). */
    @Override
    public synchronized void close() {
        if (closed) return;
        closed = true;
        Libc.munmap(reservation, object + " reservation");
    }
}
