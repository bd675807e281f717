package org.vmmkit.core.vfio.v2;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The v2 migration state machine as {@code linux/vfio.h} defines it: the arcs a driver implements, and the
 * combination transitions between any two states, which follow the shortest path on which no state of the
 * saving group (PRE_COPY, PRE_COPY_P2P, STOP_COPY) is interior unless the path both starts and ends in it (the
 * data session is carried across, and then every interior state is in it: STOP_COPY never returns to PRE_COPY),
 * and on which a state the device does not support is skipped (the header:
 * "Arcs touching PRE_COPY and PRE_COPY_P2P are removed if support for PRE_COPY is not present"; a device
 * without P2P goes RUNNING ↔ STOP directly). The kernel's own table ({@code vfio_mig_get_next_state}) is what
 * {@code MigrationFsmTest} compares with. Used by the VMM, which walks a combination one arc per SET so that a
 * failure names the arc, and by the emulated device, which walks it as a kernel driver does.
 */
public final class MigrationFsm {
    private MigrationFsm() {}

    /** The arcs of a device that supports every optional state (P2P and PRE_COPY). */
    private static final Map<MigState, EnumSet<MigState>> FULL_ARCS = new EnumMap<>(MigState.class);

    static {
        arcs(MigState.STOP, MigState.RUNNING_P2P, MigState.STOP_COPY, MigState.RESUMING);
        arcs(MigState.RUNNING_P2P, MigState.STOP, MigState.RUNNING, MigState.PRE_COPY_P2P);
        arcs(MigState.RUNNING, MigState.RUNNING_P2P, MigState.PRE_COPY);
        arcs(MigState.PRE_COPY, MigState.RUNNING, MigState.PRE_COPY_P2P);
        arcs(MigState.PRE_COPY_P2P, MigState.PRE_COPY, MigState.RUNNING_P2P, MigState.STOP_COPY);
        arcs(MigState.STOP_COPY, MigState.STOP);
        arcs(MigState.RESUMING, MigState.STOP);
        arcs(MigState.ERROR);
    }

    private static void arcs(MigState from, MigState... to) {
        FULL_ARCS.put(from, to.length == 0 ? EnumSet.noneOf(MigState.class) : EnumSet.of(to[0], to));
    }

    /**
     * The states a device with migration flags {@code flags} passes through, after {@code from}, to reach
     * {@code to} (empty when they are equal), each one arc it implements; empty Optional when the transition
     * is not allowed (to or from ERROR, into an unsupported state, STOP_COPY to a PRE_COPY state).
     */
    public static Optional<List<MigState>> path(MigState from, MigState to, long flags) {
        if (from == MigState.ERROR || to == MigState.ERROR || !from.supportedBy(flags) || !to.supportedBy(flags)) return Optional.empty();
        if (from == to) return Optional.of(List.of());
        List<MigState> full = fullPath(from, to);
        if (full == null) return Optional.empty();
        List<MigState> path = new ArrayList<>(full.size());
        for (MigState s : full) if (s.supportedBy(flags)) path.add(s);
        return Optional.of(List.copyOf(path));
    }

    /** Whether {@code from → to} is a single arc for a device with {@code flags} (after skipping unsupported states). */
    public static boolean isArc(MigState from, MigState to, long flags) {
        return path(from, to, flags).map(p -> p.size() == 1).orElse(false);
    }

    /** The next state on the way, as the kernel's {@code vfio_mig_get_next_state} gives it; ERROR when not allowed. */
    public static MigState next(MigState from, MigState to, long flags) {
        return path(from, to, flags).map(p -> p.isEmpty() ? from : p.get(0)).orElse(MigState.ERROR);
    }

    /** Whether entering {@code to} from {@code from} (one arc) opens a new data session: into the saving group from outside it, or into RESUMING. */
    public static boolean opensSession(MigState from, MigState to) {
        return (to.saving() && !from.saving()) || (to == MigState.RESUMING && from != MigState.RESUMING);
    }

    /** Whether the arc ends the current data session: out of the saving group, or out of RESUMING. */
    public static boolean endsSession(MigState from, MigState to) {
        return (from.saving() && !to.saving()) || (from == MigState.RESUMING && to != MigState.RESUMING);
    }

    /** Breadth-first over the full arc set; among equal lengths the first found in enum order, which the kernel's table matches. */
    private static List<MigState> fullPath(MigState from, MigState to) {
        boolean carrySession = from.saving() && to.saving();
        Map<MigState, MigState> parent = new EnumMap<>(MigState.class);
        ArrayDeque<MigState> queue = new ArrayDeque<>();
        queue.add(from);
        parent.put(from, from);
        while (!queue.isEmpty()) {
            MigState s = queue.poll();
            for (MigState n : FULL_ARCS.get(s)) {
                if (parent.containsKey(n)) continue;
                // Interior states: all of the saving group when the session is carried across, else none of it.
                if (n != to && n.saving() != carrySession) continue;
                parent.put(n, s);
                if (n == to) {
                    ArrayDeque<MigState> path = new ArrayDeque<>();
                    for (MigState at = to; at != from; at = parent.get(at)) path.addFirst(at);
                    return new ArrayList<>(path);
                }
                queue.add(n);
            }
        }
        return null;
    }
}
