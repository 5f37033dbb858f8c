/*
 * Pieces shared by the optimised variants (mfn_kernels_<variant>.h). Included by
 * mfn_kernels.c only, after the portable code, whose static helpers (epilogue, store,
 * clamp) it uses. Not a public header.
 *
 * Bit-exactness rules every variant follows (docs/kernels.md):
 *   - int8 accumulators are computed in int32 with wrap-around (as the portable code)
 *     and may be split as sum(x * w) - zp * sum(w): equal modulo 2^32, and the true
 *     value fits int32 (the emitter's bound, checked again by the size guards here);
 *   - the PReLU test `acc + bias < 0` is made on the 64-bit value (a saturating add
 *     keeps its sign), the requantization takes the wrapped 32-bit value, as portable;
 *   - clamp(out + out_zp, lo, hi) is computed as clamp(out, lo - zp, hi - zp) + zp with
 *     the bounds formed in 64 bits: the same result as the portable 64-bit clamp,
 *     without a 32-bit overflow;
 *   - neg_sign is -1, 0 or +1 (the quantizer writes np.sign of the slope); the
 *     requantized value is never INT32_MIN, so sign * value never overflows.
 */
#ifndef MFN_KERNELS_COMMON_H
#define MFN_KERNELS_COMMON_H

#define MFN_ALWAYS_INLINE static inline __attribute__((always_inline))
/* Helpers a variant may not need. */
#define MFN_HELPER static __attribute__((unused))

/* The largest int32 accumulator terms: int8 input minus zero point, times an int8 weight. */
#define MFN_TERM_MAX (255 * 128)
/* A per-channel pad value minus the zero point can reach 32767 + 128. */
#define MFN_PAD_TERM_MAX ((32767 + 128) * 128)

/* Clamp bounds with the output zero point folded in: clamp(v, lo, hi) + zp. */
typedef struct {
    int32_t lo, hi, zp;
} mfn_bounds_t;

MFN_HELPER mfn_bounds_t mfn_bounds(int32_t act_min, int32_t act_max, int32_t zp)
{
    mfn_bounds_t b;
    int64_t lo = (int64_t)act_min - zp, hi = (int64_t)act_max - zp;
    b.lo = lo < INT32_MIN ? INT32_MIN : (lo > INT32_MAX ? INT32_MAX : (int32_t)lo);
    b.hi = hi < INT32_MIN ? INT32_MIN : (hi > INT32_MAX ? INT32_MAX : (int32_t)hi);
    b.zp = zp;
    return b;
}

/* 1 when sum_{K terms} |term| < 2^31 for terms of at most term_max: int32 is exact. */
MFN_HELPER int mfn_fits_int32(int64_t terms, int64_t term_max)
{
    return terms * term_max < ((int64_t)1 << 31);
}

/* Scalar fallbacks for the channels a vector loop leaves over (the portable arithmetic). */

/* Pointwise outputs oc in [oc_lo, oc_hi) of every pixel of the row (int8 input). */
MFN_HELPER void mfn_pointwise_scalar(const mfn_conv_t *p, const int8_t *in_row, void *out_row, int32_t oc_lo,
                                 int32_t oc_hi)
{
    const int32_t cin = p->in_c, step = p->stride_w * p->in_c, zp = p->in_zp;
    int32_t ox, oc, ic;
    for (ox = 0; ox < p->out_w; ++ox) {
        const int8_t *x = in_row + ox * step;
        for (oc = oc_lo; oc < oc_hi; ++oc) {
            const int8_t *w = p->weights + oc * cin;
            int32_t sum = 0;
            for (ic = 0; ic < cin; ++ic) {
                sum += (x[ic] - zp) * w[ic];
            }
            store(p, out_row, ox * p->out_c + oc, epilogue(p, oc, sum));
        }
    }
}

/* Depthwise channels [c_lo, c_hi) of every pixel of the row (int8 input). */
MFN_HELPER void mfn_depthwise_scalar(const mfn_conv_t *p, const void *const *rows, void *out_row, int32_t c_lo,
                                 int32_t c_hi)
{
    const int32_t c = p->out_c, zp = p->in_zp;
    int32_t ox, ch, ky, kx;
    for (ox = 0; ox < p->out_w; ++ox) {
        for (ch = c_lo; ch < c_hi; ++ch) {
            int64_t acc = 0;
            for (ky = 0; ky < p->kh; ++ky) {
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                    const int32_t w = p->weights[(ky * p->kw + kx) * c + ch];
                    if (rows[ky] == 0 || ix < 0 || ix >= p->in_w) {
                        if (p->pad_value) {
                            acc += (int64_t)(p->pad_value[ch] - zp) * w;
                        }
                    } else {
                        acc += (((const int8_t *)rows[ky])[ix * c + ch] - zp) * w;
                    }
                }
            }
            store(p, out_row, ox * c + ch, epilogue(p, ch, acc));
        }
    }
}

/*
 * One output pixel of a dense conv as a patch: the kh x kw x in_c input values it
 * reads, in the weights' [ky][kx][ic] order, padding as its value (the pad value, or
 * the zero point, which adds nothing), then zeros up to k_pad. Needs int8 pad values.
 */
MFN_HELPER void mfn_dense_patch(const mfn_conv_t *p, const void *const *rows, int32_t ox, int8_t *patch, int32_t k_pad)
{
    const int32_t cin = p->in_c;
    int32_t ky, kx, ic, k = 0;
    for (ky = 0; ky < p->kh; ++ky) {
        for (kx = 0; kx < p->kw; ++kx) {
            const int32_t ix = ox * p->stride_w - p->pad_left + kx;
            if (rows[ky] == 0 || ix < 0 || ix >= p->in_w) {
                for (ic = 0; ic < cin; ++ic) {
                    patch[k + ic] = (int8_t)(p->pad_value ? p->pad_value[ic] : p->in_zp);
                }
            } else {
                memcpy(patch + k, (const int8_t *)rows[ky] + ix * cin, (size_t)cin);
            }
            k += cin;
        }
    }
    for (; k < k_pad; ++k) {
        patch[k] = 0;
    }
}

/* 1 when every pad value (if any) is an int8 value: patches can hold them. */
MFN_HELPER int mfn_pad_is_int8(const mfn_conv_t *p)
{
    int32_t ic;
    if (p->pad_value) {
        for (ic = 0; ic < p->in_c; ++ic) {
            if (p->pad_value[ic] < -128 || p->pad_value[ic] > 127) {
                return 0;
            }
        }
    }
    return 1;
}

/* The weights of output channels [oc_lo, oc_hi) of a dense conv, each row zero-padded to k_pad. */
MFN_HELPER void mfn_pad_weights(const mfn_conv_t *p, int32_t oc_lo, int32_t oc_hi, int32_t k, int32_t k_pad,
                            int8_t *dst)
{
    int32_t oc;
    for (oc = oc_lo; oc < oc_hi; ++oc) {
        int8_t *row = dst + (oc - oc_lo) * k_pad;
        memcpy(row, p->weights + oc * k, (size_t)k);
        memset(row + k, 0, (size_t)(k_pad - k));
    }
}

#endif
