/*
 * NEON (aarch64 Advanced SIMD) row routines: included by mfn_kernels.c only.
 *
 * Written for cores without the dot-product extension (Cortex-A72/A53 in the RK3399):
 * int8 products are widened with SMULL/SMLAL2 (vmull_s8, vmlal_high_s8) and summed
 * pairwise into int32 with SADALP (vpadalq_s16). Requantization runs 4 channels at a
 * time: SQRDMULH is gemmlowp's SaturatingRoundingDoublingHighMul exactly, and the
 * rounding divide by 2^n (ties away from zero) is SRSHL after subtracting 1 from
 * negative values (TFLite's fix-up). See mfn_kernels_common.h for the other rules.
 *
 *   pointwise (1x1): 4 pixels x 4 output channels per tile, 16 input channels a step;
 *   dense (first 3x3 conv): each pixel's kh x kw x in_c patch gathered, then the same
 *     tile as pointwise;
 *   depthwise: 16 channels at a time, (x - zp) widened to int16, SMLAL into int32;
 *   add: 16 elements at a time.
 */
#include <arm_neon.h>

#include "mfn_kernels_common.h"

#define MFN_VARIANT "neon"
#define MFN_OPT_POINTWISE 1
#define MFN_OPT_DEPTHWISE 1
#define MFN_OPT_DENSE 1
#define MFN_OPT_ADD 1

/*
 * Requantization parameters of 4 consecutive output channels. The epilogue gets raw
 * sums r whose accumulator is r + (bias - acc_bias) ... folded: value = r + vb (mod
 * 2^32) and the PReLU test (64-bit accumulator + bias < 0) is r <= nb.
 */
typedef struct {
    int32x4_t vb, nb, mult, left, right, nmult, nleft, nright, sign;
} nq_t;

/*
 * For channels oc..oc+3 whose raw sums exceed the true accumulators by corr[j] (the
 * zero point times the weight sums; 0 when the sums are the accumulators).
 */
static void nq_load(nq_t *q, const mfn_conv_t *p, int32_t oc, const int32_t *corr)
{
    const int32x4_t zero = vdupq_n_s32(0);
    int32_t vb[4], nb[4], j;
    int32x4_t s = vld1q_s32(p->shift + oc);
    for (j = 0; j < 4; ++j) {
        /* acc + bias < 0 <=> r + (bias - corr) < 0 <=> r <= ~(bias - corr), bounded to int32 */
        const int64_t folded = (int64_t)p->bias[oc + j] - (corr ? corr[j] : 0);
        const int64_t limit = -folded - 1;
        vb[j] = (int32_t)(uint32_t)(uint64_t)folded;
        nb[j] = limit > INT32_MAX ? INT32_MAX : (limit < INT32_MIN ? INT32_MIN : (int32_t)limit);
    }
    q->vb = vld1q_s32(vb);
    q->nb = vld1q_s32(nb);
    q->mult = vld1q_s32(p->mult + oc);
    q->left = vmaxq_s32(s, zero);
    q->right = vminq_s32(s, zero); /* minus the right shift, for SRSHL */
    if (p->neg_mult) {
        const int32_t sign[4] = {p->neg_sign[oc], p->neg_sign[oc + 1], p->neg_sign[oc + 2], p->neg_sign[oc + 3]};
        s = vld1q_s32(p->neg_shift + oc);
        q->nmult = vld1q_s32(p->neg_mult + oc);
        q->nleft = vmaxq_s32(s, zero);
        q->nright = vminq_s32(s, zero);
        q->sign = vld1q_s32(sign);
    } else {
        q->nmult = q->nleft = q->nright = q->sign = zero;
    }
}

/* mfn_requantize on 4 lanes; right = -(right shift). */
MFN_ALWAYS_INLINE int32x4_t nrq(int32x4_t x, int32x4_t mult, int32x4_t left, int32x4_t right)
{
    x = vqrdmulhq_s32(vshlq_s32(x, left), mult);
    x = vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, right), 31)); /* negative: one less, so ties go away from 0 */
    return vrshlq_s32(x, right);
}

