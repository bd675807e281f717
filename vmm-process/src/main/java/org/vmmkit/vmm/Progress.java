package org.vmmkit.vmm;

import java.io.PrintStream;
import java.util.Locale;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;

/**
 * The progress line of a migration (transferred/remaining, rate, round, expected downtime; "-" for what is not
 * known yet), drawn from the control endpoint's events, and its final summary.
 */
final class Progress {
    private final PrintStream out;
    private final boolean enabled;
    private boolean shown;

    Progress(PrintStream out, boolean enabled) {
        this.out = out;
        this.enabled = enabled;
    }

    /** Whether stderr is a terminal (a progress line with carriage returns only makes sense there). */
    static boolean onTerminal() {
        java.io.Console c = System.console();
        return c != null && c.isTerminal();
    }

    private String status = "setup";
    private long sent, remaining = -1, pass;
    private double mbps;
    private Long expectedDowntime; // null: no estimate yet

    /**
     * Takes in one of the endpoint's events (MIGRATION: the status; MIGRATION_PASS: a round's figures;
     * MIGRATION_PROGRESS: the live ones) and redraws the line.
     */
    void event(JsonObject e) {
        JsonObject d = e.getAsJsonObject("data");
        switch (e.get("event").getAsString()) {
            case "MIGRATION" -> status = d.get("status").getAsString();
            case "MIGRATION_PASS" -> {
                sent = d.get("transferred").getAsLong();
                pass = d.get("pass").getAsLong();
                expectedDowntime = d.get("expected-downtime").getAsLong();
            }
            case "MIGRATION_PROGRESS" -> {
                status = d.get("status").getAsString();
                sent = d.get("transferred").getAsLong();
                remaining = d.get("remaining").getAsLong();
                mbps = d.get("mbps").getAsDouble();
                pass = d.get("pass").getAsLong();
                expectedDowntime = d.get("expected-downtime").isJsonNull() ? null : d.get("expected-downtime").getAsLong();
            }
            default -> { }
        }
        show();
    }

    private void show() {
        if (!enabled) return;
        double fraction = remaining < 0 || sent + remaining == 0 ? 0 : (double) sent / (sent + remaining);
        int width = 24, filled = (int) Math.round(fraction * width);
        out.printf(Locale.ROOT, "\r[%s%s] %-6s %9s sent, %9s remaining, %8s/s, round %d, expected downtime %s   ",
                "#".repeat(filled), ".".repeat(width - filled), status, bytes(sent), remaining < 0 ? "-" : bytes(remaining),
                bytes((long) (mbps * 1e6 / 8)), pass, expectedDowntime == null ? "-" : expectedDowntime + " ms");
        out.flush();
        shown = true;
    }

    void finish(JsonObject s) {
        if (enabled && shown) out.println();
    }

    static String bytes(long n) {
        if (n < 1024) return n + " B";
        if (n < 1 << 20) return String.format(Locale.ROOT, "%.1f KiB", n / 1024.0);
        if (n < 1 << 30) return String.format(Locale.ROOT, "%.1f MiB", n / (double) (1 << 20));
        return String.format(Locale.ROOT, "%.2f GiB", n / (double) (1L << 30));
    }

    /** The final statistics as a few human lines. */
    static String summary(JsonObject s) {
        JsonObject ram = s.getAsJsonObject("ram");
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "migration %s in %d ms (setup %d ms), downtime %s ms (expected %s ms)%n",
                s.get("status").getAsString(), s.get("total-time").getAsLong(), s.get("setup-time").getAsLong(),
                s.get("downtime").isJsonNull() ? "-" : s.get("downtime").getAsString(),
                s.get("expected-downtime").isJsonNull() ? "-" : s.get("expected-downtime").getAsString()));
        b.append(String.format(Locale.ROOT, "  %s transferred at %.1f Mbit/s in %d round(s)%s%n", bytes(s.get("transferred").getAsLong()),
                ram.get("mbps").getAsDouble(), ram.get("dirty-sync-count").getAsLong(),
                s.get("stopped-by-iteration-cap").getAsBoolean() ? " (stopped by the iteration cap)" : ""));
        b.append(String.format(Locale.ROOT, "  RAM: %d pages sent, %d zero pages as addresses, dirty rate %d pages/s%n",
                ram.get("normal").getAsLong(), ram.get("duplicate").getAsLong(), ram.get("dirty-pages-rate").getAsLong()));
        for (JsonElement d : s.getAsJsonObject("vfio").getAsJsonArray("devices")) {
            JsonObject dev = d.getAsJsonObject();
            b.append(String.format(Locale.ROOT, "  device %s: %s in %d chunks%n", dev.get("name").getAsString(),
                    bytes(dev.get("transferred").getAsLong()), dev.get("chunks").getAsLong()));
        }
        if (!s.get("error-desc").isJsonNull()) b.append("  error: ").append(s.get("error-desc").getAsString()).append('\n');
        return b.toString().stripTrailing();
    }
}
