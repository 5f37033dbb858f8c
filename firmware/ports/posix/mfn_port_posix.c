/*
 * mfn_port.h for Linux programs (x86_64 host, aarch64 boards and qemu-aarch64): the
 * link is stdin/stdout, so the same binary serves a board's UART (`prog
 * </dev/ttyS2 >/dev/ttyS2`), a TCP socket (socat) or a pipe. Time is CLOCK_MONOTONIC
 * microseconds, or guest instructions when run under qemu-aarch64 with our icount
 * plugin (icount.h).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "icount.h"
#include "mfn_port.h"

static int use_icount;

void mfn_port_init(void)
{
    signal(SIGPIPE, SIG_IGN); /* a closed link ends the program through write(), not a signal */
    use_icount = mfn_icount_available();
}

int32_t mfn_port_read(uint8_t *buf, uint32_t len, uint32_t timeout_ms)
{
    struct pollfd fd;
    fd.fd = STDIN_FILENO;
    fd.events = POLLIN;
    for (;;) {
        const int ready = poll(&fd, 1, (int)timeout_ms);
        ssize_t got;
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready < 0) {
            return -1;
        }
        if (ready == 0) {
            return 0;
        }
        got = read(STDIN_FILENO, buf, len);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        return got <= 0 ? -1 : (int32_t)got;
    }
}

void mfn_port_write(const uint8_t *buf, uint32_t len)
{
    while (len > 0) {
        const ssize_t put = write(STDOUT_FILENO, buf, len);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            _exit(5); /* the link is gone: nobody is left to report to */
        }
        buf += put;
        len -= (uint32_t)put;
    }
}

uint64_t mfn_port_counter(void)
{
    struct timespec now;
    if (use_icount) {
        return mfn_icount_read();
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

const char *mfn_port_counter_unit(void)
{
    return use_icount ? "instructions" : "us";
}

uint32_t mfn_port_clock_hz(void)
{
    return 0;
}
