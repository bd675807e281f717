package org.vmmkit.migration.wire;

import java.security.SecureRandom;

/**
 * 128 random bits the destination chooses for each connection it accepts (its HELLO) and the source must
 * carry back in its stream header: a stream is bound to the one attempt it was made for, so a recording of
 * an earlier stream, replayed, is refused before anything changes.
 */
public record Nonce(long high, long low) {
    private static final SecureRandom RANDOM = new SecureRandom();

    public static Nonce random() {
        return new Nonce(RANDOM.nextLong(), RANDOM.nextLong());
    }

    @Override
    public String toString() {
        return String.format("%016x%016x", high, low);
    }
}
