/*
 * Helium (Armv8.1-M MVE, integer) row routines: included by mfn_kernels.c only.
 * Cortex-M55 (mps3-an547), built with -mcpu=cortex-m55 -mfloat-abi=hard.
 *
 *   pointwise (1x1): VMLADAVA (16 int8 products summed into a scalar int32, exact
 *     for every int8) over 2 pixels x 2 output channels; the zero point is taken out
 *     as zp * sum(w); the last k % 16 values with tail-predicated loads;
 *   dense (first 3x3 conv): each pixel's kh x kw x in_c patch gathered, then the same
 *     dot products (the predicated tail reads the weights in place);
 *   depthwise: 4 channels per vector, int8 loads widened to int32 (VLDRB.S32), the
 *     zero point taken out as zp * sum(w) over the window;
 *   requantization on 4 lanes: VQRDMULH, then VRSHL after subtracting 1 from negative
 *     values (ties away from zero), as NEON; VSTRB.32 stores the low bytes;
 *   add: 4 elements a step.
 * See mfn_kernels_common.h for the bit-exactness rules.
 */
#include <arm_mve.h>

#include "mfn_kernels_common.h"

#define MFN_VARIANT "mve"
#define MFN_OPT_POINTWISE 1
#define MFN_OPT_DEPTHWISE 1
#define MFN_OPT_DENSE 1
#define MFN_OPT_ADD 1

/* Requantization parameters of 4 consecutive output channels. */
typedef struct {
    int32x4_t bias, mult, left, right, nmult, nleft, nright, sign;
} mq_t;

static void mq_load(mq_t *q, const mfn_conv_t *p, int32_t oc)
{
    const int32x4_t zero = vdupq_n_s32(0);
    int32x4_t s = vldrwq_s32(p->shift + oc);
    q->bias = vldrwq_s32(p->bias + oc);
    q->mult = vldrwq_s32(p->mult + oc);
    q->left = vmaxq_s32(s, zero);
    q->right = vminq_s32(s, zero); /* minus the right shift, for VRSHL */
    if (p->neg_mult) {
        s = vldrwq_s32(p->neg_shift + oc);
        q->nmult = vldrwq_s32(p->neg_mult + oc);
        q->nleft = vmaxq_s32(s, zero);
        q->nright = vminq_s32(s, zero);
        q->sign = vldrbq_s32(p->neg_sign + oc);
    } else {
        q->nmult = q->nleft = q->nright = q->sign = zero;
    }
}

/* mfn_requantize on 4 lanes; right = -(right shift). */
MFN_ALWAYS_INLINE int32x4_t mrq(int32x4_t x, int32x4_t mult, int32x4_t left, int32x4_t right)
{
    x = vqrdmulhq_s32(vshlq_s32(x, left), mult);
    x = vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, right), 31)); /* negative: one less, so ties go away from 0 */
    return vrshlq_s32(x, right);
}

MFN_ALWAYS_INLINE void mstore4(int out16, void *out, int32_t index, int32x4_t v)
{
    if (out16) {
        vstrhq_s32((int16_t *)out + index, v);
    } else {
        vstrbq_s32((int8_t *)out + index, v);
    }
}

/* Sum of k weights. */
static int32_t msum(const int8_t *w, int32_t k)
{
    int32_t sum = 0, n;
    for (n = k >> 4; n > 0; --n, w += 16) {
        sum = vaddvaq_s8(sum, vldrbq_s8(w));
    }
    if (k & 15) {
        sum = vaddvaq_s8(sum, vldrbq_z_s8(w, vctp8q((uint32_t)(k & 15))));
    }
    return sum;
}

/*
 * Dot products of 2 pixels x 2 weight rows over k values: s0[row] (pixel 0), s1[row].
 * Pointers step (post-increment loads: VLDRB has no register offset).
 */
