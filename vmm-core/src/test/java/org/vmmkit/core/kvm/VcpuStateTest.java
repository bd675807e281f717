package org.vmmkit.core.kvm;

import java.util.List;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.kvm.abi.KvmAbi;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class VcpuStateTest {

    private static VcpuState sample() {
        byte[] regs = new byte[(int) KvmAbi.REGS.byteSize()];
        regs[(int) KvmAbi.off(KvmAbi.REGS, "rip")] = 0x40;
        return new VcpuState(3, regs, new byte[(int) KvmAbi.SREGS.byteSize()], new byte[(int) KvmAbi.FPU.byteSize()],
                new byte[(int) KvmAbi.VCPU_EVENTS_SIZE], List.of(new VcpuState.Msr(KvmAbi.MSR_IA32_TSC, 12345)));
    }

    @Test
    void serialisedStateReadsBackEqual() {
        VcpuState s = sample();
        VcpuState back = VcpuState.fromBytes(s.toBytes());
        assertEquals(s, back);
        assertEquals(0x40, back.rip());
        assertEquals(3, back.vcpuId());
    }

    @Test
    void anUnknownVersionIsRefusedNotGuessed() {
        byte[] bytes = sample().toBytes();
        bytes[7] = 2; // version 2
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> VcpuState.fromBytes(bytes));
        assertTrue(e.getMessage().contains("version 2 is not supported"), e.getMessage());
    }

    @Test
    void truncatedOrForeignBytesAreRefused() {
        byte[] bytes = sample().toBytes();
        assertThrows(IllegalArgumentException.class, () -> VcpuState.fromBytes(java.util.Arrays.copyOf(bytes, bytes.length - 3)));
        assertThrows(IllegalArgumentException.class, () -> VcpuState.fromBytes(new byte[] {1, 2, 3, 4, 5, 6, 7, 8}));
        byte[] longer = java.util.Arrays.copyOf(bytes, bytes.length + 1);
        assertThrows(IllegalArgumentException.class, () -> VcpuState.fromBytes(longer));
    }

    @Test
    void wrongBlockSizesAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> new VcpuState(0, new byte[10], new byte[(int) KvmAbi.SREGS.byteSize()],
                new byte[(int) KvmAbi.FPU.byteSize()], new byte[(int) KvmAbi.VCPU_EVENTS_SIZE], List.of()));
    }
}
