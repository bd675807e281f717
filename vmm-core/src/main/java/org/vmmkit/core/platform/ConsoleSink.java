package org.vmmkit.core.platform;

/** Where a console device delivers what the guest wrote, one line at a time (without its line end). */
@FunctionalInterface
public interface ConsoleSink {
    void line(String text);
}
