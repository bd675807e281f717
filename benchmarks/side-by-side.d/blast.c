/*
 * The link's limit for benchmarks/side-by-side: BYTES of guest-sized memory sent over one loopback TCP
 * connection in 1 MiB writes and read straight into destination memory, a shared memfd mapping as vmm's guest
 * RAM is. The destination memory is fresh (every page's first write happens inside the socket read, as in a
 * fresh vmm incoming process), populated before the clock starts (MADV_POPULATE_WRITE: the link alone), or
 * populated 1 MiB at a time by the reading thread just before it reads into it (populate-each), or populated
 * by a second thread 2 MiB at a time, at most 64 MiB ahead of the reader (populate-ahead); or, for comparison,
 * fresh private anonymous memory with MADV_HUGEPAGE, as QEMU's RAM is (fresh-anon-thp: 2 MiB pages where
 * transparent huge pages are enabled for madvise, one fault per 2 MiB instead of per 4 KiB); or populated-hugetlb
 * and fresh-hugetlb: both ends' memory a 2 MiB hugetlbfs memfd (vm.hugepages = hugetlb's kind of RAM), the
 * destination populated before the clock starts (the link's limit once guest RAM is on huge pages) or not (each
 * huge page's first write, which clears 2 MiB, inside the read); both need 2 x BYTES in the pool.
 * Prints one JSON line: {"mode": ..., "bytes": ..., "seconds": ..., "populate-seconds": ...}.
 * Usage: blast BYTES fresh|populated|populate-each|populate-ahead|fresh-anon-thp|populated-hugetlb|fresh-hugetlb
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21 << 26)
#endif

static int hugetlb; /* populated-hugetlb: both ends' memory from the 2 MiB hugetlbfs pool */

static void die(const char *what) {
    fprintf(stderr, "blast: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* populate-ahead: a second thread populates the destination 2 MiB at a time, at most AHEAD bytes past the reader. */
#define AHEAD (64u << 20)
static unsigned char *ahead_base;
static size_t ahead_bytes;
static _Atomic size_t read_to;

static void *populate_ahead(void *unused) {
    (void) unused;
    for (size_t off = 0; off < ahead_bytes; off += 2u << 20) {
        while (off > atomic_load(&read_to) + AHEAD) sched_yield();
        size_t n = ahead_bytes - off < (2u << 20) ? ahead_bytes - off : (2u << 20);
        if (madvise(ahead_base + off, n, MADV_POPULATE_WRITE) != 0) die("madvise(MADV_POPULATE_WRITE)");
    }
    return NULL;
}

static unsigned char *guest_memory(size_t bytes, const char *name) {
    int fd = memfd_create(name, MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
    if (fd < 0) die(hugetlb ? "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)" : "memfd_create");
    if (ftruncate(fd, (off_t) bytes) != 0) die("ftruncate");
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap");
    close(fd);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3 || (strcmp(argv[2], "fresh") != 0 && strcmp(argv[2], "populated") != 0 && strcmp(argv[2], "populate-each") != 0
            && strcmp(argv[2], "populate-ahead") != 0 && strcmp(argv[2], "fresh-anon-thp") != 0
            && strcmp(argv[2], "populated-hugetlb") != 0 && strcmp(argv[2], "fresh-hugetlb") != 0)) {
        fprintf(stderr, "usage: blast BYTES fresh|populated|populate-each|populate-ahead|fresh-anon-thp|populated-hugetlb|fresh-hugetlb\n");
        return 2;
    }
    size_t bytes = strtoull(argv[1], NULL, 0), chunk = 1 << 20;
    hugetlb = strcmp(argv[2], "populated-hugetlb") == 0 || strcmp(argv[2], "fresh-hugetlb") == 0;
    if (hugetlb && bytes % (2u << 20) != 0) { fprintf(stderr, "blast: %s needs a multiple of 2 MiB\n", argv[2]); return 2; }
    int populated = strcmp(argv[2], "populated") == 0 || strcmp(argv[2], "populated-hugetlb") == 0, each = strcmp(argv[2], "populate-each") == 0;

    int server = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in at = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof at;
    if (server < 0 || bind(server, (struct sockaddr *) &at, sizeof at) != 0 || listen(server, 1) != 0) die("listen");
    if (getsockname(server, (struct sockaddr *) &at, &len) != 0) die("getsockname");

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) { /* the sender: source memory holding data in every page, resident before it connects */
        unsigned char *src = guest_memory(bytes, "blast-source");
        for (size_t off = 0; off < bytes; off += 4096) *(unsigned long *) (src + off) = off | 1;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *) &at, sizeof at) != 0) die("connect");
        for (size_t off = 0; off < bytes;) {
            ssize_t n = write(s, src + off, bytes - off < chunk ? bytes - off : chunk);
            if (n <= 0) die("write");
            off += (size_t) n;
        }
        close(s);
        _exit(0);
    }
    unsigned char *dst;
    if (strcmp(argv[2], "fresh-anon-thp") == 0) { /* QEMU's default: private anonymous memory, transparent huge pages advised */
        dst = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dst == MAP_FAILED) die("mmap");
        if (madvise(dst, bytes, MADV_HUGEPAGE) != 0) die("madvise(MADV_HUGEPAGE)");
    } else {
        dst = guest_memory(bytes, "blast-destination");
    }
    double populate = 0;
    if (populated) {
        double t = now();
        if (madvise(dst, bytes, MADV_POPULATE_WRITE) != 0) die("madvise(MADV_POPULATE_WRITE)");
        populate = now() - t;
    }
    int c = accept(server, NULL, NULL);
    if (c < 0) die("accept");
    double start = now();
    pthread_t helper;
    if (strcmp(argv[2], "populate-ahead") == 0) {
        ahead_base = dst;
        ahead_bytes = bytes;
        if (pthread_create(&helper, NULL, populate_ahead, NULL) != 0) die("pthread_create");
    }
    for (size_t off = 0; off < bytes;) {
        size_t want = chunk - off % chunk; /* up to the next 1 MiB boundary */
        if (want > bytes - off) want = bytes - off;
        if (each && off % chunk == 0 && madvise(dst + off, want, MADV_POPULATE_WRITE) != 0) die("madvise(MADV_POPULATE_WRITE)");
        ssize_t n = read(c, dst + off, want);
        if (n < 0) die("read");
        if (n == 0) { fprintf(stderr, "blast: the stream ended at %zu of %zu bytes\n", off, bytes); return 1; }
        off += (size_t) n;
        atomic_store(&read_to, off);
    }
    double seconds = now() - start;
    int status;
    waitpid(child, &status, 0);
    printf("{\"mode\": \"%s\", \"bytes\": %zu, \"seconds\": %.4f, \"populate-seconds\": %.4f}\n", argv[2], bytes, seconds, populate);
    return 0;
}
