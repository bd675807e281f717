package org.vmmkit.migration.testing;

import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import org.vmmkit.core.MigratableVm;
import org.vmmkit.core.memory.GuestMemory;
import org.vmmkit.core.memory.GuestRegion;

/**
 * A VM without KVM for tests of the migration protocol: guest memory with fixed content (every fourth page
 * zero), one vCPU whose state is a few bytes, and a record of what was done to it (running, starts,
 * resumes). Its memory never changes while it runs, so no dirty source is needed.
 */
public final class FakeGuest implements MigratableVm, AutoCloseable {
    private final GuestMemory memory;
    private final byte[] vcpu;
    private volatile byte[] restoredVcpu;
    private volatile boolean running;
    private volatile int starts, resumes;
    private String vcpuKind = "fake-vcpu";
    private int vcpuVersion = 1;

    /** A source guest of {@code size} bytes whose content comes from {@code seed}, running. */
    public static FakeGuest source(long size, long seed) {
        FakeGuest g = new FakeGuest(size, ("vcpu-" + seed).getBytes());
        GuestRegion r = g.memory.regions().get(0);
        SplittableRandom random = new SplittableRandom(seed);
        for (long page = 0; page < size / GuestMemory.PAGE_SIZE; page++) {
            if (page % 4 == 3) continue;
            for (long o = 0; o < GuestMemory.PAGE_SIZE; o += 8) r.host().set(ValueLayout.JAVA_LONG, page * GuestMemory.PAGE_SIZE + o, random.nextLong());
        }
        g.running = true;
        return g;
    }

    /** An empty destination guest of {@code size} bytes, not started. */
    public static FakeGuest destination(long size) {
        return new FakeGuest(size, new byte[0]);
    }

    private FakeGuest(long size, byte[] vcpu) {
        this.memory = GuestMemory.create(List.of(new GuestMemory.Range(0, size)));
        this.vcpu = vcpu;
    }

    @Override
    public GuestMemory memory() {
        return memory;
    }

    @Override
    public int vcpuCount() {
        return 1;
    }

    @Override
    public byte[] saveVcpu(int index) {
        return vcpu.clone();
    }

    @Override
    public void restoreVcpu(int index, byte[] state) {
        restoredVcpu = state.clone();
    }

    /** Names its vCPU state format {@code kind} version {@code version} (before a migration's source or destination is made). */
    public FakeGuest vcpuFormat(String kind, int version) {
        this.vcpuKind = kind;
        this.vcpuVersion = version;
        return this;
    }

    @Override
    public String vcpuStateKind() {
        return vcpuKind;
    }

    @Override
    public int vcpuStateVersion() {
        return vcpuVersion;
    }

    @Override
    public void startLoaded() {
        starts++;
        running = true;
    }

    @Override
    public Duration pause() {
        running = false;
        return Duration.ZERO;
    }

    @Override
    public void resume() {
        resumes++;
        running = true;
    }

    public boolean running() {
        return running;
    }

    public int starts() {
        return starts;
    }

    public int resumes() {
        return resumes;
    }

    /** The vCPU state last restored (a destination's), or null. */
    public byte[] restoredVcpu() {
        byte[] s = restoredVcpu;
        return s == null ? null : s.clone();
    }

    /**
     * Back to an empty destination that never started: memory zeroed, no vCPU state, no starts or resumes
     * (a fuzzer's next input, without a new memfd each time).
     */
    public void reset() {
        for (GuestRegion r : memory.regions()) r.host().fill((byte) 0);
        restoredVcpu = null;
        running = false;
        starts = 0;
        resumes = 0;
    }

    /** Whether this (destination) guest holds exactly {@code source}'s memory and vCPU state. */
    public boolean equalsSource(FakeGuest source) {
        return memory.regions().get(0).host().mismatch(source.memory.regions().get(0).host()) == -1
                && Arrays.equals(restoredVcpu, source.vcpu);
    }

    @Override
    public void close() {
        memory.close();
    }
}
