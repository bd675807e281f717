package org.vmmkit.migration;

import java.util.UUID;

import org.vmmkit.migration.wire.StreamHeader;
import org.vmmkit.migration.wire.WireFormatException;

/**
 * Which VM a destination is, as libvirt has it: a migration moves one VM, so it keeps its UUID. A destination
 * started with a UUID takes only a stream of the VM with that UUID; one started without takes the identity of
 * the stream it starts from (as a libvirt destination defines the domain from the source's XML), and has it
 * from then on. A refused or failed stream changes nothing.
 */
final class DestinationIdentity {
    private final boolean fixed;
    private volatile UUID uuid;

    /** {@code configured}: the UUID this destination was started with, or null for none (it adopts the source's). */
    DestinationIdentity(UUID configured) {
        this.fixed = configured != null;
        this.uuid = configured;
    }

    /** Refuses, naming both, a stream of another VM than the one this destination was started as. */
    void check(UUID stream) {
        if (!fixed || stream.equals(uuid)) return;
        throw new WireFormatException("the stream header does not fit this VM: the source VM is "
                + (stream.equals(StreamHeader.NO_IDENTITY) ? "unnamed (no UUID)" : stream) + ", this destination was started as " + uuid
                + " (a migration moves one VM: start the destination with the source's vm.uuid, or with none to take it)");
    }

    /** The VM runs here from a stream of {@code stream}: an unconfigured destination is that VM from now on. */
    void adopt(UUID stream) {
        if (!fixed && !stream.equals(StreamHeader.NO_IDENTITY)) uuid = stream;
    }

    /** The UUID this destination has: configured, or adopted; null before it has one. */
    UUID get() {
        return uuid;
    }
}
