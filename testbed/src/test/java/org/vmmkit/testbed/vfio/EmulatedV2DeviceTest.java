package org.vmmkit.testbed.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;
import org.vmmkit.core.vfio.v2.MigrationData;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The emulated v2 driver's own rules, checked through the same typed calls the VMM makes: what it refuses and records. */
@Timeout(20)
class EmulatedV2DeviceTest {

    static EmulatedV2Device idle(String name, long flags) {
        return new EmulatedV2Device(EmulatedV2Device.Config.defaults(name).withMemory(64 << 10).withOpsPerSecond(0).withFlags(flags), 1);
    }

    @Test
    void aMultiArcRequestIsWalkedAlongTheKernelsPath() {
        try (EmulatedV2Device d = idle("d", EmulatedV2Device.ALL_FLAGS)) {
            MigrationData s = DeviceFeatures.setState(d, MigState.RUNNING, MigState.STOP_COPY);
            assertNotNull(s, "entering the saving group opens a session");
            assertEquals(List.of("RUNNING->RUNNING_P2P", "RUNNING_P2P->STOP", "STOP->STOP_COPY"), d.arcs());
            assertEquals(MigState.STOP_COPY, DeviceFeatures.state(d));
            assertNull(DeviceFeatures.setState(d, MigState.STOP_COPY, MigState.STOP));
            s.close();
            assertEquals(List.of(), d.misuse());
        }
    }

    @Test
    void anArcOffTheDiagramIsRefusedAndRecorded() {
        try (EmulatedV2Device d = idle("d", EmulatedV2Device.ALL_FLAGS)) {
            DeviceFeatures.setState(d, MigState.RUNNING, MigState.STOP_COPY).close();
            SysException e = assertThrows(SysException.class, () -> DeviceFeatures.setState(d, MigState.STOP_COPY, MigState.PRE_COPY));
            assertEquals(Errno.EINVAL, e.errno());
            assertTrue(d.misuse().get(0).contains("no transition from STOP_COPY to PRE_COPY"), d.misuse().toString());
            assertEquals(MigState.STOP_COPY, d.currentState(), "a refused request changes nothing");
        }
    }

    @Test
    void anOptionalStateTheDeviceDidNotOfferIsRefused() {
        try (EmulatedV2Device d = idle("d", V2Abi.MIGRATION_STOP_COPY)) {
            assertThrows(SysException.class, () -> DeviceFeatures.setState(d, MigState.RUNNING, MigState.PRE_COPY));
            assertThrows(SysException.class, () -> DeviceFeatures.setState(d, MigState.RUNNING, MigState.RUNNING_P2P));
            assertEquals(2, d.misuse().size(), d.misuse().toString());
        }
    }

    @Test
    void precopyInfoOutsidePrecopyAndReadsOfTheWrongSessionAreMisuse() {
        try (EmulatedV2Device d = idle("d", EmulatedV2Device.ALL_FLAGS); Arena arena = Arena.ofConfined()) {
            MemorySegment info = arena.allocate(V2Abi.PRECOPY_INFO);
            MemorySegment buf = arena.allocate(4096);
            MigrationData save = DeviceFeatures.setState(d, MigState.RUNNING, MigState.PRE_COPY);
            assertEquals(0, save.precopyInfoRaw(info));
            assertTrue(info.get(JAVA_LONG, V2Abi.PRECOPY_INITIAL_BYTES) > 0, "initial_bytes starts above 0");
            assertEquals(0, info.get(JAVA_LONG, V2Abi.PRECOPY_DIRTY_BYTES), "dirty_bytes starts at 0");
            assertEquals(-Errno.EINVAL, (int) save.writeRaw(buf), "a saving session is read, not written");
            DeviceFeatures.setState(d, MigState.PRE_COPY, MigState.STOP_COPY);
            assertEquals(-Errno.EINVAL, save.precopyInfoRaw(info), "PRECOPY_INFO is for PRE_COPY states only");
            DeviceFeatures.setState(d, MigState.STOP_COPY, MigState.STOP);
            assertEquals(-Errno.ENODEV, (int) save.readRaw(buf), "the session ended with STOP_COPY -> STOP");
            save.close();
            MigrationData resume = DeviceFeatures.setState(d, MigState.STOP, MigState.RESUMING);
            assertEquals(-Errno.EINVAL, (int) resume.readRaw(buf), "a resuming session is written, not read");
            assertEquals(4, d.misuse().size(), d.misuse().toString());
            resume.close();
            d.reset();
        }
    }

