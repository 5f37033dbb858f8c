/*
 * Armv7E-M DSP row routines (Cortex-M7: mps2-an500, stm32h743; also any core with
 * the DSP extension and no Helium): included by mfn_kernels.c only.
 *
 *   pointwise (1x1) and dense (after gathering each pixel's patch): 2 pixels x 2
 *     output channels per tile, 4 input values a step: SXTAB16 turns 4 int8 inputs
 *     into two int16 pairs minus the zero point (x0 - zp, x2 - zp) and (x1 - zp,
 *     x3 - zp), exact since |x - zp| <= 255; SXTB16 does the same to 4 weights;
 *     SMLAD multiplies and accumulates two pairs at once (32-bit wrap, as portable);
 *   depthwise: per channel, with the zero point taken out as zp * sum(w);
 *   requantization: scalar, SMULL-based high multiply, only the multiplier the sign
 *     of the accumulator selects (the portable code computes both for PReLU).
 * See mfn_kernels_common.h for the bit-exactness rules.
 */
#include <arm_acle.h>

#include "mfn_kernels_common.h"

#define MFN_VARIANT "dsp"
#define MFN_OPT_POINTWISE 1
#define MFN_OPT_DEPTHWISE 1
#define MFN_OPT_DENSE 1
#define MFN_OPT_ADD 1

/* SXTAB16 with the second operand rotated right by 8: (a.lo + b.byte1, a.hi + b.byte3). */
MFN_ALWAYS_INLINE uint32_t dsp_sxtab16_ror8(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(b));
    return r;
}

MFN_ALWAYS_INLINE uint32_t dsp_sxtb16_ror8(uint32_t b)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(b));
    return r;
}

MFN_ALWAYS_INLINE uint32_t dsp_load32(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* LDR: unaligned access is allowed on Armv7-M */
    return v;
}

/* gemmlowp's SaturatingRoundingDoublingHighMul: (a * b + 2^30) >> 31, INT32_MIN^2 -> INT32_MAX. */
MFN_ALWAYS_INLINE int32_t dsp_high_mul(int32_t a, int32_t b)
{
    const int64_t ab = (int64_t)a * b + ((int64_t)1 << 30);
    const uint32_t r = (uint32_t)((uint64_t)ab >> 31); /* floor, as SQRDMULH: equal to gemmlowp's */
    return (int32_t)(r - (r == 0x80000000u));          /* only INT32_MIN * INT32_MIN gets here */
}

/* mfn_requantize: left = max(shift, 0), right = max(-shift, 0). */
MFN_ALWAYS_INLINE int32_t dsp_rq(int32_t x, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t v = dsp_high_mul((int32_t)((uint32_t)x << left), mult);
    const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u);
    const int32_t remainder = v & mask;
    const int32_t threshold = (mask >> 1) + (v < 0);
    return (v >> right) + (remainder > threshold);
}

/* mfn_requantize with prepared shifts and rounding mask ((1 << right) - 1). */
MFN_ALWAYS_INLINE int32_t dsp_rq2(int32_t x, int32_t mult, int32_t left, int32_t right, int32_t mask)
{
    const int32_t v = dsp_high_mul((int32_t)((uint32_t)x << left), mult);
    /* remainder > (mask >> 1) + (v < 0), ties away from zero */
    return (v >> right) + (((v & mask) + (v >> 31)) > (mask >> 1));
}

/* One output channel's requantization, prepared once for the pixels that share it. */
typedef struct {
    int32_t bias, not_bias, mult, left, right, mask, nmult, nleft, nright, nmask, sign;
} dsp_ch_t;

MFN_ALWAYS_INLINE void dsp_ch_load(dsp_ch_t *q, const mfn_conv_t *p, int32_t oc)
{
    const int32_t shift = p->shift[oc];
    q->bias = p->bias[oc];
    q->not_bias = ~q->bias; /* acc + bias < 0 (64-bit) <=> acc <= ~bias */
    q->mult = p->mult[oc];
    q->left = shift > 0 ? shift : 0;
    q->right = shift > 0 ? 0 : -shift;
    q->mask = (int32_t)(((uint32_t)1 << q->right) - 1u);
    if (p->neg_mult) {
        const int32_t nshift = p->neg_shift[oc];
        q->nmult = p->neg_mult[oc];
        q->nleft = nshift > 0 ? nshift : 0;
        q->nright = nshift > 0 ? 0 : -nshift;
        q->nmask = (int32_t)(((uint32_t)1 << q->nright) - 1u);
        q->sign = p->neg_sign[oc];
    } else {
        q->nmult = q->nleft = q->nright = q->nmask = q->sign = 0;
    }
}

