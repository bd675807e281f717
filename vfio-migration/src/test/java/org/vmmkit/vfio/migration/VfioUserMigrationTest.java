package org.vmmkit.vfio.migration;

import org.vmmkit.core.vfio.v1.DeviceState;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.vmmkit.core.vfio.user.RequiresVfioUser;
import org.vmmkit.core.vfio.user.VfioUserDevice;
import org.vmmkit.core.vfio.user.VfioUserPeer;

import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A device nobody here wrote, migrated by the unchanged {@link V1DeviceMigration}: libvfio-user's v1 sample
 * server A → chunks in memory → sample server B, over {@link VfioUserDevice}. The device state is BAR1 (0x3000
 * bytes, region 1) in pre-copy and BAR1 + BAR0 in stop-and-copy. BAR0 holds a time_t that re-arms a timer on
 * every transition to running: it must lie in the future (else RESUMING → RUNNING and a pre-copy cancel fail),
 * and the timer must not fire (its handler DMAs into regions we do not map), so it is set an hour ahead.
 */
@RequiresVfioUser
@Timeout(30)
class VfioUserMigrationTest {
    private static final int BAR0 = 0, BAR1 = 1, BAR1_SIZE = 0x3000;

    @RegisterExtension
    final VfioUserPeer.Servers servers = new VfioUserPeer.Servers();

    /** As the sample's own client does before migrating: BAR0 = now + 1 h, a little-endian time_t. */
    static void armTimerAnHourAhead(VfioUserDevice d) {
        d.writeLong(BAR0, 0, System.currentTimeMillis() / 1000 + 3600);
    }

    static byte[] pattern(int seed) {
        byte[] p = new byte[BAR1_SIZE];
        for (int i = 0; i < p.length; i++) p[i] = (byte) (i * 13 + seed + (i >> 9));
        return p;
    }

