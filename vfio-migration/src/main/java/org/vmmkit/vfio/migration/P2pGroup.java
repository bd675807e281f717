package org.vmmkit.vfio.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.vfio.v2.MigState;

/**
 * The v2 devices of one VM, so that peer-to-peer DMA between them never reaches a device that has stopped.
 * The header's P2P states are for this: in RUNNING_P2P and PRE_COPY_P2P a device initiates no new P2P DMA
 * (and completes what it had started before the arc returns) but still answers it. So the source first puts
 * <em>every</em> device into its P2P state, and only then stops any ({@code quiesce}, called by each
 * member's {@code stop()}, and by each member's {@code startLoad()} on the destination, whose fresh devices run
 * until the stream comes: the first call does the work); before any runs again, every device is taken to
 * RUNNING_P2P ({@code prepareRun}: the destination's start, the source's rollback). QEMU does the same across its devices. A
 * device that offers no P2P state cannot take part: with such a member the ordering is not guaranteed, which
 * {@link #orderingGuaranteed()} says.
 */
public final class P2pGroup {
    private final List<V2DeviceMigration> members = new ArrayList<>();

    void add(V2DeviceMigration member) {
        members.add(member);
    }

    public List<V2DeviceMigration> members() {
        return List.copyOf(members);
    }

    /** Whether every member offers the P2P states (otherwise a member without them stops while peers may still write it). */
    public boolean orderingGuaranteed() {
        return members.stream().allMatch(V2DeviceMigration::offersP2p);
    }

    /** Source, at stop-and-copy: every member that runs (RUNNING or PRE_COPY) goes to its P2P state. Idempotent. */
    void quiesce() {
        for (V2DeviceMigration m : members) {
            if (!m.offersP2p()) continue;
            MigState s = m.knownState();
            if (s == MigState.RUNNING) m.moveTo(MigState.RUNNING_P2P);
            else if (s == MigState.PRE_COPY) m.moveTo(MigState.PRE_COPY_P2P);
        }
    }

    /**
     * Before any member runs again (the destination's start, the source's rollback): every member that is stopped
     * (STOP, STOP_COPY) or quiesced in pre-copy goes to RUNNING_P2P first, so it answers peer writes before a
     * peer may send one. Idempotent; a member that cannot get there is left to its own cancel or start, which
     * says why.
     */
    void prepareRun() {
        for (V2DeviceMigration m : members) {
            MigState s = m.knownState();
            if (!m.offersP2p() || !(s == MigState.STOP || s == MigState.STOP_COPY || s == MigState.PRE_COPY_P2P)) continue;
            try {
                m.moveTo(MigState.RUNNING_P2P);
            } catch (DeviceMigrationException e) {
                // its own cancelSave or start reports it
            }
        }
    }
}
