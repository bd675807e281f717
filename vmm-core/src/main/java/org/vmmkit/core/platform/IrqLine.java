package org.vmmkit.core.platform;

/**
 * A device's interrupt output, level-triggered: the device drives it high while it has an interrupt to
 * report and low once it has none. What is behind it (KVM_IRQ_LINE on a GSI, an irqfd with resample) is the
 * VMM's wiring; a device calls {@link #set} only when its level changes, and once more to drive a restored
 * level onto a fresh line.
 */
@FunctionalInterface
public interface IrqLine {
    void set(boolean high);
}
