package org.vmmkit.migration;

import java.util.Locale;

/**
 * What pre-copy does when the expected downtime stays over the limit: the limit is a promise to the guest, so
 * it is never broken silently. {@link #THROTTLE} (the default) slows the guest down — its vCPUs paused a
 * growing share of each period, as QEMU's auto-converge does — until the estimate fits, and cancels if even
 * the strongest throttle does not make it fit by the round cap; {@link #CANCEL} gives the migration up at the
 * round cap (the guest runs on at the source, as cloud-hypervisor's {@code timeout_strategy=cancel}); {@link
 * #FORCE} stops and copies at the round cap whatever the downtime, only when asked for.
 */
public enum ConvergencePolicy {
    THROTTLE, CANCEL, FORCE;

    /** The name the config and the control commands use: {@code throttle}, {@code cancel}, {@code force}. */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The policy of a label, or an error naming it and the choices. */
    public static ConvergencePolicy of(String label) {
        for (ConvergencePolicy p : values()) if (p.label().equals(label)) return p;
        throw new IllegalArgumentException("no convergence policy '" + label + "' (throttle, cancel or force)");
    }

    @Override
    public String toString() {
        return label();
    }
}
