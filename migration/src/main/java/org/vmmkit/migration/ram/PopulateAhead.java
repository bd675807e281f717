package org.vmmkit.migration.ram;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;

/**
 * Populates a fresh destination's guest RAM ahead of the receivers, on its own thread, so the first write to
 * each page does not happen inside a socket read. Measured on these machines (benchmarks/side-by-side, blast):
 * a page fault taken inside {@code read} into a fresh shared memfd page costs several times what
 * {@code MADV_POPULATE_WRITE} costs for the same page (2 GiB: about 6 s more in the reads against 1 s of
 * populating), so populating from another thread, even on the same two cores, takes most of that off the
 * receive path.
 *
 * <p>What it populates: the first round sends memory in address order (every page is dirty in generation 1),
 * so the receivers' progress is a frontier moving up through guest memory. This thread populates from the
 * frontier (never behind it: a receiver may have punched a zero run there) up to {@link #window} bytes past
 * the end of the last RAM frame (a frame with data) — the ranges the stream announces with its data. A
 * ZERO_RUN advances the frontier but not the data end, so a stretch of zero pages costs at most one window of
 * populating, which the receiver's hole punch then frees again; only a page populated in the instant after
 * its ZERO_RUN was punched stays resident (reading zero, as it must). Once the frontier has passed the end of
 * memory (later rounds send dirty pages only, already populated) the thread ends.
 *
 * <p>Memory ordering: {@code frontier} and {@code dataEnd} are raised with a volatile compare-and-set by the
 * receivers (any number of threads, one per channel) and read with volatile loads by the populating thread;
 * {@code waiting} is the populating thread's volatile flag, set before it re-checks the frontier and parks,
 * and read by a receiver after it raised the frontier: with both volatile, one of the two sees the other's
 * store, so no wake-up is lost. A receiver's call allocates nothing.
 */
public final class PopulateAhead implements AutoCloseable {
    /** How far past the last frame with data memory is populated. */
    public static final long DEFAULT_WINDOW = 64L << 20;
    /** How much is populated per madvise call, and how much must be due before a parked populator is woken. */
    static final long STEP = 8L << 20;

    private static final long PAGE = GuestMemory.PAGE_SIZE;
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");
    private static final VarHandle FRONTIER, DATA_END;

