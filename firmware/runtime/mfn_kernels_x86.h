/*
 * x86-64 AVX2 row routines (-march=native on an AVX2 machine, or -mavx2): included
 * by mfn_kernels.c only.
 *
 *   pointwise (1x1) and dense (each pixel's patch gathered): inputs widened once to
 *     int16 (x - zp, exact), weights widened per block of 4 output channels, then
 *     VPMADDWD over 2 pixels x 4 channels (16 products a step, int32 sums);
 *   depthwise: 16 channels at a time, (x - zp) * w in int16 (exact: |.| <= 255 * 128)
 *     widened into int32 sums;
 *   requantization on 8 lanes: the high multiply from two VPMULDQ (even and odd
 *     lanes, 64-bit products), the rounding divide by 2^n from the portable formula
 *     with per-lane VPSRAVD / VPSLLVD;
 *   add: 8 elements a step.
 * See mfn_kernels_common.h for the bit-exactness rules.
 */
#include <immintrin.h>

#include "mfn_kernels_common.h"

#define MFN_VARIANT "avx2"
#define MFN_OPT_POINTWISE 1
#define MFN_OPT_DEPTHWISE 1
#define MFN_OPT_DENSE 1
#define MFN_OPT_ADD 1

/* Requantization parameters of 8 lanes. */
typedef struct {
    __m256i bias, not_bias, mult, left, right, mask, half, nmult, nleft, nright, nmask, nhalf, sign;
} xq_t;

/* From per-lane parameter arrays (8 values each). */
static void xq_from(xq_t *q, const int32_t *bias, const int32_t *mult, const int32_t *shift, const int32_t *nmult,
                    const int32_t *nshift, const int32_t *sign)
{
    const __m256i zero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
    __m256i s = _mm256_loadu_si256((const __m256i *)shift);
    q->bias = _mm256_loadu_si256((const __m256i *)bias);
    q->not_bias = _mm256_xor_si256(q->bias, _mm256_set1_epi32(-1)); /* acc + bias < 0 (64-bit) <=> acc <= ~bias */
    q->mult = _mm256_loadu_si256((const __m256i *)mult);
    q->left = _mm256_max_epi32(s, zero);
    q->right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
    q->mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, q->right), one);
    q->half = _mm256_srli_epi32(q->mask, 1);
    if (nmult) {
        s = _mm256_loadu_si256((const __m256i *)nshift);
        q->nmult = _mm256_loadu_si256((const __m256i *)nmult);
        q->nleft = _mm256_max_epi32(s, zero);
        q->nright = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
        q->nmask = _mm256_sub_epi32(_mm256_sllv_epi32(one, q->nright), one);
        q->nhalf = _mm256_srli_epi32(q->nmask, 1);
        q->sign = _mm256_loadu_si256((const __m256i *)sign);
    } else {
        q->nmult = q->nleft = q->nright = q->nmask = q->nhalf = q->sign = zero;
    }
}

/*
 * Parameters of output channels oc + lane % n (lanes 0-3 and 4-7 the same 4 channels
 * when n = 4 and dup is set: two pixels side by side); lanes past the last channel
 * get zeros.
 */
static void xq_load(xq_t *q, const mfn_conv_t *p, int32_t oc, int32_t n, int dup)
{
    int32_t bias[8], mult[8], shift[8], nmult[8], nshift[8], sign[8], i;
    for (i = 0; i < 8; ++i) {
        const int32_t j = dup ? i & 3 : i, c = oc + j, ok = j < n && c < p->out_c;
        bias[i] = ok ? p->bias[c] : 0;
        mult[i] = ok ? p->mult[c] : 0;
        shift[i] = ok ? p->shift[c] : 0;
        nmult[i] = ok && p->neg_mult ? p->neg_mult[c] : 0;
        nshift[i] = ok && p->neg_mult ? p->neg_shift[c] : 0;
        sign[i] = ok && p->neg_mult ? p->neg_sign[c] : 0;
    }
    xq_from(q, bias, mult, shift, p->neg_mult ? nmult : 0, nshift, sign);
}

