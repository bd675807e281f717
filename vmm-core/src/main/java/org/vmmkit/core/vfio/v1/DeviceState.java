package org.vmmkit.core.vfio.v1;

import org.vmmkit.core.vfio.abi.V1Abi;

/**
 * A v1 {@code device_state} value: the three bits _RESUMING, _SAVING, _RUNNING plus the reserved bits
 * 3..31, which a change must carry over unchanged (read-modify-write). The VMM only ever asks for the
 * five valid states; 101b and 111b are invalid and 110b is the error state a device may report.
 */
public record DeviceState(int raw) {
    public static final DeviceState STOP = new DeviceState(V1Abi.STATE_STOP);
    public static final DeviceState RUNNING = new DeviceState(V1Abi.STATE_RUNNING);
    public static final DeviceState STOP_COPY = new DeviceState(V1Abi.STATE_SAVING);
    public static final DeviceState PRECOPY = new DeviceState(V1Abi.STATE_SAVING | V1Abi.STATE_RUNNING);
    public static final DeviceState RESUMING = new DeviceState(V1Abi.STATE_RESUMING);

    /** The three state bits. */
    public int bits() {
        return raw & V1Abi.STATE_MASK;
    }

    /** {@code VFIO_DEVICE_STATE_VALID}: with _RESUMING set, no other bit may be. */
    public boolean valid() {
        return (bits() & V1Abi.STATE_RESUMING) == 0 || bits() == V1Abi.STATE_RESUMING;
    }

    /** {@code VFIO_DEVICE_STATE_IS_ERROR}: 110b. */
    public boolean isError() {
        return bits() == (V1Abi.STATE_SAVING | V1Abi.STATE_RESUMING);
    }

    public boolean running() {
        return (bits() & V1Abi.STATE_RUNNING) != 0;
    }

    public boolean saving() {
        return (bits() & V1Abi.STATE_SAVING) != 0;
    }

    public boolean resuming() {
        return (bits() & V1Abi.STATE_RESUMING) != 0;
    }

    /** This value with the three state bits of {@code target} and every reserved bit of this one. */
    public DeviceState withBits(DeviceState target) {
        return new DeviceState((raw & ~V1Abi.STATE_MASK) | target.bits());
    }

    /** Whether the state bits are the same (reserved bits aside). */
    public boolean sameBits(DeviceState other) {
        return bits() == other.bits();
    }

    /**
     * The transitions the VMM makes: the thread's diagram (running → stop, running → stop-and-copy,
     * running → pre-copy → stop-and-copy → stop, running → resuming → running) plus the way back to
     * running that a cancelled or failed save takes (pre-copy, stop-and-copy or stop → running).
     */
    public boolean canGoTo(DeviceState target) {
        int from = bits(), to = target.bits();
        if (!valid() || isError() || !target.valid() || target.isError()) return false;
        return switch (from) {
            case V1Abi.STATE_RUNNING -> to == V1Abi.STATE_STOP || to == V1Abi.STATE_SAVING
                    || to == (V1Abi.STATE_SAVING | V1Abi.STATE_RUNNING) || to == V1Abi.STATE_RESUMING;
            case V1Abi.STATE_SAVING | V1Abi.STATE_RUNNING -> to == V1Abi.STATE_SAVING || to == V1Abi.STATE_RUNNING;
            case V1Abi.STATE_SAVING -> to == V1Abi.STATE_STOP || to == V1Abi.STATE_RUNNING;
            case V1Abi.STATE_STOP -> to == V1Abi.STATE_RUNNING;
            case V1Abi.STATE_RESUMING -> to == V1Abi.STATE_RUNNING;
            default -> false;
        };
    }

    /** {@code 011b (pre-copy)}. */
    @Override
    public String toString() {
        String bits = Integer.toBinaryString(8 | bits()).substring(1) + "b";
        String name = switch (bits()) {
            case V1Abi.STATE_STOP -> "stop";
            case V1Abi.STATE_RUNNING -> "running";
            case V1Abi.STATE_SAVING -> "stop-and-copy";
            case V1Abi.STATE_SAVING | V1Abi.STATE_RUNNING -> "pre-copy";
            case V1Abi.STATE_RESUMING -> "resuming";
            case V1Abi.STATE_SAVING | V1Abi.STATE_RESUMING -> "error";
            default -> "invalid";
        };
        return bits + " (" + name + ")" + ((raw & ~V1Abi.STATE_MASK) != 0 ? " reserved=0x" + Integer.toHexString(raw & ~V1Abi.STATE_MASK) : "");
    }
}
