package org.vmmkit.vmm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Every public type of every module's main sources carries a javadoc comment (the javadoc build leaves out
 * doclint's "missing" group, which would also ask it of each ABI constant; this is the part of it we keep).
 */
class PublicTypesDocumentedTest {
    private static final Pattern PUBLIC_TYPE = Pattern.compile(
            "\\s*public\\s+(static\\s+|final\\s+|abstract\\s+|sealed\\s+|non-sealed\\s+)*(class|interface|record|enum|@interface)\\s+\\w+.*");

    @Test
    void everyPublicTypeHasAComment() throws IOException {
        Path root = Path.of("..");
        List<String> undocumented = new ArrayList<>();
        int types = 0;
        try (Stream<Path> files = Files.walk(root)) {
            for (Path f : files.filter(p -> p.toString().endsWith(".java") && p.toString().contains("/src/main/java/")
                    && !p.toString().contains("/target/") && !p.startsWith(root.resolve("benchmarks"))).toList()) {
                List<String> lines = Files.readAllLines(f);
                for (int i = 0; i < lines.size(); i++) {
                    if (!PUBLIC_TYPE.matcher(lines.get(i)).matches()) continue;
                    types++;
                    if (!documented(lines, i)) undocumented.add(root.relativize(f) + ":" + (i + 1) + ": " + lines.get(i).strip());
                }
            }
        }
        assertTrue(types > 100, "found only " + types + " public types: is the walk looking in the right place?");
        assertEquals(List.of(), undocumented, "public types without a javadoc comment");
    }

    /** The nearest line above that is not an annotation (or part of one) ends a comment. */
    private static boolean documented(List<String> lines, int declaration) {
        for (int j = declaration - 1; j >= 0; j--) {
            String l = lines.get(j).strip();
            if (l.isEmpty() || l.endsWith(";") || l.endsWith("{") || l.endsWith("}")) return false;
            if (l.endsWith("*/")) return true;
        }
        return false;
    }
}