/*
 * How outputs are clamped: `sat` when [act_min, act_max] is the whole output type,
 * then QADD + SSAT (saturating: the same as the 64-bit clamp); else compare.
 */
typedef struct {
    mfn_bounds_t b;
    int sat, out16;
} dsp_out_t;

MFN_ALWAYS_INLINE dsp_out_t dsp_out(const mfn_conv_t *p)
{
    dsp_out_t o;
    o.b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    o.out16 = p->out_int16;
    o.sat = p->out_int16 ? p->act_min == -32768 && p->act_max == 32767 : p->act_min == -128 && p->act_max == 127;
    return o;
}

/* epilogue() for one output: s = the int32 accumulator without bias. */
MFN_ALWAYS_INLINE int32_t dsp_apply(const dsp_ch_t *q, int32_t s, int prelu, const dsp_out_t *o)
{
    const int32_t v = (int32_t)((uint32_t)s + (uint32_t)q->bias);
    int32_t out;
    if (prelu && s <= q->not_bias) {
        out = q->sign * dsp_rq2(v, q->nmult, q->nleft, q->nright, q->nmask);
    } else {
        out = dsp_rq2(v, q->mult, q->left, q->right, q->mask);
    }
    if (o->sat) {
        return o->out16 ? __ssat(__qadd(out, o->b.zp), 16) : __ssat(__qadd(out, o->b.zp), 8);
    }
    out = out < o->b.lo ? o->b.lo : (out > o->b.hi ? o->b.hi : out);
    return out + o->b.zp;
}

/* The same for a channel used once. */
MFN_ALWAYS_INLINE int32_t dsp_epi(const mfn_conv_t *p, int32_t oc, int32_t s, const dsp_out_t *o)
{
    dsp_ch_t q;
    dsp_ch_load(&q, p, oc);
    return dsp_apply(&q, s, p->neg_mult != 0, o);
}

MFN_ALWAYS_INLINE void dsp_store(int out16, void *out, int32_t index, int32_t v)
{
    if (out16) {
        ((int16_t *)out)[index] = (int16_t)v;
    } else {
        ((int8_t *)out)[index] = (int8_t)v;
    }
}

/*
 * Phase two of every DSP routine: the epilogue of channels [oc0, oc1) for npx pixels,
 * from raw sums (sums[j * sum_step + oc - oc0] for pixel j); output element
 * out_index + j * out_step + oc. Each channel's parameters are prepared once for its
 * pixels. Specialised on PReLU and on saturation (dsp_finish).
 */
MFN_ALWAYS_INLINE void dsp_finish_k(const mfn_conv_t *p, const dsp_out_t *o, const int32_t *sums, int32_t sum_step,
                                    int32_t npx, int32_t oc0, int32_t oc1, void *out, int32_t out_index,
                                    int32_t out_step, int prelu, int sat)
{
    dsp_out_t oo = *o;
    int32_t oc, j;
    oo.sat = sat;
    for (oc = oc0; oc < oc1; ++oc) {
        const int32_t *sc = sums + (oc - oc0);
        dsp_ch_t q;
        dsp_ch_load(&q, p, oc);
        if (oo.out16) {
            int16_t *dst = (int16_t *)out + out_index + oc;
            for (j = 0; j < npx; ++j) {
                dst[j * out_step] = (int16_t)dsp_apply(&q, sc[j * sum_step], prelu, &oo);
            }
        } else {
            int8_t *dst = (int8_t *)out + out_index + oc;
            for (j = 0; j < npx; ++j) {
                dst[j * out_step] = (int8_t)dsp_apply(&q, sc[j * sum_step], prelu, &oo);
            }
        }
    }
}

