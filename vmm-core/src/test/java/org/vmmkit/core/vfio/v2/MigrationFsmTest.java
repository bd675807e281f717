package org.vmmkit.core.vfio.v2;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.vfio.abi.V2Abi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.vmmkit.core.vfio.v2.MigState.*;

class MigrationFsmTest {
    static final long FULL = V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P | V2Abi.MIGRATION_PRE_COPY;
    static final long[] FLAG_SETS = {V2Abi.MIGRATION_STOP_COPY, V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P,
            V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_PRE_COPY, FULL};

    /**
     * The kernel's {@code vfio_from_fsm_table} (drivers/vfio/vfio_main.c, Linux 6.2+), written out here from its
     * documented combinations: the next state from a row's state towards a column's.
     */
    static final Map<MigState, Map<MigState, MigState>> KERNEL = new EnumMap<>(MigState.class);

    static void row(MigState from, MigState... nextByTarget) {
        Map<MigState, MigState> r = new EnumMap<>(MigState.class);
        for (MigState to : MigState.values()) r.put(to, nextByTarget[to.ordinal()]);
        KERNEL.put(from, r);
    }

    static {
        // targets in enum order: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P
        row(STOP, ERROR, STOP, RUNNING_P2P, STOP_COPY, RESUMING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P);
        row(RUNNING, ERROR, RUNNING_P2P, RUNNING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P, PRE_COPY, RUNNING_P2P);
        row(STOP_COPY, ERROR, STOP, STOP, STOP_COPY, STOP, STOP, ERROR, ERROR);
        row(RESUMING, ERROR, STOP, STOP, STOP, RESUMING, STOP, STOP, STOP);
        row(RUNNING_P2P, ERROR, STOP, RUNNING, STOP, STOP, RUNNING_P2P, RUNNING, PRE_COPY_P2P);
        row(PRE_COPY, ERROR, RUNNING, RUNNING, PRE_COPY_P2P, RUNNING, RUNNING, PRE_COPY, PRE_COPY_P2P);
        row(PRE_COPY_P2P, ERROR, RUNNING_P2P, RUNNING_P2P, STOP_COPY, RUNNING_P2P, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P);
        row(ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR);
    }

    /** The kernel's walk: next = table[cur][new], skipping states the device does not support; refused targets as Optional.empty. */
    static Optional<List<MigState>> kernelPath(MigState from, MigState to, long flags) {
        if (!to.supportedBy(flags) || !from.supportedBy(flags) || to == ERROR || from == ERROR) return Optional.empty();
        List<MigState> path = new ArrayList<>();
        MigState cur = from;
        while (cur != to) {
            MigState next = KERNEL.get(cur).get(to);
            while (next != ERROR && !next.supportedBy(flags)) next = KERNEL.get(next).get(to);
            if (next == ERROR) return Optional.empty();
            path.add(next);
            cur = next;
        }
        return Optional.of(path);
    }

    @Test
    void everyCombinationFollowsTheKernelsPathForEveryFlagSet() {
        for (long flags : FLAG_SETS) {
            for (MigState from : MigState.values()) {
                for (MigState to : MigState.values()) {
                    assertEquals(kernelPath(from, to, flags), MigrationFsm.path(from, to, flags),
                            from + " -> " + to + " with flags " + flags);
                }
            }
        }
    }

    @Test
    void theFullTableIsTheKernelsNextState() {
        for (MigState from : MigState.values()) {
            for (MigState to : MigState.values()) {
                if (from == ERROR || to == ERROR) continue;
                assertEquals(KERNEL.get(from).get(to), MigrationFsm.next(from, to, FULL), from + " -> " + to);
            }
        }
    }

    @Test
    void stopCopyNeverReturnsToPrecopy() {
        assertTrue(MigrationFsm.path(STOP_COPY, PRE_COPY, FULL).isEmpty());
        assertTrue(MigrationFsm.path(STOP_COPY, PRE_COPY_P2P, FULL).isEmpty());
    }

    @Test
    void optionalStatesAreSkippedOrRefusedWhenNotOffered() {
        long plain = V2Abi.MIGRATION_STOP_COPY;
        assertEquals(List.of(STOP), MigrationFsm.path(RUNNING, STOP, plain).orElseThrow());
        assertEquals(List.of(STOP, STOP_COPY), MigrationFsm.path(RUNNING, STOP_COPY, plain).orElseThrow());
        assertTrue(MigrationFsm.path(RUNNING, PRE_COPY, plain).isEmpty());
        assertTrue(MigrationFsm.path(RUNNING, RUNNING_P2P, plain).isEmpty());
        long precopy = V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_PRE_COPY;
        assertEquals(List.of(STOP_COPY), MigrationFsm.path(PRE_COPY, STOP_COPY, precopy).orElseThrow());
        assertEquals(List.of(PRE_COPY_P2P, STOP_COPY), MigrationFsm.path(PRE_COPY, STOP_COPY, FULL).orElseThrow());
        assertEquals(List.of(RUNNING_P2P, STOP, RESUMING), MigrationFsm.path(RUNNING, RESUMING, FULL).orElseThrow());
    }

    @Test
    void sessionsOpenIntoTheSavingGroupOrResumingAndEndLeavingThem() {
        assertTrue(MigrationFsm.opensSession(RUNNING, PRE_COPY));
        assertTrue(MigrationFsm.opensSession(STOP, STOP_COPY));
        assertTrue(MigrationFsm.opensSession(STOP, RESUMING));
        assertFalse(MigrationFsm.opensSession(PRE_COPY, STOP_COPY));
        assertFalse(MigrationFsm.opensSession(PRE_COPY_P2P, PRE_COPY));
        assertTrue(MigrationFsm.endsSession(STOP_COPY, STOP));
        assertTrue(MigrationFsm.endsSession(PRE_COPY, RUNNING));
        assertTrue(MigrationFsm.endsSession(RESUMING, STOP));
        assertFalse(MigrationFsm.endsSession(PRE_COPY_P2P, STOP_COPY));
    }
}
