package org.vmmkit.vfio.migration;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.CompletableFuture;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;
import org.vmmkit.testbed.vfio.EmulatedV2Device;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(30)
class DataFdPumpTest {

    /** The whole STOP_COPY stream of a fresh idle device (same seed: same bytes), moved by the pump to a socket. */
    static byte[] streamThroughSocket(DataFdPump.Mode mode, DataFdPump[] keep) throws Exception {
        try (EmulatedV2Device d = new EmulatedV2Device(EmulatedV2Device.Config.defaults("gpu0").withMemory(256 << 10).withOpsPerSecond(0)
                .withFlags(V2Abi.MIGRATION_STOP_COPY), 42)) {
            Fd[] socket = Libc.socketpair("pump-test");
            CompletableFuture<byte[]> received = CompletableFuture.supplyAsync(() -> drain(socket[1]));
            DataFdPump pump = new DataFdPump(mode, 64 << 10);
            keep[0] = pump;
            MigrationData session = DeviceFeatures.setState(d, MigState.RUNNING, MigState.STOP_COPY);
            long r;
            while ((r = pump.transfer(session.fd(), true, socket[0].raw(), 1 << 20)) > 0) { }
            assertEquals(0, r, "the stream's end");
            socket[0].close();
            byte[] bytes = received.get();
            session.close();
            DeviceFeatures.setState(d, MigState.STOP_COPY, MigState.STOP);
            socket[1].close();
            return bytes;
        }
    }

    static byte[] drain(Fd fd) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment b = arena.allocate(1 << 16);
            for (long r; (r = Libc.readRaw(fd.raw(), b)) > 0; ) out.write(b.asSlice(0, r).toArray(JAVA_BYTE), 0, (int) r);
        }
        return out.toByteArray();
    }

    @Test
    void spliceMovesTheSameBytesAsReadAndWrite() throws Exception {
        DataFdPump[] p = new DataFdPump[1];
        byte[] spliced = streamThroughSocket(DataFdPump.Mode.SPLICE, p);
        assertEquals(DataFdPump.Mode.SPLICE, p[0].mode(), "a pipe-backed session takes the zero-copy path");
        assertNull(p[0].fallback());
        p[0].close();
        byte[] copied = streamThroughSocket(DataFdPump.Mode.COPY, p);
        p[0].close();
        assertTrue(spliced.length > 256 << 10, spliced.length + " bytes");
        assertArrayEquals(copied, spliced);
    }

    @Test
    void aDataFdWithoutSpliceSupportFallsBackToReadAndWrite() {
        // An fd that read(2) serves but splice(2) refuses with EINVAL, as a kernel VFIO data fd does.
        Fd probe = Libc.eventfd(0, 0, "not-spliceable");
        try (DataFdPump pump = new DataFdPump(DataFdPump.Mode.SPLICE, 4096); Arena arena = Arena.ofConfined()) {
            MemorySegment v = arena.allocate(JAVA_LONG);
            v.set(JAVA_LONG, 0, 5);
            Libc.writeRaw(probe.raw(), v);
            Fd[] socket = Libc.socketpair("fallback");
            long r = pump.transfer(probe.raw(), false, socket[0].raw(), 8);
            assertEquals(8, r, "eight bytes of the eventfd's counter, through the fallback");
            assertEquals(DataFdPump.Mode.COPY, pump.mode());
            assertNotNull(pump.fallback());
            MemorySegment got = arena.allocate(JAVA_LONG);
            assertEquals(8, Libc.readRaw(socket[1].raw(), got));
            assertEquals(5, got.get(JAVA_LONG, 0));
            socket[0].close();
            socket[1].close();
        } finally {
            probe.close();
        }
    }
}
