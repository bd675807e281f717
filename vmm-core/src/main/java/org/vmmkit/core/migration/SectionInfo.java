package org.vmmkit.core.migration;

import java.util.regex.Pattern;

/**
 * What a migration section is, as the stream header lists it: an {@code id} unique in its VM (the
 * destination loads each section into the loader of the same id), a {@code kind} naming its state format
 * (a destination refuses a kind it has no loader for) and that format's {@code version}.
 */
public record SectionInfo(String id, String kind, int version) {
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}");

    public SectionInfo {
        if (!NAME.matcher(id).matches()) throw new IllegalArgumentException("section id '" + id + "': letters, digits and _ . : / -, at most 128");
        if (!NAME.matcher(kind).matches()) throw new IllegalArgumentException("section kind '" + kind + "': letters, digits and _ . : / -, at most 128");
        if (version < 0) throw new IllegalArgumentException("section " + id + ": version " + version + " is negative");
    }

    @Override
    public String toString() {
        return id + " (" + kind + " v" + version + ")";
    }
}
