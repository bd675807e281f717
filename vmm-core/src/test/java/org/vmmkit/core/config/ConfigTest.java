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
        List<ConfigKey<?>> keys = List.of(ConfigKey.size("vm.memory", "256M", "test"), migratable, memory);
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
}
