/*
 * Randomised check: the optimised row routines of this build (mfn_pointwise_row,
 * mfn_depthwise_row, mfn_dense_row, mfn_add) against the portable reference
 * (mfn_*_portable), on random shapes and values, including the corner cases of the
 * fixed-point arithmetic: extreme multipliers and shifts (-31..31), biases that push
 * the accumulator past int32, weights of -128, inputs at -128/127, rows of padding,
 * per-channel pad values outside int8, int16 inputs and outputs, strides.
 *
 *   kernel_check [cases] [seed]
 *
 * Prints "kernel-check variant=<v> cases=<n> pointwise=<n> depthwise=<n> dense=<n>
 * add=<n> ok" (exit 0), or "kernel-check MISMATCH ..." for the first difference
 * (exit 1). Built with -DMFN_CHECK_BOARD it is a bare-metal program for a board port
 * (mfn_port.h): it prints the same line over the serial link, then "kernel-check end".
 * tests/test_kernel_variants.py builds and runs it on every target.
 */
#include <stdint.h>
#include <string.h>

#include "mfn_kernels.h"

#ifdef MFN_CHECK_BOARD
#include "mfn_port.h"
#else
#include <stdio.h>
#include <stdlib.h>
#endif

#ifndef CHECK_CASES
#define CHECK_CASES 3000
#endif
#ifndef CHECK_SEED
#define CHECK_SEED 1
#endif

#define GUARD 64
#define MAX_IN (48 * 1024)      /* input bytes: every row of a case */
#define MAX_W (96 * 1024)       /* weight bytes */
#define MAX_C 1024              /* per-channel arrays */
#define MAX_OUT (24 * 1024)     /* output bytes of one row */

static int8_t in_buf[MAX_IN] __attribute__((aligned(16)));
static int8_t in_b[MAX_IN] __attribute__((aligned(16)));
static int8_t w_buf[MAX_W] __attribute__((aligned(16)));
static int32_t bias[MAX_C], mult[MAX_C], shift[MAX_C], nmult[MAX_C], nshift[MAX_C];
static int8_t nsign[MAX_C];
static int16_t pad[MAX_C];
static uint8_t out_ref[MAX_OUT + GUARD], out_opt[MAX_OUT + GUARD];

/* ---- output ---- */

static char line[512];
static int line_len;

static void put(const char *s)
{
    while (*s && line_len < (int)sizeof line - 1) {
        line[line_len++] = *s++;
    }
}

static void put_int(int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    if (v < 0) {
        put("-");
    }
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n) {
        char c[2] = {tmp[--n], 0};
        put(c);
    }
}

static void flush_line(void)
{
    line[line_len++] = '\n';
#ifdef MFN_CHECK_BOARD
    mfn_port_write((const uint8_t *)line, (uint32_t)line_len);
#else
    fwrite(line, 1, (size_t)line_len, stdout);
    fflush(stdout);
#endif
    line_len = 0;
}

/* ---- random numbers (xorshift64*) ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

/* Uniform in [lo, hi]. */
static int32_t uni(int32_t lo, int32_t hi)
{
    return (int32_t)((int64_t)lo + (int64_t)(rnd() % (uint32_t)((int64_t)hi - lo + 1)));
}

static int chance(int percent)
{
    return (int)(rnd() % 100) < percent;
}

static int32_t pick(const int32_t *values, int n)
{
    return values[rnd() % (uint32_t)n];
}

/* ---- random parameters ---- */

static int32_t rand_mult(void)
{
    static const int32_t extreme[] = {INT32_MAX, INT32_MIN, 0, 1, -1, 1 << 30, (1 << 30) + 1, -(1 << 30)};
    if (chance(75)) {
        return uni(1 << 30, INT32_MAX);
    }
    if (chance(50)) {
        return pick(extreme, 8);
    }
    return (int32_t)rnd();
}

