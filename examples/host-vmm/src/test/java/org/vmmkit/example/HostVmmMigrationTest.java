package org.vmmkit.example;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.vmmkit.migration.MigrationSettings;
import org.vmmkit.migration.MigrationStats;
import org.vmmkit.migration.MigrationStatus;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The example VMM migrates its running VM, its own vCPU state and its own device through the public API (no KVM). */
@Timeout(60)
class HostVmmMigrationTest {
    @Test
    void aHostVmmMigratesItsOwnVmAndDevice() throws Exception {
        try (HostVmm a = new HostVmm(32L << 20); HostVmm b = new HostVmm(32L << 20);
             ServerSocketChannel server = ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))) {
            a.vm().boot();
            for (int i = 0; i < 7; i++) a.timer().tick();
            byte[][] atLoad = new byte[1][];
            long[][] registersAtLoad = new long[1][];
            CompletableFuture<Void> received = CompletableFuture.runAsync(() -> {
                try {
                    b.receive(server, () -> {
                        atLoad[0] = b.vm().memory().regions().get(0).host().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
                        registersAtLoad[0] = b.vm().registers();
                    });
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
            MigrationStats stats = a.migrateTo(server.getLocalAddress(), MigrationSettings.DEFAULT);
            received.get(30, TimeUnit.SECONDS);
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            assertFalse(a.vm().running(), "the source stays paused");
            assertTrue(b.vm().running(), "the destination runs");
            assertArrayEquals(a.vm().memory().regions().get(0).host().toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), atLoad[0],
                    "memory loaded at the destination equals the source's at its pause");
            assertArrayEquals(a.vm().registers(), registersAtLoad[0], "vCPU state likewise");
            assertTrue(a.vm().registers()[0] > 0, "the guest ran before the migration");
            assertEquals(7, b.timer().ticks());
            assertEquals(1000, b.timer().period());
            assertEquals(java.util.List.of("timer0", "vcpu/0"), stats.sections().stream().map(MigrationStats.SectionStats::id).toList(),
                    "the host's device, then its vCPU as a section of the VM's own format");
            assertEquals("toy-vcpu", stats.sections().get(1).kind());
        }
    }
}
