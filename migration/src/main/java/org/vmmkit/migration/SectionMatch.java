package org.vmmkit.migration;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.vmmkit.core.migration.SectionInfo;
import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.migration.wire.WireFormatException;

/** Pairs the stream header's sections with this VM's loaders, refusing the first misfit before anything loads. */
final class SectionMatch {
    private SectionMatch() {}

    /**
     * This VM's loader for each section of the stream, by the stream's order: the same id, the same kind, a
     * version it can load, and no section of this VM left out. Refuses naming the first that differs.
     */
    static SectionLoader[] match(List<SectionLoader> mine, List<SectionInfo> stream) {
        Map<String, SectionLoader> byId = new LinkedHashMap<>();
        for (SectionLoader x : mine) byId.put(x.info().id(), x);
        SectionLoader[] out = new SectionLoader[stream.size()];
        String misfit = "the stream header does not fit this VM: ";
        for (int i = 0; i < out.length; i++) {
            SectionInfo theirs = stream.get(i);
            SectionLoader loader = byId.remove(theirs.id());
            if (loader == null) {
                boolean twice = java.util.Arrays.stream(out).anyMatch(l -> l != null && l.info().id().equals(theirs.id()));
                throw new WireFormatException(misfit + "the source has section " + theirs + ", which this VM "
                        + (twice ? "was given twice" : "does not have"));
            }
            if (!loader.info().kind().equals(theirs.kind())) {
                throw new WireFormatException(misfit + "section " + theirs.id() + " is of kind " + theirs.kind() + " at the source, "
                        + loader.info().kind() + " here");
            }
            if (!loader.canLoad(theirs.version())) {
                throw new WireFormatException(misfit + "section " + theirs.id() + " (" + theirs.kind() + ") carries state version "
                        + theirs.version() + ", which this VM cannot load (it has version " + loader.info().version() + ")");
            }
            if (!loader.info().config().equals(theirs.config())) {
                throw new WireFormatException(misfit + "section " + theirs.id() + " (" + theirs.kind() + ") is configured differently: "
                        + differences(theirs.config(), loader.info().config()));
            }
            out[i] = loader;
        }
        if (!byId.isEmpty()) throw new WireFormatException(misfit + "this VM's sections " + byId.keySet() + " are not in the stream");
        return out;
    }

    /**
     * Each {@code key=value} of two configs that differs, both values named: {@code memory=16M at the source,
     * memory=8M here}; the whole of each where they are not such pairs.
     */
    static String differences(String source, String here) {
        Map<String, String> a = pairs(source), b = pairs(here);
        if (a == null || b == null) return "'" + source + "' at the source, '" + here + "' here";
        java.util.Set<String> keys = new java.util.LinkedHashSet<>(a.keySet());
        keys.addAll(b.keySet());
        List<String> out = new java.util.ArrayList<>();
        for (String k : keys) {
            String x = a.get(k), y = b.get(k);
            if (java.util.Objects.equals(x, y)) continue;
            out.add((x == null ? "no " + k : k + "=" + x) + " at the source, " + (y == null ? "no " + k : k + "=" + y) + " here");
        }
        return String.join("; ", out);
    }

    private static Map<String, String> pairs(String config) {
        Map<String, String> out = new LinkedHashMap<>();
        if (config.isEmpty()) return out;
        for (String pair : config.split(";")) {
            int eq = pair.indexOf('=');
            if (eq < 1) return null;
            out.put(pair.substring(0, eq), pair.substring(eq + 1));
        }
        return out;
    }
}
