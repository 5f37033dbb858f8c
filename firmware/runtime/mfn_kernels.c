/*
 * mfnc int8 kernels: see mfn_kernels.h.
 *
 * This file holds the portable reference (C99) and, selected at compile time, one
 * optimised variant of the row routines, included below from mfn_kernels_<variant>.h
 * (one compilation unit, so a build compiles this file only):
 *   - neon: aarch64 Advanced SIMD (__ARM_NEON && __aarch64__), e.g. rk3399 (Cortex-A72/A53);
 *   - mve:  Armv8.1-M Helium (__ARM_FEATURE_MVE integer), e.g. Cortex-M55 (mps3-an547);
 *   - dsp:  Armv7E-M DSP/SIMD32 (__ARM_FEATURE_DSP, M-profile), e.g. Cortex-M7 (mps2-an500,
 *     stm32h743); 32-bit Cortex-A (armv7-a) keeps the portable code;
 *   - avx2: x86-64 with AVX2 (__AVX2__, implies SSE4.1), e.g. -march=native on this host.
 * -DMFN_PORTABLE_KERNELS (make KERNELS=portable) keeps the portable code everywhere.
 * Every variant is bit-exact with the portable routines for every input; a variant
 * hands a call it does not cover (int16 inputs, unusual shapes) to the portable one.
 * docs/kernels.md describes the variants and how they are checked and measured.
 */
#include "mfn_kernels.h"

#include <string.h>

#define MFN_ADD_LEFT_SHIFT 20

/* (a * b * 2) >> 32, rounded to nearest (gemmlowp's SaturatingRoundingDoublingHighMul). */
static int32_t high_mul(int32_t a, int32_t b)
{
    int64_t ab, nudged;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudged = ab + (ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30)));
    return (int32_t)(nudged / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

/* x / 2^exponent, rounded to nearest with ties away from zero. */
static int32_t divide_by_pot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t mfn_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    return divide_by_pot(high_mul((int32_t)((int64_t)x * ((int64_t)1 << left)), multiplier), right);
}

/* The 16x8 variant: a Q15 multiplier and one rounding, for 64-bit accumulators. */
int32_t mfn_requantize64(int64_t x, int32_t multiplier, int32_t shift)
{
    const int64_t reduced = multiplier < 0x7FFF0000 ? ((int64_t)multiplier + (1 << 15)) >> 16 : 0x7FFF;
    const int32_t total = 15 - shift;
    return (int32_t)((x * reduced + ((int64_t)1 << (total - 1))) >> total);
}

