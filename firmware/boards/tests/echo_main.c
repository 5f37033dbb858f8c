/*
 * Board bring-up test: uses nothing but mfn_port.h (tests/test_boards.py drives it).
 *
 * Prints "mfn-echo ready unit=<unit> clock=<hz>", then echoes every byte it reads,
 * except the command bytes 0x01-0x08, which answer with one text line each:
 *   0x01 "counter <value> <unit> <clock_hz>"
 *   0x02 "timeout got=<bytes> ticks=<counter delta>"   one read with a 200 ms timeout
 *   0x03 "stalled ticks=<delta>"   stops reading for 300 ms first (fills the ring)
 *   0x04 "mem blob=<addr>+<size> crc=<crc32> arena=<addr>+<size> zero=<0|1> rw=<0|1>
 *         data=<addr> ok=<0|1> stack=<addr> fpu=<337> mve=<144, or none>"   where the
 *         linker put things, and checks (the FPU and Helium work after mfn_port_init)
 *   0x05 "quiet"   stop printing "tick" (see below)
 *   0x06 + u32 n (little endian)  reads n bytes without echo, then
 *        "sink got=<bytes> crc=<crc32> ticks=<delta>" (any byte values: a binary-clean check)
 *   0x07 + u32 n  sends n bytes (i & 0xff), then "source ticks=<delta>"
 *   0x08 executes an undefined instruction: the board's fault handler must say so
 * Every 1000 ms without input it prints "tick" (proves read timeouts expire).
 *
 * Build options: ECHO_BLOB_FILE="path" links that file as read-only data (stands in
 * for model weights); ECHO_ARENA_BYTES sizes a .bss.mfn_arena array (the model arena).
 */
#include <stdint.h>

#include "mfn_port.h"

#if defined(__ARM_FEATURE_MVE)
#include <arm_mve.h>
#endif

#ifndef ECHO_ARENA_BYTES
#define ECHO_ARENA_BYTES 4096
#endif

#ifdef ECHO_BLOB_FILE
__asm__(".section .rodata.echo_blob,\"a\",%progbits\n"
        ".balign 16\n"
        ".global echo_blob\n"
        "echo_blob:\n"
        ".incbin \"" ECHO_BLOB_FILE "\"\n"
        ".global echo_blob_end\n"
        "echo_blob_end:\n"
        ".previous\n");
extern const uint8_t echo_blob[], echo_blob_end[];
#else
static const uint8_t echo_blob[1] = {0};
static const uint8_t *const echo_blob_end = echo_blob;
#endif

static uint8_t arena[ECHO_ARENA_BYTES] __attribute__((aligned(16), section(".bss.mfn_arena")));
static volatile uint32_t initialised_data = 0x5EED1234u; /* checks the .data copy */

static void put_text(const char *text)
{
    uint32_t len = 0;
    while (text[len]) {
        len++;
    }
    mfn_port_write((const uint8_t *)text, len);
}

static void put_u64(uint64_t value)
{
    char digits[21];
    int at = 20;
    digits[at] = '\0';
    do {
        digits[--at] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value);
    put_text(digits + at);
}

static void put_hex(uint32_t value)
{
    char digits[9];
    for (int i = 0; i < 8; i++) {
        digits[i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xFu];
    }
    digits[8] = '\0';
    put_text(digits);
}

/* zlib's CRC-32, a nibble at a time (small table, fast enough for a megabyte). */
static uint32_t crc32_update(uint32_t crc, const uint8_t *data, uint32_t len)
{
    static const uint32_t table[16] = {
        0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
        0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
    };
    crc = ~crc;
    for (uint32_t i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ table[crc & 15u];
        crc = (crc >> 4) ^ table[crc & 15u];
    }
    return ~crc;
}

/* Input already read from the port but not yet processed by main(). */
static uint8_t input[512];
static uint32_t input_pos, input_len;

/* Like mfn_port_read, but hands out what main() has not processed yet first. */
static int32_t read_some(uint8_t *buf, uint32_t len, uint32_t timeout_ms)
{
    if (input_pos == input_len) {
        return mfn_port_read(buf, len, timeout_ms);
    }
    uint32_t n = 0;
    while (n < len && input_pos < input_len) {
        buf[n++] = input[input_pos++];
    }
    return (int32_t)n;
}

/* Blocks until exactly len bytes arrived; 0 if the link went quiet for 5 s. */
static int read_exact(uint8_t *buf, uint32_t len)
{
    while (len) {
        const int32_t got = read_some(buf, len, 5000);
        if (got <= 0) {
            return 0;
        }
        buf += got;
        len -= (uint32_t)got;
    }
    return 1;
}

