package org.vmmkit.testbed.guest;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.locks.LockSupport;

import org.vmmkit.testbed.guest.X86Assembler.Cond;
import org.vmmkit.testbed.guest.X86Assembler.Label;
import org.vmmkit.testbed.guest.X86Assembler.Reg;
import org.vmmkit.core.kvm.ExitHandler;
import org.vmmkit.core.kvm.LongMode;
import org.vmmkit.core.kvm.Vcpu;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/**
 * The built-in guest: a 64-bit program that writes one qword into each of {@code pages} pages per
 * pass, in a loop, and the VMM side that loads it, paces it and reads its progress. The pages are
 * either {@code stride} bytes apart from {@code start}, or listed in a table in guest memory (any set,
 * e.g. a random subset), which the guest only reads.
 *
 * <p>In pass {@code n} (from 1) page {@code i} gets {@code (n << 32) | i} at its first byte; nothing else
 * in the range changes, so after {@code n} complete passes every page's content is known. The guest
 * keeps the count of completed passes in its control block (guest memory, so it migrates with the
 * guest) and, if asked, reports each pass with {@code OUT PASS_PORT, eax}. At a pages-per-second rate it
 * exits through {@code OUT THROTTLE_PORT} every batch of pages and the VMM sleeps to hold the rate;
 * flat out, and without pass reports, it never exits at all. After {@code passes} passes (0 = never)
 * it halts.
 */
public final class DirtyingWorkload implements ExitHandler {
    /** Guest addresses of the control block, the stack top and the code. */
    public static final long CONTROL = 0x1000, STACK_TOP = 0x3000, CODE = 0x4000;
    /** Where vCPUs other than the workload's start: a HLT loop. */
    public static final long IDLE = 0x5000;
    public static final int PASS_PORT = 0xE0, THROTTLE_PORT = 0xE1;
    // Control block fields (qwords).
    static final int C_START = 0x00, C_PAGES = 0x08, C_STRIDE = 0x10, C_TARGET = 0x18, C_BATCH = 0x20,
            C_PASSES_DONE = 0x28, C_REPORT = 0x30, C_TABLE = 0x38;
    /** Throttle exits per second at a set rate: enough for a smooth rate, few enough to cost little. */
    private static final long THROTTLE_EXITS_PER_SECOND = 1000;

    /**
     * What the guest does.
     *
     * @param start          guest address of the first page written (stride mode)
     * @param pages          pages per pass
     * @param stride         bytes between two written pages (4096 writes every page)
     * @param passes         passes before the guest halts; 0 = run until stopped
     * @param pagesPerSecond rate; 0 = flat out
     * @param reportPasses   exit through the pass port after each pass
     * @param pageList       null for stride mode, else the guest address of each page, in order
     * @param tableAddress   where the page list is put in guest memory (page list mode)
     */
    public record Settings(long start, long pages, long stride, long passes, long pagesPerSecond, boolean reportPasses,
                           long[] pageList, long tableAddress) {
        public Settings {
            if (start < LongMode.FREE_FROM || start % 8 != 0) {
                throw new IllegalArgumentException("workload start 0x" + Long.toHexString(start)
                        + " must be 8-byte aligned and at or above 0x" + Long.toHexString(LongMode.FREE_FROM));
            }
            if (pages < 0 || stride < 8 || stride % 8 != 0 || passes < 0 || pagesPerSecond < 0) {
                throw new IllegalArgumentException("bad workload settings: pages=" + pages + " stride=" + stride
                        + " passes=" + passes + " pagesPerSecond=" + pagesPerSecond);
            }
            if (pageList != null) {
                pageList = pageList.clone();
                if (pageList.length != pages) throw new IllegalArgumentException("page list length differs from pages");
                if (tableAddress < LongMode.FREE_FROM || tableAddress % 8 != 0) {
                    throw new IllegalArgumentException("page table address 0x" + Long.toHexString(tableAddress) + " is not usable");
                }
                for (long a : pageList) {
                    if (a < LongMode.FREE_FROM || a % 8 != 0) throw new IllegalArgumentException("page address 0x" + Long.toHexString(a));
                }
            }
        }

        public Settings(long start, long pages, long stride, long passes, long pagesPerSecond, boolean reportPasses) {
            this(start, pages, stride, passes, pagesPerSecond, reportPasses, null, 0);
        }

        /** Every page of {@code [start, start + bytes)}. */
        public static Settings range(long start, long bytes, long passes, long pagesPerSecond) {
            return new Settings(start, bytes / GuestMemory.PAGE_SIZE, GuestMemory.PAGE_SIZE, passes, pagesPerSecond, true);
        }

        /** The listed addresses (any set of pages), with the list itself stored at {@code tableAddress}. */
        public static Settings pageList(long tableAddress, long[] addresses, long passes, long pagesPerSecond) {
            long first = addresses.length == 0 ? LongMode.FREE_FROM : addresses[0];
            return new Settings(first, addresses.length, GuestMemory.PAGE_SIZE, passes, pagesPerSecond, true,
                    addresses, tableAddress);
        }

        /** The guest address the {@code i}-th write of a pass goes to. */
        public long pageAddress(long i) {
            return pageList != null ? pageList[(int) i] : start + i * stride;
        }

        /** The guest pages the table itself occupies (read, never written, by the guest). */
        public long tableBytes() {
            return pageList == null ? 0 : 8L * pageList.length;
        }
    }