/*
 * epilogue() on 4 channels from raw sums r. PReLU picks each lane's multiplier and
 * shift first, then requantizes once (the portable code computes both). With `sat`
 * ([act_min, act_max] is the whole output type) the zero point is added with
 * saturation and nstore4 narrows with saturation: the same as the 64-bit clamp.
 */
MFN_ALWAYS_INLINE int32x4_t nfinal(const nq_t *q, int32x4_t r, int prelu, int sat, const mfn_bounds_t *b)
{
    const int32x4_t v = vaddq_s32(r, q->vb);
    int32x4_t out;
    if (prelu) {
        const uint32x4_t neg = vcleq_s32(r, q->nb);
        out = nrq(v, vbslq_s32(neg, q->nmult, q->mult), vbslq_s32(neg, q->nleft, q->left),
                  vbslq_s32(neg, q->nright, q->right));
        out = vmulq_s32(out, vbslq_s32(neg, q->sign, vdupq_n_s32(1)));
    } else {
        out = nrq(v, q->mult, q->left, q->right);
    }
    if (sat) {
        return vqaddq_s32(out, vdupq_n_s32(b->zp));
    }
    out = vminq_s32(vmaxq_s32(out, vdupq_n_s32(b->lo)), vdupq_n_s32(b->hi));
    return vaddq_s32(out, vdupq_n_s32(b->zp));
}

/* Stores 4 output values at element `index`: saturating (sat) or truncating narrowing. */
MFN_ALWAYS_INLINE void nstore4(int out16, int sat, void *out, int32_t index, int32x4_t v)
{
    const int16x4_t h = sat ? vqmovn_s32(v) : vmovn_s32(v);
    if (out16) {
        vst1_s16((int16_t *)out + index, h);
    } else {
        const int16x8_t hh = vcombine_s16(h, h);
        const int8x8_t bytes = sat ? vqmovn_s16(hh) : vmovn_s16(hh);
        const uint32_t word = vget_lane_u32(vreinterpret_u32_s8(bytes), 0);
        memcpy((int8_t *)out + index, &word, 4);
    }
}

/* 1 when [act_min, act_max] is the whole range of the output type. */
static int nsat(const mfn_conv_t *p)
{
    return p->out_int16 ? p->act_min == -32768 && p->act_max == 32767 : p->act_min == -128 && p->act_max == 127;
}

/* Horizontal sums of four int32x4: lane j = sum of a_j. */
MFN_ALWAYS_INLINE int32x4_t nsum4(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3)
{
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

/*
 * acc += the 16 products x * w, pairwise into int32 lanes. `exact` = 0 adds two
 * products in int16 first (SMULL + SMLAL2): exact while no weight is -128 (|sum| <=
 * 2 * 128 * 127 < 2^15). `exact` = 1 widens each product on its own.
 */
#define NMAC(acc, xv, wv, exact)                                                                        \
    do {                                                                                                 \
        if (exact) {                                                                                     \
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(xv), vget_low_s8(wv)));                          \
            acc = vpadalq_s16(acc, vmull_high_s8(xv, wv));                                               \
        } else {                                                                                         \
            acc = vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(xv), vget_low_s8(wv)), xv, wv));   \
        }                                                                                                \
    } while (0)

/* sum_k x[k] * w[k] for k in [k0, k): the tail after the vector steps. */
static int32_t ndot_tail(const int8_t *x, const int8_t *w, int32_t k0, int32_t k)
{
    int32_t sum = 0;
    for (; k0 < k; ++k0) {
        sum += x[k0] * w[k0];
    }
    return sum;
}

/*
 * 4 pixels (x0..x3) x 4 output channels (rows w, w + w_step, ...): returns the raw
 * sums sum_k x*w for each pixel as 4 lanes (one per channel).
 */