MFN_ALWAYS_INLINE void mtile2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t k,
                                int32_t *s0, int32_t *s1)
{
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, n;
    for (n = k >> 4; n > 0; --n) {
        const int8x16_t v0 = vldrbq_s8(x0), v1 = vldrbq_s8(x1);
        const int8x16_t c0 = vldrbq_s8(w0), c1 = vldrbq_s8(w1);
        x0 += 16;
        x1 += 16;
        w0 += 16;
        w1 += 16;
        a00 = vmladavaq_s8(a00, v0, c0);
        a10 = vmladavaq_s8(a10, v1, c0);
        a01 = vmladavaq_s8(a01, v0, c1);
        a11 = vmladavaq_s8(a11, v1, c1);
    }
    if (k & 15) {
        const mve_pred16_t pr = vctp8q((uint32_t)(k & 15));
        const int8x16_t v0 = vldrbq_z_s8(x0, pr), v1 = vldrbq_z_s8(x1, pr);
        const int8x16_t c0 = vldrbq_z_s8(w0, pr), c1 = vldrbq_z_s8(w1, pr);
        a00 = vmladavaq_s8(a00, v0, c0);
        a10 = vmladavaq_s8(a10, v1, c0);
        a01 = vmladavaq_s8(a01, v0, c1);
        a11 = vmladavaq_s8(a11, v1, c1);
    }
    s0[0] = a00;
    s0[1] = a01;
    s1[0] = a10;
    s1[1] = a11;
}

/* 1 pixel x 4 weight rows. */
MFN_ALWAYS_INLINE void mtile1x4(const int8_t *x, const int8_t *w0, int32_t w_step, int32_t k, int32_t *s)
{
    const int8_t *w1 = w0 + w_step, *w2 = w1 + w_step, *w3 = w2 + w_step;
    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, n;
    for (n = k >> 4; n > 0; --n) {
        const int8x16_t v = vldrbq_s8(x);
        a0 = vmladavaq_s8(a0, v, vldrbq_s8(w0));
        a1 = vmladavaq_s8(a1, v, vldrbq_s8(w1));
        a2 = vmladavaq_s8(a2, v, vldrbq_s8(w2));
        a3 = vmladavaq_s8(a3, v, vldrbq_s8(w3));
        x += 16;
        w0 += 16;
        w1 += 16;
        w2 += 16;
        w3 += 16;
    }
    if (k & 15) {
        const mve_pred16_t pr = vctp8q((uint32_t)(k & 15));
        const int8x16_t v = vldrbq_z_s8(x, pr);
        a0 = vmladavaq_s8(a0, v, vldrbq_z_s8(w0, pr));
        a1 = vmladavaq_s8(a1, v, vldrbq_z_s8(w1, pr));
        a2 = vmladavaq_s8(a2, v, vldrbq_z_s8(w2, pr));
        a3 = vmladavaq_s8(a3, v, vldrbq_z_s8(w3, pr));
    }
    s[0] = a0;
    s[1] = a1;
    s[2] = a2;
    s[3] = a3;
}

/* epilogue() before the clamp: the requantized value of 4 lanes. */
MFN_ALWAYS_INLINE int32x4_t mrequant(const mq_t *q, int32x4_t s, int prelu)
{
    const int32x4_t v = vaddq_s32(s, q->bias);
    int32x4_t out = mrq(v, q->mult, q->left, q->right);
    if (prelu) {
        const mve_pred16_t neg = vcmpltq_n_s32(vqaddq_s32(s, q->bias), 0); /* the sign of the 64-bit sum */
        out = vpselq_s32(vmulq_s32(mrq(v, q->nmult, q->nleft, q->nright), q->sign), out, neg);
    }
    return out;
}

/*
 * Clamps and stores 4 lanes at element index. sat: [act_min, act_max] is the whole
 * output type, so a saturating add of the zero point and saturating narrowing give
 * the 64-bit clamp; else compare.
 */
MFN_ALWAYS_INLINE void mout4(void *out, int32_t index, int32x4_t v, int out16, int sat, const mfn_bounds_t *b)
{
    if (sat) {
        const int16x8_t h = vqmovnbq_s32(vdupq_n_s16(0), vqaddq_n_s32(v, b->zp)); /* lanes 0, 2, 4, 6 */
        if (out16) {
            vstrhq_s32((int16_t *)out + index, vreinterpretq_s32_s16(h));
        } else {
            vstrbq_s32((int8_t *)out + index, vreinterpretq_s32_s8(vqmovnbq_s16(vdupq_n_s8(0), h)));
        }
        return;
    }
    v = vaddq_n_s32(vminq_s32(vmaxq_s32(v, vdupq_n_s32(b->lo)), vdupq_n_s32(b->hi)), b->zp);
    mstore4(out16, out, index, v);
}

/*
 * Pixels [0, npx) (output pixel px0 + i) x channels [0, out_c & ~3) of a 1x1
 * product: pixel i reads a + i * a_step (k values), channel oc the weights
 * w + oc * w_step. The caller does the last out_c % 4 channels.
 */
