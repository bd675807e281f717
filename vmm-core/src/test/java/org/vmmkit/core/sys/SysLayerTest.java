package org.vmmkit.core.sys;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SysLayerTest {

    @Test
    void failedOpenNamesTheCallTheErrnoAndThePath() {
        SysException e = assertThrows(SysException.class, () -> Libc.open("/dev/vmmkit-does-not-exist", Libc.O_RDWR));
        assertEquals("ENOENT", e.errnoName());
        assertEquals("open(O_RDWR) on /dev/vmmkit-does-not-exist failed: ENOENT (No such file or directory)", e.getMessage());
    }

    @Test
    void failedIoctlNamesTheIoctlAndTheFd() {
        try (Fd memfd = Libc.memfdCreate("ioctl-target")) {
            Ioctl bogus = Ioctl.io("KVM_GET_API_VERSION", 0xAE, 0x00);
            SysException e = assertThrows(SysException.class, () -> memfd.ioctl(bogus, 0L));
            assertEquals("ENOTTY", e.errnoName());
            assertTrue(e.getMessage().startsWith("ioctl(KVM_GET_API_VERSION) on memfd:ioctl-target (fd "), e.getMessage());
        }
    }

    @Test
    void closedFdFailsWithEbadf() {
        Fd fd = Libc.memfdCreate("closed");
        int raw = fd.raw();
        fd.close();
        assertEquals(-Errno.EBADF, Libc.ioctlRaw(raw, 0x5401 /* TCGETS */, MemorySegment.NULL));
    }

    @Test
    void preadAndPwriteMoveExactBytes() {
        try (Fd memfd = Libc.memfdCreate("rw"); Arena arena = Arena.ofConfined()) {
            memfd.truncate(8192);
            MemorySegment out = arena.allocate(100);
            for (int i = 0; i < 100; i++) out.set(java.lang.foreign.ValueLayout.JAVA_BYTE, i, (byte) i);
            memfd.pwriteFully(out, 4000);
            MemorySegment in = arena.allocate(100);
            memfd.preadFully(in, 4000);
            assertEquals(-1, out.mismatch(in));
            SysException e = assertThrows(SysException.class, () -> memfd.preadFully(arena.allocate(10), 8190));
            assertTrue(e.getMessage().contains("end of file"), e.getMessage());
        }
    }

    @Test
    void ioctlEncodingMatchesTheKernelMacros() {
        // _IO, _IOR, _IOW and _IOWR from several headers, including sizes near the 14-bit limit.
        new HeaderProbe("linux/kvm.h", "linux/vfio.h", "linux/fs.h")
                .expectIoctl(Ioctl.io("KVM_GET_API_VERSION", 0xAE, 0x00))
                .expectIoctl(Ioctl.io("KVM_RUN", 0xAE, 0x80))
                .expectIoctl(Ioctl.iow("KVM_SET_USER_MEMORY_REGION", 0xAE, 0x46, 32))
                .expectIoctl(Ioctl.ior("KVM_GET_REGS", 0xAE, 0x81, 144))
                .expectIoctl(Ioctl.iowr("KVM_GET_MSRS", 0xAE, 0x88, 8))
                .expectIoctl(Ioctl.ior("FS_IOC_GETFLAGS", 'f', 1, 8))
                .expectIoctl(Ioctl.io("VFIO_GET_API_VERSION", ';', 100))
                .verify();
    }

    @Test
    void headerProbeReportsAWrongNumber() {
        AssertionError e = assertThrows(AssertionError.class,
                () -> new HeaderProbe("linux/kvm.h").expectIoctl(Ioctl.io("KVM_RUN", 0xAE, 0x81)).verify());
        assertTrue(e.getMessage().contains("KVM_RUN: Java has"), e.getMessage());
    }

    @Test
    void theStatLayoutMatchesTheHeader() {
        new HeaderProbe("sys/stat.h")
                .expect("sizeof(struct stat)", "sizeof(struct stat)", Libc.STAT_BYTES)
                .expect("offsetof(struct stat, st_size)", "offsetof(struct stat, st_size)", Libc.STAT_ST_SIZE)
                .expect("offsetof(struct stat, st_blocks)", "offsetof(struct stat, st_blocks)", Libc.STAT_ST_BLOCKS)
                .expect("offsetof(struct stat, st_blksize)", "offsetof(struct stat, st_blksize)", Libc.STAT_ST_BLKSIZE)
                .expect("sizeof(st_blksize)", "sizeof(((struct stat *)0)->st_blksize)", 8)
                .expect("sizeof(st_blocks)", "sizeof(((struct stat *)0)->st_blocks)", 8)
                .verify();
    }

    @Test
    void theSocketLayoutsAndConstantsMatchTheHeaders() {
        new HeaderProbe("sys/socket.h", "sys/un.h", "sys/uio.h", "poll.h")
                .expectLayout(Libc.IOVEC, "struct iovec")
                .expectLayout(Libc.MSGHDR, "struct msghdr")
                .expectLayout(Libc.CMSGHDR, "struct cmsghdr")
                .expectLayout(Libc.SOCKADDR_UN, "struct sockaddr_un")
                .expectLayout(Libc.POLLFD, "struct pollfd")
                .expect("CMSG_LEN(0)", "CMSG_LEN(0)", Libc.cmsgLen(0))
                .expect("CMSG_LEN(12)", "CMSG_LEN(12)", Libc.cmsgLen(12))
                .expect("CMSG_SPACE(4)", "CMSG_SPACE(4)", Libc.cmsgSpace(4))
                .expect("CMSG_SPACE(12)", "CMSG_SPACE(12)", Libc.cmsgSpace(12))
                .expect("CMSG_DATA offset", "(char *)CMSG_DATA((struct cmsghdr *)0) - (char *)0", Libc.cmsgLen(0))
                .expectValue("AF_UNIX", Libc.AF_UNIX)
                .expectValue("SOCK_STREAM", Libc.SOCK_STREAM)
                .expectValue("SOCK_CLOEXEC", Libc.SOCK_CLOEXEC)
                .expectValue("SOL_SOCKET", Libc.SOL_SOCKET)
                .expectValue("SCM_RIGHTS", Libc.SCM_RIGHTS)
                .expectValue("SHUT_RDWR", Libc.SHUT_RDWR)
                .expectValue("MSG_CTRUNC", Libc.MSG_CTRUNC)
                .expectValue("MSG_DONTWAIT", Libc.MSG_DONTWAIT)
                .expectValue("MSG_NOSIGNAL", Libc.MSG_NOSIGNAL)
                .expectValue("MSG_CMSG_CLOEXEC", Libc.MSG_CMSG_CLOEXEC)
                .expectValue("POLLIN", Libc.POLLIN)
                .expectValue("POLLOUT", Libc.POLLOUT)
                .expectValue("POLLERR", Libc.POLLERR)
                .expectValue("POLLHUP", Libc.POLLHUP)
                .expectValue("POLLNVAL", Libc.POLLNVAL)
                .verify();
    }

    @Test
    void theMadviseAdvicesMatchTheHeader() {
        new HeaderProbe("sys/mman.h")
                .expect("MADV_DONTNEED", "MADV_DONTNEED", Libc.MADV_DONTNEED)
                .expect("MADV_REMOVE", "MADV_REMOVE", Libc.MADV_REMOVE)
                .expect("MADV_DONTFORK", "MADV_DONTFORK", Libc.MADV_DONTFORK)
                .expect("MADV_HUGEPAGE", "MADV_HUGEPAGE", Libc.MADV_HUGEPAGE)
                .expect("MADV_NOHUGEPAGE", "MADV_NOHUGEPAGE", Libc.MADV_NOHUGEPAGE)
                .expect("MADV_POPULATE_WRITE", "MADV_POPULATE_WRITE", Libc.MADV_POPULATE_WRITE)
                .verify();
    }

    @Test
    void theMemfdFlagsMatchTheHeader() {
        new HeaderProbe("linux/memfd.h")
                .expectValue("MFD_CLOEXEC", Libc.MFD_CLOEXEC)
                .expectValue("MFD_HUGETLB", Libc.MFD_HUGETLB)
                .expectValue("MFD_HUGE_SHIFT", Libc.MFD_HUGE_SHIFT)
                .expectValue("MFD_HUGE_2MB", Libc.MFD_HUGE_2MB)
                .verify();
    }

    @Test
    void theSeekWhenceValuesMatchTheHeader() {
        new HeaderProbe("linux/fs.h")
                .expect("SEEK_DATA", "SEEK_DATA", Libc.SEEK_DATA)
                .expect("SEEK_HOLE", "SEEK_HOLE", Libc.SEEK_HOLE)
                .verify();
    }

    @Test
    void errnoTableMatchesTheHeaders() {
        HeaderProbe probe = new HeaderProbe("errno.h");
        for (int errno : Errno.known()) probe.expect(Errno.name(errno), Errno.name(errno), errno);
        probe.verify();
    }

    @Test
    void sigsetBitsFollowGlibc() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment set = arena.allocate(Libc.SIGSET_BYTES);
            Libc.sigaddset(set, 1);
            Libc.sigaddset(set, 64);
            Libc.sigaddset(set, 65);
            assertEquals(0x8000000000000001L, set.get(java.lang.foreign.ValueLayout.JAVA_LONG, 0));
            assertEquals(1L, set.get(java.lang.foreign.ValueLayout.JAVA_LONG, 8));
            Libc.sigdelset(set, 64);
            assertEquals(1L, set.get(java.lang.foreign.ValueLayout.JAVA_LONG, 0));
        }
    }
}