MFN_ALWAYS_INLINE void ntile4x4(const int8_t *x0, int32_t x_step, const int8_t *w, int32_t w_step, int32_t k,
                                int exact, int32x4_t *r)
{
    const int8_t *x1 = x0 + x_step, *x2 = x1 + x_step, *x3 = x2 + x_step;
    const int8_t *w1 = w + w_step, *w2 = w1 + w_step, *w3 = w2 + w_step;
    int32x4_t a00 = vdupq_n_s32(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    int32x4_t a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const int8x16_t v0 = vld1q_s8(x0 + i), v1 = vld1q_s8(x1 + i), v2 = vld1q_s8(x2 + i), v3 = vld1q_s8(x3 + i);
        int8x16_t c = vld1q_s8(w + i);
        NMAC(a00, v0, c, exact);
        NMAC(a10, v1, c, exact);
        NMAC(a20, v2, c, exact);
        NMAC(a30, v3, c, exact);
        c = vld1q_s8(w1 + i);
        NMAC(a01, v0, c, exact);
        NMAC(a11, v1, c, exact);
        NMAC(a21, v2, c, exact);
        NMAC(a31, v3, c, exact);
        c = vld1q_s8(w2 + i);
        NMAC(a02, v0, c, exact);
        NMAC(a12, v1, c, exact);
        NMAC(a22, v2, c, exact);
        NMAC(a32, v3, c, exact);
        c = vld1q_s8(w3 + i);
        NMAC(a03, v0, c, exact);
        NMAC(a13, v1, c, exact);
        NMAC(a23, v2, c, exact);
        NMAC(a33, v3, c, exact);
    }
    r[0] = nsum4(a00, a01, a02, a03);
    r[1] = nsum4(a10, a11, a12, a13);
    r[2] = nsum4(a20, a21, a22, a23);
    r[3] = nsum4(a30, a31, a32, a33);
    if (i < k) {
        const int8_t *xs[4] = {x0, x1, x2, x3}, *ws[4] = {w, w1, w2, w3};
        int32_t t[4], px, j;
        for (px = 0; px < 4; ++px) {
            for (j = 0; j < 4; ++j) {
                t[j] = ndot_tail(xs[px], ws[j], i, k);
            }
            r[px] = vaddq_s32(r[px], vld1q_s32(t));
        }
    }
}

/* 1 pixel x 4 output channels. */
MFN_ALWAYS_INLINE int32x4_t ntile1x4(const int8_t *x, const int8_t *w, int32_t w_step, int32_t k, int exact)
{
    const int8_t *w1 = w + w_step, *w2 = w1 + w_step, *w3 = w2 + w_step;
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0, r;
    int32_t i = 0;
    for (; i + 16 <= k; i += 16) {
        const int8x16_t v = vld1q_s8(x + i);
        int8x16_t c = vld1q_s8(w + i);
        NMAC(a0, v, c, exact);
        c = vld1q_s8(w1 + i);
        NMAC(a1, v, c, exact);
        c = vld1q_s8(w2 + i);
        NMAC(a2, v, c, exact);
        c = vld1q_s8(w3 + i);
        NMAC(a3, v, c, exact);
    }
    r = nsum4(a0, a1, a2, a3);
    if (i < k) {
        const int32_t t[4] = {ndot_tail(x, w, i, k), ndot_tail(x, w1, i, k), ndot_tail(x, w2, i, k),
                              ndot_tail(x, w3, i, k)};
        r = vaddq_s32(r, vld1q_s32(t));
    }
    return r;
}

