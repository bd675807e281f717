package org.vmmkit.vmm;

import java.net.InetSocketAddress;
import java.nio.channels.ServerSocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.vmmkit.core.config.ConfigException;
import org.vmmkit.core.config.ConfigKey;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The command line and the config file as a user meets them: help, errors naming the key, the README table. */
class CommandLineTest {
    @TempDir Path dir;

    @Test
    void aBadKeyOrValueIsAUsageErrorNamingTheKey() throws Exception {
        Path bad = dir.resolve("bad.conf");
        Files.write(bad, List.of("migration.channels = 2", "device.gpu0.migratabel = false"));
        ConfigException e = assertThrows(ConfigException.class, () -> VmmSettings.load(bad, List.of()));
        assertTrue(e.getMessage().contains("line 2: unknown key 'device.gpu0.migratabel' (did you mean"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(null, List.of("vm.memory=5M", "vm.hugepages=hugetlb")));
        assertTrue(e.getMessage().contains("key 'vm.hugepages' = 'hugetlb': hugetlb needs vm.memory a multiple of 2M"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(null, List.of("vm.hugepages=huge")));
        assertTrue(e.getMessage().contains("expected none, hugetlb or thp"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(null, List.of("migration.channels=99")));
        assertTrue(e.getMessage().contains("key 'migration.channels' = '99': must be between 1 and 16"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(null, List.of("device.gpu0.data-section=paged")));
        assertTrue(e.getMessage().contains("'device.gpu0.data-section': expected mmap, partial, trapped or direct"), e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(null, List.of("device.gpu0.dma-size=8M", "device.gpu0.dma-address=4G")));
        assertTrue(e.getMessage().contains("key 'device.gpu0.dma-size'") && e.getMessage().contains("inside one RAM region"), e.getMessage());
        assertEquals(Main.USAGE, Main.run("run", "--config", bad.toString()));
    }

    @Test
    void theConfigFileBuildsTheMigrationAndDeviceSettings() {
        VmmSettings s = VmmSettings.load(null, List.of("migration.channels=2", "migration.max-bandwidth=100M", "migration.downtime-limit=150ms",
                "device.gpu0.memory=32M", "device.nic0.migratable=false"));
        assertEquals(2, s.migration().channels());
        assertEquals(100L << 20, s.migration().maxBandwidth());
        assertEquals(150, s.migration().downtimeLimit().toMillis());
        assertEquals(List.of("gpu0", "nic0"), s.devices().stream().map(DeviceSpec::name).toList());
        assertEquals(32L << 20, s.devices().get(0).memory());
        assertTrue(s.devices().get(0).migratable() && !s.devices().get(1).migratable());
    }

    @Test
    void theExampleConfigLoads() {
        VmmSettings s = VmmSettings.load(Path.of("..", "examples", "vm.conf"), List.of());
        assertEquals(List.of("gpu0", "nic0"), s.devices().stream().map(DeviceSpec::name).toList());
        assertEquals(2, s.migration().channels());
    }

    @Test
    void usageErrorsAndHelp() {
        Map.Entry<Integer, String> help = TwoProcessMigrationTest.cli("--help");
        assertEquals(0, help.getKey());
        for (String command : List.of("run", "incoming", "migrate", "demo")) assertTrue(help.getValue().contains(command), help.getValue());
        assertEquals(Main.USAGE, Main.run("migrate", "--to", "nowhere", "--control", dir.resolve("none.sock").toString()));
        assertEquals(Main.USAGE, Main.run("incoming"), "--listen is required");
        assertEquals(Main.ENVIRONMENT, Main.run("migrate", "--to", "127.0.0.1:1", "--control", dir.resolve("none.sock").toString()),
                "no VM behind the control endpoint");
    }

    @Test
    void aConfigFileThatCannotBeReadSaysWhy() throws Exception {
        Path missing = dir.resolve("missing.conf");
        ConfigException e = assertThrows(ConfigException.class, () -> VmmSettings.load(missing, List.of()));
        assertEquals("cannot read config file " + missing + ": no such file", e.getMessage());
        Path latin1 = dir.resolve("latin1.conf");
        Files.write(latin1, new byte[] {'#', ' ', (byte) 0xE9, '\n'});
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(latin1, List.of()));
        assertEquals("cannot read config file " + latin1 + ": not UTF-8 text", e.getMessage());
        e = assertThrows(ConfigException.class, () -> VmmSettings.load(dir, List.of()));
        assertEquals("cannot read config file " + dir + ": Is a directory", e.getMessage());
        CliRun run = CliRun.of("run", "--config", missing.toString());
        assertEquals(Main.USAGE, run.code(), run.toString());
        assertTrue(run.err().contains("vmm: cannot read config file " + missing + ": no such file"), run.toString());
    }

    @Test
    void aListenAddressThatCannotBeBoundIsNamedWithTheReason() throws Exception {
        Path control = dir.resolve("incoming.sock");
        try (ServerSocketChannel busy = ServerSocketChannel.open().bind(new InetSocketAddress("127.0.0.1", 0))) {
            int port = ((InetSocketAddress) busy.getLocalAddress()).getPort();
            CliRun incoming = CliRun.of(CliRun.softwareGuest("incoming", "--listen", "127.0.0.1:" + port, "--control", control.toString()));
            assertEquals(Main.ENVIRONMENT, incoming.code(), incoming.toString());
            assertTrue(incoming.err().contains("vmm: cannot listen on 127.0.0.1:" + port + ": Address already in use"), incoming.toString());
        }
        CliRun incoming = CliRun.of(CliRun.softwareGuest("incoming", "--listen", "nosuchhost.invalid:0", "--control", control.toString()));
        assertEquals(Main.ENVIRONMENT, incoming.code(), incoming.toString());
        assertTrue(incoming.err().contains("vmm: cannot listen on nosuchhost.invalid:0: cannot resolve host 'nosuchhost.invalid'"), incoming.toString());
        assertFalse(Files.exists(control), "the control endpoint is gone with the process that could not listen");
    }

    @Test
    void migrateJsonPrintsAFailedObjectWhenItCannotFollowAMigration() throws Exception {
        Path none = dir.resolve("none.sock");
        CliRun unreachable = CliRun.of("migrate", "--to", "127.0.0.1:1", "--control", none.toString(), "--json");
        assertEquals(Main.ENVIRONMENT, unreachable.code(), unreachable.toString());
        JsonObject out = JsonParser.parseString(unreachable.out()).getAsJsonObject();
        assertEquals("failed", out.get("status").getAsString());
        assertTrue(out.get("error-desc").getAsString().startsWith("cannot reach the control endpoint " + none + ": "), out.toString());

        Path socket = dir.resolve("vmm.sock");
        try (Machine machine = Machine.source(VmmSettings.load(null, CliRun.SOFTWARE_GUEST)); ControlServer server = new ControlServer(socket, machine, () -> {})) {
            CliRun refused = CliRun.of("migrate", "--to", "nosuchhost.invalid:4444", "--control", socket.toString(), "--json");
            assertEquals(Main.FAILED, refused.code(), refused.toString());
            out = JsonParser.parseString(refused.out()).getAsJsonObject();
            assertEquals("failed", out.get("status").getAsString());
            assertEquals("migrate: cannot resolve host 'nosuchhost.invalid'", out.get("error-desc").getAsString());
        }
    }

    @Test
    void everySubcommandTakesHelpAndLabelsEachOptionsValue() {
        for (String command : List.of("run", "incoming", "migrate", "demo")) {
            for (String flag : List.of("--help", "-h")) {
                CliRun help = CliRun.of(command, flag);
                assertEquals(0, help.code(), help.toString());
                assertTrue(help.out().startsWith("Usage: vmm " + command + " "), help.toString());
                Matcher fieldName = Pattern.compile("<[a-z][A-Za-z]*>").matcher(help.out());
                assertFalse(fieldName.find(), () -> command + " labels an option's value with a field name, " + fieldName.group() + ":\n" + help.out());
            }
        }
    }

    @Test
    void readmeTableListsEveryKeyWithItsDefault() throws Exception {
        String readme = Files.readString(Path.of("..", "README.md"));
        for (ConfigKey<?> k : VmmSettings.KEYS) {
            String row = "| `" + k.name() + "` | " + (k.defaultValue().isEmpty() ? "" : "`" + k.defaultValue() + "` ") + "|"; // an empty default: an empty cell
            assertTrue(readme.contains(row), "README.md's config table lacks the row starting " + row);
        }
    }
}
