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
            out[i] = loader;
        }
        if (!byId.isEmpty()) throw new WireFormatException(misfit + "this VM's sections " + byId.keySet() + " are not in the stream");
        return out;
    }
}
