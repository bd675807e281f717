package org.vmmkit.core.config;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ConfigTest {
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
    void unitsParse() {
        assertEquals(64L << 20, Units.parseSize("64M"));
        assertEquals(8L << 30, Units.parseSize("8GiB"));
        assertEquals(4096, Units.parseSize("4096"));
        assertEquals(Duration.ofMillis(300), Units.parseDuration("300ms"));
        assertEquals(Duration.ofSeconds(2), Units.parseDuration("2s"));
        assertThrows(IllegalArgumentException.class, () -> Units.parseSize("-1"));
        assertThrows(IllegalArgumentException.class, () -> Units.parseSize("99999999999T"));
    }

    @Test
    void namedKeysHoldSeveralItemsOfASection() throws Exception {
        ConfigKey<Boolean> migratable = ConfigKey.flag("device.<name>.migratable", "true", "test");
        ConfigKey<Long> memory = ConfigKey.size("device.<name>.memory", "16M", "test");
        List<ConfigKey<?>> keys = List.of(VmmConfig.MEMORY, migratable, memory);
        Config c = Config.load(keys, file("device.gpu0.memory = 64M", "device.nic-1.migratable = false", "vm.memory = 1G"),
                List.of("device.gpu0.migratable=true"));
        assertEquals(List.of("gpu0", "nic-1"), c.names("device"));
        assertEquals(64L << 20, c.get(memory, "gpu0"));
        assertEquals(16L << 20, c.get(memory, "nic-1"), "an unset name takes the default");
        assertEquals(false, c.get(migratable, "nic-1"));
        assertEquals(true, c.get(migratable, "gpu0"));
        ConfigException e = assertThrows(ConfigException.class, () -> Config.load(keys, file("device.gpu0.migratabel = true"), List.of()));
        assertTrue(e.getMessage().contains("unknown key 'device.gpu0.migratabel'"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> Config.load(keys, file("device.gpu/0.memory = 1M"), List.of()));
        assertTrue(e.getMessage().contains("unknown key 'device.gpu/0.memory'"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> Config.load(keys, file("device.gpu0.memory = big"), List.of()));
        assertTrue(e.getMessage().contains("bad value 'big' for key 'device.gpu0.memory'"), e.getMessage());
        assertTrue(c.invalid(memory, "gpu0", "too big").getMessage().contains("line 1: key 'device.gpu0.memory' = '64M': too big"));
    }

    @Test
    void readmeTableListsEveryKeyWithItsDefault() throws Exception {
        Path readme = Path.of("..", "README.md");
        String text = Files.readString(readme);
        for (ConfigKey<?> k : VmmConfig.KEYS) {
            String row = "| `" + k.name() + "` | `" + k.defaultValue() + "` |";
            assertTrue(text.contains(row), "README.md's config table lacks the row starting " + row);
        }
    }
}