/* SaturatingRoundingDoublingHighMul on 8 lanes. */
MFN_ALWAYS_INLINE __m256i xhigh_mul(__m256i a, __m256i b)
{
    const __m256i nudge = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, b), nudge);
    const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32)), nudge);
    /* bits 31..62 of each product: floor((ab + 2^30) / 2^31), equal to gemmlowp's rounding */
    const __m256i r = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
    return _mm256_add_epi32(r, _mm256_cmpeq_epi32(r, _mm256_set1_epi32(INT32_MIN))); /* INT32_MIN^2 */
}

/* mfn_requantize on 8 lanes. */
MFN_ALWAYS_INLINE __m256i xrq(__m256i x, __m256i mult, __m256i left, __m256i right, __m256i mask, __m256i half)
{
    const __m256i v = xhigh_mul(_mm256_sllv_epi32(x, left), mult);
    const __m256i threshold = _mm256_sub_epi32(half, _mm256_srai_epi32(v, 31));
    return _mm256_sub_epi32(_mm256_srav_epi32(v, right), _mm256_cmpgt_epi32(_mm256_and_si256(v, mask), threshold));
}

/* epilogue() on 8 lanes: s = the int32 accumulators without bias. */
MFN_ALWAYS_INLINE __m256i xepi(const xq_t *q, __m256i s, int prelu, const mfn_bounds_t *b)
{
    const __m256i v = _mm256_add_epi32(s, q->bias);
    __m256i out = xrq(v, q->mult, q->left, q->right, q->mask, q->half);
    if (prelu) {
        const __m256i neg = xrq(v, q->nmult, q->nleft, q->nright, q->nmask, q->nhalf);
        out = _mm256_blendv_epi8(_mm256_mullo_epi32(neg, q->sign), out, _mm256_cmpgt_epi32(s, q->not_bias));
    }
    out = _mm256_min_epi32(_mm256_max_epi32(out, _mm256_set1_epi32(b->lo)), _mm256_set1_epi32(b->hi));
    return _mm256_add_epi32(out, _mm256_set1_epi32(b->zp));
}

/* The low byte (int8 output) or halfword (int16) of lanes 0-3 of a 128-bit half, packed. */
MFN_ALWAYS_INLINE __m128i xnarrow4(__m128i v, int out16)
{
    return out16 ? _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1))
                 : _mm_shuffle_epi8(v, _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
}

/* Stores lanes [0, n) of a 4-lane result at element index. */
MFN_ALWAYS_INLINE void xstore4(void *out, int32_t index, __m128i v, int32_t n, int out16)
{
    const __m128i packed = xnarrow4(v, out16);
    if (n == 4) {
        if (out16) {
            _mm_storel_epi64((__m128i *)((int16_t *)out + index), packed);
        } else {
            const int32_t bytes = _mm_cvtsi128_si32(packed);
            memcpy((int8_t *)out + index, &bytes, 4);
        }
    } else {
        uint8_t tmp[8];
        _mm_storel_epi64((__m128i *)tmp, packed);
        memcpy(out16 ? (void *)((int16_t *)out + index) : (void *)((int8_t *)out + index), tmp,
               (size_t)(n * (out16 ? 2 : 1)));
    }
}

