package org.vmmkit.core.kvm;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import org.vmmkit.core.kvm.abi.KvmAbi;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static java.lang.foreign.ValueLayout.JAVA_SHORT;

/**
 * The thread that runs one vCPU: calls KVM_RUN, dispatches its exits, and parks on request.
 *
 * <p>Pausing a guest that never exits on its own: the kick signal is blocked on this thread at all
 * times except inside KVM_RUN (KVM_SET_SIGNAL_MASK unblocks it only there). A kick that arrives while
 * the guest runs makes KVM_RUN return EINTR; a kick that arrives outside KVM_RUN stays pending and
 * makes the next KVM_RUN return EINTR before entering the guest. No handler ever runs: the pending
 * signal is taken with sigtimedwait. {@code kvm_run.immediate_exit} is set as well, the documented
 * way to make a KVM_RUN that starts after the request return at once.
 */
final class VcpuRunner implements Runnable {
    /** SIGRTMIN + 2 in glibc (SIGRTMIN is 34; 32 and 33 belong to NPTL); not used by the JVM. */
    static final int KICK_SIGNAL = 36;

    enum State { NEW, RUNNING, PARKED, HALTED, FAILED, STOPPED }

    private final Vcpu vcpu;
    private final ExitHandler handler;
    private final Vm vm;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();

    // Guarded by lock.
    private State state = State.NEW;
    private boolean pauseRequested, stopRequested, alive;
    private int tid;
    private Throwable failure;
    /** Read by the run loop without the lock between KVM_RUN calls; written under the lock. */
    private volatile boolean attention;

    private Thread thread;
    private long exits, unhandledAccesses;

    VcpuRunner(Vm vm, Vcpu vcpu, ExitHandler handler) {
        this.vm = vm;
        this.vcpu = vcpu;
        this.handler = handler;
    }

    /** Starts the thread and returns once it is about to enter KVM_RUN (or has failed). */
    void start(boolean paused) {
        lock.lock();
        try {
            pauseRequested = paused;
            attention = paused;
            thread = new Thread(this, "vcpu-" + vcpu.id());
            thread.setDaemon(true);
            thread.start();
            while (state == State.NEW) changed.awaitUninterruptibly();
        } finally {
            lock.unlock();
        }
    }

    /** Asks the vCPU to leave KVM_RUN and park; {@link #awaitOutOfGuest} waits for it. */
    void requestPause() {
        lock.lock();
        try {
            pauseRequested = true;
            attention = true;
            kick();
        } finally {
            lock.unlock();
        }
    }

    // Under lock: the thread marks itself dead under the same lock, so tid is never a reused one.
    private void kick() {
        if (!alive) return;
        vcpu.setImmediateExit(true);
        Libc.tgkill(tid, KICK_SIGNAL);
        // An exit handler may be sleeping (the workload's rate pacing parks): wake it, so it returns
        // to the loop and parks there instead.
        java.util.concurrent.locks.LockSupport.unpark(thread);
    }

    /** Waits until the vCPU is out of KVM_RUN: parked, halted, failed or stopped. */
    boolean awaitOutOfGuest(long deadlineNanos) {
        lock.lock();
        try {
            while (state == State.RUNNING || (state == State.NEW && alive)) {
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) return false;
                try {
                    changed.awaitNanos(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return false;
                }
            }
            return true;
        } finally {
            lock.unlock();
        }
    }