static __attribute__((noinline)) void dsp_finish(const mfn_conv_t *p, const dsp_out_t *o, const int32_t *sums, int32_t sum_step, int32_t npx,
                       int32_t oc0, int32_t oc1, void *out, int32_t out_index, int32_t out_step)
{
    const int prelu = p->neg_mult != 0;
    if (prelu && o->sat) {
        dsp_finish_k(p, o, sums, sum_step, npx, oc0, oc1, out, out_index, out_step, 1, 1);
    } else if (prelu) {
        dsp_finish_k(p, o, sums, sum_step, npx, oc0, oc1, out, out_index, out_step, 1, 0);
    } else if (o->sat) {
        dsp_finish_k(p, o, sums, sum_step, npx, oc0, oc1, out, out_index, out_step, 0, 1);
    } else {
        dsp_finish_k(p, o, sums, sum_step, npx, oc0, oc1, out, out_index, out_step, 0, 0);
    }
}

/*
 * 2 pixels x 2 output channels: sum_k (x - zp) * w for pixels x0, x1 and weight rows
 * w0, w1; s[px * 2 + row]. k4 = k rounded down to a multiple of 4 goes through SMLAD.
 */
MFN_ALWAYS_INLINE void dsp_tile2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t k,
                                   uint32_t nzp, int32_t zp, int32_t *s)
{
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i = 0;
    for (; i + 4 <= k; i += 4) {
        const uint32_t xa = dsp_load32(x0 + i), xb = dsp_load32(x1 + i);
        const uint32_t x0e = __sxtab16(nzp, xa), x0o = dsp_sxtab16_ror8(nzp, xa);
        const uint32_t x1e = __sxtab16(nzp, xb), x1o = dsp_sxtab16_ror8(nzp, xb);
        uint32_t w = dsp_load32(w0 + i), we = __sxtb16(w), wo = dsp_sxtb16_ror8(w);
        a00 = __smlad(x0e, we, a00);
        a00 = __smlad(x0o, wo, a00);
        a10 = __smlad(x1e, we, a10);
        a10 = __smlad(x1o, wo, a10);
        w = dsp_load32(w1 + i);
        we = __sxtb16(w);
        wo = dsp_sxtb16_ror8(w);
        a01 = __smlad(x0e, we, a01);
        a01 = __smlad(x0o, wo, a01);
        a11 = __smlad(x1e, we, a11);
        a11 = __smlad(x1o, wo, a11);
    }
    for (; i < k; ++i) {
        a00 += (x0[i] - zp) * w0[i];
        a01 += (x0[i] - zp) * w1[i];
        a10 += (x1[i] - zp) * w0[i];
        a11 += (x1[i] - zp) * w1[i];
    }
    s[0] = a00;
    s[1] = a01;
    s[2] = a10;
    s[3] = a11;
}

/* 1 pixel x 2 output channels. */
MFN_ALWAYS_INLINE void dsp_tile1x2(const int8_t *x0, const int8_t *w0, const int8_t *w1, int32_t k, uint32_t nzp,
                                   int32_t zp, int32_t *s)
{
    int32_t a0 = 0, a1 = 0, i = 0;
    for (; i + 4 <= k; i += 4) {
        const uint32_t xa = dsp_load32(x0 + i);
        const uint32_t xe = __sxtab16(nzp, xa), xo = dsp_sxtab16_ror8(nzp, xa);
        uint32_t w = dsp_load32(w0 + i);
        a0 = __smlad(xe, __sxtb16(w), a0);
        a0 = __smlad(xo, dsp_sxtb16_ror8(w), a0);
        w = dsp_load32(w1 + i);
        a1 = __smlad(xe, __sxtb16(w), a1);
        a1 = __smlad(xo, dsp_sxtb16_ror8(w), a1);
    }
    for (; i < k; ++i) {
        a0 += (x0[i] - zp) * w0[i];
        a1 += (x0[i] - zp) * w1[i];
    }
    s[0] = a0;
    s[1] = a1;
}

/* Bytes of the interleaved int16 copy of 4 pixels (dsp_gemm): 8 bytes per pixel and 4 values. */
#define MFN_XBUF_BYTES 4096

/*
 * 4 pixels x 1 output channel from the interleaved copy xb (for every 4 input
 * values: pixel 0's pairs (x0, x2) and (x1, x3) minus the zero point, then pixel 1's,
 * ...): s[px * s_step] = sum over k4 values of (x - zp) * w.
 */
