package org.vmmkit.vfio.migration;

import org.vmmkit.core.migration.SectionLoader;
import org.vmmkit.core.migration.SectionSaver;

/** A VFIO device's migration as the coordinator sees it, whichever protocol moves it (v1 region or v2 data_fd). */
public interface DeviceSection extends SectionSaver, SectionLoader, AutoCloseable {
    String deviceName();

    /** The section kind: {@value V1DeviceMigration#SECTION_KIND} or {@value V2DeviceMigration#SECTION_KIND}. */
    default String protocol() {
        return info().kind();
    }

    @Override
    void close();
}
