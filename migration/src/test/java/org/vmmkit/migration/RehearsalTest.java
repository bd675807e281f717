package org.vmmkit.migration;

import org.junit.jupiter.api.Test;

class RehearsalTest {
    @Test
    void theRehearsalMigratesItsTinyVmOverLoopback() throws Exception {
        Rehearsal.run(); // throws unless the destination ran with the page the source held
    }

    @Test
    void theLocalRehearsalHandsItsTinyVmsMemoryOverAUnixSocket() throws Exception {
        Rehearsal.runLocal(); // throws unless the destination mapped the page the source held
    }
}