/* LDRD of words off/4 and off/4 + 1 of p (GCC splits 64-bit loads whose halves are used apart). */
#define DSP_LDRD(lo, hi, p, off) \
    __asm__("ldrd %0, %1, [%2, #" #off "]" : "=r"(lo), "=r"(hi) : "r"(p), "m"(*(const uint32_t(*)[2])((p) + (off) / 4)))

MFN_ALWAYS_INLINE void dsp_tile4x1(const uint32_t *xb, const int8_t *w, int32_t k4, int32_t *s, int32_t s_step)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    const int8_t *end = w + k4;
    for (; w < end; w += 4, xb += 8) {
        const uint32_t wv = dsp_load32(w), we = __sxtb16(wv), wo = dsp_sxtb16_ror8(wv);
        uint32_t e, o;
        DSP_LDRD(e, o, xb, 0);
        a0 = __smlad(e, we, a0);
        a0 = __smlad(o, wo, a0);
        DSP_LDRD(e, o, xb, 8);
        a1 = __smlad(e, we, a1);
        a1 = __smlad(o, wo, a1);
        DSP_LDRD(e, o, xb, 16);
        a2 = __smlad(e, we, a2);
        a2 = __smlad(o, wo, a2);
        DSP_LDRD(e, o, xb, 24);
        a3 = __smlad(e, we, a3);
        a3 = __smlad(o, wo, a3);
    }
    s[0] = a0;
    s[s_step] = a1;
    s[2 * s_step] = a2;
    s[3 * s_step] = a3;
}

/* Output channels whose raw sums (4 pixels) are kept before their epilogue. */
#define MFN_SUM_CHANNELS 64

/*
 * Pixels [0, npx) (output pixel px0 + i) x every output channel: pixel i reads
 * a + i * a_step (k values), channel oc the weights w + oc * w_step. 4 pixels at a
 * time are copied as int16 (x - zp) pairs, then every channel runs over them
 * (dsp_tile4x1); the last k % 4 values, and pixels when k is too large for the
 * copy, go through dsp_tile2x2.
 */
static void dsp_gemm(const mfn_conv_t *p, const int8_t *a, int32_t a_step, int32_t npx, const int8_t *w,
                     int32_t w_step, int32_t k, void *out_row, int32_t px0)
{
    uint32_t xbuf[MFN_XBUF_BYTES / 4] __attribute__((aligned(8)));
    int32_t sums[4 * MFN_SUM_CHANNELS];
    const int32_t out_c = p->out_c, out16 = p->out_int16, zp = p->in_zp, k4 = k & ~3;
    const uint32_t nzp = ((uint32_t)(-zp) & 0xFFFFu) * 0x10001u; /* -zp in both halfwords */
    const dsp_out_t b = dsp_out(p);
    int32_t oc, oc0, i = 0, j, g;
    if (2 * k4 * 4 <= MFN_XBUF_BYTES) {
        for (; i < npx; i += 4) {
            const int32_t n = npx - i < 4 ? npx - i : 4;
            for (j = 0; j < 4; ++j) { /* missing pixels (n < 4) repeat the last one; not stored */
                const int8_t *x = a + (i + (j < n ? j : n - 1)) * a_step;
                uint32_t *dst = xbuf + 2 * j;
                for (g = 0; g < k4; g += 4, dst += 8) {
                    const uint32_t xv = dsp_load32(x + g);
                    dst[0] = __sxtab16(nzp, xv);
                    dst[1] = dsp_sxtab16_ror8(nzp, xv);
                }
            }
            for (oc0 = 0; oc0 < out_c; oc0 += MFN_SUM_CHANNELS) {
                const int32_t oc1 = out_c - oc0 < MFN_SUM_CHANNELS ? out_c : oc0 + MFN_SUM_CHANNELS;
                for (oc = oc0; oc < oc1; ++oc) {
                    const int8_t *wr = w + oc * w_step;
                    int32_t *sc = sums + (oc - oc0);
                    dsp_tile4x1(xbuf, wr, k4, sc, MFN_SUM_CHANNELS);
                    for (j = 0; j < n && k4 < k; ++j) {
                        const int8_t *x = a + (i + j) * a_step;
                        for (g = k4; g < k; ++g) {
                            sc[j * MFN_SUM_CHANNELS] += (x[g] - zp) * wr[g];
                        }
                    }
                }
                dsp_finish(p, &b, sums, MFN_SUM_CHANNELS, n, oc0, oc1, out_row, (px0 + i) * out_c, out_c);
            }
        }
        return;
    }
    for (oc = 0; oc + 2 <= out_c; oc += 2) {
        const int8_t *w0 = w + oc * w_step, *w1 = w0 + w_step;
        int32_t s[4];
        for (i = 0; i + 2 <= npx; i += 2) {
            const int8_t *x0 = a + i * a_step;
            const int32_t o = (px0 + i) * out_c + oc;
            dsp_tile2x2(x0, x0 + a_step, w0, w1, k, nzp, zp, s);
            dsp_store(out16, out_row, o, dsp_epi(p, oc, s[0], &b));
            dsp_store(out16, out_row, o + 1, dsp_epi(p, oc + 1, s[1], &b));
            dsp_store(out16, out_row, o + out_c, dsp_epi(p, oc, s[2], &b));
            dsp_store(out16, out_row, o + out_c + 1, dsp_epi(p, oc + 1, s[3], &b));
        }
        if (i < npx) {
            const int32_t o = (px0 + i) * out_c + oc;
            dsp_tile1x2(a + i * a_step, w0, w1, k, nzp, zp, s);
            dsp_store(out16, out_row, o, dsp_epi(p, oc, s[0], &b));
            dsp_store(out16, out_row, o + 1, dsp_epi(p, oc + 1, s[1], &b));
        }
    }
    if (out_c & 1) {
        for (i = 0; i < npx; ++i) {
            const int8_t *x = a + i * a_step, *wr = w + (out_c - 1) * w_step;
            int32_t sum = 0;
            for (g = 0; g < k; ++g) {
                sum += (x[g] - zp) * wr[g];
            }
            dsp_store(out16, out_row, (px0 + i) * out_c + out_c - 1, dsp_epi(p, out_c - 1, sum, &b));
        }
    }
}

