package org.vmmkit.core.config;

/** A config file or override that cannot be used: names the key (and the file and line where known). */
public final class ConfigException extends RuntimeException {
    public ConfigException(String message) {
        super(message);
    }
}