MFN_ALWAYS_INLINE void mgemm_k(const mfn_conv_t *p, const int8_t *a, int32_t a_step, int32_t npx, const int8_t *w,
                               int32_t w_step, int32_t k, void *out_row, int32_t px0, int prelu, int sat)
{
    const int32_t out_c = p->out_c, out16 = p->out_int16;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    int32_t oc, i;
    for (oc = 0; oc + 4 <= out_c; oc += 4) {
        const int8_t *wb = w + oc * w_step;
        int32_t sums[4] __attribute__((aligned(8)));
        int32_t s[8] __attribute__((aligned(8)));
        int32x4_t corr;
        mq_t q;
        sums[0] = msum(wb, k);
        sums[1] = msum(wb + w_step, k);
        sums[2] = msum(wb + 2 * w_step, k);
        sums[3] = msum(wb + 3 * w_step, k);
        corr = vmulq_n_s32(vldrwq_s32(sums), p->in_zp);
        mq_load(&q, p, oc);
        for (i = 0; i + 2 <= npx; i += 2) {
            const int8_t *x0 = a + i * a_step, *x1 = x0 + a_step;
            /* (vcreateq_s32 is avoided: GCC 12 swaps its two halves) */
            mtile2x2(x0, x1, wb, wb + w_step, k, s, s + 4);
            mtile2x2(x0, x1, wb + 2 * w_step, wb + 3 * w_step, k, s + 2, s + 6);
            mout4(out_row, (px0 + i) * out_c + oc, mrequant(&q, vsubq_s32(vldrwq_s32(s), corr), prelu), out16, sat,
                  &b);
            mout4(out_row, (px0 + i + 1) * out_c + oc, mrequant(&q, vsubq_s32(vldrwq_s32(s + 4), corr), prelu),
                  out16, sat, &b);
        }
        if (i < npx) {
            mtile1x4(a + i * a_step, wb, w_step, k, s);
            mout4(out_row, (px0 + i) * out_c + oc, mrequant(&q, vsubq_s32(vldrwq_s32(s), corr), prelu), out16, sat,
                  &b);
        }
    }
}

static void mgemm(const mfn_conv_t *p, const int8_t *a, int32_t a_step, int32_t npx, const int8_t *w, int32_t w_step,
                  int32_t k, void *out_row, int32_t px0)
{
    const int prelu = p->neg_mult != 0;
    const int sat = p->out_int16 ? p->act_min == -32768 && p->act_max == 32767 : p->act_min == -128 && p->act_max == 127;
    if (prelu && sat) {
        mgemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 1, 1);
    } else if (prelu) {
        mgemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 1, 0);
    } else if (sat) {
        mgemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 0, 1);
    } else {
        mgemm_k(p, a, a_step, npx, w, w_step, k, out_row, px0, 0, 0);
    }
}

static int opt_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row)
{
    if (p->in_int16) {
        return 0;
    }
    mgemm(p, (const int8_t *)in_row, p->stride_w * p->in_c, p->out_w, p->weights, p->in_c, p->in_c, out_row, 0);
    if (p->out_c & 3) {
        mfn_pointwise_scalar(p, (const int8_t *)in_row, out_row, p->out_c & ~3, p->out_c);
    }
    return 1;
}

/* Patches of a dense row, at most this many bytes at a time. */
#define MFN_PATCH_BYTES 2048

static int opt_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    int8_t patches[MFN_PATCH_BYTES] __attribute__((aligned(16)));
    const int32_t k = p->kh * p->kw * p->in_c, chunk = MFN_PATCH_BYTES / (k > 0 ? k : 1);
    const int32_t out_c4 = p->out_c & ~3;
    int32_t px0, i;
    if (p->in_int16 || k > MFN_PATCH_BYTES || !mfn_fits_int32(k, MFN_TERM_MAX) || !mfn_pad_is_int8(p)) {
        return 0;
    }
    for (px0 = 0; px0 < p->out_w; px0 += chunk) {
        const int32_t n = p->out_w - px0 < chunk ? p->out_w - px0 : chunk;
        for (i = 0; i < n; ++i) {
            mfn_dense_patch(p, rows, px0 + i, patches + i * k, k);
        }
        mgemm(p, patches, k, n, p->weights, k, k, out_row, px0);
        if (p->out_c & 3) { /* the last channels: the patches are 1x1 inputs of k values */
            mfn_conv_t one = *p;
            one.in_c = k;
            one.stride_w = 1;
            one.out_w = n;
            mfn_pointwise_scalar(&one, patches, (int8_t *)out_row + px0 * p->out_c * (p->out_int16 ? 2 : 1), out_c4,
                                 p->out_c);
        }
    }
    return 1;
}