static int opt_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row)
{
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127) {
        return 0;
    }
    dsp_gemm(p, (const int8_t *)in_row, p->stride_w * p->in_c, p->out_w, p->weights, p->in_c, p->in_c, out_row, 0);
    return 1;
}

/* Patches of a dense row, at most this many bytes at a time; weights padded likewise. */
#define MFN_PATCH_BYTES 2048
#define MFN_WPAD_BYTES 2048

static int opt_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    int8_t patches[MFN_PATCH_BYTES] __attribute__((aligned(4)));
    int8_t wpad[MFN_WPAD_BYTES] __attribute__((aligned(4)));
    const int32_t k = p->kh * p->kw * p->in_c;
    /* rows padded to a multiple of 4 with zero weights when the copy fits */
    const int32_t k_pad = p->out_c * ((k + 3) & ~3) <= MFN_WPAD_BYTES ? (k + 3) & ~3 : k;
    const int32_t chunk = MFN_PATCH_BYTES / (k_pad > 0 ? k_pad : 1);
    const int8_t *w = p->weights;
    int32_t px0, i;
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || k_pad > MFN_PATCH_BYTES ||
        !mfn_fits_int32(k, MFN_TERM_MAX) || !mfn_pad_is_int8(p)) {
        return 0;
    }
    if (k_pad != k) {
        mfn_pad_weights(p, 0, p->out_c, k, k_pad, wpad);
        w = wpad;
    }
    for (px0 = 0; px0 < p->out_w; px0 += chunk) {
        const int32_t n = p->out_w - px0 < chunk ? p->out_w - px0 : chunk;
        for (i = 0; i < n; ++i) { /* the zero tail of a patch meets zero weights */
            mfn_dense_patch(p, rows, px0 + i, patches + i * k_pad, k_pad);
        }
        dsp_gemm(p, patches, k_pad, n, w, k_pad, k_pad, out_row, px0);
    }
    return 1;
}

/* Widest depthwise window the packed-weight path takes. */
#define MFN_DW_MAX_TAPS 64

/* sum_t (x - zp) * w of channel ch at output pixel ox, padding included (the portable arithmetic). */
static int32_t dsp_dw_one(const mfn_conv_t *p, const void *const *rows, int32_t ox, int32_t ch)
{
    const int32_t c = p->out_c, zp = p->in_zp;
    int32_t acc = 0, ky, kx;
    for (ky = 0; ky < p->kh; ++ky) {
        for (kx = 0; kx < p->kw; ++kx) {
            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
            const int32_t wv = p->weights[(ky * p->kw + kx) * c + ch];
            if (rows[ky] && ix >= 0 && ix < p->in_w) {
                acc += (((const int8_t *)rows[ky])[ix * c + ch] - zp) * wv;
            } else if (p->pad_value) {
                acc += (p->pad_value[ch] - zp) * wv;
            }
        }
    }
    return acc;
}

