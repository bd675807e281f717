package org.vmmkit.vmm;

import java.time.LocalTime;
import java.time.format.DateTimeFormatter;
import java.util.logging.ConsoleHandler;
import java.util.logging.Formatter;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

/**
 * Logging: the code logs through {@code System.Logger} (no dependency; its default backend is
 * java.util.logging, configured here). Quiet by default (warnings only); {@code --verbose} shows a line per
 * phase (INFO) for vmmkit's loggers, on stderr.
 */
final class Logs {
    private Logs() {}

    private static final Logger ROOT = Logger.getLogger("");
    private static final Logger VMMKIT = Logger.getLogger("org.vmmkit");

    static void configure(boolean verbose, String processName) {
        for (var h : ROOT.getHandlers()) ROOT.removeHandler(h);
        ConsoleHandler console = new ConsoleHandler();
        console.setLevel(Level.ALL);
        DateTimeFormatter time = DateTimeFormatter.ofPattern("HH:mm:ss.SSS");
        console.setFormatter(new Formatter() {
            @Override
            public String format(LogRecord r) {
                return time.format(LocalTime.now()) + " " + processName + " " + r.getLevel().getName().toLowerCase() + ": "
                        + formatMessage(r) + System.lineSeparator();
            }
        });
        ROOT.addHandler(console);
        ROOT.setLevel(Level.WARNING);
        VMMKIT.setLevel(verbose ? Level.INFO : Level.WARNING);
    }
}