/* In 64 bits, as the golden simulator: an int32 near the limits plus a zero point saturates. */
static int32_t clamp(int64_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* Bias, requantization, fused activation and clamp for one output value. */
static int32_t epilogue(const mfn_conv_t *p, int32_t oc, int64_t acc)
{
    int64_t out;
    acc += p->bias[oc];
    if (p->in_int16) {
        out = mfn_requantize64(acc, p->mult[oc], p->shift[oc]);
        if (acc < 0 && p->neg_mult) {
            out = (int64_t)p->neg_sign[oc] * mfn_requantize64(acc, p->neg_mult[oc], p->neg_shift[oc]);
        }
    } else {
        out = mfn_requantize((int32_t)acc, p->mult[oc], p->shift[oc]);
        if (acc < 0 && p->neg_mult) {
            out = (int64_t)p->neg_sign[oc] * mfn_requantize((int32_t)acc, p->neg_mult[oc], p->neg_shift[oc]);
        }
    }
    return clamp(out + p->out_zp, p->act_min, p->act_max);
}

static void store(const mfn_conv_t *p, void *out, int32_t index, int32_t value)
{
    if (p->out_int16) {
        ((int16_t *)out)[index] = (int16_t)value;
    } else {
        ((int8_t *)out)[index] = (int8_t)value;
    }
}

/* Bytes of one row of a tensor: width x channels values of 1 or 2 bytes. */
static int32_t row_bytes(int32_t width, int32_t channels, int is16)
{
    return width * channels * (is16 ? 2 : 1);
}

/*
 * int8 inputs accumulate in int32 (the emitter checks kh*kw*in_c*255*128 < 2^31);
 * int16 inputs (16x8) in int64.
 */
void mfn_pointwise_row_portable(const mfn_conv_t *p, const void *in_row, void *out_row)
{
    const int32_t cin = p->in_c, step = p->stride_w * p->in_c;
    int32_t ox, oc, ic;
    for (ox = 0; ox < p->out_w; ++ox) {
        for (oc = 0; oc < p->out_c; ++oc) {
            const int8_t *w = p->weights + oc * cin;
            int64_t acc;
            if (p->in_int16) {
                const int16_t *x = (const int16_t *)in_row + ox * step;
                int64_t sum = 0;
                for (ic = 0; ic < cin; ++ic) {
                    sum += (int64_t)(x[ic] - p->in_zp) * w[ic];
                }
                acc = sum;
            } else {
                const int8_t *x = (const int8_t *)in_row + ox * step;
                const int32_t zp = p->in_zp;
                int32_t sum = 0;
                for (ic = 0; ic < cin; ++ic) {
                    sum += (x[ic] - zp) * w[ic];
                }
                acc = sum;
            }
            store(p, out_row, ox * p->out_c + oc, epilogue(p, oc, acc));
        }
    }
}

/* Channels of a depthwise row computed together (accumulators on the stack). */
#define MFN_DW_BLOCK 32

void mfn_depthwise_row_portable(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    const int32_t c = p->out_c, zp = p->in_zp;
    int32_t ox, c0, ky, kx, i;
    for (ox = 0; ox < p->out_w; ++ox) {
        for (c0 = 0; c0 < c; c0 += MFN_DW_BLOCK) {
            const int32_t n = c - c0 < MFN_DW_BLOCK ? c - c0 : MFN_DW_BLOCK;
            int64_t acc64[MFN_DW_BLOCK];
            int32_t acc[MFN_DW_BLOCK];
            for (i = 0; i < n; ++i) {
                acc[i] = 0;
                acc64[i] = 0;
            }
            for (ky = 0; ky < p->kh; ++ky) {
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                    const int8_t *w = p->weights + (ky * p->kw + kx) * c + c0;
                    if (rows[ky] == 0 || ix < 0 || ix >= p->in_w) {
                        if (p->pad_value) { /* otherwise padding equals the zero point: adds nothing */
                            for (i = 0; i < n; ++i) {
                                acc64[i] += (int64_t)(p->pad_value[c0 + i] - zp) * w[i];
                            }
                        }
                    } else if (p->in_int16) {
                        const int16_t *x = (const int16_t *)rows[ky] + ix * c + c0;
                        for (i = 0; i < n; ++i) {
                            acc64[i] += (int64_t)(x[i] - zp) * w[i];
                        }
                    } else {
                        const int8_t *x = (const int8_t *)rows[ky] + ix * c + c0;
                        for (i = 0; i < n; ++i) {
                            acc[i] += (x[i] - zp) * w[i];
                        }
                    }
                }
            }
            for (i = 0; i < n; ++i) {
                store(p, out_row, ox * c + c0 + i, epilogue(p, c0 + i, acc64[i] + acc[i]));
            }
        }
    }
}

void mfn_dense_row_portable(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    const int32_t cin = p->in_c, zp = p->in_zp;
    int32_t ox, oc, ky, kx, ic;
    for (ox = 0; ox < p->out_w; ++ox) {
        for (oc = 0; oc < p->out_c; ++oc) {
            int64_t acc = 0;
            for (ky = 0; ky < p->kh; ++ky) {
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                    const int8_t *w = p->weights + ((oc * p->kh + ky) * p->kw + kx) * cin;
                    if (rows[ky] == 0 || ix < 0 || ix >= p->in_w) {
                        if (p->pad_value) { /* otherwise padding equals the zero point: adds nothing */
                            for (ic = 0; ic < cin; ++ic) {
                                acc += (int64_t)(p->pad_value[ic] - zp) * w[ic];
                            }
                        }
                    } else if (p->in_int16) {
                        const int16_t *x = (const int16_t *)rows[ky] + ix * cin;
                        for (ic = 0; ic < cin; ++ic) {
                            acc += (int64_t)(x[ic] - zp) * w[ic];
                        }
                    } else {
                        const int8_t *x = (const int8_t *)rows[ky] + ix * cin;
                        int32_t sum = 0;
                        for (ic = 0; ic < cin; ++ic) {
                            sum += (x[ic] - zp) * w[ic];
                        }
                        acc += sum;
                    }
                }
            }
            store(p, out_row, ox * p->out_c + oc, epilogue(p, oc, acc));
        }
    }
}

/* ---- The optimised variant (one at most), then the public row routines. ---- */

#if defined(MFN_PORTABLE_KERNELS)
#define MFN_VARIANT "portable"
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include "mfn_kernels_neon.h"
#elif defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include "mfn_kernels_mve.h"
#elif defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32) && defined(__ARM_ARCH_PROFILE) && \
    __ARM_ARCH_PROFILE == 'M'
#include "mfn_kernels_dsp.h"
#elif defined(__x86_64__) && defined(__AVX2__)
#include "mfn_kernels_x86.h"
#else
#define MFN_VARIANT "portable"
#endif

