/* Guest side of the mfn_icount QEMU plugin: see icount.h and docs/icount.md. */
#if !defined(__aarch64__) && !defined(__x86_64__)
#define _DEFAULT_SOURCE 1 /* syscall(2) is not POSIX; other architectures use the libc wrapper */
#endif
#define _POSIX_C_SOURCE 200809L

#include "icount.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

static int icount_fd = -1;
static int icount_state = -1; /* -1 unchecked, 0 unavailable, 1 available */

/*
 * The marker syscall, with no arguments. Its result (-ENOSYS) is ignored. Raw
 * instructions on the two architectures we run so errno is left alone and the
 * count between markers does not include a libc wrapper.
 */
static void icount_marker(void)
{
#if defined(__aarch64__)
    register long x8 __asm__("x8") = MFN_ICOUNT_MARKER;
    register long x0 __asm__("x0") = 0;
    __asm__ __volatile__("svc #0" : "+r"(x0) : "r"(x8) : "memory");
    (void)x0;
#elif defined(__x86_64__)
    long rax = MFN_ICOUNT_MARKER;
    __asm__ __volatile__("syscall" : "+a"(rax) : : "rcx", "r11", "memory");
    (void)rax;
#else
    (void)syscall(MFN_ICOUNT_MARKER);
#endif
}

static int read_u64(uint64_t *value)
{
    unsigned char b[8];
    if (pread(icount_fd, b, sizeof b, 0) != (ssize_t)sizeof b) {
        return -1;
    }
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | b[i];
    }
    *value = v;
    return 0;
}

/* The plugin creates its file with exactly this size; anything else is not ours. */
#define ICOUNT_FILE_SIZE 16

/*
 * Write a sentinel no real count can equal, make the marker syscall, read the
 * count back. Only the plugin replaces the sentinel, so a stale or missing answer
 * shows as an error, never as a wrong count.
 */
static int round_trip(uint64_t *value)
{
    static const unsigned char sentinel[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    if (pwrite(icount_fd, sentinel, sizeof sentinel, 0) != (ssize_t)sizeof sentinel) {
        return -1;
    }
    icount_marker();
    if (read_u64(value) != 0 || *value == UINT64_MAX) {
        return -1;
    }
    return 0;
}

static int check(void)
{
    const char *path = getenv("MFN_ICOUNT_FILE");
    if (path == NULL || path[0] == '\0') {
        return 0;
    }
    /* No O_CREAT: the plugin creates the file; without it there is nothing to read. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    struct stat st;
    unsigned char saved[8];
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != ICOUNT_FILE_SIZE ||
        pread(fd, saved, sizeof saved, 0) != (ssize_t)sizeof saved) {
        close(fd);
        return 0;
    }
    icount_fd = fd;
    uint64_t first = 0;
    if (round_trip(&first) != 0 || first == 0) {
        /* No plugin answered: put back what the file held and give up. */
        (void)pwrite(fd, saved, sizeof saved, 0);
        icount_fd = -1;
        close(fd);
        return 0;
    }
    return 1;
}

int mfn_icount_available(void)
{
    if (icount_state < 0) {
        icount_state = check();
    }
    return icount_state;
}

uint64_t mfn_icount_read(void)
{
    if (icount_state != 1 && !mfn_icount_available()) {
        return 0;
    }
    uint64_t v = 0;
    return round_trip(&v) == 0 ? v : 0;
}