    /** BAR1 in one read: the sample copies from the BAR's start whatever offset a read asks for. */
    static byte[] bar1(VfioUserDevice d) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment b = arena.allocate(BAR1_SIZE);
            d.read(BAR1, 0, b);
            return b.toArray(JAVA_BYTE);
        }
    }

    private static void copyPrecopyChunks(V1DeviceMigration source, List<MemorySegment> stream, Arena arena) {
        int bound = 64;
        for (long pending = source.pendingBytes(); pending > 0; pending = source.pendingBytes()) {
            assertTrue(bound-- > 0, "pre-copy does not end: pending_bytes " + pending);
            DeviceChunk c = source.nextChunk();
            stream.add(arena.allocate(c.length()).copyFrom(c.data()));
            c.release();
        }
    }

    @Test
    void bar1WrittenOnServerAReadsTheSameOnServerBAfterMigration() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sampleA"), b = servers.start("sampleB");
        byte[] written = pattern(1);
        List<MemorySegment> stream = new ArrayList<>();
        List<String> statesA = new ArrayList<>(), statesB = new ArrayList<>();
        try (VfioUserDevice da = a.connect(); VfioUserDevice db = b.connect(); Arena arena = Arena.ofConfined()) {
            armTimerAnHourAhead(da);
            da.write(BAR1, 0, MemorySegment.ofArray(written));
            try (V1DeviceMigration source = V1DeviceMigration.open(da, 0, V1DeviceMigration.Options.DEFAULT);
                 V1DeviceMigration destination = V1DeviceMigration.open(db, 0, V1DeviceMigration.Options.DEFAULT)) {
                assertEquals(0, source.region().mappedBytes(), "no fds, so the data section is reached with REGION_READ/WRITE");
                statesA.add(source.state().toString());
                source.startPrecopy();
                statesA.add(source.state().toString());
                copyPrecopyChunks(source, stream, arena);
                source.enterStopAndCopy();
                statesA.add(source.state().toString());
                source.drainStopAndCopy(c -> {
                    stream.add(arena.allocate(c.length()).copyFrom(c.data()));
                    c.release();
                });
                statesA.add(source.state().toString());

                destination.startResume();
                statesB.add(destination.state().toString());
                for (MemorySegment chunk : stream) destination.loadChunk(chunk); // in the source's order and sizes
                destination.completeResume();
                statesB.add(destination.state().toString());
                assertEquals(source.chunksSaved(), destination.chunksLoaded());
            }
            assertEquals(List.of(DeviceState.RUNNING.toString(), DeviceState.PRECOPY.toString(), DeviceState.STOP_COPY.toString(),
                    DeviceState.STOP.toString()), statesA);
            assertEquals(List.of(DeviceState.RESUMING.toString(), DeviceState.RUNNING.toString()), statesB);
            assertEquals(List.of((long) BAR1_SIZE, BAR1_SIZE + 8L), stream.stream().map(MemorySegment::byteSize).toList(),
                    "pre-copy: BAR1; stop-and-copy: BAR1 and BAR0");
            assertArrayEquals(written, bar1(db), "BAR1 on B equals what was written on A");
            long delta = db.readLong(BAR0, 0); // the sample reads back now - BAR0: A's future time came along
            assertTrue(delta <= -3590 && delta >= -3610, "now - BAR0 on B = " + delta);
        }
        assertEquals(0, a.awaitExit(Duration.ofSeconds(10)), "A exits cleanly when its client goes\n" + a.logTail());
        assertEquals(0, b.awaitExit(Duration.ofSeconds(10)), "B exits cleanly when its client goes\n" + b.logTail());
    }

    @Test
    void cancelDuringPrecopyLeavesTheSourceRunningWithBar1Intact() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sampleA");
        byte[] written = pattern(2);
        try (VfioUserDevice da = a.connect(); Arena arena = Arena.ofConfined()) {
            armTimerAnHourAhead(da);
            da.write(BAR1, 0, MemorySegment.ofArray(written));
            try (V1DeviceMigration source = V1DeviceMigration.open(da, 0, V1DeviceMigration.Options.DEFAULT)) {
                source.startPrecopy();
                copyPrecopyChunks(source, new ArrayList<>(), arena);
                String what = source.cancelSave();
                assertEquals("device sampleA back to " + DeviceState.RUNNING + " from " + DeviceState.PRECOPY, what);
                assertEquals(DeviceState.RUNNING.toString(), source.state().toString());
            }
            assertArrayEquals(written, bar1(da));
        }
        assertEquals(0, a.awaitExit(Duration.ofSeconds(10)), a.logTail());
    }

    @Test
    void aSourceServerKilledMidSaveIsAClearErrorNotAHang() throws Exception {
        VfioUserPeer.SampleServer a = servers.start("sampleA");
        try (VfioUserDevice da = a.connect(); Arena arena = Arena.ofConfined();
             V1DeviceMigration source = V1DeviceMigration.open(da, 0, V1DeviceMigration.Options.DEFAULT)) {
            armTimerAnHourAhead(da);
            source.startPrecopy();
            copyPrecopyChunks(source, new ArrayList<>(), arena);
            a.kill();
            long t0 = System.nanoTime();
            DeviceMigrationException e = assertThrows(DeviceMigrationException.class, () -> {
                source.enterStopAndCopy();
                source.drainStopAndCopy(DeviceChunk::release);
            });
            assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(5), "failed at once, no timeout needed");
            String chain = messages(e);
            assertTrue(chain.contains("device sampleA"), chain);
            assertTrue(chain.contains("VFIO_USER_REGION_READ(region 9, offset 0x0, 4 bytes)"), "the command: " + chain);
            assertTrue(chain.contains("the server has gone") || chain.contains("the server closed the connection"), "the reason: " + chain);
        }
    }

    private static String messages(Throwable t) {
        StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) b.append(c.getMessage()).append("\n  caused by: ");
        return b.toString();
    }
}
