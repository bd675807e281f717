package org.vmmkit.vmm;

import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.core.kvm.RequiresKvm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code vmm demo}, README's main command, run as a user runs it: two processes, a passing verification, exit code 0. */
@Timeout(120)
class DemoTest {
    @Test
    @RequiresKvm
    void theDemoMigratesAndEveryCheckPasses() {
        check(TwoProcessMigrationTest.cli("demo", "--channels", "2"));
    }

    /** What a host without /dev/kvm runs: the software guest, clearly labelled, verified the same way. */
    @Test
    void theDemoWithASoftwareGuestPassesToo() {
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("demo", "--accelerator", "software");
        check(result);
        assertTrue(result.getValue().contains("SOFTWARE guest"), result.getValue());
    }

    /** {@code vmm demo --device vfio-user}: libvfio-user's sample device, a server per process, verified the same way and more. */
    @Test
    @org.vmmkit.core.vfio.user.RequiresVfioUser
    void theDemoWithTheVfioUserSampleDevicePasses() {
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("demo", "--device", "vfio-user");
        check(result, "PASS  device sample0 state equal", "PASS  device sample0 BAR1 moved", "PASS  device sample0 states",
                "PASS  device sample0 protocol followed");
    }

    /** {@code vmm demo --device vfio-user-v2}: the sample device of libvfio-user's migration v2 era, stop-copy only. */
    @Test
    @org.vmmkit.core.vfio.user.RequiresVfioUser
    void theDemoWithTheV2VfioUserSampleDevicePasses() {
        org.vmmkit.core.vfio.user.VfioUserPeer.assumeAvailable("theDemoWithTheV2VfioUserSampleDevicePasses",
                org.vmmkit.core.vfio.user.VfioUserPeer.unavailableReason(org.vmmkit.core.vfio.user.VfioUserPeer.Era.V2));
        Map.Entry<Integer, String> result = TwoProcessMigrationTest.cli("demo", "--device", "vfio-user-v2");
        check(result, "PASS  device sample0 state equal", "PASS  device sample0 BAR1 moved", "PASS  device sample0 states",
                "PASS  device sample0 protocol followed");
    }

    private static void check(Map.Entry<Integer, String> result) {
        check(result, "PASS  device gpu0 state equal");
    }

    private static void check(Map.Entry<Integer, String> result, String... deviceChecks) {
        System.out.println(result.getValue());
        assertEquals(0, result.getKey(), result.getValue());
        String out = result.getValue();
        for (String check : deviceChecks) assertTrue(out.contains(check), "the demo's output lacks '" + check + "'");
        for (String check : new String[] {"PASS  migration completed", "PASS  memory digest equal",
                "PASS  guest counter continued", "vmm demo: PASSED"}) {
            assertTrue(out.contains(check), "the demo's output lacks '" + check + "'");
        }
    }
}
