package org.vmmkit.vmm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.vfio.user.VfioUserPeer;
import org.vmmkit.testbed.vfio.EmulatedMigratableDevice;
import org.vmmkit.vfio.migration.DeviceMigrationPlan;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** What a vfio-user attachment refuses before the VM starts. */
@Timeout(30)
class VfioUserAttachmentTest {
    @RegisterExtension
    final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();

    /** libvfio-user's v2 sample with pre-copy on would fail at the destination; refused at once, naming the key to set. */
    @Test
    void theV2SampleWithPrecopyIsRefusedNamingTheKeyToSet() throws Exception {
        VfioUserPeer.assumeAvailable("theV2SampleWithPrecopyIsRefusedNamingTheKeyToSet", VfioUserPeer.unavailableReason(VfioUserPeer.Era.V2));
        VfioUserPeer.SampleServer server = servers.start("sampleA", VfioUserPeer.Era.V2);
        DeviceSpec spec = new DeviceSpec("sample0", true, 1 << 20, EmulatedMigratableDevice.DataSection.TRAPPED, 200, 0, 0,
                DeviceSpec.Kind.VFIO_USER, server.socket(), false, DeviceSpec.SAMPLE_DRIVER, "v1", DeviceMigrationPlan.Protocol.AUTO, true, false);
        try (GuestMemory memory = GuestMemory.create(GuestMemory.standardLayout(16 << 20))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> VfioUserAttachment.open(spec, memory, false));
            assertTrue(e.getMessage().contains("device sample0") && e.getMessage().contains("migration v2")
                    && e.getMessage().contains("device.sample0.pre-copy = false"), e.getMessage());
        }
    }
}