    private final Settings settings;
    private final long batch;
    private final long nanosPerBatch;
    private volatile long passesReported = -1;
    private long nextBatchDue;

    public DirtyingWorkload(Settings settings) {
        this.settings = settings;
        if (settings.pagesPerSecond() > 0) {
            this.batch = Math.max(1, settings.pagesPerSecond() / THROTTLE_EXITS_PER_SECOND);
            this.nanosPerBatch = batch * 1_000_000_000L / settings.pagesPerSecond();
        } else {
            this.batch = 0;
            this.nanosPerBatch = 0;
        }
    }

    public Settings settings() {
        return settings;
    }

    /** The machine code, assembled for the control block at {@link #CONTROL}. */
    public static byte[] program() {
        X86Assembler a = new X86Assembler();
        Label passLoop = a.label(), pageLoop = a.label(), strideMode = a.label(), noThrottle = a.label(),
                passDone = a.label(), skipReport = a.label(), halt = a.label();
        a.movImm(Reg.RSI, CONTROL)
                .load(Reg.RBX, Reg.RSI, C_PASSES_DONE)        // rbx = passes done (continues a restored guest)
                .bind(passLoop)
                .inc(Reg.RBX)                                  // rbx = this pass
                .load(Reg.RDI, Reg.RSI, C_START)
                .load(Reg.RCX, Reg.RSI, C_PAGES)
                .xor32(Reg.RDX, Reg.RDX)                       // rdx = page index
                .load(Reg.R10, Reg.RSI, C_TABLE)               // r10 = page list cursor, 0 in stride mode
                .load(Reg.R8, Reg.RSI, C_BATCH)
                .mov(Reg.R9, Reg.R8)                           // r9 = pages left in this batch
                .test(Reg.RCX, Reg.RCX)
                .jcc(Cond.Z, passDone)
                .bind(pageLoop)
                .test(Reg.R10, Reg.R10)
                .jcc(Cond.Z, strideMode)
                .load(Reg.RDI, Reg.R10, 0)                     // rdi = next listed page
                .addImm(Reg.R10, 8)
                .bind(strideMode)
                .mov(Reg.RAX, Reg.RBX)
                .shl(Reg.RAX, 32)
                .or(Reg.RAX, Reg.RDX)
                .store(Reg.RDI, 0, Reg.RAX)                    // page[i] = pass << 32 | i
                .addLoad(Reg.RDI, Reg.RSI, C_STRIDE)
                .inc(Reg.RDX)
                .test(Reg.R8, Reg.R8)
                .jcc(Cond.Z, noThrottle)
                .dec(Reg.R9)
                .jcc(Cond.NZ, noThrottle)
                .mov(Reg.R9, Reg.R8)
                .outAl(THROTTLE_PORT)
                .bind(noThrottle)
                .dec(Reg.RCX)
                .jcc(Cond.NZ, pageLoop)
                .bind(passDone)
                .store(Reg.RSI, C_PASSES_DONE, Reg.RBX)
                .cmpMem(Reg.RSI, C_REPORT, 0)
                .jcc(Cond.Z, skipReport)
                .mov32(Reg.RAX, Reg.RBX)
                .outEax(PASS_PORT)
                .bind(skipReport)
                .load(Reg.RAX, Reg.RSI, C_TARGET)
                .test(Reg.RAX, Reg.RAX)
                .jcc(Cond.Z, passLoop)
                .cmp(Reg.RBX, Reg.RAX)
                .jcc(Cond.B, passLoop)
                .bind(halt)
                .hlt()
                .jmp(halt);
        return a.assemble(List.of(passLoop, pageLoop, strideMode, noThrottle, passDone, skipReport, halt));
    }

    /**
     * Writes the boot tables, the program and the control block into {@code memory} and points the
     * vCPU at the program. The written range must lie inside one RAM region.
     */
    public void install(GuestMemory memory, Vcpu vcpu) {
        if (settings.pageList() != null) {
            for (long i = 0; i < settings.pages(); i++) memory.slice(settings.pageAddress(i), 8); // each must be RAM
            memory.slice(settings.tableAddress(), Math.max(8, settings.tableBytes()));
        } else if (settings.pages() > 0) {
            long last = settings.pageAddress(settings.pages() - 1);
            GuestRegion region = memory.regionOf(settings.start());
            if (!region.contains(last + 7)) {
                throw new IllegalArgumentException("workload pages [0x" + Long.toHexString(settings.start()) + ", 0x"
                        + Long.toHexString(last + 8) + ") do not fit in " + region);
            }
        }
        LongMode.buildTables(memory);
        memory.write(CODE, program());
        memory.writeLong(CONTROL + C_START, settings.start());
        memory.writeLong(CONTROL + C_PAGES, settings.pages());
        memory.writeLong(CONTROL + C_STRIDE, settings.stride());
        memory.writeLong(CONTROL + C_TARGET, settings.passes());
        memory.writeLong(CONTROL + C_BATCH, batch);
        memory.writeLong(CONTROL + C_PASSES_DONE, 0);
        memory.writeLong(CONTROL + C_REPORT, settings.reportPasses() ? 1 : 0);
        memory.writeLong(CONTROL + C_TABLE, settings.pageList() == null ? 0 : settings.tableAddress());
        if (settings.pageList() != null) {
            for (int i = 0; i < settings.pages(); i++) memory.writeLong(settings.tableAddress() + 8L * i, settings.pageList()[i]);
        }
        memory.write(IDLE, new byte[] {(byte) 0xF4, (byte) 0xEB, (byte) 0xFD}); // hlt; jmp $-1
        LongMode.boot(vcpu, CODE, STACK_TOP);
    }

