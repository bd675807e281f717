package org.vmmkit.core.vfio.user;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.RegionInfo;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link VfioUserDevice} against libvfio-user's v1 sample server, a device nobody here wrote: BAR0 (region
 * 0) an 8-byte time_t, BAR1 (region 1) 0x3000 bytes, the v1 migration region (9).
 */
@RequiresVfioUser
@Timeout(30)
class VfioUserDeviceTest {
    private static final int BAR0 = 0, BAR1 = 1, MIGRATION = 9;

    @RegisterExtension
    final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();

    @Test
    void theSampleServerNegotiatesAndDescribesTenRegions() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sample");
        try (VfioUserDevice d = a.connect()) {
            assertEquals(0, d.capabilities().major());
            assertEquals(2, d.capabilities().minor());
            assertEquals(1 << 20, d.capabilities().maxDataXferSize());
            assertEquals(4096, d.capabilities().migrationPgsize().orElseThrow(), d.capabilities().json());
            assertEquals(10, d.regionCount(), "v1 era: the migration region is index 9");
            assertTrue(d.twinSocket(), "the server passed its command socket: its DMA never crosses our requests");
            assertTrue(d.resettable());
            assertTrue(d.pci());
        }
        assertEquals(0, a.awaitExit(Duration.ofSeconds(10)), "the server exits cleanly when its client goes");
    }

    @Test
    void theMigrationRegionIsTrappedByDefaultWhileBar1MapsThroughTheFdTheServerPassed() throws Exception {
        try (VfioUserDevice d = servers.start("sample").connect()) {
            RegionInfo m = d.regionInfo(MIGRATION);
            assertEquals(new RegionInfo.Type(VfioAbi.REGION_TYPE_MIGRATION_DEPRECATED, VfioAbi.REGION_SUBTYPE_MIGRATION_DEPRECATED), m.type().orElseThrow());
            assertEquals(0x5000, m.size());
            assertEquals(List.of(new RegionInfo.SparseArea(0x1000, 0x4000)), m.sparseAreas());
            assertTrue(m.readable() && m.writable());
            assertFalse(m.mmappable(), "the server offers the data area's fd, but migration data is trapped by default");
            SysException e = assertThrows(SysException.class, () -> d.mmap(MIGRATION, 0x1000, 0x4000));
            assertEquals("EOPNOTSUPP", e.errnoName());
            RegionInfo bar1 = d.regionInfo(BAR1);
            assertEquals(0x3000, bar1.size());
            assertEquals(List.of(new RegionInfo.SparseArea(0, 0x1000), new RegionInfo.SparseArea(0x2000, 0x1000)), bar1.sparseAreas());
            assertTrue(bar1.mmappable(), "BAR1's fd arrived with its region info (SCM_RIGHTS)");
            assertEquals(8, d.regionInfo(BAR0).size());
            assertEquals(1, d.readInt(MIGRATION, 0), "device_state reads running (001b)");

            byte[] pattern = new byte[0x3000];
            for (int i = 0; i < pattern.length; i++) pattern[i] = (byte) (i * 11 + 3);
            d.write(BAR1, 0, MemorySegment.ofArray(pattern));
            MemorySegment low = d.mmap(BAR1, 0, 0x1000), high = d.mmap(BAR1, 0x2000, 0x1000);
            assertArrayEquals(java.util.Arrays.copyOfRange(pattern, 0, 0x1000), low.toArray(JAVA_BYTE), "what REGION_WRITE put in BAR1 reads through the mapping");
            assertArrayEquals(java.util.Arrays.copyOfRange(pattern, 0x2000, 0x3000), high.toArray(JAVA_BYTE));
            assertThrows(SysException.class, () -> d.mmap(BAR1, 0x1000, 0x1000), "outside the sparse areas");
            d.unmap(low);
            d.unmap(high);
        }
    }

    @Test
    void withMapMigrationDataTheMigrationRegionIsMappable() throws Exception {
        try (VfioUserDevice d = servers.start("sample").connect(VfioUserDevice.Options.DEFAULT.withMapMigrationData(true))) {
            assertTrue(d.regionInfo(MIGRATION).mmappable());
            MemorySegment data = d.mmap(MIGRATION, 0x1000, 0x4000);
            assertEquals(0x4000, data.byteSize());
            d.unmap(data);
        }
    }

    @Test
    void bar1RoundTripsThroughRegionWriteAndRead() throws Exception {
        try (VfioUserDevice d = servers.start("sample").connect(); Arena arena = Arena.ofConfined()) {
            byte[] pattern = new byte[0x3000];
            for (int i = 0; i < pattern.length; i++) pattern[i] = (byte) (i * 7 + (i >> 8));
            d.write(BAR1, 0, MemorySegment.ofArray(pattern));
            // Read the whole BAR in one access: the sample copies from BAR1's start whatever offset is asked.
            MemorySegment back = arena.allocate(0x3000);
            d.read(BAR1, 0, back);
            assertArrayEquals(pattern, back.toArray(JAVA_BYTE));
        }
    }

    @Test
    void anAccessTheServerRefusesNamesTheDeviceTheCommandAndTheErrnoAndTheDeviceGoesOn() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sample");
        try (VfioUserDevice d = a.connect()) {
            SysException e = assertThrows(SysException.class, () -> d.readInt(BAR0, 0)); // BAR0 takes 8-byte accesses only
            assertEquals("EINVAL", e.errnoName());
            assertEquals("VFIO_USER_REGION_READ(region 0, offset 0x0, 4 bytes) on sample (vfio-user " + a.socket()
                    + ") failed: EINVAL (Invalid argument)", e.getMessage());
            long future = System.currentTimeMillis() / 1000 + 3600;
            d.writeLong(BAR0, 0, future);
            long delta = d.readLong(BAR0, 0); // the sample reads back now - BAR0
            assertTrue(delta <= -3590 && delta >= -3610, "now - BAR0 = " + delta);
        }
        assertEquals(0, a.awaitExit(Duration.ofSeconds(10)));
    }

    @Test
    void resetLeavesTheDeviceRunning() throws Exception {
        try (VfioUserDevice d = servers.start("sample").connect()) {
            d.reset();
            assertEquals(1, d.readInt(MIGRATION, 0));
        }
    }

    @Test
    void aServerKilledBetweenRequestsIsAClearErrorNotAHang() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sample");
        try (VfioUserDevice d = a.connect()) {
            d.regionInfo(MIGRATION);
            a.kill();
            SysException e = assertThrows(SysException.class, () -> d.readInt(MIGRATION, 8));
            assertTrue(e.getMessage().startsWith("VFIO_USER_REGION_READ(region 9, offset 0x8, 4 bytes) on sample (vfio-user "), e.getMessage());
            assertTrue(List.of("ECONNRESET", "EPIPE").contains(e.errnoName()), e.getMessage());
            assertTrue(e.getMessage().contains("the server has gone") || e.getMessage().contains("the server closed the connection"), e.getMessage());
            SysException later = assertThrows(SysException.class, () -> d.readInt(MIGRATION, 0));
            assertEquals("ENOTCONN", later.errnoName());
        }
    }
}