/* Widest depthwise window handled here. */
#define MFN_DW_MAX_TAPS 64

/* Requantization parameters of the even (or odd) channels of the 8 from c0: lanes c0 + 2i + odd. */
static void mq_load_strided(mq_t *q, const mfn_conv_t *p, int32_t c0, int32_t odd)
{
    const uint32x4_t even_offsets = vidupq_n_u32(0, 2); /* 0, 2, 4, 6 */
    const uint32x4_t idx = vaddq_n_u32(even_offsets, (uint32_t)odd);
    const int32x4_t zero = vdupq_n_s32(0);
    int32x4_t s = vldrwq_gather_shifted_offset_s32(p->shift + c0, idx);
    q->bias = vldrwq_gather_shifted_offset_s32(p->bias + c0, idx);
    q->mult = vldrwq_gather_shifted_offset_s32(p->mult + c0, idx);
    q->left = vmaxq_s32(s, zero);
    q->right = vminq_s32(s, zero);
    if (p->neg_mult) {
        s = vldrwq_gather_shifted_offset_s32(p->neg_shift + c0, idx);
        q->nmult = vldrwq_gather_shifted_offset_s32(p->neg_mult + c0, idx);
        q->nleft = vmaxq_s32(s, zero);
        q->nright = vminq_s32(s, zero);
        q->sign = vldrbq_gather_offset_s32(p->neg_sign + c0, idx);
    } else {
        q->nmult = q->nleft = q->nright = q->sign = zero;
    }
}

/*
 * Stores 8 consecutive channels from their even (e) and odd (o) lanes, clamped.
 * sat: [act_min, act_max] is the whole output type, so a saturating add of the zero
 * point and saturating narrowing give the 64-bit clamp; else compare.
 */
MFN_ALWAYS_INLINE void mstore8(void *out, int32_t index, int32x4_t e, int32x4_t o, int out16, int sat,
                               const mfn_bounds_t *b)
{
    int16x8_t h = vdupq_n_s16(0);
    if (sat) {
        e = vqaddq_n_s32(e, b->zp);
        o = vqaddq_n_s32(o, b->zp);
        h = vqmovntq_s32(vqmovnbq_s32(h, e), o); /* channel order: e0 o0 e1 o1 ... */
        if (out16) {
            vstrhq_s16((int16_t *)out + index, h);
        } else {
            vstrbq_s16((int8_t *)out + index, vreinterpretq_s16_s8(vqmovnbq_s16(vdupq_n_s8(0), h)));
        }
        return;
    }
    e = vaddq_n_s32(vminq_s32(vmaxq_s32(e, vdupq_n_s32(b->lo)), vdupq_n_s32(b->hi)), b->zp);
    o = vaddq_n_s32(vminq_s32(vmaxq_s32(o, vdupq_n_s32(b->lo)), vdupq_n_s32(b->hi)), b->zp);
    h = vmovntq_s32(vmovnbq_s32(h, e), o); /* truncating, as the portable store */
    if (out16) {
        vstrhq_s16((int16_t *)out + index, h);
    } else {
        vstrbq_s16((int8_t *)out + index, h);
    }
}

/*
 * Depthwise, 8 channels at a time in int16 lanes: VMULLB/VMULLT multiply the even and
 * odd channels into int32 sums (raw x * w, the zero point taken out as zp * sum(w));
 * padding multiplies the pad value (or the zero point) instead of an input.
 */