/*
 * A variant defines MFN_VARIANT and any of opt_pointwise_row, opt_depthwise_row,
 * opt_dense_row, opt_add (MFN_OPT_POINTWISE etc.): each returns 1 when it computed
 * the call, 0 to leave it to the portable routine.
 */
const char *mfn_kernels_variant(void)
{
    return MFN_VARIANT;
}

void mfn_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row)
{
#ifdef MFN_OPT_POINTWISE
    if (opt_pointwise_row(p, in_row, out_row)) {
        return;
    }
#endif
    mfn_pointwise_row_portable(p, in_row, out_row);
}

void mfn_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
#ifdef MFN_OPT_DEPTHWISE
    if (opt_depthwise_row(p, rows, out_row)) {
        return;
    }
#endif
    mfn_depthwise_row_portable(p, rows, out_row);
}

void mfn_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
#ifdef MFN_OPT_DENSE
    if (opt_dense_row(p, rows, out_row)) {
        return;
    }
#endif
    mfn_dense_row_portable(p, rows, out_row);
}

void mfn_conv_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    if (p->depthwise) {
        mfn_depthwise_row(p, rows, out_row);
    } else if (p->kh == 1 && p->kw == 1 && p->pad_left == 0 && rows[0] != 0 &&
               (p->out_w - 1) * p->stride_w < p->in_w) {
        mfn_pointwise_row(p, rows[0], out_row);
    } else {
        mfn_dense_row(p, rows, out_row);
    }
}

/* Row pointers of the kh input rows output row oy reads; NULL for padding rows. */
static void input_rows(const mfn_conv_t *p, const int8_t *base, int32_t stride, int32_t ring, int32_t oy,
                       const void **rows)
{
    int32_t ky;
    for (ky = 0; ky < p->kh; ++ky) {
        const int32_t iy = oy * p->stride_h - p->pad_top + ky;
        const int32_t slot = ring ? iy % ring : iy;
        rows[ky] = iy >= 0 && iy < p->in_h ? (const void *)(base + slot * stride) : 0;
    }
}

void mfn_conv(const mfn_conv_t *p, const void *input, void *output)
{
    const int32_t in_stride = row_bytes(p->in_w, p->in_c, p->in_int16);
    const int32_t out_stride = row_bytes(p->out_w, p->out_c, p->out_int16);
    const void *rows[MFN_MAX_KERNEL_H];
    int32_t oy;
    for (oy = 0; oy < p->out_h; ++oy) {
        input_rows(p, (const int8_t *)input, in_stride, 0, oy, rows);
        mfn_conv_row(p, rows, (int8_t *)output + oy * out_stride);
    }
}

void mfn_expand_depthwise(const mfn_conv_t *expand, const mfn_conv_t *dw, const void *input, void *ring,
                          void *output)
{
    const int32_t in_stride = row_bytes(expand->in_w, expand->in_c, expand->in_int16);
    const int32_t mid_stride = row_bytes(dw->in_w, dw->in_c, dw->in_int16);
    const int32_t out_stride = row_bytes(dw->out_w, dw->out_c, dw->out_int16);
    const void *rows[MFN_MAX_KERNEL_H];
    int32_t oy, next = 0; /* the next expanded row to compute */
    for (oy = 0; oy < dw->out_h; ++oy) {
        const int32_t first = oy * dw->stride_h - dw->pad_top;
        int32_t last = first + dw->kh - 1;
        if (last >= dw->in_h) {
            last = dw->in_h - 1;
        }
        if (next < first) {
            next = first; /* rows no output reads (stride > kernel) are skipped */
        }
        for (; next <= last; ++next) { /* row `next` replaces row `next - kh`, no longer needed */
            mfn_pointwise_row(expand, (const int8_t *)input + next * in_stride,
                              (int8_t *)ring + (next % dw->kh) * mid_stride);
        }
        input_rows(dw, (const int8_t *)ring, mid_stride, dw->kh, oy, rows);
        mfn_depthwise_row(dw, rows, (int8_t *)output + oy * out_stride);
    }
}

void mfn_add_portable(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t sa = mfn_requantize((a[i] - p->a_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->a_mult, p->a_shift);
        const int32_t sb = mfn_requantize((b[i] - p->b_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->b_mult, p->b_shift);
        const int32_t sum = mfn_requantize((int32_t)((uint32_t)sa + (uint32_t)sb), p->out_mult, p->out_shift);
        out[i] = (int8_t)clamp((int64_t)sum + p->out_zp, p->act_min, p->act_max);
    }
}

void mfn_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
#ifdef MFN_OPT_ADD
    if (opt_add(p, a, b, out)) {
        return;
    }
#endif
    mfn_add_portable(p, a, b, out);
}

void mfn_pixels_to_input(const uint8_t *pixels, int8_t *input, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        input[i] = (int8_t)((int32_t)pixels[i] - 128);
    }
}