/* Sums of 4 weight rows of k values, and whether any weight is -128. */
static int32x4_t nweight_sums(const int8_t *w, int32_t w_step, int32_t k, int *has_min)
{
    int32_t sums[4], j, i;
    int8x16_t lowest = vdupq_n_s8(127);
    int lowest_tail = 127;
    for (j = 0; j < 4; ++j) {
        const int8_t *row = w + j * w_step;
        int32x4_t acc = vdupq_n_s32(0);
        for (i = 0; i + 16 <= k; i += 16) {
            const int8x16_t v = vld1q_s8(row + i);
            acc = vpadalq_s16(acc, vpaddlq_s8(v));
            lowest = vminq_s8(lowest, v);
        }
        sums[j] = vaddvq_s32(acc);
        for (; i < k; ++i) {
            sums[j] += row[i];
            lowest_tail = row[i] < lowest_tail ? row[i] : lowest_tail;
        }
    }
    *has_min = vminvq_s8(lowest) == -128 || lowest_tail == -128;
    return vld1q_s32(sums);
}

/*
 * out pixels [0, npx) (output pixel index px0 + i) x channels [0, out_c & ~3) of a
 * 1x1 product: pixel i reads a + i * a_step (k values), channel oc the weights
 * w + oc * w_step. The rest of the channels (out_c % 4) are left to the caller.
 */
MFN_ALWAYS_INLINE void ngemm_k(const mfn_conv_t *p, const int8_t *a, int32_t a_step, int32_t npx, const int8_t *w,
                               int32_t w_step, int32_t k, void *out_row, int32_t px0, int prelu, int sat)
{
    const int32_t out_c = p->out_c, zp = p->in_zp, out16 = p->out_int16;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    int32_t oc, i, j;
    for (oc = 0; oc + 4 <= out_c; oc += 4) {
        const int8_t *wb = w + oc * w_step;
        int has_min;
        int32_t corr[4];
        nq_t q;
        vst1q_s32(corr, vmulq_n_s32(nweight_sums(wb, w_step, k, &has_min), zp));
        nq_load(&q, p, oc, corr);
        i = 0;
        if (has_min) {
            for (; i + 4 <= npx; i += 4) {
                int32x4_t r[4];
                ntile4x4(a + i * a_step, a_step, wb, w_step, k, 1, r);
                for (j = 0; j < 4; ++j) {
                    nstore4(out16, sat, out_row, (px0 + i + j) * out_c + oc, nfinal(&q, r[j], prelu, sat, &b));
                }
            }
        } else {
            for (; i + 4 <= npx; i += 4) {
                int32x4_t r[4];
                ntile4x4(a + i * a_step, a_step, wb, w_step, k, 0, r);
                for (j = 0; j < 4; ++j) {
                    nstore4(out16, sat, out_row, (px0 + i + j) * out_c + oc, nfinal(&q, r[j], prelu, sat, &b));
                }
            }
        }
        for (; i < npx; ++i) {
            const int32x4_t r = has_min ? ntile1x4(a + i * a_step, wb, w_step, k, 1)
                                        : ntile1x4(a + i * a_step, wb, w_step, k, 0);
            nstore4(out16, sat, out_row, (px0 + i) * out_c + oc, nfinal(&q, r, prelu, sat, &b));
        }
    }
}

static void ngemm(const mfn_conv_t *p, const int8_t *a, int32_t a_step, int32_t npx, const int8_t *w, int32_t w_step,
                  int32_t k, void *out_row, int32_t px0)
{
    const int prelu = p->neg_mult != 0, sat = nsat(p);
    if (prelu && sat) {
        ngemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 1, 1);
    } else if (prelu) {
        ngemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 1, 0);
    } else if (sat) {
        ngemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 0, 1);
    } else {
        ngemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 0, 0);
    }
}

static int opt_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row)
{
    /* raw sums of x * w (|x * w| <= 2^14) must fit int32, as the accumulators do */
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || !mfn_fits_int32(p->in_c, 128 * 128)) {
        return 0;
    }
    ngemm(p, (const int8_t *)in_row, p->stride_w * p->in_c, p->out_w, p->weights, p->in_c, p->in_c, out_row, 0);
    if (p->out_c & 3) {
        mfn_pointwise_scalar(p, (const int8_t *)in_row, out_row, p->out_c & ~3, p->out_c);
    }
    return 1;
}

