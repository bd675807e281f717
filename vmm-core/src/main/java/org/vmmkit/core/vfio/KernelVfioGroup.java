package org.vmmkit.core.vfio;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.vmmkit.core.sys.Fd;
import org.vmmkit.core.sys.Libc;
import org.vmmkit.core.vfio.abi.VfioAbi;

import static java.lang.foreign.ValueLayout.JAVA_INT;

/** A kernel VFIO group ({@code /dev/vfio/N}): viability, joining a container, opening its devices. */
public final class KernelVfioGroup implements AutoCloseable {
    private final Fd fd;

    private KernelVfioGroup(Fd fd) {
        this.fd = fd;
    }

    /** Opens {@code /dev/vfio/<group>} and checks that every device of the group is bound to VFIO. */
    public static KernelVfioGroup open(int group) {
        Fd fd = Libc.open("/dev/vfio/" + group, Libc.O_RDWR);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment status = arena.allocate(VfioAbi.GROUP_STATUS);
            status.set(JAVA_INT, 0, (int) VfioAbi.GROUP_STATUS.byteSize());
            fd.ioctl(VfioAbi.VFIO_GROUP_GET_STATUS, status);
            if ((status.get(JAVA_INT, 4) & VfioAbi.GROUP_FLAGS_VIABLE) == 0) {
                throw new IllegalStateException("VFIO group " + fd.describe()
                        + " is not viable: bind every device of the group to vfio-pci (or unbind it from its driver)");
            }
            return new KernelVfioGroup(fd);
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** {@code VFIO_GROUP_SET_CONTAINER}. */
    public void setContainer(KernelVfioContainer container) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment containerFd = arena.allocate(JAVA_INT);
            containerFd.set(JAVA_INT, 0, container.fd().raw());
            fd.ioctl(VfioAbi.VFIO_GROUP_SET_CONTAINER, containerFd);
        }
    }

    /** {@code VFIO_GROUP_GET_DEVICE_FD} for a device name such as {@code 0000:01:00.0}. */
    public KernelVfioDevice device(String name) {
        try (Arena arena = Arena.ofConfined()) {
            int deviceFd = fd.ioctl(VfioAbi.VFIO_GROUP_GET_DEVICE_FD, arena.allocateFrom(name));
            return new KernelVfioDevice(new Fd(deviceFd, name));
        }
    }

    @Override
    public void close() {
        fd.close();
    }
}
