package org.vmmkit.migration;

import java.util.LinkedHashMap;
import java.util.Map;

import org.vmmkit.migration.wire.HandoverOutcome;
import org.vmmkit.migration.wire.Nonce;

/** What became of each recent stream at this destination, by nonce: what an outcome query is answered from. */
final class OutcomeRegistry {
    private static final int KEPT = 64;

    private final LinkedHashMap<Nonce, HandoverOutcome> outcomes = new LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Nonce, HandoverOutcome> eldest) {
            return size() > KEPT;
        }
    };
    private volatile Nonce lastStream;

    synchronized HandoverOutcome outcomeOf(Nonce nonce) {
        return outcomes.getOrDefault(nonce, HandoverOutcome.UNKNOWN_STREAM);
    }

    /** A stream got past its header: it is the last one, in progress. */
    synchronized void began(Nonce nonce) {
        lastStream = nonce;
        outcomes.put(nonce, HandoverOutcome.IN_PROGRESS);
    }

    synchronized void record(Nonce nonce, HandoverOutcome outcome) {
        outcomes.put(nonce, outcome);
    }

    /** The stream ended without its VM running; recorded only if no later stream began meanwhile. */
    synchronized void notStarted(Nonce nonce) {
        if (lastStream == nonce) outcomes.put(nonce, HandoverOutcome.NOT_STARTED);
    }

    Nonce lastStream() {
        return lastStream;
    }
}