/* Patches of a dense row, at most this many bytes at a time; weights padded likewise. */
#define MFN_PATCH_BYTES 4096
#define MFN_WPAD_BYTES 4096

static int opt_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    int8_t patches[MFN_PATCH_BYTES] __attribute__((aligned(16)));
    int8_t wpad[MFN_WPAD_BYTES] __attribute__((aligned(16)));
    const int32_t k = p->kh * p->kw * p->in_c, k_pad = (k + 15) & ~15;
    const int32_t chunk = MFN_PATCH_BYTES / k_pad, out_c4 = p->out_c & ~3;
    const int8_t *w = p->weights;
    int32_t px0, i;
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || k_pad > MFN_PATCH_BYTES ||
        (k != k_pad && out_c4 * k_pad > MFN_WPAD_BYTES) || !mfn_fits_int32(k, MFN_TERM_MAX) || !mfn_pad_is_int8(p)) {
        return 0;
    }
    if (k != k_pad) {
        mfn_pad_weights(p, 0, out_c4, k, k_pad, wpad);
        w = wpad;
    }
    for (px0 = 0; px0 < p->out_w; px0 += chunk) {
        const int32_t n = p->out_w - px0 < chunk ? p->out_w - px0 : chunk;
        for (i = 0; i < n; ++i) {
            mfn_dense_patch(p, rows, px0 + i, patches + i * k_pad, k_pad);
        }
        ngemm(p, patches, k_pad, n, w, k_pad, k_pad, out_row, px0);
        if (p->out_c & 3) { /* the last channels: each patch is a 1x1 input of k values */
            mfn_conv_t one = *p;
            one.in_c = k;
            one.stride_w = 1;
            one.out_w = 1;
            for (i = 0; i < n; ++i) {
                mfn_pointwise_scalar(&one, patches + i * k_pad,
                                     (int8_t *)out_row + (px0 + i) * p->out_c * (p->out_int16 ? 2 : 1), out_c4,
                                     p->out_c);
            }
        }
    }
    return 1;
}

/* Widest depthwise window the vector path keeps widened weights for. */
#define MFN_DW_MAX_TAPS 64

/* acc0..3 += (x - zp) * w for 16 channels: x int8, w widened (wl: channels 0-7, wh: 8-15). */
#define NDW_MAC(xv, wl, wh)                                                                  \
    do {                                                                                      \
        const int16x8_t xl_ = vsubl_s8(vget_low_s8(xv), zp8), xh_ = vsubl_high_s8(xv, zp16); \
        a0 = vmlal_s16(a0, vget_low_s16(xl_), vget_low_s16(wl));                              \
        a1 = vmlal_high_s16(a1, xl_, wl);                                                     \
        a2 = vmlal_s16(a2, vget_low_s16(xh_), vget_low_s16(wh));                              \
        a3 = vmlal_high_s16(a3, xh_, wh);                                                     \
    } while (0)

/*
 * One depthwise output row, 16 channels at a time; kw is a constant (3) where the
 * caller can make it one, so the window loop unrolls.
 */
