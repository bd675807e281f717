package org.vmmkit.core.migration;

/**
 * The source side of a migratable component — a VFIO device, a host VMM's own device, platform state — as
 * the migration coordinator iterates it, never asking what it is. The coordinator calls, on one thread:
 * {@link #startSave} in setup; in each pre-copy round {@link #pending} and {@link #nextChunk} while there is
 * something to send (within its chunk budget); {@link #stop} once the vCPUs are paused, then chunks until
 * {@link #pending} is 0, then {@link #finishSave}; or {@link #cancelSave} to roll back at any point before
 * the handover. Chunks are written by another thread, which releases them.
 */
public interface SectionSaver {
    SectionInfo info();

    /** Setup: the component begins to keep track of what changes (a VFIO v1 device enters pre-copy). */
    void startSave();

    /** Bytes still to send, asked only with no chunk out: an estimate while the component runs, exact once stopped. */
    long pending();

    /**
     * What stopping now would leave to send, for the downtime estimate (asked once per round, with no chunk
     * out): by default {@link #pending}. A component whose {@link #pending} counts only what it can hand out now
     * (a VFIO v2 device in pre-copy, or one that offers no pre-copy) says here what stop-and-copy will carry.
     */
    default long downtimeBytes() {
        return pending();
    }

    /** The next chunk (only after {@link #pending} was above 0); the coordinator queues it for writing. */
    SectionChunk nextChunk();

    /** Whether a chunk handed out has not been released yet. */
    boolean chunkOut();

    /** Stop-and-copy: the component stops changing (the vCPUs are paused); {@link #pending} is exact from now on. */
    void stop();

    /** Everything was sent ({@link #pending} was 0 after {@link #stop}): the component's save is done. */
    void finishSave();

    /**
     * Rollback, from any state after {@link #startSave}: the component runs on as before. Says what it did;
     * does not throw for a component that is running again.
     */
    String cancelSave();
}
