package org.vmmkit.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.dirty.DirtyTracker;

/** What a source undoes when its migration fails before COMMIT: sections cancelled in reverse order, vCPUs resumed, tracking stopped. */
final class SourceRollback {
    private static final System.Logger LOG = System.getLogger("org.vmmkit.migration");

    private SourceRollback() {}

    /** Puts the source back as it was: every section cancelled in reverse order, vCPUs resumed, tracking stopped. Says what it did. */
    static String rollBack(List<SectionSaver> sections, MigratableVm vm, boolean saving, boolean paused, DirtyTracker tracker) {
        List<String> done = new ArrayList<>();
        if (saving) {
            for (int i = sections.size() - 1; i >= 0; i--) {
                SectionSaver x = sections.get(i);
                try {
                    done.add(x.cancelSave());
                } catch (RuntimeException e) {
                    done.add("section " + x.info().id() + " could not be put back: " + e.getMessage());
                }
            }
        }
        if (paused) {
            vm.resume();
            done.add("vCPUs resumed");
        }
        if (tracker != null) {
            try {
                tracker.stop();
                done.add("dirty tracking stopped");
            } catch (RuntimeException e) {
                done.add("stopping dirty tracking failed: " + e.getMessage());
            }
        }
        return "rolled back: " + String.join(", ", done);
    }

    /** Stops tracking after the handover (the VM runs elsewhere or waits for its outcome): a failure is logged, not thrown. */
    static void stopTracking(DirtyTracker tracker) {
        try {
            tracker.stop();
        } catch (RuntimeException e) {
            LOG.log(System.Logger.Level.WARNING, "stopping dirty tracking after the handover failed: " + e.getMessage());
        }
    }
}