/* Sum of the 8 lanes of each of four vectors: lane j of the result = sum of a_j. */
MFN_ALWAYS_INLINE __m128i xsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3)
{
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* int16 copies on the stack: inputs (x - zp) of a chunk of pixels, weights of 4 channels. */
#define MFN_XA_BYTES 32768
#define MFN_XB_VALUES 8192

/*
 * 1x1 product of int16 rows: pixels [0, npx) of A (stride kp, kp a multiple of 16,
 * zero-padded; an even number of rows is readable) times 4-channel weight blocks of
 * B (built here from w + oc * w_step, k values each), for every output channel.
 * Output pixel px0 + i.
 */
static void xgemm(const mfn_conv_t *p, const int16_t *a, int32_t kp, int32_t npx, const int8_t *w, int32_t w_step,
                  int32_t k, void *out_row, int32_t px0)
{
    int16_t bbuf[4 * MFN_XB_VALUES] __attribute__((aligned(32)));
    const int32_t out_c = p->out_c, out16 = p->out_int16;
    const int prelu = p->neg_mult != 0;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    int32_t oc, i, j, t;
    for (oc = 0; oc < out_c; oc += 4) {
        const int32_t n = out_c - oc < 4 ? out_c - oc : 4;
        xq_t q;
        for (j = 0; j < 4; ++j) {
            int16_t *row = bbuf + j * kp;
            if (j < n) {
                const int8_t *src = w + (oc + j) * w_step;
                for (t = 0; t + 16 <= k; t += 16) {
                    _mm256_store_si256((__m256i *)(row + t),
                                       _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + t))));
                }
                for (; t < k; ++t) {
                    row[t] = src[t];
                }
                for (; t < kp; ++t) {
                    row[t] = 0;
                }
            } else {
                memset(row, 0, (size_t)kp * 2);
            }
        }
        xq_load(&q, p, oc, n, 1);
        for (i = 0; i < npx; i += 2) {
            const int16_t *x0 = a + i * kp, *x1 = x0 + kp;
            __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a03 = a00;
            __m256i a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            for (t = 0; t < kp; t += 16) {
                const __m256i v0 = _mm256_load_si256((const __m256i *)(x0 + t));
                const __m256i v1 = _mm256_load_si256((const __m256i *)(x1 + t));
                __m256i c = _mm256_load_si256((const __m256i *)(bbuf + t));
                a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(v0, c));
                a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(v1, c));
                c = _mm256_load_si256((const __m256i *)(bbuf + kp + t));
                a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(v0, c));
                a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(v1, c));
                c = _mm256_load_si256((const __m256i *)(bbuf + 2 * kp + t));
                a02 = _mm256_add_epi32(a02, _mm256_madd_epi16(v0, c));
                a12 = _mm256_add_epi32(a12, _mm256_madd_epi16(v1, c));
                c = _mm256_load_si256((const __m256i *)(bbuf + 3 * kp + t));
                a03 = _mm256_add_epi32(a03, _mm256_madd_epi16(v0, c));
                a13 = _mm256_add_epi32(a13, _mm256_madd_epi16(v1, c));
            }
            {
                const __m256i s = _mm256_set_m128i(xsum4(a10, a11, a12, a13), xsum4(a00, a01, a02, a03));
                const __m256i r = xepi(&q, s, prelu, &b);
                xstore4(out_row, (px0 + i) * out_c + oc, _mm256_castsi256_si128(r), n, out16);
                if (i + 1 < npx) {
                    xstore4(out_row, (px0 + i + 1) * out_c + oc, _mm256_extracti128_si256(r, 1), n, out16);
                }
            }
        }
    }
}

/* Row values x - zp as int16, k of them, zero-padded to kp. */
MFN_ALWAYS_INLINE void xwiden(const int8_t *x, int32_t k, int32_t kp, int32_t zp, int16_t *dst)
{
    const __m256i z = _mm256_set1_epi16((int16_t)zp);
    int32_t t;
    for (t = 0; t + 16 <= k; t += 16) {
        _mm256_store_si256((__m256i *)(dst + t),
                           _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + t))), z));
    }
    for (; t < k; ++t) {
        dst[t] = (int16_t)(x[t] - zp);
    }
    for (; t < kp; ++t) {
        dst[t] = 0;
    }
}

static int opt_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row)
{
    int16_t abuf[MFN_XA_BYTES / 2] __attribute__((aligned(32)));
    const int32_t k = p->in_c, kp = (k + 15) & ~15, step = p->stride_w * k;
    const int32_t chunk = (MFN_XA_BYTES / 2 / kp) & ~1;
    int32_t px0, i;
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || kp > MFN_XB_VALUES || chunk < 2) {
        return 0;
    }
    for (px0 = 0; px0 < p->out_w; px0 += chunk) {
        const int32_t n = p->out_w - px0 < chunk ? p->out_w - px0 : chunk;
        for (i = 0; i < n; ++i) {
            xwiden((const int8_t *)in_row + (px0 + i) * step, k, kp, p->in_zp, abuf + i * kp);
        }
        if (n & 1) {
            memset(abuf + n * kp, 0, (size_t)kp * 2);
        }
        xgemm(p, abuf, kp, n, p->weights, k, k, out_row, px0);
    }
    return 1;
}

