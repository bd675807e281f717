package org.vmmkit.core.sys;

import java.io.IOException;
import java.lang.foreign.GroupLayout;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.PaddingLayout;
import java.lang.foreign.SequenceLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * Compiles a small C program against the installed kernel uapi headers and compares what it prints
 * (sizeof, offsetof, macro values) with the Java side. Collect expectations, then {@link #verify()}
 * compiles once and reports every mismatch together.
 */
public final class HeaderProbe {
    private final List<String> prelude = new ArrayList<>();
    private final Map<String, String> expressions = new LinkedHashMap<>();
    private final Map<String, Long> expected = new LinkedHashMap<>();
    private final List<String> includeDirs = new ArrayList<>();

    public HeaderProbe(String... includes) {
        prelude.add("#define _GNU_SOURCE");
        prelude.add("#include <stdio.h>");
        prelude.add("#include <stddef.h>");
        for (String include : includes) prelude.add("#include <" + include + ">");
    }

    /** Adds {@code -I dir} to the compile, for headers outside the system paths (a peer's own headers). */
    public HeaderProbe includeDir(Path dir) {
        includeDirs.add("-I" + dir.toAbsolutePath());
        return this;
    }

    /** Adds C source after the includes (e.g. a struct the headers no longer carry). */
    public HeaderProbe declare(String cSource) {
        prelude.add(cSource);
        return this;
    }

    /** Expects the C expression (a macro, an ioctl number) to have this value. */
    public HeaderProbe expect(String what, String cExpression, long value) {
        expressions.put(what, "(unsigned long long)(" + cExpression + ")");
        expected.put(what, value);
        return this;
    }

    public HeaderProbe expectValue(String macro, long value) {
        return expect(macro, macro, value);
    }

    public HeaderProbe expectIoctl(Ioctl ioctl) {
        return expect(ioctl.name(), ioctl.name(), ioctl.number());
    }

    /**
     * Expects every named member of the Java layout, recursively through nested structs and unions, at
     * the same offset and with the same size as in the C type; and the whole type of the same size.
     */
    public HeaderProbe expectLayout(GroupLayout layout, String cType) {
        expect("sizeof(" + cType + ")", "sizeof(" + cType + ")", layout.byteSize());
        members(layout, cType, "", 0);
        return this;
    }

    private void members(GroupLayout group, String cType, String prefix, long base) {
        long offset = 0;
        for (MemoryLayout m : group.memberLayouts()) {
            long at = group instanceof java.lang.foreign.StructLayout ? offset : 0;
            if (!(m instanceof PaddingLayout) && m.name().isPresent()) {
                String path = prefix + m.name().get();
                expect("offsetof(" + cType + ", " + path + ")", "offsetof(" + cType + ", " + path + ")", base + at);
                boolean flexible = m instanceof SequenceLayout s && s.elementCount() == 0;
                if (!flexible) {
                    expect("sizeof(" + cType + "." + path + ")", "sizeof(((" + cType + " *)0)->" + path + ")", m.byteSize());
                }
                if (m instanceof GroupLayout nested) members(nested, cType, path + ".", base + at);
            }
            offset += m.byteSize();
        }
    }

    /** Compiles, runs and compares; fails the test listing every mismatch. */
    public void verify() {
        Map<String, Long> actual = run();
        List<String> mismatches = new ArrayList<>();
        expected.forEach((what, value) -> {
            Long got = actual.get(what);
            if (got == null) mismatches.add(what + ": not printed by the probe");
            else if (got.longValue() != value.longValue()) {
                mismatches.add(what + ": Java has " + value + " (0x" + Long.toHexString(value) + "), the header says "
                        + got + " (0x" + Long.toHexString(got) + ")");
            }
        });
        if (!mismatches.isEmpty()) fail("layouts or numbers disagree with the kernel headers:\n  " + String.join("\n  ", mismatches));
    }

    private Map<String, Long> run() {
        StringBuilder c = new StringBuilder();
        prelude.forEach(line -> c.append(line).append('\n'));
        c.append("int main(void) {\n");
        expressions.forEach((what, expr) -> c.append("  printf(\"%s=%llu\\n\", \"").append(what.replace("\"", "\\\""))
                .append("\", ").append(expr).append(");\n"));
        c.append("  return 0;\n}\n");
        try {
            Path dir = Files.createTempDirectory("vmmkit-probe");
            Path src = dir.resolve("probe.c");
            Path exe = dir.resolve("probe");
            Files.writeString(src, c.toString());
            List<String> gcc = new ArrayList<>(List.of("gcc", "-O0", "-w"));
            gcc.addAll(includeDirs);
            gcc.addAll(List.of("-o", exe.toString(), src.toString()));
            String compiler = exec(gcc, dir);
            if (!Files.exists(exe)) {
                fail("the header probe did not compile (gcc and the kernel uapi headers, linux-libc-dev, are needed "
                        + "for layout checks):\n" + compiler + "\n--- source ---\n" + c);
            }
            String out = exec(List.of(exe.toString()), dir);
            Map<String, Long> values = new LinkedHashMap<>();
            for (String line : out.split("\n")) {
                int eq = line.lastIndexOf('=');
                if (eq > 0) values.put(line.substring(0, eq), Long.parseUnsignedLong(line.substring(eq + 1).trim()));
            }
            return values;
        } catch (IOException | InterruptedException e) {
            throw new AssertionError("could not run the header probe: " + e, e);
        }
    }

    private static String exec(List<String> command, Path dir) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).directory(dir.toFile()).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            fail(String.join(" ", command) + " did not finish within 60 s");
        }
        return new String(out, StandardCharsets.UTF_8);
    }
}
