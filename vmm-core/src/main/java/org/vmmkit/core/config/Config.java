package org.vmmkit.core.config;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The parsed config: one file of {@code key = value} lines (Java properties style: {@code #} comments,
 * dotted keys such as {@code vm.memory}), then {@code key=value} overrides from the command line.
 * Only keys in the given schema are accepted; an unknown or repeated key, or a value its key cannot
 * parse, is a {@link ConfigException} naming the key, the file and the line. A schema key may have one
 * {@code <name>} segment ({@code device.<name>.migratable}): it stands for any name of letters, digits,
 * {@code -} and {@code _}, so a section can hold several named items ({@link #names}).
 */
public final class Config {
    private final Map<String, ConfigKey<?>> schema = new LinkedHashMap<>();
    private final Map<String, String> values = new LinkedHashMap<>();
    private final Map<String, String> origins = new LinkedHashMap<>();

    private Config(Collection<ConfigKey<?>> keys) {
        for (ConfigKey<?> k : keys) {
            if (schema.put(k.name(), k) != null) throw new IllegalArgumentException("config key defined twice: " + k.name());
        }
    }

    /** A config with every key at its default. */
    public static Config defaults(Collection<ConfigKey<?>> keys) {
        return new Config(keys);
    }

    /** Reads {@code file} (may be null for defaults only), then applies {@code overrides} ({@code key=value}). */
    public static Config load(Collection<ConfigKey<?>> keys, Path file, List<String> overrides) {
        Config config = new Config(keys);
        if (file != null) {
            List<String> lines;
            try {
                lines = Files.readAllLines(file);
            } catch (IOException e) {
                throw new ConfigException("cannot read config file " + file + ": " + reason(e));
            }
            Map<String, Integer> seen = new LinkedHashMap<>();
            for (int i = 0; i < lines.size(); i++) {
                String line = lines.get(i).strip();
                if (line.isEmpty() || line.startsWith("#") || line.startsWith("!")) continue;
                String where = file + " line " + (i + 1);
                int eq = line.indexOf('=');
                if (eq <= 0) throw new ConfigException(where + ": expected key = value, got '" + line + "'");
                String key = line.substring(0, eq).strip();
                Integer before = seen.put(key, i + 1);
                if (before != null) throw new ConfigException(where + ": key '" + key + "' already set on line " + before);
                config.set(key, line.substring(eq + 1).strip(), where);
            }
        }
        for (String o : overrides) {
            int eq = o.indexOf('=');
            if (eq <= 0) throw new ConfigException("override '" + o + "': expected key=value");
            config.set(o.substring(0, eq).strip(), o.substring(eq + 1).strip(), "override");
        }
        return config;
    }

    /** Why reading failed, in words: a file-system exception's message is often only the file's name. */
    private static String reason(IOException e) {
        return switch (e) {
            case NoSuchFileException missing -> "no such file";
            case AccessDeniedException denied -> "permission denied";
            case CharacterCodingException notText -> "not UTF-8 text";
            case FileSystemException f when f.getReason() != null -> f.getReason();
            default -> e.getMessage() != null && !e.getMessage().isBlank() ? e.getMessage() : e.getClass().getSimpleName();
        };
    }

    private static final String NAME = "<name>";
    private static final java.util.regex.Pattern NAME_PATTERN = java.util.regex.Pattern.compile("[A-Za-z0-9_-]+");

    /** The schema key {@code key} is an instance of: itself, or a {@code <name>} key it matches; null if none. */
    private ConfigKey<?> schemaKey(String key) {
        ConfigKey<?> k = schema.get(key);
        if (k != null) return k;
        for (ConfigKey<?> candidate : schema.values()) {
            String n = candidate.name();
            int at = n.indexOf(NAME);
            if (at < 0) continue;
            String prefix = n.substring(0, at), suffix = n.substring(at + NAME.length());
            if (key.length() > prefix.length() + suffix.length() && key.startsWith(prefix) && key.endsWith(suffix)
                    && NAME_PATTERN.matcher(key.substring(prefix.length(), key.length() - suffix.length())).matches()) {
                return candidate;
            }
        }
        return null;
    }

    private void set(String key, String value, String where) {
        ConfigKey<?> k = schemaKey(key);
        if (k == null) throw new ConfigException(where + ": unknown key '" + key + "'" + suggestion(key));
        try {
            k.parse(value);
        } catch (IllegalArgumentException e) {
            throw new ConfigException(where + ": bad value '" + value + "' for key '" + key + "': " + e.getMessage());
        }
        values.put(key, value);
        origins.put(key, where);
    }

    private String suggestion(String key) {
        String best = null;
        int bestDistance = 4;
        List<String> candidates = new ArrayList<>();
        for (String known : schema.keySet()) {
            if (!known.contains(NAME)) {
                candidates.add(known);
                continue;
            }
            for (String segment : key.split("\\.")) candidates.add(known.replace(NAME, segment)); // the name may be any segment
        }
        for (String known : candidates) {
            int d = distance(key, known);
            if (d < bestDistance) {
                bestDistance = d;
                best = known;
            }
        }
        return best == null ? "" : " (did you mean '" + best + "'?)";
    }

    private static int distance(String a, String b) {
        int[] prev = new int[b.length() + 1], cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) prev[j] = j;
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                cur[j] = Math.min(Math.min(cur[j - 1], prev[j]) + 1, prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }

    /** The key's value: as set, or its default. */
    public <T> T get(ConfigKey<T> key) {
        if (schema.get(key.name()) != key) throw new IllegalArgumentException("key not in this config's schema: " + key.name());
        String v = values.getOrDefault(key.name(), key.defaultValue());
        try {
            return key.parse(v);
        } catch (IllegalArgumentException e) {
            throw new ConfigException("bad default '" + v + "' for key '" + key.name() + "': " + e.getMessage());
        }
    }

    /** The value of a {@code <name>} key for one name: as set, or its default. */
    public <T> T get(ConfigKey<T> key, String name) {
        if (schema.get(key.name()) != key || !key.name().contains(NAME)) {
            throw new IllegalArgumentException("not a <name> key of this config's schema: " + key.name());
        }
        String actual = key.name().replace(NAME, name);
        String v = values.getOrDefault(actual, key.defaultValue());
        try {
            return key.parse(v);
        } catch (IllegalArgumentException e) {
            throw new ConfigException("bad default '" + v + "' for key '" + actual + "': " + e.getMessage());
        }
    }

    /** The names set under {@code section} ({@code device} for {@code device.<name>.*} keys), in the order first seen. */
    public List<String> names(String section) {
        java.util.LinkedHashSet<String> names = new java.util.LinkedHashSet<>();
        String prefix = section + ".";
        for (String key : values.keySet()) {
            if (!key.startsWith(prefix) || schema.containsKey(key)) continue;
            ConfigKey<?> k = schemaKey(key);
            if (k == null || !k.name().startsWith(prefix + NAME)) continue;
            String rest = key.substring(prefix.length());
            names.add(rest.substring(0, rest.length() - (k.name().length() - prefix.length() - NAME.length())));
        }
        return new ArrayList<>(names);
    }

    /** An error about one name's value of a {@code <name>} key. */
    public ConfigException invalid(ConfigKey<?> key, String name, String why) {
        String actual = key.name().replace(NAME, name);
        String where = origins.getOrDefault(actual, "default");
        return new ConfigException(where + ": key '" + actual + "' = '" + values.getOrDefault(actual, key.defaultValue()) + "': " + why);
    }

    /** An error about a key's value that only makes sense with other keys (a range outside memory, ...). */
    public ConfigException invalid(ConfigKey<?> key, String why) {
        String where = origins.getOrDefault(key.name(), "default");
        return new ConfigException(where + ": key '" + key.name() + "' = '" + values.getOrDefault(key.name(), key.defaultValue())
                + "': " + why);
    }

    public List<ConfigKey<?>> keys() {
        return new ArrayList<>(schema.values());
    }
}