MFN_ALWAYS_INLINE void ndw_row(const mfn_conv_t *p, const void *const *rows, void *out_row, int32_t kw, int prelu,
                               int sat)
{
    int16_t wide[MFN_DW_MAX_TAPS * 16] __attribute__((aligned(16)));
    const int32_t c = p->out_c, taps = p->kh * kw, zp = p->in_zp, out16 = p->out_int16;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const int8x8_t zp8 = vdup_n_s8((int8_t)zp);
    const int8x16_t zp16 = vdupq_n_s8((int8_t)zp);
    int32_t c0, t, ox, ky, kx, all_rows = 1;
    for (ky = 0; ky < p->kh; ++ky) {
        all_rows &= rows[ky] != 0;
    }
    for (c0 = 0; c0 + 16 <= c; c0 += 16) {
        int32x4_t padz[4];
        nq_t q[4];
        for (t = 0; t < taps; ++t) {
            const int8x16_t wv = vld1q_s8(p->weights + t * c + c0);
            vst1q_s16(wide + t * 16, vmovl_s8(vget_low_s8(wv)));
            vst1q_s16(wide + t * 16 + 8, vmovl_high_s8(wv));
        }
        for (t = 0; t < 4; ++t) {
            nq_load(&q[t], p, c0 + 4 * t, 0);
            if (p->pad_value) {
                const int16x4_t pv = vld1_s16(p->pad_value + c0 + 4 * t);
                padz[t] = vsubq_s32(vmovl_s16(pv), vdupq_n_s32(zp));
            }
        }
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
            if (all_rows && ix0 >= 0 && ix0 + kw <= p->in_w) {
                const int16_t *wk = wide;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int8_t *x = (const int8_t *)rows[ky] + ix0 * c + c0;
                    for (kx = 0; kx < kw; ++kx, wk += 16, x += c) {
                        const int8x16_t xv = vld1q_s8(x);
                        const int16x8_t wl = vld1q_s16(wk), wh = vld1q_s16(wk + 8);
                        NDW_MAC(xv, wl, wh);
                    }
                }
            } else {
                for (ky = 0; ky < p->kh; ++ky) {
                    const int8_t *row = (const int8_t *)rows[ky];
                    const int16_t *wk = wide + ky * kw * 16;
                    for (kx = 0; kx < kw; ++kx, wk += 16) {
                        const int16x8_t wl = vld1q_s16(wk), wh = vld1q_s16(wk + 8);
                        const int32_t ix = ix0 + kx;
                        if (row && ix >= 0 && ix < p->in_w) {
                            const int8x16_t xv = vld1q_s8(row + ix * c + c0);
                            NDW_MAC(xv, wl, wh);
                        } else if (p->pad_value) {
                            a0 = vmlaq_s32(a0, padz[0], vmovl_s16(vget_low_s16(wl)));
                            a1 = vmlaq_s32(a1, padz[1], vmovl_high_s16(wl));
                            a2 = vmlaq_s32(a2, padz[2], vmovl_s16(vget_low_s16(wh)));
                            a3 = vmlaq_s32(a3, padz[3], vmovl_high_s16(wh));
                        }
                    }
                }
            }
            a0 = nfinal(&q[0], a0, prelu, sat, &b);
            a1 = nfinal(&q[1], a1, prelu, sat, &b);
            a2 = nfinal(&q[2], a2, prelu, sat, &b);
            a3 = nfinal(&q[3], a3, prelu, sat, &b);
            if (out16) {
                int16_t *o = (int16_t *)out_row + ox * c + c0;
                if (sat) {
                    vst1q_s16(o, vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1)));
                    vst1q_s16(o + 8, vcombine_s16(vqmovn_s32(a2), vqmovn_s32(a3)));
                } else {
                    vst1q_s16(o, vcombine_s16(vmovn_s32(a0), vmovn_s32(a1)));
                    vst1q_s16(o + 8, vcombine_s16(vmovn_s32(a2), vmovn_s32(a3)));
                }
            } else if (sat) {
                const int16x8_t lo = vcombine_s16(vqmovn_s32(a0), vqmovn_s32(a1));
                const int16x8_t hi = vcombine_s16(vqmovn_s32(a2), vqmovn_s32(a3));
                vst1q_s8((int8_t *)out_row + ox * c + c0, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
            } else {
                const int16x8_t lo = vcombine_s16(vmovn_s32(a0), vmovn_s32(a1));
                const int16x8_t hi = vcombine_s16(vmovn_s32(a2), vmovn_s32(a3));
                vst1q_s8((int8_t *)out_row + ox * c + c0, vcombine_s8(vmovn_s16(lo), vmovn_s16(hi)));
            }
        }
    }
    if (c0 < c) {
        mfn_depthwise_scalar(p, rows, out_row, c0, c);
    }
}