    @Test
    void aStreamWrittenOutOfOrderIsRefusedAtResumingToStop() {
        try (EmulatedV2Device src = idle("s", V2Abi.MIGRATION_STOP_COPY); EmulatedV2Device dst = idle("t", V2Abi.MIGRATION_STOP_COPY);
             Arena arena = Arena.ofConfined()) {
            MigrationData save = DeviceFeatures.setState(src, MigState.RUNNING, MigState.STOP_COPY);
            MemorySegment stream = arena.allocate(1 << 20);
            long n = 0;
            for (long r; (r = save.readRaw(stream.asSlice(n))) > 0; ) n += r;
            save.close();
            int rec = EmulatedV2Device.PAGE_RECORD, first = EmulatedV2Device.RECORD_HEADER; // BEGIN has no payload
            MemorySegment swapped = arena.allocate(n);
            MemorySegment.copy(stream, 0, swapped, 0, n);
            MemorySegment.copy(stream, first + rec, swapped, first, rec); // pages 1 and 0 change places
            MemorySegment.copy(stream, first, swapped, first + rec, rec);
            MigrationData resume = DeviceFeatures.setState(dst, MigState.RUNNING, MigState.RESUMING);
            for (long done = 0; done < n; ) done += resume.writeRaw(swapped.asSlice(done));
            SysException e = assertThrows(SysException.class, () -> DeviceFeatures.setState(dst, MigState.RESUMING, MigState.STOP));
            assertEquals(Errno.EINVAL, e.errno());
            assertTrue(e.getMessage().contains("out of order"), e.getMessage());
            assertEquals(MigState.ERROR, dst.currentState());
            resume.close();
            dst.reset();
            assertEquals(MigState.RUNNING, dst.currentState());
        }
    }

    @Test
    void dmaLoggingReportsTheDevicesWritesOnceEach() {
        try (EmulatedVfioContainer container = new EmulatedVfioContainer("c", 4096, EmulatedVfioContainer.Tracking.NONE);
             Arena arena = Arena.ofConfined()) {
            MemorySegment guest = arena.allocate(1 << 20, 4096);
            container.mapDma(0, guest, true, true);
            EmulatedV2Device d = new EmulatedV2Device(new EmulatedV2Device.Config("dma0", 64 << 10, EmulatedV2Device.ALL_FLAGS, 0, 1, 0, true, true), 3)
                    .attachDma(container, 0, 1 << 20);
            try {
                assertTrue(DeviceFeatures.dmaLoggingSupported(d));
                DeviceFeatures.dmaLoggingStart(d, 4096, new long[] {0}, new long[] {1 << 20});
                for (int i = 0; i < 10; i++) d.operateOnce();
                MemorySegment bitmap = arena.allocate(256 / 8, 8);
                DeviceFeatures.dmaLoggingReport(d, 0, 1 << 20, 4096, bitmap);
                long bits = 0;
                for (int w = 0; w < 4; w++) bits += Long.bitCount(bitmap.get(JAVA_LONG, 8L * w));
                assertTrue(bits >= 1 && bits <= 10, bits + " pages written by 10 DMAs");
                bitmap.fill((byte) 0);
                DeviceFeatures.dmaLoggingReport(d, 0, 1 << 20, 4096, bitmap);
                for (int w = 0; w < 4; w++) assertEquals(0, bitmap.get(JAVA_LONG, 8L * w), "a report clears what it returned");
                DeviceFeatures.dmaLoggingStop(d);
                assertThrows(SysException.class, () -> DeviceFeatures.dmaLoggingReport(d, 0, 1 << 20, 4096, bitmap));
                assertEquals(List.of(), d.misuse());
            } finally {
                d.close();
            }
        }
    }

    @Test
    void theDataSessionIsARealFileDescriptor() {
        try (EmulatedV2Device d = idle("d", V2Abi.MIGRATION_STOP_COPY); Arena arena = Arena.ofConfined()) {
            MigrationData save = DeviceFeatures.setState(d, MigState.RUNNING, MigState.STOP_COPY);
            MemorySegment buf = arena.allocate(64);
            long r = Libc.readRaw(save.fd(), buf); // straight from the fd, as splice would take it
            assertTrue(r > 0, "read " + r);
            assertEquals(0x56324D47, buf.get(JAVA_INT, 0), "the driver's BEGIN record");
            save.close();
        }
    }
}
