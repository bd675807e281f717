package org.vmmkit.vmm;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.vmmkit.core.config.ConfigException;
import org.vmmkit.core.config.ConfigKey;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The VMM's own settings: file values, overrides, refusals naming the key, and README's table. */
class VmmConfigTest {
    @TempDir Path dir;

    private Path file(String... lines) throws Exception {
        Path f = dir.resolve("vm.conf");
        Files.write(f, List.of(lines));
        return f;
    }

    @Test
    void fileValuesThenCommandLineOverridesWin() throws Exception {
        VmmConfig c = VmmConfig.load(file("# a VM", "vm.memory = 8G", "workload.size=1G", "workload.pages-per-second = 10_000"),
                List.of("workload.size=512M"));
        assertEquals(8L << 30, c.memorySize());
        assertEquals((512L << 20) / 4096, c.workload().pages());
        assertEquals(10_000, c.workload().pagesPerSecond());
        assertEquals(1, c.vcpus());
    }

    @Test
    void defaultsDescribeAWorkingVm() {
        VmmConfig c = VmmConfig.load(null, List.of());
        assertEquals(256L << 20, c.memorySize());
        assertEquals(0x100000, c.workload().start());
    }

    @Test
    void unknownKeyIsAnErrorNamingItAndSuggestingTheNearestKey() throws Exception {
        ConfigException e = assertThrows(ConfigException.class, () -> VmmConfig.load(file("vm.memroy = 1G"), List.of()));
        assertTrue(e.getMessage().contains("line 1: unknown key 'vm.memroy' (did you mean 'vm.memory'?)"), e.getMessage());
    }

    @Test
    void badValueIsAnErrorNamingTheKeyAndTheExpectedForm() throws Exception {
        ConfigException e = assertThrows(ConfigException.class, () -> VmmConfig.load(file("", "vm.memory = lots"), List.of()));
        assertTrue(e.getMessage().contains("line 2: bad value 'lots' for key 'vm.memory': expected a size"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmConfig.load(null, List.of("workload.report-passes=maybe")));
        assertTrue(e.getMessage().contains("key 'workload.report-passes'"), e.getMessage());
    }

    @Test
    void repeatedKeyIsAnError() throws Exception {
        ConfigException e = assertThrows(ConfigException.class, () -> VmmConfig.load(file("vm.vcpus=1", "vm.vcpus=2"), List.of()));
        assertTrue(e.getMessage().contains("line 2: key 'vm.vcpus' already set on line 1"), e.getMessage());
    }

    @Test
    void workloadRangeOutsideRamNamesTheKey() {
        ConfigException e = assertThrows(ConfigException.class,
                () -> VmmConfig.load(null, List.of("vm.memory=64M", "workload.size=128M")));
        assertTrue(e.getMessage().contains("key 'workload.size'") && e.getMessage().contains("does not fit"), e.getMessage());
    }

    @Test
    void readmeTableListsEveryKeyWithItsDefault() throws Exception {
        Path readme = Path.of("..", "README.md");
        String text = Files.readString(readme);
        for (ConfigKey<?> k : VmmConfig.KEYS) {
            String row = "| `" + k.name() + "` | " + (k.defaultValue().isEmpty() ? "" : "`" + k.defaultValue() + "` ") + "|"; // an empty default: an empty cell, as CommandLineTest has it
            assertTrue(text.contains(row), "README.md's config table lacks the row starting " + row);
        }
    }
}
