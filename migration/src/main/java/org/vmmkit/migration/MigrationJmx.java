package org.vmmkit.migration;

import java.lang.management.ManagementFactory;
import java.util.function.Supplier;

import javax.management.JMException;
import javax.management.MBeanServer;
import javax.management.ObjectName;

/** Publishes a VM's {@link MigrationMXBean} in the platform MBean server as {@code org.vmmkit:type=Migration,vm=NAME}. */
public final class MigrationJmx {
    private MigrationJmx() {
    }

    /**
     * Registers the statistics {@code stats} gives (each attribute read takes a fresh snapshot, so they follow
     * whichever migration is current) under {@code vm}, replacing an earlier registration of that name.
     * Closing the result unregisters it.
     */
    public static AutoCloseable register(String vm, Supplier<MigrationStats> stats, Supplier<String> error) {
        MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        try {
            ObjectName name = nameOf(vm);
            if (server.isRegistered(name)) server.unregisterMBean(name);
            server.registerMBean(new Bean(stats, error), name);
            return () -> {
                if (server.isRegistered(name)) server.unregisterMBean(name);
            };
        } catch (JMException e) {
            throw new IllegalStateException("registering the migration MBean of VM '" + vm + "' failed: " + e.getMessage(), e);
        }
    }

    /** The name {@link #register} uses for {@code vm}. */
    public static ObjectName nameOf(String vm) {
        try {
            return new ObjectName("org.vmmkit:type=Migration,vm=" + ObjectName.quote(vm));
        } catch (JMException e) {
            throw new IllegalArgumentException("no MBean name for VM '" + vm + "': " + e.getMessage(), e);
        }
    }

    private record Bean(Supplier<MigrationStats> stats, Supplier<String> error) implements MigrationMXBean {
        @Override
        public String getStatus() {
            return stats.get().status().label();
        }

        @Override
        public long getTotalTimeMillis() {
            return stats.get().totalMillis();
        }

        @Override
        public long getSetupTimeMillis() {
            return stats.get().setupMillis();
        }

        @Override
        public long getDowntimeMillis() {
            return stats.get().downtimeMillis();
        }

        @Override
        public long getExpectedDowntimeMillis() {
            return stats.get().expectedDowntimeMillis();
        }

        @Override
        public long getTransferredBytes() {
            return stats.get().transferredBytes();
        }

        @Override
        public long getRemainingBytes() {
            return stats.get().remainingBytes();
        }

        @Override
        public long getRounds() {
            return stats.get().rounds();
        }

        @Override
        public long getRamPages() {
            return stats.get().ramPages();
        }

        @Override
        public long getZeroPages() {
            return stats.get().zeroPages();
        }

        @Override
        public long getSectionBytes() {
            return stats.get().sectionBytes();
        }

        @Override
        public long getDirtyPagesRate() {
            return stats.get().dirtyPagesRate();
        }

        @Override
        public double getThroughputMbps() {
            return stats.get().throughputMbps();
        }

        @Override
        public boolean isStoppedByIterationCap() {
            return stats.get().stoppedByIterationCap();
        }

        @Override
        public String getError() {
            return error.get();
        }
    }
}