    static {
        try {
            MethodHandles.Lookup l = MethodHandles.lookup();
            FRONTIER = l.findVarHandle(PopulateAhead.class, "frontier", long.class);
            DATA_END = l.findVarHandle(PopulateAhead.class, "dataEnd", long.class);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private final GuestMemory memory;
    private final long window;
    private final Thread thread;
    @SuppressWarnings("unused") private volatile long frontier; // highest guest address + 1 any frame reached (VarHandle CAS)
    @SuppressWarnings("unused") private volatile long dataEnd; // highest guest address + 1 a RAM frame reached (VarHandle CAS)
    private volatile boolean waiting, closed;
    private volatile long populated; // bytes populated, for the statistics and tests
    private volatile String failure; // why it stopped early, if it did

    /**
     * Whether populating ahead helps a receiver of {@code memory}: not where every region is on hugetlbfs, whose
     * first touch inside a read is one fault per 2 MiB from a pool reserved at start. Measured (BENCHMARKS.md, 2 GiB
     * every page data, two sets of 5 alternating runs): hugetlb 1.81 and 1.41 s without against 2.14 and 1.91 s
     * with it (a thread clearing huge pages beside the receiver on two cores costs more than the faults it saves);
     * THP 4.58 s without against 3.76 s with it (a THP fault allocates and compacts); 4 KiB pages 1.38x faster with it.
     */
    public static boolean helps(GuestMemory memory) {
        for (GuestRegion r : memory.regions()) {
            if (memory.backingPageSize(r) <= PAGE) return true;
        }
        return false;
    }

    /** Starts populating {@code memory}'s first {@code window} bytes at once; the receivers' progress moves it on. */
    public PopulateAhead(GuestMemory memory, long window) {
        if (window < STEP) throw new IllegalArgumentException("a populate window of " + window + " bytes; at least " + STEP);
        this.memory = memory;
        this.window = window;
        this.thread = Thread.ofPlatform().name("migration-populate-ahead").daemon().start(this::run);
    }

    /** A receiver applied a frame ending at {@code gpaEnd} ({@code data}: a RAM frame, not a ZERO_RUN). Allocates nothing. */
    public void passed(long gpaEnd, boolean data) {
        raise(FRONTIER, gpaEnd);
        if (data) raise(DATA_END, gpaEnd);
        if (waiting) LockSupport.unpark(thread);
    }

    private void raise(VarHandle field, long value) {
        long now;
        do {
            now = (long) field.getVolatile(this);
            if (value <= now) return;
        } while (!field.compareAndSet(this, now, value));
    }

    private void run() {
        try {
            for (GuestRegion r : memory.regions()) {
                long end = r.guestAddress() + r.size();
                long next = r.guestAddress();
                while (next < end && !closed) {
                    next = Math.max(next, ((long) FRONTIER.getVolatile(this) + PAGE - 1) & -PAGE); // never behind a receiver
                    if (next >= end) break;
                    long upTo = Math.min(end, (long) DATA_END.getVolatile(this) + window);
                    if (upTo - next < Math.min(STEP, end - next)) {
                        waiting = true;
                        long again = Math.min(end, (long) DATA_END.getVolatile(this) + window);
                        if (again - next < Math.min(STEP, end - next) && (long) FRONTIER.getVolatile(this) < end && !closed) LockSupport.park(this);
                        waiting = false;
                        continue;
                    }
                    long length = Math.min(STEP, upTo - next);
                    long address = r.host().address() + (next - r.guestAddress());
                    if (Libc.madviseRaw(address, length, Libc.MADV_POPULATE_WRITE) != 0) {
                        stop(r, next, length);
                        return;
                    }
                    populated += length;
                    next += length;
                    synchronized (this) {
                        notifyAll(); // awaitPopulated (tests); no waiter costs a monitor enter and exit per step
                    }
                }
            }
        } catch (RuntimeException e) {
            failure = "populating guest RAM ahead failed: " + e.getMessage();
            LOG.log(System.Logger.Level.WARNING, failure + "; the receivers fault pages in themselves");
        }
    }

    /** A failed populate: asked again with errno captured, to say why; the receivers then fault pages in themselves. */
    private void stop(GuestRegion r, long gpa, long length) {
        try {
            Libc.madvise(r.host().asSlice(gpa - r.guestAddress(), length), Libc.MADV_POPULATE_WRITE,
                    "guest RAM [0x" + Long.toHexString(gpa) + ", +0x" + Long.toHexString(length) + ")");
            failure = "madvise(MADV_POPULATE_WRITE) at 0x" + Long.toHexString(gpa) + " failed once, then worked";
        } catch (SysException e) {
            failure = e.getMessage();
        }
        // EINVAL: a kernel before 5.14 (no MADV_POPULATE_WRITE); ENOMEM: the host is out of memory, and the
        // receiver's own write will say so. Either way the migration goes on without this thread.
        LOG.log(System.Logger.Level.INFO, "not populating guest RAM ahead any more: {0}", failure);
    }

    /** Bytes populated so far. */
    public long populatedBytes() {
        return populated;
    }

    /** Why it stopped before the end of memory, or null. */
    public String failure() {
        return failure;
    }

    /** Stops the thread and waits for it (an madvise in progress finishes). */
    @Override
    public void close() {
        closed = true;
        LockSupport.unpark(thread);
        try {
            thread.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Waits until at least {@code bytes} are populated; for tests. */
    synchronized void awaitPopulated(long bytes) throws InterruptedException {
        while (populated < bytes) wait();
    }

    /** Waits until the thread ended by itself (the frontier passed the end of memory) or was closed; for tests. */
    void awaitEnd() throws InterruptedException {
        thread.join();
    }
}