    void resume() {
        lock.lock();
        try {
            pauseRequested = false;
            attention = stopRequested;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    void stop() {
        lock.lock();
        try {
            stopRequested = true;
            attention = true;
            kick();
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        if (thread != null) {
            try {
                thread.join(TimeUnit.SECONDS.toMillis(10));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    State state() {
        lock.lock();
        try {
            return state;
        } finally {
            lock.unlock();
        }
    }

    Throwable failure() {
        lock.lock();
        try {
            return failure;
        } finally {
            lock.unlock();
        }
    }

    long exits() {
        return exits;
    }

    long unhandledAccesses() {
        return unhandledAccesses;
    }

    /** Waits until the state is one of HALTED, FAILED, STOPPED. */
    boolean awaitFinished(long deadlineNanos) throws InterruptedException {
        lock.lock();
        try {
            while (state != State.HALTED && state != State.FAILED && state != State.STOPPED) {
                long left = deadlineNanos - System.nanoTime();
                if (left <= 0) return false;
                changed.awaitNanos(left);
            }
            return true;
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void run() {
        State end = State.STOPPED;
        Throwable error = null;
        Arena arena = Arena.ofConfined();
        MemorySegment kick = arena.allocate(Libc.SIGSET_BYTES, 8);
        Libc.sigaddset(kick, KICK_SIGNAL);
        MemorySegment zeroTimeout = arena.allocate(16, 8);
        boolean blocked = false;
        try {
            MemorySegment before = arena.allocate(Libc.SIGSET_BYTES, 8);
            Libc.pthreadSigmask(Libc.SIG_BLOCK, kick, before);
            blocked = true;
            Libc.sigdelset(before, KICK_SIGNAL);
            vcpu.setRunSignalMask(before);

            lock.lock();
            try {
                tid = Libc.gettid();
                alive = true;
                state = State.RUNNING;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
            end = loop(kick, zeroTimeout);
        } catch (Throwable t) {
            end = State.FAILED;
            error = t;
        } finally {
            lock.lock();
            try {
                alive = false; // from here on no kick targets this thread
            } finally {
                lock.unlock();
            }
            // A kick may still be pending (blocked). When the thread ends, the JVM restores the signal
            // mask the thread started with, which does not block the kick: a pending one would then be
            // delivered with its default action and end the process. Take them all now.
            if (blocked) drainKicks(kick, zeroTimeout);
            arena.close();
            // Record the error on the VM before publishing the end state: whoever sees FAILED sees why.
            if (error != null) vm.vcpuFailed(vcpu.id(), error);
            lock.lock();
            try {
                state = end;
                failure = error;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    private State loop(MemorySegment kick, MemorySegment zeroTimeout) {
        int fd = vcpu.fd().raw();
        long request = KvmAbi.KVM_RUN.number();
        while (true) {
            if (attention) {
                State parked = park(kick, zeroTimeout);
                if (parked != null) return parked;
                continue;
            }
            int r = Libc.ioctlRaw(fd, request, 0L);
            if (r < 0) {
                if (r == -Errno.EINTR) {
                    vcpu.setImmediateExit(false);
                    drainKicks(kick, zeroTimeout);
                    continue;
                }
                throw new SysException("ioctl(KVM_RUN)", -r, vcpu.describe());
            }
            exits++;
            if (!handleExit()) return State.HALTED;
        }
    }

    /** Parks while a pause is requested; returns STOPPED when asked to stop, else null to run on. */
    private State park(MemorySegment kick, MemorySegment zeroTimeout) {
        lock.lock();
        try {
            if (stopRequested) return State.STOPPED;
            if (pauseRequested) {
                vcpu.setImmediateExit(false);
                drainKicks(kick, zeroTimeout);
                state = State.PARKED;
                changed.signalAll();
                while (pauseRequested && !stopRequested) changed.awaitUninterruptibly();
                if (stopRequested) return State.STOPPED;
                state = State.RUNNING;
                changed.signalAll();
            }
            attention = pauseRequested || stopRequested;
            return null;
        } finally {
            lock.unlock();
        }
    }

    private static void drainKicks(MemorySegment kick, MemorySegment zeroTimeout) {
        while (Libc.sigtimedwaitRaw(kick, zeroTimeout) == KICK_SIGNAL) {
            // take every pending kick; EAGAIN ends the loop
        }
    }

    /** Handles one exit; false when the guest halted. */
    private boolean handleExit() {
        MemorySegment run = vcpu.run();
        int reason = vcpu.exitReason();
        switch (reason) {
            case KvmAbi.EXIT_IO -> {
                int direction = run.get(JAVA_BYTE, KvmAbi.RUN_IO_DIRECTION);
                int size = run.get(JAVA_BYTE, KvmAbi.RUN_IO_SIZE);
                int port = Short.toUnsignedInt(run.get(JAVA_SHORT, KvmAbi.RUN_IO_PORT));
                int count = run.get(JAVA_INT, KvmAbi.RUN_IO_COUNT);
                long offset = run.get(JAVA_LONG, KvmAbi.RUN_IO_DATA_OFFSET);
                MemorySegment data = run.asSlice(offset, (long) size * count);
                boolean handled = direction == KvmAbi.EXIT_IO_OUT
                        ? handler.portOut(vcpu.id(), port, size, count, data)
                        : handler.portIn(vcpu.id(), port, size, count, data);
                if (!handled) {
                    unhandledAccesses++;
                    if (direction == KvmAbi.EXIT_IO_IN) data.fill((byte) 0xff); // unclaimed ports float high
                }
                return true;
            }
            case KvmAbi.EXIT_MMIO -> {
                long address = run.get(JAVA_LONG, KvmAbi.RUN_MMIO_PHYS_ADDR);
                int len = run.get(JAVA_INT, KvmAbi.RUN_MMIO_LEN);
                boolean write = run.get(JAVA_BYTE, KvmAbi.RUN_MMIO_IS_WRITE) != 0;
                MemorySegment data = run.asSlice(KvmAbi.RUN_MMIO_DATA, Math.min(len, 8));
                if (!handler.mmio(vcpu.id(), address, write, data)) {
                    unhandledAccesses++;
                    if (!write) data.fill((byte) 0xff);
                }
                return true;
            }
            case KvmAbi.EXIT_HLT -> {
                return false;
            }
            case KvmAbi.EXIT_INTR, KvmAbi.EXIT_IRQ_WINDOW_OPEN -> {
                return true;
            }
            case KvmAbi.EXIT_SHUTDOWN -> throw new KvmException(vcpu.describe()
                    + ": guest shut down (KVM_EXIT_SHUTDOWN, a triple fault) at " + where());
            case KvmAbi.EXIT_FAIL_ENTRY -> throw new KvmException(vcpu.describe()
                    + ": VM entry failed (KVM_EXIT_FAIL_ENTRY), hardware_entry_failure_reason=0x"
                    + Long.toHexString(run.get(JAVA_LONG, KvmAbi.RUN_FAIL_ENTRY_REASON)) + " on cpu "
                    + run.get(JAVA_INT, KvmAbi.RUN_FAIL_ENTRY_CPU) + " at " + where());
            case KvmAbi.EXIT_INTERNAL_ERROR -> {
                int suberror = run.get(JAVA_INT, KvmAbi.RUN_INTERNAL_SUBERROR);
                int ndata = Math.min(16, run.get(JAVA_INT, KvmAbi.RUN_INTERNAL_NDATA));
                StringBuilder data = new StringBuilder();
                for (int i = 0; i < ndata; i++) {
                    data.append(i == 0 ? "" : ",").append("0x").append(Long.toHexString(run.get(JAVA_LONG, KvmAbi.RUN_INTERNAL_DATA + 8L * i)));
                }
                throw new KvmException(vcpu.describe() + ": KVM internal error (KVM_EXIT_INTERNAL_ERROR), suberror "
                        + suberror + " data [" + data + "] at " + where());
            }
            default -> throw new KvmException(vcpu.describe() + ": unhandled exit reason " + reason + " at " + where());
        }
    }

    private String where() {
        try {
            byte[] regs = vcpu.getRegs();
            long rip = MemorySegment.ofArray(regs).get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED,
                    KvmAbi.off(KvmAbi.REGS, "rip"));
            return "rip=0x" + Long.toHexString(rip);
        } catch (RuntimeException e) {
            return "an unknown rip (" + e.getMessage() + ")";
        }
    }
}