    /** Installs the workload on the first vCPU and points every other one at a HLT loop. */
    public void install(GuestMemory memory, List<Vcpu> vcpus) {
        install(memory, vcpus.get(0));
        for (int i = 1; i < vcpus.size(); i++) LongMode.boot(vcpus.get(i), IDLE, STACK_TOP);
    }

    /** The completed-pass count the guest keeps in its own memory. */
    /** Where the guest keeps its pass counter (a qword in the control block); a software guest keeps it there too. */
    public static final long PASSES_DONE_ADDRESS = CONTROL + C_PASSES_DONE;

    public static long passesDone(GuestMemory memory) {
        return memory.readLong(CONTROL + C_PASSES_DONE);
    }

    /** What page {@code i}'s first qword holds after {@code passes} complete passes. */
    public static long expectedValue(long i, long passes) {
        return passes == 0 ? 0 : (passes << 32) | (i & 0xFFFFFFFFL);
    }

    /**
     * The index of the first page whose content is not what {@code passes} complete passes leave, or -1.
     * Checks the first qword and that the rest of the page is zero.
     */
    public long firstMismatch(GuestMemory memory, long passes) {
        for (long i = 0; i < settings.pages(); i++) {
            long address = settings.pageAddress(i);
            if (memory.readLong(address) != expectedValue(i, passes)) return i;
        }
        if (settings.pageList() == null && settings.stride() == GuestMemory.PAGE_SIZE
                && settings.start() % GuestMemory.PAGE_SIZE == 0 && settings.pages() > 0) {
            MemorySegment range = memory.slice(settings.start(), settings.pages() * GuestMemory.PAGE_SIZE);
            for (long i = 0; i < settings.pages(); i++) {
                MemorySegment rest = range.asSlice(i * GuestMemory.PAGE_SIZE + 8, GuestMemory.PAGE_SIZE - 8);
                if (!isZero(rest)) return i;
            }
        }
        return -1;
    }

    /**
     * For a guest stopped anywhere in a pass, the index of the first page whose first qword is neither what pass
     * {@code passes + 1} writes (a prefix of the pages, the part of that pass done) nor, after that prefix, what
     * {@code passes} complete passes leave; -1 when every page is one or the other, in that order. What a
     * paused guest's memory must look like whatever moment it was paused at: a page lost, zeroed or from
     * another VM shows.
     */
    public long firstMismatchMidPass(GuestMemory memory, long passes) {
        long i = 0;
        while (i < settings.pages() && memory.readLong(settings.pageAddress(i)) == expectedValue(i, passes + 1)) i++;
        for (; i < settings.pages(); i++) {
            if (memory.readLong(settings.pageAddress(i)) != expectedValue(i, passes)) return i;
        }
        return -1;
    }

    private static boolean isZero(MemorySegment s) {
        for (long o = 0; o < s.byteSize(); o += 8) {
            if (s.get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, o) != 0) return false;
        }
        return true;
    }

    /** The last pass the guest reported through the pass port; -1 before the first. */
    public long passesReported() {
        return passesReported;
    }

    /** Waits until the guest has reported at least {@code passes} passes. */
    public boolean awaitPasses(long passes, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (this) {
            while (passesReported < passes) {
                long left = deadline - System.nanoTime();
                if (left <= 0) return false;
                wait(Math.max(1, left / 1_000_000));
            }
        }
        return true;
    }

    @Override
    public boolean portOut(int vcpu, int port, int size, int count, MemorySegment data) {
        if (port == PASS_PORT && size == 4) {
            synchronized (this) {
                passesReported = Integer.toUnsignedLong(data.get(JAVA_INT, 0));
                notifyAll();
            }
            return true;
        }
        if (port == THROTTLE_PORT) {
            pace();
            return true;
        }
        return false;
    }

    /** Sleeps so that batches leave at the configured rate; never catches up more than 50 ms of lag. */
    private void pace() {
        long now = System.nanoTime();
        if (nextBatchDue == 0 || now - nextBatchDue > 50_000_000L) nextBatchDue = now;
        nextBatchDue += nanosPerBatch;
        long wait = nextBatchDue - now;
        if (wait > 0) LockSupport.parkNanos(wait);
    }

    @Override
    public boolean portIn(int vcpu, int port, int size, int count, MemorySegment data) {
        return false;
    }
}
