package org.vmmkit.core.migration;

import java.util.regex.Pattern;

/**
 * What a migration section is, as the stream header lists it: an {@code id} unique in its VM (the
 * destination loads each section into the loader of the same id), a {@code kind} naming its state format
 * (a destination refuses a kind it has no loader for), that format's {@code version}, and its {@code
 * config}: the shape the component was configured with on this end (a VFIO device's region sizes and
 * migration flags, the VMM's own settings for it), {@code key=value} pairs separated by {@code ;}, which the
 * destination's own section must equal before anything moves (empty: nothing to compare).
 */
public record SectionInfo(String id, String kind, int version, String config) {
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}");
    /** Printable ASCII, no more than a header can carry for it. */
    private static final Pattern CONFIG = Pattern.compile("[\\x20-\\x7e]{0," + SectionInfo.MAX_CONFIG + "}");
    /** The longest {@code config}, in bytes. */
    public static final int MAX_CONFIG = 1024;

    public SectionInfo {
        if (!NAME.matcher(id).matches()) throw new IllegalArgumentException("section id '" + id + "': letters, digits and _ . : / -, at most 128");
        if (!NAME.matcher(kind).matches()) throw new IllegalArgumentException("section kind '" + kind + "': letters, digits and _ . : / -, at most 128");
        if (version < 0) throw new IllegalArgumentException("section " + id + ": version " + version + " is negative");
        if (config == null || !CONFIG.matcher(config).matches()) {
            throw new IllegalArgumentException("section " + id + ": config '" + config + "': printable ASCII, at most " + MAX_CONFIG + " characters");
        }
    }

    /** A section with no configuration to compare. */
    public SectionInfo(String id, String kind, int version) {
        this(id, kind, version, "");
    }

    /** The same section with {@code config}. */
    public SectionInfo withConfig(String config) {
        return new SectionInfo(id, kind, version, config);
    }

    @Override
    public String toString() {
        return id + " (" + kind + " v" + version + ")";
    }
}
