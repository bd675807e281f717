package org.vmmkit.migration;

import java.util.List;
import java.util.concurrent.TimeUnit;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.dirty.DirtyTracker;
import org.vmmkit.migration.pipeline.MemoryProducer;
import org.vmmkit.migration.pipeline.SectionProducer;
import org.vmmkit.migration.pipeline.TransferRing;

/** A source's stop-and-copy: the VM paused, then everything that is left of memory and of every section sent. */
final class StopAndCopy {
    private StopAndCopy() {}

    /**
     * vCPUs paused, sections stopped, then the final sync (after the sections stopped: a device's last DMA is
     * in it), the rest of memory, every section until nothing is pending (the vCPUs' last), COMPLETE on
     * every channel, all sent.
     */
    static void run(MigratableVm vm, List<SectionSaver> sections, DirtyTracker tracker, TransferRing ring, MemoryProducer producer,
                    List<SectionProducer> producers, LiveStats stats) {
        vm.pause();
        for (SectionSaver x : sections) x.stop();
        tracker.sync();
        stats.beginRound(tracker.dirtyPages(), 0);
        producer.publish(tracker);
        for (SectionProducer p : producers) {
            if (p.drain(0) != 0) throw new IllegalStateException("section " + p.section().info() + " still has data after stop-and-copy");
            p.awaitRelease();
            p.section().finishSave();
        }
        ring.publishComplete();
        ring.awaitSent(60, TimeUnit.SECONDS);
    }
}