static int opt_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    int16_t abuf[MFN_XA_BYTES / 2] __attribute__((aligned(32)));
    int8_t patch[MFN_XB_VALUES];
    const int32_t k = p->kh * p->kw * p->in_c, kp = (k + 15) & ~15;
    const int32_t chunk = (MFN_XA_BYTES / 2 / kp) & ~1;
    int32_t px0, i;
    if (p->in_int16 || p->in_zp < -128 || p->in_zp > 127 || kp > MFN_XB_VALUES || chunk < 2 ||
        !mfn_fits_int32(k, MFN_TERM_MAX) || !mfn_pad_is_int8(p)) {
        return 0;
    }
    for (px0 = 0; px0 < p->out_w; px0 += chunk) {
        const int32_t n = p->out_w - px0 < chunk ? p->out_w - px0 : chunk;
        for (i = 0; i < n; ++i) {
            mfn_dense_patch(p, rows, px0 + i, patch, k);
            xwiden(patch, k, kp, p->in_zp, abuf + i * kp);
        }
        if (n & 1) {
            memset(abuf + n * kp, 0, (size_t)kp * 2);
        }
        xgemm(p, abuf, kp, n, p->weights, k, k, out_row, px0);
    }
    return 1;
}

/* Widest depthwise window the vector path keeps widened weights for. */
#define MFN_DW_MAX_TAPS 64

/* Stores 16 results (two 8-lane vectors) at element index. */
MFN_ALWAYS_INLINE void xstore16(void *out, int32_t index, __m256i lo, __m256i hi, int out16)
{
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    if (out16) { /* the low halfwords (truncation, as the portable store) */
        const __m256i idx = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9,
                                             12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m256i a = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(lo, idx), 0x08);
        const __m256i c = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(hi, idx), 0x08);
        _mm_storeu_si128((__m128i *)((int16_t *)out + index), _mm256_castsi256_si128(a));
        _mm_storeu_si128((__m128i *)((int16_t *)out + index + 8), _mm256_castsi256_si128(c));
    } else {
        const __m256i idx = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                             -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m256i a = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(lo, idx), perm);
        const __m256i c = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(hi, idx), perm);
        _mm_storeu_si128((__m128i *)((int8_t *)out + index),
                         _mm_unpacklo_epi64(_mm256_castsi256_si128(a), _mm256_castsi256_si128(c)));
    }
}