static int32_t rand_shift(void)
{
    static const int32_t extreme[] = {-31, -30, -1, 0, 1, 30, 31};
    if (chance(60)) {
        return uni(-12, 1);
    }
    if (chance(40)) {
        return pick(extreme, 7);
    }
    return uni(-31, 31);
}

static int32_t rand_bias(void)
{
    if (chance(55)) {
        return uni(-20000, 20000);
    }
    if (chance(40)) {
        return chance(50) ? INT32_MAX - uni(0, 1 << 24) : INT32_MIN + uni(0, 1 << 24);
    }
    return (int32_t)rnd();
}

/* Values of one tensor: a mode per case, so some cases are all extremes. */
static void fill_int8(int8_t *dst, int32_t n, int allow_min)
{
    const int mode = (int)(rnd() % 6);
    int32_t i;
    for (i = 0; i < n; ++i) {
        int32_t v;
        switch (mode) {
        case 0:
            v = rnd() & 1 ? -128 : 127;
            break;
        case 1:
            v = chance(70) ? -128 : uni(-128, 127);
            break;
        case 2:
            v = uni(-3, 3);
            break;
        default:
            v = uni(-128, 127);
        }
        if (!allow_min && v == -128) {
            v = -127;
        }
        dst[i] = (int8_t)v;
    }
}

static void fill_int16(int16_t *dst, int32_t n)
{
    const int mode = (int)(rnd() % 4);
    int32_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = (int16_t)(mode == 0 ? (rnd() & 1 ? -32768 : 32767) : uni(-32768, 32767));
    }
}

/* The per-output-channel epilogue parameters and the clamp. */
static void rand_epilogue(mfn_conv_t *p, int out_c)
{
    int32_t i;
    const int prelu = chance(60);
    for (i = 0; i < out_c; ++i) {
        bias[i] = rand_bias();
        mult[i] = rand_mult();
        shift[i] = rand_shift();
        nmult[i] = rand_mult();
        nshift[i] = rand_shift();
        if (p->in_int16) { /* the 16x8 requantization shifts right by 15 - shift: 1..63 */
            shift[i] = shift[i] > 14 ? 14 : shift[i];
            nshift[i] = nshift[i] > 14 ? 14 : nshift[i];
        }
        nsign[i] = (int8_t)(chance(95) ? (rnd() & 1 ? 1 : -1) : 0); /* the quantizer gives +-1 */
    }
    if (chance(30)) { /* one multiplier and shift for every channel, as per-tensor models have */
        for (i = 1; i < out_c; ++i) {
            mult[i] = mult[0];
            shift[i] = shift[0];
        }
    }
    p->bias = bias;
    p->mult = mult;
    p->shift = shift;
    p->neg_mult = prelu ? nmult : 0;
    p->neg_shift = prelu ? nshift : 0;
    p->neg_sign = prelu ? nsign : 0;
    p->out_int16 = chance(12);
    if (p->out_int16) {
        p->out_zp = chance(70) ? 0 : uni(-300, 300);
        p->act_min = chance(60) ? -32768 : uni(-32768, 0);
        p->act_max = chance(60) ? 32767 : uni(0, 32767);
    } else {
        p->out_zp = uni(-128, 127);
        p->act_min = chance(60) ? -128 : uni(-128, 0);
        p->act_max = chance(60) ? 127 : uni(p->act_min, 127);
    }
}

static void rand_input_kind(mfn_conv_t *p)
{
    p->in_int16 = chance(8);
    p->in_zp = p->in_int16 ? (chance(70) ? 0 : uni(-100, 100)) : uni(-128, 127);
}

static int32_t bytes_of(const mfn_conv_t *p, int32_t values, int out)
{
    return values * ((out ? p->out_int16 : p->in_int16) ? 2 : 1);
}

/* ---- the comparison ---- */

static const char *kind_name[] = {"pointwise", "depthwise", "dense", "add"};
static int32_t counts[4];

