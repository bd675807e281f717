package org.vmmkit.core.config;

import java.time.Duration;
import java.util.Locale;

/** Parsers for config values: sizes ({@code 64M}, {@code 8GiB}), counts, booleans, durations ({@code 300ms}). */
public final class Units {
    private Units() {}

    /** Bytes, with an optional binary suffix K, M, G, T (also KiB, KB, ...): {@code 512M} is 512 MiB. */
    public static long parseSize(String value) {
        String v = value.trim().toUpperCase(Locale.ROOT).replaceAll("(I?B)$", "");
        long unit = 1;
        if (!v.isEmpty()) {
            switch (v.charAt(v.length() - 1)) {
                case 'K' -> unit = 1L << 10;
                case 'M' -> unit = 1L << 20;
                case 'G' -> unit = 1L << 30;
                case 'T' -> unit = 1L << 40;
                default -> { }
            }
            if (unit != 1) v = v.substring(0, v.length() - 1).trim();
        }
        try {
            long n = Long.parseLong(v);
            if (n < 0) throw new IllegalArgumentException("a size cannot be negative");
            return Math.multiplyExact(n, unit);
        } catch (NumberFormatException | ArithmeticException e) {
            throw new IllegalArgumentException("expected a size such as 4096, 64M or 8G");
        }
    }

    /** A non-negative whole number; {@code _} may group digits. */
    public static long parseCount(String value) {
        try {
            long n = Long.parseLong(value.trim().replace("_", ""));
            if (n < 0) throw new IllegalArgumentException("expected a whole number >= 0");
            return n;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("expected a whole number >= 0");
        }
    }

    public static boolean parseBoolean(String value) {
        return switch (value.trim().toLowerCase(Locale.ROOT)) {
            case "true", "yes", "on" -> true;
            case "false", "no", "off" -> false;
            default -> throw new IllegalArgumentException("expected true or false");
        };
    }

    /** {@code 300ms}, {@code 2s}, {@code 1m}, or a bare number of milliseconds. */
    public static Duration parseDuration(String value) {
        String v = value.trim().toLowerCase(Locale.ROOT);
        try {
            if (v.endsWith("ms")) return Duration.ofMillis(Long.parseLong(v.substring(0, v.length() - 2).trim()));
            if (v.endsWith("s")) return Duration.ofSeconds(Long.parseLong(v.substring(0, v.length() - 1).trim()));
            if (v.endsWith("m")) return Duration.ofMinutes(Long.parseLong(v.substring(0, v.length() - 1).trim()));
            return Duration.ofMillis(Long.parseLong(v));
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("expected a duration such as 300ms, 2s or 1m");
        }
    }
}