static int opt_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    const int prelu = p->neg_mult != 0, sat = nsat(p);
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || p->kh * p->kw > MFN_DW_MAX_TAPS ||
        !mfn_fits_int32(p->kh * p->kw, p->pad_value ? MFN_PAD_TERM_MAX : MFN_TERM_MAX)) {
        return 0;
    }
    if (p->kw == 3) {
        if (prelu) {
            sat ? ndw_row(p, rows, out_row, 3, 1, 1) : ndw_row(p, rows, out_row, 3, 1, 0);
        } else {
            sat ? ndw_row(p, rows, out_row, 3, 0, 1) : ndw_row(p, rows, out_row, 3, 0, 0);
        }
    } else {
        ndw_row(p, rows, out_row, p->kw, prelu, sat);
    }
    return 1;
}

/* mfn_add, 16 elements a step; the last count % 16 by the portable arithmetic. */
MFN_ALWAYS_INLINE int32x4_t nadd_in(int16x8_t v, int high, int32x4_t mult, int32x4_t left, int32x4_t right)
{
    const int32x4_t x = high ? vmovl_high_s16(v) : vmovl_s16(vget_low_s16(v));
    return nrq(vshlq_n_s32(x, MFN_ADD_LEFT_SHIFT), mult, left, right);
}

static int opt_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t am = vdupq_n_s32(p->a_mult), bm = vdupq_n_s32(p->b_mult), om = vdupq_n_s32(p->out_mult);
    const int32x4_t as = vdupq_n_s32(p->a_shift), bs = vdupq_n_s32(p->b_shift), os = vdupq_n_s32(p->out_shift);
    const int32x4_t al = vmaxq_s32(as, zero), ar = vminq_s32(as, zero), bl = vmaxq_s32(bs, zero);
    const int32x4_t br = vminq_s32(bs, zero), ol = vmaxq_s32(os, zero), orr = vminq_s32(os, zero);
    const mfn_bounds_t bd = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const int32x4_t lo = vdupq_n_s32(bd.lo), hi = vdupq_n_s32(bd.hi), ozp = vdupq_n_s32(bd.zp);
    const int8x16_t azp = vdupq_n_s8((int8_t)p->a_zp), bzp = vdupq_n_s8((int8_t)p->b_zp);
    int32_t i = 0, h;
    if (p->a_zp < -128 || p->a_zp > 127 || p->b_zp < -128 || p->b_zp > 127) {
        return 0;
    }
    for (; i + 16 <= p->count; i += 16) {
        const int8x16_t av = vld1q_s8(a + i), bv = vld1q_s8(b + i);
        const int16x8_t ad[2] = {vsubl_s8(vget_low_s8(av), vget_low_s8(azp)), vsubl_high_s8(av, azp)};
        const int16x8_t bdv[2] = {vsubl_s8(vget_low_s8(bv), vget_low_s8(bzp)), vsubl_high_s8(bv, bzp)};
        int32x4_t r[4];
        for (h = 0; h < 4; ++h) {
            const int32x4_t sa = nadd_in(ad[h >> 1], h & 1, am, al, ar);
            const int32x4_t sb = nadd_in(bdv[h >> 1], h & 1, bm, bl, br);
            const int32x4_t sum = nrq(vaddq_s32(sa, sb), om, ol, orr);
            r[h] = vaddq_s32(vminq_s32(vmaxq_s32(sum, lo), hi), ozp);
        }
        vst1q_s8(out + i, vcombine_s8(vmovn_s16(vcombine_s16(vmovn_s32(r[0]), vmovn_s32(r[1]))),
                                      vmovn_s16(vcombine_s16(vmovn_s32(r[2]), vmovn_s32(r[3])))));
    }
    if (i < p->count) {
        mfn_add_t rest = *p;
        rest.count = p->count - i;
        mfn_add_portable(&rest, a + i, b + i, out + i);
    }
    return 1;
}
