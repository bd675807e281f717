package org.vmmkit.core.sys;

/**
 * An ioctl request: its name (for error messages) and its number, encoded the way the kernel's
 * {@code asm-generic/ioctl.h} does on x86: nr in bits 0..7, type in 8..15, size in 16..29, direction in
 * 30..31 (none 0, write 1, read 2).
 */
public record Ioctl(String name, long number) {
    private static final int NRBITS = 8, TYPEBITS = 8, SIZEBITS = 14;
    private static final int NRSHIFT = 0, TYPESHIFT = NRSHIFT + NRBITS, SIZESHIFT = TYPESHIFT + TYPEBITS,
            DIRSHIFT = SIZESHIFT + SIZEBITS;
    static final int NONE = 0, WRITE = 1, READ = 2;

    static long encode(int dir, int type, int nr, long size) {
        if (size < 0 || size >= (1L << SIZEBITS)) {
            throw new IllegalArgumentException("ioctl argument size " + size + " does not fit in " + SIZEBITS + " bits");
        }
        return ((long) dir << DIRSHIFT) | ((long) type << TYPESHIFT) | ((long) nr << NRSHIFT) | (size << SIZESHIFT);
    }

    /** {@code _IO(type, nr)}. */
    public static Ioctl io(String name, int type, int nr) {
        return new Ioctl(name, encode(NONE, type, nr, 0));
    }

    /** {@code _IOR(type, nr, size)}: the kernel writes the argument. */
    public static Ioctl ior(String name, int type, int nr, long size) {
        return new Ioctl(name, encode(READ, type, nr, size));
    }

    /** {@code _IOW(type, nr, size)}: the kernel reads the argument. */
    public static Ioctl iow(String name, int type, int nr, long size) {
        return new Ioctl(name, encode(WRITE, type, nr, size));
    }

    /** {@code _IOWR(type, nr, size)}. */
    public static Ioctl iowr(String name, int type, int nr, long size) {
        return new Ioctl(name, encode(READ | WRITE, type, nr, size));
    }

    @Override
    public String toString() {
        return name;
    }
}
