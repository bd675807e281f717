package org.vmmkit.core.sys;

/** Linux errno numbers (x86_64, asm-generic) to their symbols and short descriptions. */
public final class Errno {
    private Errno() {}

    public static final int EPERM = 1, ENOENT = 2, ESRCH = 3, EINTR = 4, EIO = 5, ENXIO = 6, E2BIG = 7,
            ENOEXEC = 8, EBADF = 9, ECHILD = 10, EAGAIN = 11, ENOMEM = 12, EACCES = 13, EFAULT = 14,
            ENOTBLK = 15, EBUSY = 16, EEXIST = 17, EXDEV = 18, ENODEV = 19, ENOTDIR = 20, EISDIR = 21,
            EINVAL = 22, ENFILE = 23, EMFILE = 24, ENOTTY = 25, ETXTBSY = 26, EFBIG = 27, ENOSPC = 28,
            ESPIPE = 29, EROFS = 30, EMLINK = 31, EPIPE = 32, EDOM = 33, ERANGE = 34, EDEADLK = 35,
            ENAMETOOLONG = 36, ENOLCK = 37, ENOSYS = 38, ENOTEMPTY = 39, ELOOP = 40, ENOMSG = 42,
            EIDRM = 43, ENODATA = 61, ETIME = 62, EPROTO = 71, EMSGSIZE = 90, EOVERFLOW = 75, EBADFD = 77, EOPNOTSUPP = 95,
            EADDRINUSE = 98, EADDRNOTAVAIL = 99, ENETDOWN = 100, ECONNABORTED = 103, ECONNRESET = 104,
            ENOBUFS = 105, EISCONN = 106, ENOTCONN = 107, ETIMEDOUT = 110, ECONNREFUSED = 111,
            EHOSTUNREACH = 113, EALREADY = 114, EINPROGRESS = 115, ECANCELED = 125, EHWPOISON = 133;

    private static final String[][] TABLE = new String[134][];

    static {
        put(EPERM, "EPERM", "Operation not permitted");
        put(ENOENT, "ENOENT", "No such file or directory");
        put(ESRCH, "ESRCH", "No such process");
        put(EINTR, "EINTR", "Interrupted system call");
        put(EIO, "EIO", "Input/output error");
        put(ENXIO, "ENXIO", "No such device or address");
        put(E2BIG, "E2BIG", "Argument list too long");
        put(ENOEXEC, "ENOEXEC", "Exec format error");
        put(EBADF, "EBADF", "Bad file descriptor");
        put(ECHILD, "ECHILD", "No child processes");
        put(EAGAIN, "EAGAIN", "Resource temporarily unavailable");
        put(ENOMEM, "ENOMEM", "Cannot allocate memory");
        put(EACCES, "EACCES", "Permission denied");
        put(EFAULT, "EFAULT", "Bad address");
        put(ENOTBLK, "ENOTBLK", "Block device required");
        put(EBUSY, "EBUSY", "Device or resource busy");
        put(EEXIST, "EEXIST", "File exists");
        put(EXDEV, "EXDEV", "Invalid cross-device link");
        put(ENODEV, "ENODEV", "No such device");
        put(ENOTDIR, "ENOTDIR", "Not a directory");
        put(EISDIR, "EISDIR", "Is a directory");
        put(EINVAL, "EINVAL", "Invalid argument");
        put(ENFILE, "ENFILE", "Too many open files in system");
        put(EMFILE, "EMFILE", "Too many open files");
        put(ENOTTY, "ENOTTY", "Inappropriate ioctl for device");
        put(ETXTBSY, "ETXTBSY", "Text file busy");
        put(EFBIG, "EFBIG", "File too large");
        put(ENOSPC, "ENOSPC", "No space left on device");
        put(ESPIPE, "ESPIPE", "Illegal seek");
        put(EROFS, "EROFS", "Read-only file system");
        put(EMLINK, "EMLINK", "Too many links");
        put(EPIPE, "EPIPE", "Broken pipe");
        put(EDOM, "EDOM", "Numerical argument out of domain");
        put(ERANGE, "ERANGE", "Numerical result out of range");
        put(EDEADLK, "EDEADLK", "Resource deadlock avoided");
        put(ENAMETOOLONG, "ENAMETOOLONG", "File name too long");
        put(ENOLCK, "ENOLCK", "No locks available");
        put(ENOSYS, "ENOSYS", "Function not implemented");
        put(ENOTEMPTY, "ENOTEMPTY", "Directory not empty");
        put(ELOOP, "ELOOP", "Too many levels of symbolic links");
        put(ENOMSG, "ENOMSG", "No message of desired type");
        put(EIDRM, "EIDRM", "Identifier removed");
        put(ENODATA, "ENODATA", "No data available");
        put(ETIME, "ETIME", "Timer expired");
        put(EPROTO, "EPROTO", "Protocol error");
        put(EMSGSIZE, "EMSGSIZE", "Message too long");
        put(EOVERFLOW, "EOVERFLOW", "Value too large for defined data type");
        put(EBADFD, "EBADFD", "File descriptor in bad state");
        put(EOPNOTSUPP, "EOPNOTSUPP", "Operation not supported");
        put(EADDRINUSE, "EADDRINUSE", "Address already in use");
        put(EADDRNOTAVAIL, "EADDRNOTAVAIL", "Cannot assign requested address");
        put(ENETDOWN, "ENETDOWN", "Network is down");
        put(ECONNABORTED, "ECONNABORTED", "Software caused connection abort");
        put(ECONNRESET, "ECONNRESET", "Connection reset by peer");
        put(ENOBUFS, "ENOBUFS", "No buffer space available");
        put(EISCONN, "EISCONN", "Transport endpoint is already connected");
        put(ENOTCONN, "ENOTCONN", "Transport endpoint is not connected");
        put(ETIMEDOUT, "ETIMEDOUT", "Connection timed out");
        put(ECONNREFUSED, "ECONNREFUSED", "Connection refused");
        put(EHOSTUNREACH, "EHOSTUNREACH", "No route to host");
        put(EALREADY, "EALREADY", "Operation already in progress");
        put(EINPROGRESS, "EINPROGRESS", "Operation now in progress");
        put(ECANCELED, "ECANCELED", "Operation canceled");
        put(EHWPOISON, "EHWPOISON", "Memory page has hardware error");
    }

    private static void put(int errno, String name, String description) {
        TABLE[errno] = new String[] {name, description};
    }

    /** The symbol for an errno, e.g. {@code EINVAL}; {@code errno 200} for one not in the table. */
    public static String name(int errno) {
        return errno > 0 && errno < TABLE.length && TABLE[errno] != null ? TABLE[errno][0] : "errno " + errno;
    }

    public static String description(int errno) {
        return errno > 0 && errno < TABLE.length && TABLE[errno] != null ? TABLE[errno][1] : "unknown error";
    }

    /**
     * The symbol of the errno whose description {@code message} is (the JDK words a failed system call with
     * its strerror text only, e.g. {@code Connection refused}), or null when none is.
     */
    public static String nameOfDescription(String message) {
        if (message == null) return null;
        for (String[] entry : TABLE) {
            if (entry != null && entry[1].equals(message)) return entry[0];
        }
        return null;
    }

    /** Every errno this table knows, for the header check. */
    static int[] known() {
        return java.util.stream.IntStream.range(0, TABLE.length).filter(i -> TABLE[i] != null).toArray();
    }
}
