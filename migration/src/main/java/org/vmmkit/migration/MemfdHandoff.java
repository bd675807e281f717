package org.vmmkit.migration;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.sys.UnixListener;
import org.vmmkit.core.sys.UnixSocket;
import org.vmmkit.migration.wire.Nonce;
import org.vmmkit.migration.wire.WireFormatException;

import static java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED;
import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;

/**
 * The local live upgrade's hand-over of guest memory: the source's memfds, one per region, passed with
 * SCM_RIGHTS to a destination on the same host, which then maps the same pages instead of receiving them.
 *
 * <p>A JDK socket cannot carry fds, so they go over a side connection: the destination, having accepted the
 * offer (stream header flag, Unix transport), listens on a fresh name in the abstract namespace and says it in
 * READY; the source connects there and sends one message: the HELLO nonce of its stream (only the two ends of
 * that stream know it: a stranger who connects first is refused) and the regions, with their fds attached.
 * Layout in docs/wire-format.md.
 */
final class MemfdHandoff {
    /** "VMMKITFD" as little-endian bytes. */
    static final long MAGIC = 0x444654494B4D4D56L;
    private static final int FIXED = 32, PER_REGION = 16;

    private MemfdHandoff() {}

    /** Whether {@code memory} can be handed over: each region a file of its own from offset 0, few enough for one message. */
    static boolean possible(GuestMemory memory) {
        if (memory.regions().size() > UnixSocket.MAX_FDS) return false;
        for (GuestRegion r : memory.regions()) if (!memory.backingIsTheRegionAlone(r)) return false;
        return true;
    }

    /** Source: connects to {@code address} and sends {@code memory}'s memfds with {@code nonce}, all within {@code timeout}. */
    static void send(String address, Nonce nonce, GuestMemory memory, Duration timeout) throws IOException {
        List<GuestRegion> regions = memory.regions();
        long deadline = System.nanoTime() + timeout.toNanos();
        try (UnixSocket socket = UnixSocket.connect(address, "memfd hand-over to " + address); Arena arena = Arena.ofConfined()) {
            MemorySegment message = arena.allocate(FIXED + (long) PER_REGION * regions.size(), 8);
            message.set(JAVA_LONG_UNALIGNED, 0, MAGIC);
            message.set(JAVA_LONG_UNALIGNED, 8, nonce.high());
            message.set(JAVA_LONG_UNALIGNED, 16, nonce.low());
            message.set(JAVA_INT_UNALIGNED, 24, regions.size());
            int[] fds = new int[regions.size()];
            for (int i = 0; i < regions.size(); i++) {
                GuestRegion r = regions.get(i);
                message.set(JAVA_LONG_UNALIGNED, FIXED + (long) PER_REGION * i, r.guestAddress());
                message.set(JAVA_LONG_UNALIGNED, FIXED + (long) PER_REGION * i + 8, r.size());
                fds[i] = r.backing().raw();
            }
            long sent = 0;
            while (sent < message.byteSize()) {
                long n = socket.send(message, sent, message.byteSize() - sent, null, 0, 0, fds, sent == 0 ? fds.length : 0);
                if (n == -Errno.EAGAIN) {
                    await(socket, Libc.POLLOUT, deadline, address);
                } else if (n < 0) {
                    throw new IOException("sendmsg(SCM_RIGHTS, " + fds.length + " memfds) to " + address + " failed: " + Errno.name((int) -n));
                } else {
                    sent += n;
                }
            }
        } catch (SysException e) {
            throw new IOException("handing the guest-memory memfds over to " + address + ": " + e.getMessage(), e);
        }
    }

    /**
     * Destination: the memfds of {@code memory}'s regions, from the first connection on {@code listener} within
     * {@code wait}; refused (fds closed) unless the message carries {@code nonce} and exactly this memory's layout.
     */
    static List<Fd> receive(UnixListener listener, Nonce nonce, GuestMemory memory, Duration wait) throws IOException {
        List<GuestRegion> regions = memory.regions();
        long deadline = System.nanoTime() + wait.toNanos();
        String where = listener.address();
        try (UnixSocket socket = listener.accept(wait); Arena arena = Arena.ofConfined()) {
            MemorySegment message = arena.allocate(FIXED + (long) PER_REGION * regions.size(), 8);
            long got = 0;
            while (got < message.byteSize()) {
                long n = socket.receive(message, got, message.byteSize() - got, true);
                if (n == -Errno.EAGAIN) {
                    await(socket, Libc.POLLIN, deadline, where);
                } else if (n < 0) {
                    throw new IOException("recvmsg(SCM_RIGHTS) on " + where + " failed: " + Errno.name((int) -n));
                } else if (n == 0) {
                    throw new WireFormatException("the memfd hand-over on " + where + " ended after " + got + " of " + message.byteSize() + " bytes");
                } else {
                    got += n;
                }
            }
            Nonce carried = new Nonce(message.get(JAVA_LONG_UNALIGNED, 8), message.get(JAVA_LONG_UNALIGNED, 16));
            if (message.get(JAVA_LONG_UNALIGNED, 0) != MAGIC || !carried.equals(nonce)) {
                throw new WireFormatException("the memfd hand-over on " + where + " does not carry this stream's nonce " + nonce
                        + ": not the source of the stream (refused)");
            }
            int count = message.get(JAVA_INT_UNALIGNED, 24);
            if (count != regions.size() || socket.receivedFdCount() != regions.size()) {
                throw new WireFormatException("the memfd hand-over on " + where + " brought " + socket.receivedFdCount() + " fds for " + count
                        + " regions; this VM has " + regions.size());
            }
            for (int i = 0; i < count; i++) {
                long gpa = message.get(JAVA_LONG_UNALIGNED, FIXED + (long) PER_REGION * i), size = message.get(JAVA_LONG_UNALIGNED, FIXED + (long) PER_REGION * i + 8);
                if (gpa != regions.get(i).guestAddress() || size != regions.get(i).size()) {
                    throw new WireFormatException("the memfd hand-over on " + where + ": region " + i + " is 0x" + Long.toHexString(gpa) + "+" + size
                            + ", here " + regions.get(i));
                }
            }
            List<Fd> fds = new ArrayList<>();
            for (int i = 0; i < count; i++) fds.add(new Fd(socket.takeFd(i), "source memfd of region " + i));
            return fds;
        } catch (SysException e) {
            throw new IOException("receiving the guest-memory memfds on " + where + ": " + e.getMessage(), e);
        }
    }

    private static void await(UnixSocket socket, short events, long deadline, String where) throws IOException {
        long left = deadline - System.nanoTime();
        if (left <= 0) throw new IOException("the memfd hand-over on " + where + " did not finish in time");
        int r = socket.await(events, (int) Math.clamp(left / 1_000_000, 1, Integer.MAX_VALUE));
        if (r < 0) throw new IOException("poll on the memfd hand-over " + where + " failed: " + Errno.name(-r));
    }
}