/*
 * Depthwise: 4 channels at a time, the output pixels inner. The group's weights are
 * packed once per row as (w0, w2), (w1, w3) int16 pairs per tap; each tap loads 4
 * input channels, makes (x0 - zp, x2 - zp), (x1 - zp, x3 - zp) with SXTAB16, and
 * SMLABB/SMLATT accumulate the 4 channels. Pixels whose window leaves the input take
 * the scalar path (dsp_dw_one).
 */
/*
 * Raw sums of 4 channels at one pixel whose window lies inside the input: row ky
 * reads rows[ky] + offset + kx * c; wpack holds the (w0, w2), (w1, w3) pairs per tap.
 */
/*
 * The same for a pixel at the border: taps outside the input (or on a padding row)
 * read pad_word, the 4 channels' pad values (or the zero point) as int8.
 */
MFN_ALWAYS_INLINE void dsp_dw_border(const mfn_conv_t *p, const void *const *rows, int32_t ix0, int32_t ch,
                                     const uint32_t *wpack, uint32_t nzp, uint32_t pad_word, int32_t *sc)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, ky, kx;
    for (ky = 0; ky < p->kh; ++ky) {
        const int8_t *row = (const int8_t *)rows[ky];
        for (kx = 0; kx < p->kw; ++kx, wpack += 2) {
            const int32_t ix = ix0 + kx;
            const uint32_t xv = row && ix >= 0 && ix < p->in_w ? dsp_load32(row + ix * p->out_c + ch) : pad_word;
            const uint32_t xe = __sxtab16(nzp, xv), xo = dsp_sxtab16_ror8(nzp, xv);
            a0 = __smlabb(xe, wpack[0], a0);
            a2 = __smlatt(xe, wpack[0], a2);
            a1 = __smlabb(xo, wpack[1], a1);
            a3 = __smlatt(xo, wpack[1], a3);
        }
    }
    sc[0] = a0;
    sc[1] = a1;
    sc[2] = a2;
    sc[3] = a3;
}

MFN_ALWAYS_INLINE void dsp_dw_window(const void *const *rows, int32_t kh, int32_t kw, int32_t offset, int32_t c,
                                     const uint32_t *wpack, uint32_t nzp, int32_t *sc)
{
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, ky, kx;
    for (ky = 0; ky < kh; ++ky) {
        const int8_t *x = (const int8_t *)rows[ky] + offset;
        for (kx = 0; kx < kw; ++kx, x += c, wpack += 2) {
            const uint32_t xv = dsp_load32(x);
            const uint32_t xe = __sxtab16(nzp, xv), xo = dsp_sxtab16_ror8(nzp, xv);
            a0 = __smlabb(xe, wpack[0], a0);
            a2 = __smlatt(xe, wpack[0], a2);
            a1 = __smlabb(xo, wpack[1], a1);
            a3 = __smlatt(xo, wpack[1], a3);
        }
    }
    sc[0] = a0;
    sc[1] = a1;
    sc[2] = a2;
    sc[3] = a3;
}