static void describe(const mfn_conv_t *p)
{
    put(" in=");
    put_int(p->in_h);
    put("x");
    put_int(p->in_w);
    put("x");
    put_int(p->in_c);
    put(" out=");
    put_int(p->out_w);
    put("x");
    put_int(p->out_c);
    put(" k=");
    put_int(p->kh);
    put("x");
    put_int(p->kw);
    put(" s=");
    put_int(p->stride_w);
    put(" pad=");
    put_int(p->pad_left);
    put(" in16=");
    put_int(p->in_int16);
    put(" out16=");
    put_int(p->out_int16);
    put(" zp=");
    put_int(p->in_zp);
    put(" prelu=");
    put_int(p->neg_mult != 0);
    put(" padv=");
    put_int(p->pad_value != 0);
}

/* Compares the two output buffers (and the guard bytes after them). 1 when equal. */
static int compare(int kind, int32_t case_no, int32_t bytes, const mfn_conv_t *p)
{
    int32_t i;
    for (i = 0; i < bytes + GUARD; ++i) {
        if (out_ref[i] != out_opt[i]) {
            put("kernel-check MISMATCH variant=");
            put(mfn_kernels_variant());
            put(" kind=");
            put(kind_name[kind]);
            put(" case=");
            put_int(case_no);
            put(" byte=");
            put_int(i);
            put(" of=");
            put_int(bytes);
            put(" portable=");
            put_int(out_ref[i]);
            put(" optimised=");
            put_int(out_opt[i]);
            if (p) {
                const int32_t oc = (p->out_int16 ? i / 2 : i) % p->out_c;
                describe(p);
                put(" oc=");
                put_int(oc);
                put(" bias=");
                put_int(bias[oc]);
                put(" mult=");
                put_int(mult[oc]);
                put(" shift=");
                put_int(shift[oc]);
                put(" nmult=");
                put_int(nmult[oc]);
                put(" nshift=");
                put_int(nshift[oc]);
            }
            flush_line();
            return 0;
        }
    }
    counts[kind]++;
    return 1;
}

static void clear_outputs(void)
{
    memset(out_ref, 0xA5, sizeof out_ref);
    memset(out_opt, 0xA5, sizeof out_opt);
}

/* Input rows for a kh-row kernel: row pointers into in_buf, some NULL (padding). */
static void make_rows(const mfn_conv_t *p, const void **rows, int null_percent)
{
    const int32_t row_bytes = bytes_of(p, p->in_w * p->in_c, 0);
    int32_t ky;
    if (p->in_int16) {
        fill_int16((int16_t *)in_buf, p->kh * p->in_w * p->in_c);
    } else {
        fill_int8(in_buf, p->kh * row_bytes, 1);
    }
    for (ky = 0; ky < p->kh; ++ky) {
        rows[ky] = chance(null_percent) ? 0 : (const void *)(in_buf + ky * row_bytes);
    }
}

static void rand_pad(mfn_conv_t *p)
{
    int32_t i;
    const int wide = chance(25);
    p->pad_value = 0;
    if (chance(45)) {
        for (i = 0; i < p->in_c; ++i) {
            pad[i] = (int16_t)(wide ? uni(-32768, 32767) : uni(-128, 127));
        }
        p->pad_value = pad;
    }
}

static int32_t small_or(int32_t lo, int32_t hi, const int32_t *common, int n)
{
    return chance(35) ? pick(common, n) : uni(lo, hi);
}

