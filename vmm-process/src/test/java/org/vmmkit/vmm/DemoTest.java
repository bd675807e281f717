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

    private static void check(Map.Entry<Integer, String> result) {
        System.out.println(result.getValue());
        assertEquals(0, result.getKey(), result.getValue());
        String out = result.getValue();
        for (String check : new String[] {"PASS  migration completed", "PASS  memory digest equal", "PASS  device gpu0 state equal",
                "PASS  guest counter continued", "vmm demo: PASSED"}) {
            assertTrue(out.contains(check), "the demo's output lacks '" + check + "'");
        }
    }
}
