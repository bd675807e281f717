package org.vmmkit.core.config;

import java.util.function.Function;

/**
 * One config key: its dotted name, its default (as written in a file), what it means, and how its
 * value is parsed. The parser throws {@link IllegalArgumentException} with the expected form.
 */
public record ConfigKey<T>(String name, String defaultValue, String description, Function<String, T> parser) {

    public T parse(String value) {
        return parser.apply(value);
    }

    public static ConfigKey<Long> size(String name, String defaultValue, String description) {
        return new ConfigKey<>(name, defaultValue, description, Units::parseSize);
    }

    public static ConfigKey<Long> count(String name, String defaultValue, String description) {
        return new ConfigKey<>(name, defaultValue, description, Units::parseCount);
    }

    public static ConfigKey<Boolean> flag(String name, String defaultValue, String description) {
        return new ConfigKey<>(name, defaultValue, description, Units::parseBoolean);
    }

    /** A value taken as written (a path, a list); its user checks it. */
    public static ConfigKey<String> text(String name, String defaultValue, String description) {
        return new ConfigKey<>(name, defaultValue, description, value -> value);
    }

    public static ConfigKey<java.time.Duration> duration(String name, String defaultValue, String description) {
        return new ConfigKey<>(name, defaultValue, description, Units::parseDuration);
    }
}