static int check_pointwise(int32_t case_no)
{
    static const int32_t channels[] = {16, 32, 64, 128, 48, 8, 24};
    mfn_conv_t p;
    int32_t out_bytes;
    memset(&p, 0, sizeof p);
    rand_input_kind(&p);
    p.kh = p.kw = 1;
    p.stride_h = 1;
    p.stride_w = chance(75) ? 1 : uni(2, 3);
    p.in_c = chance(5) ? uni(200, 700) : small_or(1, 80, channels, 7);
    p.out_c = small_or(1, 70, channels, 7);
    p.out_w = chance(10) ? uni(13, 40) : uni(1, 12);
    p.in_w = (p.out_w - 1) * p.stride_w + 1 + uni(0, 2);
    p.in_h = p.out_h = 1;
    if (bytes_of(&p, p.in_w * p.in_c, 0) > MAX_IN || p.in_c * p.out_c > MAX_W ||
        bytes_of(&p, p.out_w * p.out_c, 1) > MAX_OUT) {
        p.in_c = 64;
        p.out_c = 16;
        p.out_w = p.in_w = 4;
        p.stride_w = 1;
    }
    rand_epilogue(&p, p.out_c);
    fill_int8(w_buf, p.in_c * p.out_c, chance(15));
    p.weights = w_buf;
    if (p.in_int16) {
        fill_int16((int16_t *)in_buf, p.in_w * p.in_c);
    } else {
        fill_int8(in_buf, p.in_w * p.in_c, 1);
    }
    out_bytes = bytes_of(&p, p.out_w * p.out_c, 1);
    clear_outputs();
    mfn_pointwise_row_portable(&p, in_buf, out_ref);
    mfn_pointwise_row(&p, in_buf, out_opt);
    return compare(0, case_no, out_bytes, &p);
}

static void rand_window(mfn_conv_t *p, int32_t kmax)
{
    p->kh = chance(60) ? 3 : uni(1, kmax);
    p->kw = chance(80) ? p->kh : uni(1, kmax);
    p->stride_h = 1;
    p->stride_w = chance(60) ? 1 : uni(2, 3);
    p->out_w = chance(10) ? uni(13, 40) : uni(1, 12);
    p->pad_left = uni(0, p->kw - 1);
    /* right padding of 0..kw-1 columns, or more input than the window reaches (cut) */
    p->in_w = (p->out_w - 1) * p->stride_w + p->kw - p->pad_left - uni(0, p->kw - 1) + (chance(20) ? uni(0, 3) : 0);
    if (p->in_w < 1) {
        p->in_w = 1;
    }
    p->in_h = p->kh;
    p->out_h = 1;
}

static int check_depthwise(int32_t case_no)
{
    static const int32_t channels[] = {16, 32, 64, 128, 48, 256, 8};
    mfn_conv_t p;
    const void *rows[MFN_MAX_KERNEL_H];
    int32_t out_bytes;
    memset(&p, 0, sizeof p);
    rand_input_kind(&p);
    p.depthwise = 1;
    rand_window(&p, chance(10) ? 9 : 5);
    if (chance(4)) { /* a global depthwise conv: 7x7 input, one output pixel */
        p.kh = p.kw = 7;
        p.in_w = 7;
        p.in_h = 7;
        p.out_w = 1;
        p.stride_w = 1;
        p.pad_left = 0;
    }
    p.in_c = p.out_c = small_or(1, 80, channels, 7);
    if (bytes_of(&p, p.kh * p.in_w * p.in_c, 0) > MAX_IN || bytes_of(&p, p.out_w * p.out_c, 1) > MAX_OUT) {
        p.in_c = p.out_c = 16;
    }
    rand_epilogue(&p, p.out_c);
    rand_pad(&p);
    fill_int8(w_buf, p.kh * p.kw * p.out_c, chance(15));
    p.weights = w_buf;
    make_rows(&p, rows, chance(30) ? 20 : 0);
    out_bytes = bytes_of(&p, p.out_w * p.out_c, 1);
    clear_outputs();
    mfn_depthwise_row_portable(&p, rows, out_ref);
    mfn_depthwise_row(&p, rows, out_opt);
    return compare(1, case_no, out_bytes, &p);
}