static uint32_t read_u32(void)
{
    uint8_t b[4] = {0, 0, 0, 0};
    if (!read_exact(b, 4)) {
        return 0;
    }
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static void report_counter(void)
{
    put_text("counter ");
    put_u64(mfn_port_counter());
    put_text(" ");
    put_text(mfn_port_counter_unit());
    put_text(" ");
    put_u64(mfn_port_clock_hz());
    put_text("\n");
}

static void probe_timeout(void)
{
    uint8_t byte;
    const uint64_t start = mfn_port_counter();
    const int32_t got = mfn_port_read(&byte, 1, 200);
    const uint64_t ticks = mfn_port_counter() - start;
    put_text("timeout got=");
    put_u64((uint64_t)(got < 0 ? 0 : got));
    put_text(" ticks=");
    put_u64(ticks);
    put_text("\n");
}

static void stall(void)
{
    /*
     * Busy-wait without reading: input piles up in the ring and beyond. The counter is
     * read only every few thousand instructions: under QEMU -icount each read of a
     * timer register is slow (300 ms of reads alone take ~7 s of host time).
     */
    const uint64_t start = mfn_port_counter();
    const uint64_t wait = (uint64_t)mfn_port_clock_hz() * 3u / 10u;
    while (mfn_port_counter() - start < wait) {
        for (volatile uint32_t spin = 0; spin < 1000u; spin++) {
        }
    }
    put_text("stalled ticks=");
    put_u64(mfn_port_counter() - start);
    put_text("\n");
}

/* 1.5 * 2.25 in single precision, x100; and 16 lanes of 3 * 3 summed by Helium. */
static void report_float_units(void)
{
    volatile float x = 1.5f;
    put_text(" fpu=");
    put_u64((uint64_t)(x * 2.25f * 100.0f));
#if defined(__ARM_FEATURE_MVE)
    volatile int8_t three = 3;
    const int8x16_t lanes = vdupq_n_s8(three);
    put_text(" mve=");
    put_u64((uint64_t)vaddvq_s8(vmulq_s8(lanes, lanes)));
#else
    put_text(" mve=none");
#endif
}

static void report_memory(void)
{
    const uint32_t blob_bytes = (uint32_t)(echo_blob_end - echo_blob);
    int zero = 1;
    int rw = 1;
    for (uint32_t i = 0; i < ECHO_ARENA_BYTES; i++) {
        zero &= arena[i] == 0;
        arena[i] = (uint8_t)(i * 31u + 7u);
    }
    for (uint32_t i = 0; i < ECHO_ARENA_BYTES; i++) {
        rw &= arena[i] == (uint8_t)(i * 31u + 7u);
        arena[i] = 0;
    }
    uint8_t on_stack = 0;
    put_text("mem blob=");
    put_hex((uint32_t)(uintptr_t)echo_blob);
    put_text("+");
    put_u64(blob_bytes);
    put_text(" crc=");
    put_hex(crc32_update(0, echo_blob, blob_bytes));
    put_text(" arena=");
    put_hex((uint32_t)(uintptr_t)arena);
    put_text("+");
    put_u64(ECHO_ARENA_BYTES);
    put_text(zero ? " zero=1" : " zero=0");
    put_text(rw ? " rw=1" : " rw=0");
    put_text(" data=");
    put_hex((uint32_t)(uintptr_t)&initialised_data);
    put_text(initialised_data == 0x5EED1234u ? " ok=1" : " ok=0");
    put_text(" stack=");
    put_hex((uint32_t)(uintptr_t)&on_stack);
    report_float_units();
    put_text("\n");
}

static void sink(uint32_t count)
{
    uint8_t chunk[512];
    uint32_t got = 0;
    uint32_t crc = 0;
    const uint64_t start = mfn_port_counter();
    while (got < count) {
        const uint32_t want = count - got < sizeof chunk ? count - got : (uint32_t)sizeof chunk;
        const int32_t n = read_some(chunk, want, 5000);
        if (n <= 0) {
            break;
        }
        crc = crc32_update(crc, chunk, (uint32_t)n);
        got += (uint32_t)n;
    }
    const uint64_t ticks = mfn_port_counter() - start;
    put_text("sink got=");
    put_u64(got);
    put_text(" crc=");
    put_hex(crc);
    put_text(" ticks=");
    put_u64(ticks);
    put_text("\n");
}

static void source(uint32_t count)
{
    uint8_t chunk[256];
    for (uint32_t i = 0; i < sizeof chunk; i++) {
        chunk[i] = (uint8_t)i;
    }
    const uint64_t start = mfn_port_counter();
    for (uint32_t sent = 0; sent < count;) {
        const uint32_t n = count - sent < sizeof chunk ? count - sent : (uint32_t)sizeof chunk;
        mfn_port_write(chunk, n); /* every chunk starts at 0, so byte i is i & 0xff */
        sent += n;
    }
    const uint64_t ticks = mfn_port_counter() - start;
    put_text("source ticks=");
    put_u64(ticks);
    put_text("\n");
}

int main(void)
{
    mfn_port_init();
    put_text("mfn-echo ready unit=");
    put_text(mfn_port_counter_unit());
    put_text(" clock=");
    put_u64(mfn_port_clock_hz());
    put_text("\n");

    int quiet = 0;
    uint8_t out[sizeof input];
    for (;;) {
        const int32_t got = mfn_port_read(input, sizeof input, 1000);
        if (got < 0) {
            return 0;
        }
        if (got == 0) {
            if (!quiet) {
                put_text("tick\n");
            }
            continue;
        }
        input_pos = 0;
        input_len = (uint32_t)got;
        uint32_t pending = 0;
        while (input_pos < input_len) {
            const uint8_t byte = input[input_pos++];
            if (byte == 0 || byte > 8) {
                out[pending++] = byte;
                continue;
            }
            mfn_port_write(out, pending); /* keep the echo in order with the reply */
            pending = 0;
            switch (byte) {
            case 1: report_counter(); break;
            case 2: probe_timeout(); break;
            case 3: stall(); break;
            case 4: report_memory(); break;
            case 5: quiet = 1; put_text("quiet\n"); break;
            case 6: sink(read_u32()); break; /* length and payload may follow in input[] */
            case 7: source(read_u32()); break;
            default: __builtin_trap();
            }
        }
        mfn_port_write(out, pending);
    }
}
