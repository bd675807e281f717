package org.vmmkit.example;

import java.net.SocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.time.Duration;
import java.util.List;

import java.lang.foreign.MemorySegment;

import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.migration.MigrationDestination;
import org.vmmkit.migration.MigrationException;
import org.vmmkit.migration.MigrationSettings;
import org.vmmkit.migration.MigrationSource;
import org.vmmkit.migration.MigrationStats;

/**
 * How a host VMM embeds vmmkit: its VM ({@link ToyVm}: its memory, its vCPU state, its dirty log), its
 * devices as sections ({@link TickDevice}), and the two calls of the public API — a {@link MigrationSource}
 * to send, a {@link MigrationDestination} to receive. docs/embedding.md walks through it.
 */
public final class HostVmm implements AutoCloseable {
    private final Fd ramFile;
    private final MemorySegment ram;
    private final GuestMemory memory;
    private final ToyVm vm;
    private final TickDevice timer;

    /** A VMM whose guest has {@code ramBytes} of RAM (a memfd the VMM maps itself, then wraps) and one timer. */
    public HostVmm(long ramBytes) {
        // The VMM's own RAM: a memfd it maps shared itself (as it would to give it to KVM or a device process),
        // handed to vmmkit by wrapping; vmmkit never unmaps or closes it.
        this.ramFile = Libc.memfdCreate("toy-vmm-ram");
        ramFile.truncate(ramBytes);
        this.ram = Libc.mmap(ramBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, ramFile.raw(), 0, "toy-vmm-ram");
        this.memory = GuestMemory.wrap(List.of(new GuestMemory.HostRegion(0, ram, ramFile)));
        this.vm = new ToyVm(memory);
        this.timer = new TickDevice("timer0", 1000);
    }

    public ToyVm vm() {
        return vm;
    }

    public TickDevice timer() {
        return timer;
    }

    /** Live-migrates the running VM to the destination listening at {@code to}; on success this VM stays paused. */
    public MigrationStats migrateTo(SocketAddress to, MigrationSettings settings) throws MigrationException {
        MigrationSource source = new MigrationSource(vm, List.of(vm.dirtyLog()), List.of(timer), settings);
        return source.migrate(to);
    }

    /**
     * Waits on {@code server} for a migration of a VM of this shape; returns once the VM runs here.
     * {@code beforeStart} runs when everything is loaded and nothing runs yet (a log line, a check).
     */
    public void receive(ServerSocketChannel server, Runnable beforeStart) throws MigrationException {
        new MigrationDestination(vm, List.of(timer), beforeStart).receive(server, Duration.ofMinutes(5));
    }

    @Override
    public void close() {
        vm.close();
        memory.close();
        Libc.munmap(ram, "toy-vmm-ram");
        ramFile.close();
    }
}