static int check_dense(int32_t case_no)
{
    static const int32_t channels[] = {3, 16, 32, 64, 8, 4};
    mfn_conv_t p;
    const void *rows[MFN_MAX_KERNEL_H];
    int32_t out_bytes;
    memset(&p, 0, sizeof p);
    rand_input_kind(&p);
    rand_window(&p, 5);
    p.in_c = small_or(1, 24, channels, 6);
    p.out_c = small_or(1, 70, channels, 6);
    if (bytes_of(&p, p.kh * p.in_w * p.in_c, 0) > MAX_IN || p.kh * p.kw * p.in_c * p.out_c > MAX_W ||
        bytes_of(&p, p.out_w * p.out_c, 1) > MAX_OUT) {
        p.in_c = 3;
        p.out_c = 16;
    }
    rand_epilogue(&p, p.out_c);
    rand_pad(&p);
    fill_int8(w_buf, p.kh * p.kw * p.in_c * p.out_c, chance(15));
    p.weights = w_buf;
    make_rows(&p, rows, chance(30) ? 20 : 0);
    out_bytes = bytes_of(&p, p.out_w * p.out_c, 1);
    clear_outputs();
    mfn_dense_row_portable(&p, rows, out_ref);
    mfn_dense_row(&p, rows, out_opt);
    return compare(2, case_no, out_bytes, &p);
}

static int check_add(int32_t case_no)
{
    mfn_add_t p;
    int32_t out_bytes;
    p.count = chance(20) ? uni(1, 20000) : uni(1, 200);
    p.a_zp = uni(-128, 127);
    p.b_zp = uni(-128, 127);
    p.out_zp = uni(-128, 127);
    p.a_mult = rand_mult();
    p.b_mult = rand_mult();
    p.out_mult = rand_mult();
    p.a_shift = chance(60) ? uni(-3, 0) : rand_shift();
    p.b_shift = chance(60) ? uni(-3, 0) : rand_shift();
    p.out_shift = rand_shift();
    p.act_min = chance(60) ? -128 : uni(-128, 0);
    p.act_max = chance(60) ? 127 : uni(p.act_min, 127);
    fill_int8(in_buf, p.count, 1);
    fill_int8(in_b, p.count, 1);
    out_bytes = p.count;
    clear_outputs();
    mfn_add_portable(&p, in_buf, in_b, (int8_t *)out_ref);
    mfn_add(&p, in_buf, in_b, (int8_t *)out_opt);
    if (!compare(3, case_no, out_bytes, 0)) {
        return 0;
    }
    /* in place (the output over input a), as the generated model calls it */
    memcpy(out_opt, in_buf, (size_t)p.count);
    mfn_add(&p, (const int8_t *)out_opt, in_b, (int8_t *)out_opt);
    return compare(3, case_no, out_bytes, 0);
}

static int run_checks(int32_t cases, uint64_t seed)
{
    int32_t i;
    rng_state ^= seed * 0x9E3779B97F4A7C15ull;
    if (!rng_state) {
        rng_state = 1;
    }
    for (i = 0; i < cases; ++i) {
        const uint32_t r = rnd() % 100;
        const int ok = r < 40 ? check_pointwise(i) : r < 70 ? check_depthwise(i) : r < 90 ? check_dense(i) : check_add(i);
        if (!ok) {
            return 1;
        }
    }
    put("kernel-check variant=");
    put(mfn_kernels_variant());
    put(" cases=");
    put_int(cases);
    put(" pointwise=");
    put_int(counts[0]);
    put(" depthwise=");
    put_int(counts[1]);
    put(" dense=");
    put_int(counts[2]);
    put(" add=");
    put_int(counts[3]);
    put(" ok");
    flush_line();
    return 0;
}

#ifdef MFN_CHECK_BOARD
int main(void)
{
    mfn_port_init();
    run_checks(CHECK_CASES, CHECK_SEED);
    put("kernel-check end");
    flush_line();
    for (;;) {
        uint8_t byte;
        mfn_port_read(&byte, 1, 1000);
    }
}
#else
int main(int argc, char **argv)
{
    const int32_t cases = argc > 1 ? (int32_t)atol(argv[1]) : CHECK_CASES;
    const uint64_t seed = argc > 2 ? (uint64_t)strtoull(argv[2], 0, 10) : CHECK_SEED;
    return run_checks(cases, seed);
}
#endif