static int opt_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    const int32_t c = p->out_c, taps = p->kh * p->kw, zp = p->in_zp, out16 = p->out_int16;
    const int prelu = p->neg_mult != 0;
    const int sat = out16 ? p->act_min == -32768 && p->act_max == 32767 : p->act_min == -128 && p->act_max == 127;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    int32_t c0, ox, ky, kx, t;
    if (p->in_int16 || zp < -128 || zp > 127 || taps > MFN_DW_MAX_TAPS ||
        !mfn_fits_int32(taps, p->pad_value ? MFN_PAD_TERM_MAX : MFN_TERM_MAX)) {
        return 0;
    }
    for (c0 = 0; c0 + 8 <= c; c0 += 8) {
        const int8_t *wc = p->weights + c0;
        const int16x8_t padv = p->pad_value ? vldrhq_s16(p->pad_value + c0) : vdupq_n_s16((int16_t)zp);
        int32x4_t ce = vdupq_n_s32(0), co = ce;
        mq_t qe, qo;
        for (t = 0; t < taps; ++t) {
            const int16x8_t wv = vldrbq_s16(wc + t * c);
            ce = vaddq_s32(ce, vmovlbq_s16(wv));
            co = vaddq_s32(co, vmovltq_s16(wv));
        }
        ce = vmulq_n_s32(ce, zp);
        co = vmulq_n_s32(co, zp);
        mq_load_strided(&qe, p, c0, 0);
        mq_load_strided(&qo, p, c0, 1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int32x4_t e = vdupq_n_s32(0), o = e;
            if (ix0 >= 0 && ix0 + p->kw <= p->in_w) {
                for (ky = 0; ky < p->kh; ++ky) {
                    const int8_t *wk = wc + ky * p->kw * c;
                    if (rows[ky]) {
                        const int8_t *x = (const int8_t *)rows[ky] + ix0 * c + c0;
                        for (kx = 0; kx < p->kw; ++kx, x += c, wk += c) {
                            const int16x8_t xv = vldrbq_s16(x), wv = vldrbq_s16(wk);
                            e = vaddq_s32(e, vmullbq_int_s16(xv, wv));
                            o = vaddq_s32(o, vmulltq_int_s16(xv, wv));
                        }
                    } else {
                        for (kx = 0; kx < p->kw; ++kx, wk += c) {
                            const int16x8_t wv = vldrbq_s16(wk);
                            e = vaddq_s32(e, vmullbq_int_s16(padv, wv));
                            o = vaddq_s32(o, vmulltq_int_s16(padv, wv));
                        }
                    }
                }
            } else {
                for (ky = 0; ky < p->kh; ++ky) {
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ix0 + kx;
                        const int16x8_t wv = vldrbq_s16(wc + (ky * p->kw + kx) * c);
                        const int16x8_t xv = rows[ky] && ix >= 0 && ix < p->in_w
                                                 ? vldrbq_s16((const int8_t *)rows[ky] + ix * c + c0)
                                                 : padv;
                        e = vaddq_s32(e, vmullbq_int_s16(xv, wv));
                        o = vaddq_s32(o, vmulltq_int_s16(xv, wv));
                    }
                }
            }
            e = mrequant(&qe, vsubq_s32(e, ce), prelu);
            o = mrequant(&qo, vsubq_s32(o, co), prelu);
            if (sat) {
                mstore8(out_row, ox * c + c0, e, o, out16, 1, &b);
            } else {
                mstore8(out_row, ox * c + c0, e, o, out16, 0, &b);
            }
        }
    }
    if (c0 < c) {
        mfn_depthwise_scalar(p, rows, out_row, c0, c);
    }
    return 1;
}

/* mfn_add: 4 elements a step (the int8 loads widen to int32). */
static int opt_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t am = vdupq_n_s32(p->a_mult), bm = vdupq_n_s32(p->b_mult), om = vdupq_n_s32(p->out_mult);
    const int32x4_t as = vdupq_n_s32(p->a_shift), bs = vdupq_n_s32(p->b_shift), os = vdupq_n_s32(p->out_shift);
    const int32x4_t al = vmaxq_s32(as, zero), ar = vminq_s32(as, zero), bl = vmaxq_s32(bs, zero);
    const int32x4_t br = vminq_s32(bs, zero), ol = vmaxq_s32(os, zero), orr = vminq_s32(os, zero);
    const mfn_bounds_t bd = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const int32x4_t lo = vdupq_n_s32(bd.lo), hi = vdupq_n_s32(bd.hi), ozp = vdupq_n_s32(bd.zp);
    int32_t i = 0;
    for (; i + 4 <= p->count; i += 4) {
        const int32x4_t av = vshlq_n_s32(vsubq_n_s32(vldrbq_s32(a + i), p->a_zp), MFN_ADD_LEFT_SHIFT);
        const int32x4_t bv = vshlq_n_s32(vsubq_n_s32(vldrbq_s32(b + i), p->b_zp), MFN_ADD_LEFT_SHIFT);
        const int32x4_t sum = mrq(vaddq_s32(mrq(av, am, al, ar), mrq(bv, bm, bl, br)), om, ol, orr);
        vstrbq_s32(out + i, vaddq_s32(vminq_s32(vmaxq_s32(sum, lo), hi), ozp));
    }
    if (i < p->count) {
        mfn_add_t rest = *p;
        rest.count = p->count - i;
        mfn_add_portable(&rest, a + i, b + i, out + i);
    }
    return 1;
}