static int opt_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row)
{
    int16_t wide[MFN_DW_MAX_TAPS * 16] __attribute__((aligned(32)));
    const int32_t c = p->out_c, taps = p->kh * p->kw, zp = p->in_zp, out16 = p->out_int16;
    const int prelu = p->neg_mult != 0;
    const mfn_bounds_t b = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const __m256i z16 = _mm256_set1_epi16((int16_t)zp);
    int32_t c0, t, ox, ky, kx;
    if (p->in_int16 || zp < -128 || zp > 127 || taps > MFN_DW_MAX_TAPS ||
        !mfn_fits_int32(taps, p->pad_value ? MFN_PAD_TERM_MAX : MFN_TERM_MAX)) {
        return 0;
    }
    for (c0 = 0; c0 + 16 <= c; c0 += 16) {
        __m256i padz0 = _mm256_setzero_si256(), padz1 = padz0;
        xq_t q0, q1;
        for (t = 0; t < taps; ++t) {
            _mm256_store_si256((__m256i *)(wide + t * 16),
                               _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p->weights + t * c + c0))));
        }
        if (p->pad_value) {
            const __m256i pv = _mm256_loadu_si256((const __m256i *)(p->pad_value + c0));
            padz0 = _mm256_sub_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(pv)), _mm256_set1_epi32(zp));
            padz1 = _mm256_sub_epi32(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(pv, 1)), _mm256_set1_epi32(zp));
        }
        xq_load(&q0, p, c0, 8, 0);
        xq_load(&q1, p, c0 + 8, 8, 0);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int inside = ix0 >= 0 && ix0 + p->kw <= p->in_w;
            __m256i a0 = _mm256_setzero_si256(), a1 = a0;
            for (ky = 0; ky < p->kh; ++ky) {
                const int8_t *row = (const int8_t *)rows[ky];
                const int16_t *wk = wide + ky * p->kw * 16;
                for (kx = 0; kx < p->kw; ++kx, wk += 16) {
                    const __m256i wv = _mm256_load_si256((const __m256i *)wk);
                    const int32_t ix = ix0 + kx;
                    if (row && (inside || (ix >= 0 && ix < p->in_w))) {
                        const __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(row + ix * c + c0)));
                        const __m256i prod = _mm256_mullo_epi16(_mm256_sub_epi16(xv, z16), wv); /* exact in int16 */
                        a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(prod)));
                        a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(prod, 1)));
                    } else if (p->pad_value) {
                        a0 = _mm256_add_epi32(
                            a0, _mm256_mullo_epi32(padz0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(wv))));
                        a1 = _mm256_add_epi32(
                            a1, _mm256_mullo_epi32(padz1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(wv, 1))));
                    }
                }
            }
            xstore16(out_row, ox * c + c0, xepi(&q0, a0, prelu, &b), xepi(&q1, a1, prelu, &b), out16);
        }
    }
    if (c0 < c) {
        mfn_depthwise_scalar(p, rows, out_row, c0, c);
    }
    return 1;
}

/* mfn_add: 8 elements a step. */
MFN_ALWAYS_INLINE __m256i xadd_rq(__m256i x, __m256i mult, __m256i left, __m256i right)
{
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
    return xrq(x, mult, left, right, mask, _mm256_srli_epi32(mask, 1));
}

static int opt_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    const __m256i am = _mm256_set1_epi32(p->a_mult), bm = _mm256_set1_epi32(p->b_mult);
    const __m256i om = _mm256_set1_epi32(p->out_mult);
    const __m256i al = _mm256_set1_epi32(p->a_shift > 0 ? p->a_shift : 0);
    const __m256i ar = _mm256_set1_epi32(p->a_shift > 0 ? 0 : -p->a_shift);
    const __m256i bl = _mm256_set1_epi32(p->b_shift > 0 ? p->b_shift : 0);
    const __m256i br = _mm256_set1_epi32(p->b_shift > 0 ? 0 : -p->b_shift);
    const __m256i ol = _mm256_set1_epi32(p->out_shift > 0 ? p->out_shift : 0);
    const __m256i orr = _mm256_set1_epi32(p->out_shift > 0 ? 0 : -p->out_shift);
    const mfn_bounds_t bd = mfn_bounds(p->act_min, p->act_max, p->out_zp);
    const __m256i lo = _mm256_set1_epi32(bd.lo), hi = _mm256_set1_epi32(bd.hi), ozp = _mm256_set1_epi32(bd.zp);
    const __m256i azp = _mm256_set1_epi32(p->a_zp), bzp = _mm256_set1_epi32(p->b_zp);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i idx = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1,
                                         -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    int32_t i = 0;
    for (; i + 8 <= p->count; i += 8) {
        const __m256i av = _mm256_slli_epi32(
            _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(a + i))), azp), MFN_ADD_LEFT_SHIFT);
        const __m256i bv = _mm256_slli_epi32(
            _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + i))), bzp), MFN_ADD_LEFT_SHIFT);
        const __m256i sum =
            xadd_rq(_mm256_add_epi32(xadd_rq(av, am, al, ar), xadd_rq(bv, bm, bl, br)), om, ol, orr);
        const __m256i r = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(sum, lo), hi), ozp);
        _mm_storel_epi64((__m128i *)(out + i),
                         _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(r, idx), perm)));
    }
    if (i < p->count) {
        mfn_add_t rest = *p;
        rest.count = p->count - i;
        mfn_add_portable(&rest, a + i, b + i, out + i);
    }
    return 1;
}
