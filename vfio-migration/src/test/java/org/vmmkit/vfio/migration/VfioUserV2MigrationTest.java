package org.vmmkit.vfio.migration;

import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.List;
import java.util.OptionalLong;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.vmmkit.core.sys.Errno;
import org.vmmkit.core.sys.SysException;
import org.vmmkit.core.vfio.abi.V2Abi;
import org.vmmkit.core.vfio.user.VfioUserDevice;
import org.vmmkit.core.vfio.user.VfioUserPeer;
import org.vmmkit.core.vfio.v2.DeviceFeatures;
import org.vmmkit.core.vfio.v2.MigState;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * libvfio-user's v2 sample device (DEVICE_FEATURE, MIG_DATA_READ/WRITE) migrated by the unchanged
 * {@link V2DeviceMigration} over {@link VfioUserDevice}: server A → chunks in memory → server B. Without
 * PRE_COPY ({@link VfioUserDevice.Options#preCopy}): the sample's destination takes exactly the stop-copy stream
 * (BAR1 + BAR0, 0x3008 bytes). No rollback here: the sample server aborts on PRE_COPY → RUNNING and on STOP →
 * RUNNING before a stream; rollback is shown on the emulated v2 device.
 */
@Timeout(60)
class VfioUserV2MigrationTest {
    private static final VfioUserDevice.Options STOP_COPY_ONLY = VfioUserDevice.Options.DEFAULT.withPreCopy(false);

    @RegisterExtension
    final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();

    @BeforeEach
    void v2Peer() {
        VfioUserPeer.assumeAvailable(getClass().getSimpleName(), VfioUserPeer.unavailableReason(VfioUserPeer.Era.V2));
    }

    @Test
    void eachPeersProtocolIsDetectedAndAV1ServerIsNeverSentDeviceFeature() throws Exception {
        VfioUserPeer.assumeAvailable("v1 peer", VfioUserPeer.unavailableReason(VfioUserPeer.Era.V1));
        VfioUserPeer.SampleServer v1 = servers.start("sampleV1", VfioUserPeer.Era.V1), v2 = servers.start("sampleV2", VfioUserPeer.Era.V2);
        try (VfioUserDevice d1 = v1.connect(); VfioUserDevice d2 = v2.connect()) {
            assertEquals(10, d1.regionCount());
            assertEquals(VfioUserDevice.MigrationProtocol.V1_REGION, d1.migrationProtocol());
            SysException e = assertThrows(SysException.class, () -> d1.feature(V2Abi.FEATURE_GET | V2Abi.FEATURE_MIGRATION,
                    MemorySegment.ofArray(new long[1])));
            assertEquals(Errno.ENOTTY, e.errno(), e.getMessage());
            assertTrue(e.getMessage().contains("VFIO_USER_DEVICE_FEATURE(GET MIGRATION)") && e.getMessage().contains("sampleV1"), e.getMessage());
            assertEquals(OptionalLong.empty(), DeviceFeatures.migrationFlags(d1), "a v1 device has no v2 migration");

            assertEquals(9, d2.regionCount());
            assertEquals(VfioUserDevice.MigrationProtocol.V2_FEATURE, d2.migrationProtocol());
            assertEquals(OptionalLong.of(V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_PRE_COPY), DeviceFeatures.migrationFlags(d2), "no P2P");
            assertEquals(MigState.RUNNING, DeviceFeatures.state(d2));
            assertEquals(OptionalLong.empty(), DeviceFeatures.stopCopyLength(d2), "vfio-user has no MIG_DATA_SIZE");
        }
        assertTrue(!v1.logTail().contains("bad command"), "the v1 server saw no command it does not know:\n" + v1.logTail());
    }

    @Test
    void bar1WrittenOnServerAReadsTheSameOnServerBThroughTheStopCopyStream() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sampleA", VfioUserPeer.Era.V2), b = servers.start("sampleB", VfioUserPeer.Era.V2);
        byte[] written = VfioUserMigrationTest.pattern(3);
        try (VfioUserDevice da = a.connect(STOP_COPY_ONLY); VfioUserDevice db = b.connect(STOP_COPY_ONLY)) {
            VfioUserMigrationTest.armTimerAnHourAhead(da);
            da.write(1, 0, MemorySegment.ofArray(written));
            try (DeviceMigrationPlan src = DeviceMigrationPlan.open(List.of(new DeviceMigrationPlan.Entry(da, true)), V1DeviceMigration.Options.DEFAULT);
                 DeviceMigrationPlan dst = DeviceMigrationPlan.open(List.of(new DeviceMigrationPlan.Entry(db, true)), V1DeviceMigration.Options.DEFAULT)) {
                V2DeviceMigration s = (V2DeviceMigration) src.devices().get(0), d = (V2DeviceMigration) dst.devices().get(0);
                assertEquals(V2Abi.MIGRATION_STOP_COPY, s.migrationFlags(), "PRE_COPY hidden by the option");
                s.startSave();
                assertEquals(MigState.RUNNING, DeviceFeatures.state(da), "no PRE_COPY: the device runs untouched");
                assertEquals(0, s.pending());
                d.startLoad(1);
                assertEquals(MigState.RESUMING, DeviceFeatures.state(db));
                s.stop();
                assertEquals(MigState.STOP_COPY, DeviceFeatures.state(da));
                V2DeviceMigrationTest.transfer(s, d, 0);
                s.finishSave();
                d.finishLoad();
                d.start();
                assertEquals(0x3008, s.bytesSaved(), "stop-copy: BAR1 and BAR0");
                assertEquals(s.bytesSaved(), d.bytesLoaded());
                assertEquals(MigState.STOP, DeviceFeatures.state(da));
                assertEquals(MigState.RUNNING, DeviceFeatures.state(db));
            }
            assertArrayEquals(written, VfioUserMigrationTest.bar1(db), "BAR1 on B equals what was written on A");
            long delta = db.readLong(0, 0); // the sample reads back now - BAR0: A's future time came along
            assertTrue(delta <= -3590 && delta >= -3610, "now - BAR0 on B = " + delta);
        }
        assertEquals(0, a.awaitExit(Duration.ofSeconds(10)), "A exits cleanly when its client goes\n" + a.logTail());
        assertEquals(0, b.awaitExit(Duration.ofSeconds(10)), "B exits cleanly when its client goes\n" + b.logTail());
    }

    @Test
    void aServerKilledInStopCopyIsAClearErrorNamingTheDeviceAndTheCommand() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sampleA", VfioUserPeer.Era.V2);
        try (VfioUserDevice da = a.connect(STOP_COPY_ONLY);
             V2DeviceMigration s = V2DeviceMigration.open(da, new P2pGroup(), V2DeviceMigration.Options.DEFAULT)) {
            VfioUserMigrationTest.armTimerAnHourAhead(da);
            s.startSave();
            s.stop();
            a.kill();
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, s::pending);
            assertTrue(e.getMessage().contains("sampleA") && e.getMessage().contains("MIG_DATA"), e.getMessage());
            assertTrue(e.getMessage().contains("ECONNRESET") || e.getMessage().contains("EPIPE"), e.getMessage());
        }
    }
}
