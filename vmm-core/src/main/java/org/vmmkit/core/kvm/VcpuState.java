package org.vmmkit.core.kvm;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.List;

import org.vmmkit.core.kvm.abi.KvmAbi;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Everything KVM holds for one x86_64 vCPU that the guest depends on: general registers, special
 * registers (segments, control registers, EFER), the x87/SSE state, pending events, and the MSRs of
 * {@link KvmAbi} the host supports. The register blocks are kept as the kernel's own structs, so a
 * restore on the same architecture is exact; {@link #toBytes()} versions and frames them.
 */
public final class VcpuState {
    public static final int FORMAT_VERSION = 1;
    private static final int MAGIC = 0x56435055; // "VCPU"

    /** One model-specific register. */
    public record Msr(int index, long value) {}

    private final int vcpuId;
    private final byte[] regs, sregs, fpu, events;
    private final List<Msr> msrs;

    public VcpuState(int vcpuId, byte[] regs, byte[] sregs, byte[] fpu, byte[] events, List<Msr> msrs) {
        check("kvm_regs", regs, KvmAbi.REGS.byteSize());
        check("kvm_sregs", sregs, KvmAbi.SREGS.byteSize());
        check("kvm_fpu", fpu, KvmAbi.FPU.byteSize());
        check("kvm_vcpu_events", events, KvmAbi.VCPU_EVENTS_SIZE);
        this.vcpuId = vcpuId;
        this.regs = regs.clone();
        this.sregs = sregs.clone();
        this.fpu = fpu.clone();
        this.events = events.clone();
        this.msrs = List.copyOf(msrs);
    }

    private static void check(String what, byte[] bytes, long size) {
        if (bytes.length != size) {
            throw new IllegalArgumentException(what + " must be " + size + " bytes, got " + bytes.length);
        }
    }

    public int vcpuId() { return vcpuId; }

    byte[] regs() { return regs.clone(); }

    byte[] sregs() { return sregs.clone(); }

    byte[] fpu() { return fpu.clone(); }

    byte[] events() { return events.clone(); }

    public List<Msr> msrs() { return msrs; }

    /** A general register by its {@code kvm_regs} name ({@code rip}, {@code rax}, ...). */
    public long register(String name) {
        return MemorySegment.ofArray(regs).get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, KvmAbi.off(KvmAbi.REGS, name));
    }

    public long rip() { return register("rip"); }

    /** A special register by its {@code kvm_sregs} name ({@code cr0}, {@code cr3}, {@code efer}, ...). */
    public long specialRegister(String name) {
        return MemorySegment.ofArray(sregs).get(java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED, KvmAbi.off(KvmAbi.SREGS, name));
    }

    /** Versioned, self-describing bytes: magic, version, vCPU id, each block with its length, the MSRs. */
    public byte[] toBytes() {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(1024);
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeInt(MAGIC);
            out.writeInt(FORMAT_VERSION);
            out.writeInt(vcpuId);
            for (byte[] block : new byte[][] {regs, sregs, fpu, events}) {
                out.writeInt(block.length);
                out.write(block);
            }
            out.writeInt(msrs.size());
            for (Msr m : msrs) {
                out.writeInt(m.index());
                out.writeLong(m.value());
            }
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        return bytes.toByteArray();
    }

    /** Reads {@link #toBytes()}; refuses another magic, a version it does not know, or wrong sizes. */
    public static VcpuState fromBytes(byte[] data) {
        try (DataInputStream in = new DataInputStream(new java.io.ByteArrayInputStream(data))) {
            int magic = in.readInt();
            if (magic != MAGIC) throw new IllegalArgumentException("not vCPU state: magic 0x" + Integer.toHexString(magic));
            int version = in.readInt();
            if (version != FORMAT_VERSION) {
                throw new IllegalArgumentException("vCPU state version " + version + " is not supported (this build reads "
                        + FORMAT_VERSION + ")");
            }
            int id = in.readInt();
            byte[][] blocks = new byte[4][];
            for (int i = 0; i < 4; i++) {
                int len = in.readInt();
                if (len < 0 || len > 4096) throw new IllegalArgumentException("vCPU state block " + i + " has length " + len);
                blocks[i] = in.readNBytes(len);
                if (blocks[i].length != len) throw new IllegalArgumentException("vCPU state is truncated");
            }
            int n = in.readInt();
            if (n < 0 || n > 4096) throw new IllegalArgumentException("vCPU state has " + n + " MSRs");
            Msr[] msrs = new Msr[n];
            for (int i = 0; i < n; i++) msrs[i] = new Msr(in.readInt(), in.readLong());
            if (in.available() != 0) throw new IllegalArgumentException("vCPU state has " + in.available() + " trailing bytes");
            return new VcpuState(id, blocks[0], blocks[1], blocks[2], blocks[3], List.of(msrs));
        } catch (IOException e) {
            throw new IllegalArgumentException("vCPU state is truncated", e);
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof VcpuState s && s.vcpuId == vcpuId && Arrays.equals(s.regs, regs)
                && Arrays.equals(s.sregs, sregs) && Arrays.equals(s.fpu, fpu) && Arrays.equals(s.events, events)
                && s.msrs.equals(msrs);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(regs) * 31 + vcpuId;
    }

    @Override
    public String toString() {
        return "VcpuState[vcpu " + vcpuId + ", rip=0x" + Long.toHexString(rip()) + ", " + msrs.size() + " MSRs]";
    }
}
