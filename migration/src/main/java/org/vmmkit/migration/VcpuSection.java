package org.vmmkit.migration;

import java.util.ArrayList;
import java.util.List;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.core.migration.SectionSaver;
import org.vmmkit.core.migration.SnapshotSection;

/**
 * One vCPU of a {@link MigratableVm} as a section like any other: id {@code vcpu/N}, the VM's vCPU state
 * format as its kind and version, saved whole once the vCPUs are paused and restored as it arrives (the
 * destination's VM has not started; a stream that does not complete leaves it unstarted, and the next stream
 * restores every vCPU again). The coordinator adds one per vCPU after the VM's other sections, so vCPU state
 * goes last in stop-and-copy, as the kernel wants it restored after the platform state.
 */
final class VcpuSection extends SnapshotSection {
    private final MigratableVm vm;
    private final int index;

    private VcpuSection(MigratableVm vm, int index) {
        super(new SectionInfo("vcpu/" + index, vm.vcpuStateKind(), vm.vcpuStateVersion()));
        this.vm = vm;
        this.index = index;
    }

    /** One section per vCPU of {@code vm}, in vCPU order. */
    static List<VcpuSection> of(MigratableVm vm) {
        List<VcpuSection> out = new ArrayList<>(vm.vcpuCount());
        for (int i = 0; i < vm.vcpuCount(); i++) out.add(new VcpuSection(vm, i));
        return out;
    }

    /** The source's sections: {@code sections}, then {@code vm}'s vCPUs. */
    static List<SectionSaver> savers(List<? extends SectionSaver> sections, MigratableVm vm) {
        List<SectionSaver> all = new ArrayList<>(sections);
        all.addAll(of(vm));
        return List.copyOf(all);
    }

    /** The destination's sections: {@code sections}, then {@code vm}'s vCPUs. */
    static List<SectionLoader> loaders(List<? extends SectionLoader> sections, MigratableVm vm) {
        List<SectionLoader> all = new ArrayList<>(sections);
        all.addAll(of(vm));
        return List.copyOf(all);
    }

    @Override
    protected byte[] save() {
        return vm.saveVcpu(index);
    }

    @Override
    protected void load(byte[] state, int version) {
        vm.restoreVcpu(index, state);
    }
}
