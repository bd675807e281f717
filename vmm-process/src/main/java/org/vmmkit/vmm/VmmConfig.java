package org.vmmkit.vmm;

import java.nio.file.Path;
import java.util.List;

import org.vmmkit.core.config.Config;
import org.vmmkit.core.config.ConfigKey;
import org.vmmkit.testbed.guest.DirtyingWorkload;
import org.vmmkit.core.kvm.LongMode;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.HugePages;

/**
 * The VM section of the config: its identity, memory, vCPUs and the built-in workload. Later modules add their
 * sections (migration, devices) to the same file with keys of their own. {@code uuid} is null when the file
 * gives none.
 */
public record VmmConfig(long memorySize, int vcpus, DirtyingWorkload.Settings workload, Accelerator accelerator, HugePages hugePages,
                        java.util.UUID uuid) {

    /** What runs the guest: KVM, a software guest (a Java thread, for hosts without /dev/kvm), or KVM where usable. */
    public enum Accelerator { AUTO, KVM, SOFTWARE }

    public static final ConfigKey<Accelerator> ACCELERATOR = new ConfigKey<>("vm.accelerator", "auto",
            "What runs the guest: `kvm`; `software`, a Java thread rewriting the workload's pages (no vCPUs, for hosts without /dev/kvm); `auto`, KVM where /dev/kvm is usable, else software (said at start).",
            v -> switch (v) {
                case "auto" -> Accelerator.AUTO;
                case "kvm" -> Accelerator.KVM;
                case "software" -> Accelerator.SOFTWARE;
                default -> throw new IllegalArgumentException("expected auto, kvm or software");
            });

    public static final ConfigKey<String> UUID = new ConfigKey<>("vm.uuid", "",
            "The VM's identity, which a migration keeps (as libvirt's domain UUID): empty gives `run` a random one for the process's lifetime and lets `incoming` take the source's from the stream it starts from; an `incoming` given one takes only a stream of the VM with that UUID. `query-status` shows it.",
            v -> {
                if (v.isEmpty()) return v;
                try {
                    java.util.UUID u = java.util.UUID.fromString(v);
                    if (!u.toString().equals(v.toLowerCase(java.util.Locale.ROOT))) throw new IllegalArgumentException(v);
                    return v;
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException("expected a UUID, 8-4-4-4-12 hex digits (e.g. 6f1c2c1e-3b0a-4c53-9d3e-2a8f7a0d51b4)");
                }
            });
    public static final ConfigKey<Long> MEMORY = ConfigKey.size("vm.memory", "256M",
            "Guest RAM. Above 3 GiB the rest is placed from 4 GiB (a PC-style hole for MMIO).");
    public static final ConfigKey<HugePages> HUGEPAGES = new ConfigKey<>("vm.hugepages", "none",
            "What backs guest RAM: `none`, a memfd of 4 KiB pages; `hugetlb`, a memfd of 2 MiB hugetlbfs pages, all reserved from the host's pool when the VM starts (`vm.memory` a multiple of 2M; the pool in /proc/sys/vm/nr_hugepages must hold vm.memory / 2M free pages, else the start fails naming how many); `thp`, the 4 KiB memfd advised MADV_HUGEPAGE, which gets 2 MiB transparent huge pages only where /sys/kernel/mm/transparent_hugepage/shmem_enabled is `advise` (or always, within_size, force: a warning at start otherwise). Either huge mode makes a fresh destination fault once per 2 MiB instead of per 4 KiB (see BENCHMARKS.md); hugetlb pins the whole guest in the pool from start-up whatever the guest uses, and a zero run frees only whole 2 MiB pages.",
            HugePages::parse);
    public static final ConfigKey<Long> VCPUS = ConfigKey.count("vm.vcpus", "1",
            "Number of vCPUs. The built-in workload runs on vCPU 0; the others park in HLT.");
    public static final ConfigKey<Long> WORKLOAD_START = ConfigKey.size("workload.start", "1M",
            "Guest address of the first page the built-in workload writes (at least 1M).");
    public static final ConfigKey<Long> WORKLOAD_SIZE = ConfigKey.size("workload.size", "64M",
            "Bytes of guest memory the workload walks each pass; must fit in one RAM region.");
    public static final ConfigKey<Long> WORKLOAD_STRIDE = ConfigKey.size("workload.stride", "4096",
            "Bytes between two written pages: 4096 writes every page, 8192 every other one.");
    public static final ConfigKey<Long> WORKLOAD_PASSES = ConfigKey.count("workload.passes", "0",
            "Passes before the guest halts; 0 runs until the VM is stopped.");
    public static final ConfigKey<Long> WORKLOAD_RATE = ConfigKey.count("workload.pages-per-second", "0",
            "Pages written per second; 0 is flat out.");
    public static final ConfigKey<Boolean> WORKLOAD_REPORT = ConfigKey.flag("workload.report-passes", "true",
            "Exit to the VMM after each pass to report progress; false gives a guest that never exits.");

    public static final List<ConfigKey<?>> KEYS = List.of(UUID, MEMORY, HUGEPAGES, VCPUS, ACCELERATOR, WORKLOAD_START, WORKLOAD_SIZE, WORKLOAD_STRIDE,
            WORKLOAD_PASSES, WORKLOAD_RATE, WORKLOAD_REPORT);

    /** Builds the typed config, checking what only makes sense across keys. */
    public static VmmConfig from(Config config) {
        long memory = config.get(MEMORY);
        if (memory < 4 << 20 || memory % GuestMemory.PAGE_SIZE != 0) {
            throw config.invalid(MEMORY, "must be a multiple of 4K and at least 4M");
        }
        HugePages hugePages = config.get(HUGEPAGES);
        if (hugePages == HugePages.HUGETLB && memory % HugePages.HUGE_PAGE_SIZE != 0) {
            throw config.invalid(HUGEPAGES, "hugetlb needs vm.memory a multiple of 2M (2 MiB pages); vm.memory is " + memory + " bytes");
        }
        long vcpus = config.get(VCPUS);
        if (vcpus < 1 || vcpus > 255) throw config.invalid(VCPUS, "must be between 1 and 255");
        long start = config.get(WORKLOAD_START);
        if (start < LongMode.FREE_FROM || start % GuestMemory.PAGE_SIZE != 0) {
            throw config.invalid(WORKLOAD_START, "must be page-aligned and at least 1M (below is the boot area)");
        }
        long stride = config.get(WORKLOAD_STRIDE);
        if (stride < 8 || stride % 8 != 0) throw config.invalid(WORKLOAD_STRIDE, "must be a multiple of 8");
        long size = config.get(WORKLOAD_SIZE);
        long end = start + size;
        boolean fits = GuestMemory.standardLayout(memory).stream()
                .anyMatch(r -> start >= r.guestAddress() && end <= r.guestAddress() + r.size());
        if (!fits) {
            throw config.invalid(WORKLOAD_SIZE, "the range [0x" + Long.toHexString(start) + ", 0x" + Long.toHexString(end)
                    + ") does not fit in one RAM region of a " + memory + "-byte VM");
        }
        DirtyingWorkload.Settings workload = new DirtyingWorkload.Settings(start, size / stride, stride,
                config.get(WORKLOAD_PASSES), config.get(WORKLOAD_RATE), config.get(WORKLOAD_REPORT));
        String uuid = config.get(UUID);
        return new VmmConfig(memory, (int) vcpus, workload, config.get(ACCELERATOR), hugePages, uuid.isEmpty() ? null : java.util.UUID.fromString(uuid));
    }

    public static VmmConfig load(Path file, List<String> overrides) {
        return from(Config.load(KEYS, file, overrides));
    }
}