static int opt_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    uint32_t wpack[2 * MFN_DW_MAX_TAPS];
    int32_t sums[4 * MFN_SUM_CHANNELS];
    const int32_t c = p->out_c, zp = p->in_zp, kw = p->kw, taps = p->kh * p->kw;
    const uint32_t nzp = ((uint32_t)(-zp) & 0xFFFFu) * 0x10001u;
    const dsp_out_t b = dsp_out(p);
    int32_t ch, ox0, ox, ky, t, j, all_rows = 1, pad8;
    if (p->in_int16 || zp < -128 || zp > 127 || taps > MFN_DW_MAX_TAPS ||
        !mfn_fits_int32(taps, p->pad_value ? MFN_PAD_TERM_MAX : MFN_TERM_MAX)) {
        return 0;
    }
    for (ky = 0; ky < p->kh; ++ky) {
        all_rows &= rows[ky] != 0;
    }
    pad8 = mfn_pad_is_int8(p);
    for (ch = 0; ch + 4 <= c; ch += 4) {
        for (t = 0; t < taps; ++t) {
            const uint32_t wv = dsp_load32(p->weights + t * c + ch);
            wpack[2 * t] = __sxtb16(wv);
            wpack[2 * t + 1] = dsp_sxtb16_ror8(wv);
        }
        for (ox0 = 0; ox0 < p->out_w; ox0 += MFN_SUM_CHANNELS) {
            const int32_t n = p->out_w - ox0 < MFN_SUM_CHANNELS ? p->out_w - ox0 : MFN_SUM_CHANNELS;
            for (ox = ox0; ox < ox0 + n; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_left;
                int32_t *sc = sums + 4 * (ox - ox0);
                if (all_rows && ix0 >= 0 && ix0 + kw <= p->in_w) {
                    if (kw == 3) { /* the common window, unrolled */
                        dsp_dw_window(rows, p->kh, 3, ix0 * c + ch, c, wpack, nzp, sc);
                    } else {
                        dsp_dw_window(rows, p->kh, kw, ix0 * c + ch, c, wpack, nzp, sc);
                    }
                } else if (pad8) {
                    uint32_t pad_word = 0;
                    for (j = 0; j < 4; ++j) {
                        pad_word |= (uint32_t)(uint8_t)(p->pad_value ? p->pad_value[ch + j] : zp) << (8 * j);
                    }
                    dsp_dw_border(p, rows, ix0, ch, wpack, nzp, pad_word, sc);
                } else {
                    for (j = 0; j < 4; ++j) {
                        sc[j] = dsp_dw_one(p, rows, ox, ch + j);
                    }
                }
            }
            dsp_finish(p, &b, sums, 4, n, ch, ch + 4, out_row, ox0 * c, c);
        }
    }
    for (; ch < c; ++ch) {
        for (ox = 0; ox < p->out_w; ++ox) {
            dsp_store(b.out16, out_row, ox * c + ch, dsp_epi(p, ch, dsp_dw_one(p, rows, ox, ch), &b));
        }
    }
    return 1;
}

/* Element counts from which mfn_add reads its two rescaled inputs from tables. */
#define MFN_ADD_TABLE_MIN 768

/*
 * mfn_add. An int8 input takes 256 values, so for long tensors each input's
 * rescaling (a requantization per element) is done once per value into a table;
 * the sum is then requantized per element as in the portable code.
 */
static int opt_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const mfn_bounds_t bd = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const int sat = p->act_min == -128 && p->act_max == 127;
    const int32_t ol = p->out_shift > 0 ? p->out_shift : 0, orr = p->out_shift > 0 ? 0 : -p->out_shift;
    const int32_t omask = (int32_t)(((uint32_t)1 << orr) - 1u), om = p->out_mult;
    int32_t i;
    if (p->count >= MFN_ADD_TABLE_MIN) {
        int32_t ta[256], tb[256];
        for (i = 0; i < 256; ++i) {
            ta[i] = dsp_rq((i - 128 - p->a_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->a_mult, p->a_shift);
            tb[i] = dsp_rq((i - 128 - p->b_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->b_mult, p->b_shift);
        }
        for (i = 0; i < p->count; ++i) {
            const uint32_t sum = (uint32_t)ta[a[i] + 128] + (uint32_t)tb[b[i] + 128];
            int32_t r = dsp_rq2((int32_t)sum, om, ol, orr, omask);
            if (sat) {
                r = __ssat(__qadd(r, bd.zp), 8);
            } else {
                r = (r < bd.lo ? bd.lo : (r > bd.hi ? bd.hi : r)) + bd.zp;
            }
            out[i] = (int8_t)r;
        }
        return 1;
    }
    for (i = 0; i < p->count; ++i) {
        const int32_t sa = dsp_rq((a[i] - p->a_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->a_mult, p->a_shift);
        const int32_t sb = dsp_rq((b[i] - p->b_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->b_mult, p->b_shift);
        int32_t sum = dsp_rq2((int32_t)((uint32_t)sa + (uint32_t)sb), om, ol, orr, omask);
        sum = sum < bd.lo ? bd.lo : (sum > bd.hi ? bd.hi : sum);
        out[i] = (int8_t)(sum + bd.zp);
    }
    return 1;
}
