package org.vmmkit.core.vfio.user;

import java.util.List;
import java.util.Map;
import java.util.OptionalLong;

import org.vmmkit.core.vfio.user.abi.VfioUserAbi;

/**
 * What a vfio-user server said in its {@code VFIO_USER_VERSION} reply: the version it agreed to and its
 * capabilities ("Version" in the specification), with the specification's defaults for those it left out.
 *
 * @param maxDataXferSize the largest {@code count} the server accepts in a REGION/DMA read or write
 * @param maxMsgFds the most file descriptors the server takes in one message
 * @param migrationPgsize the dirty-page bitmap page size, absent when the server does not support migration
 * @param twinSocket whether the server enabled twin-socket mode (a separate socket for its own commands)
 * @param twinSocketFdIndex which of the fds sent with the reply is that socket; -1 when not given
 * @param json the JSON as sent, for messages
 */
public record ServerCapabilities(int major, int minor, long maxDataXferSize, int maxMsgFds, OptionalLong migrationPgsize,
                                 boolean twinSocket, int twinSocketFdIndex, String json) {

    /** Parses and checks the reply's JSON ({@code ""} when the server sent none). */
    static ServerCapabilities parse(int major, int minor, String json) {
        long maxXfer = VfioUserAbi.DEFAULT_MAX_DATA_XFER_SIZE;
        long maxFds = VfioUserAbi.DEFAULT_MAX_MSG_FDS;
        OptionalLong pgsize = OptionalLong.empty();
        boolean twin = false;
        long twinIndex = -1;
        if (!json.isEmpty()) {
            Map<String, Object> top = object(Json.parse(json), "the version data");
            Object caps = top.get("capabilities");
            if (caps != null) {
                Map<String, Object> c = object(caps, "capabilities");
                if (c.containsKey("max_data_xfer_size")) maxXfer = number(c.get("max_data_xfer_size"), "capabilities.max_data_xfer_size");
                if (c.containsKey("max_msg_fds")) maxFds = number(c.get("max_msg_fds"), "capabilities.max_msg_fds");
                if (c.containsKey("migration")) {
                    Map<String, Object> m = object(c.get("migration"), "capabilities.migration");
                    long pg = m.containsKey("pgsize") ? number(m.get("pgsize"), "capabilities.migration.pgsize") : 4096;
                    if (pg <= 0 || Long.bitCount(pg) != 1) throw new IllegalArgumentException("capabilities.migration.pgsize " + pg + " is not a power of two");
                    pgsize = OptionalLong.of(pg);
                }
                if (c.get("twin_socket") instanceof Map<?, ?> t) {
                    twin = Boolean.TRUE.equals(t.get("supported"));
                    if (t.containsKey("fd_index")) twinIndex = number(t.get("fd_index"), "capabilities.twin_socket.fd_index");
                }
            }
        }
        if (maxXfer <= 0) throw new IllegalArgumentException("capabilities.max_data_xfer_size " + maxXfer + " is not positive");
        if (maxFds > Integer.MAX_VALUE) throw new IllegalArgumentException("capabilities.max_msg_fds " + maxFds + " is too large");
        if (twinIndex > 64) throw new IllegalArgumentException("capabilities.twin_socket.fd_index " + twinIndex + " is too large");
        return new ServerCapabilities(major, minor, maxXfer, (int) maxFds, pgsize, twin, (int) twinIndex, json);
    }

    /** Whether the server announced the migration capability. */
    public boolean migration() {
        return migrationPgsize.isPresent();
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> object(Object v, String what) {
        if (v instanceof Map<?, ?> m) return (Map<String, Object>) m;
        throw new IllegalArgumentException(what + " is not a JSON object");
    }

    private static long number(Object v, String what) {
        if (v instanceof Long l && l >= 0) return l;
        throw new IllegalArgumentException(what + " is not a non-negative integer: " + (v instanceof List<?> ? "an array" : v));
    }
}
