package org.vmmkit.core.vfio.v2;

import org.vmmkit.core.vfio.abi.V2Abi;

/** The states of {@code enum vfio_device_mig_state}; a value the kernel may add later is {@link #of}'s error. */
public enum MigState {
    ERROR(V2Abi.STATE_ERROR),
    STOP(V2Abi.STATE_STOP),
    RUNNING(V2Abi.STATE_RUNNING),
    STOP_COPY(V2Abi.STATE_STOP_COPY),
    RESUMING(V2Abi.STATE_RESUMING),
    RUNNING_P2P(V2Abi.STATE_RUNNING_P2P),
    PRE_COPY(V2Abi.STATE_PRE_COPY),
    PRE_COPY_P2P(V2Abi.STATE_PRE_COPY_P2P);

    private static final MigState[] BY_VALUE = values(); // the enum's order is the uapi's numbering

    private final int value;

    MigState(int value) {
        this.value = value;
    }

    /** The uapi number. */
    public int value() {
        return value;
    }

    /** The state of uapi number {@code value}; throws for a number this code does not know. */
    public static MigState of(int value) {
        if (value < 0 || value >= BY_VALUE.length) throw new IllegalArgumentException("unknown vfio_device_mig_state " + value);
        return BY_VALUE[value];
    }

    /** PRE_COPY, PRE_COPY_P2P and STOP_COPY share one data transfer session (the header's "saving group"). */
    public boolean saving() {
        return this == PRE_COPY || this == PRE_COPY_P2P || this == STOP_COPY;
    }

    /** The device may initiate DMA (all of it, or all but P2P). */
    public boolean running() {
        return this == RUNNING || this == PRE_COPY || this == RUNNING_P2P || this == PRE_COPY_P2P;
    }

    /** The device initiates no new peer-to-peer DMA, but still answers it: RUNNING_P2P, PRE_COPY_P2P. */
    public boolean p2pQuiesced() {
        return this == RUNNING_P2P || this == PRE_COPY_P2P;
    }

    /** Whether a device with {@code VFIO_DEVICE_FEATURE_MIGRATION} flags {@code flags} supports this state. */
    public boolean supportedBy(long flags) {
        return switch (this) {
            case ERROR, RUNNING -> true;
            case STOP, STOP_COPY, RESUMING -> (flags & V2Abi.MIGRATION_STOP_COPY) != 0;
            case RUNNING_P2P -> (flags & (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P)) == (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P);
            case PRE_COPY -> (flags & (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_PRE_COPY)) == (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_PRE_COPY);
            case PRE_COPY_P2P -> (flags & (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P | V2Abi.MIGRATION_PRE_COPY))
                    == (V2Abi.MIGRATION_STOP_COPY | V2Abi.MIGRATION_P2P | V2Abi.MIGRATION_PRE_COPY);
        };
    }
}
