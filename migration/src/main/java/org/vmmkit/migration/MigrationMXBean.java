package org.vmmkit.migration;

/**
 * A VM's migration statistics as JMX attributes, for jconsole or a monitoring agent: query-migrate's figures
 * (README's table gives each one's meaning), live while a migration runs and final once it ended.
 * {@link MigrationJmx#register} publishes one.
 */
public interface MigrationMXBean {
    String getStatus();

    long getTotalTimeMillis();

    long getSetupTimeMillis();

    long getDowntimeMillis();

    long getExpectedDowntimeMillis();

    long getTransferredBytes();

    long getRemainingBytes();

    long getRounds();

    long getRamPages();

    long getZeroPages();

    long getSectionBytes();

    long getDirtyPagesRate();

    double getThroughputMbps();

    boolean isStoppedByIterationCap();

    /** Why the last migration failed, was cancelled or is unknown; null otherwise. */
    String getError();
}
