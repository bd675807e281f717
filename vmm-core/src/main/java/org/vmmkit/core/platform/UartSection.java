package org.vmmkit.core.platform;

import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SnapshotSection;

/**
 * A {@link Uart16550} as a migration section of kind {@code uart-16550}, version {@link UartState#FORMAT_VERSION}:
 * saved whole while the VM is paused, restored whole before it starts. State that does not decode or could not
 * be this model's is refused naming the section and the field, and the UART is left as it was. When the VM
 * starts, the restored interrupt level is driven onto the destination's line, which starts low: a UART that
 * was asking for an interrupt would otherwise never raise an edge again, and its console would hang.
 */
public final class UartSection extends SnapshotSection {
    public static final String KIND = "uart-16550";

    private final Uart16550 uart;

    public UartSection(String id, Uart16550 uart) {
        super(new SectionInfo(id, KIND, UartState.FORMAT_VERSION));
        this.uart = uart;
    }

    @Override
    protected byte[] save() {
        return uart.state().toBytes();
    }

    @Override
    protected void load(byte[] state, int version) {
        UartState decoded;
        try {
            decoded = UartState.fromBytes(state);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("section " + info().id() + " (" + KIND + " v" + version + "): " + e.getMessage(), e);
        }
        uart.restore(decoded);
    }

    @Override
    protected void started() {
        uart.driveIrqLine();
    }
}
