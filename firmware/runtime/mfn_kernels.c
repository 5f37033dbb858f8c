/* mfnc portable int8 kernels: see mfn_kernels.h. */
#include "mfn_kernels.h"

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

static int32_t clamp(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static int32_t load(const void *data, int is16, int32_t index)
{
    return is16 ? (int32_t)((const int16_t *)data)[index] : (int32_t)((const int8_t *)data)[index];
}

/* Bias, requantization, fused activation and clamp for one output value. */
static int32_t epilogue(const mfn_conv_t *p, int32_t oc, int64_t acc)
{
    int32_t out;
    acc += p->bias[oc];
    if (p->in_int16) {
        out = mfn_requantize64(acc, p->mult[oc], p->shift[oc]);
        if (acc < 0 && p->neg_mult) {
            out = p->neg_sign[oc] * mfn_requantize64(acc, p->neg_mult[oc], p->neg_shift[oc]);
        }
    } else {
        out = mfn_requantize((int32_t)acc, p->mult[oc], p->shift[oc]);
        if (acc < 0 && p->neg_mult) {
            out = p->neg_sign[oc] * mfn_requantize((int32_t)acc, p->neg_mult[oc], p->neg_shift[oc]);
        }
    }
    return clamp(out + p->out_zp, p->act_min, p->act_max);
}

void mfn_conv(const mfn_conv_t *p, const void *input, void *output)
{
    int32_t oy, ox, oc, ky, kx, ic;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            for (oc = 0; oc < p->out_c; ++oc) {
                int64_t acc = 0;
                for (ky = 0; ky < p->kh; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_top + ky;
                    for (kx = 0; kx < p->kw; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_left + kx;
                        const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                        const int32_t base = (iy * p->in_w + ix) * p->in_c;
                        const int32_t first = p->depthwise ? oc : 0;
                        const int32_t last = p->depthwise ? oc + 1 : p->in_c;
                        if (!inside && !p->pad_value) {
                            continue; /* padding equals the zero point: contributes nothing */
                        }
                        for (ic = first; ic < last; ++ic) {
                            const int32_t x = inside ? load(input, p->in_int16, base + ic) : p->pad_value[ic];
                            const int32_t w = p->depthwise
                                                  ? p->weights[(ky * p->kw + kx) * p->out_c + oc]
                                                  : p->weights[((oc * p->kh + ky) * p->kw + kx) * p->in_c + ic];
                            acc += (int64_t)(x - p->in_zp) * w;
                        }
                    }
                }
                {
                    const int32_t index = (oy * p->out_w + ox) * p->out_c + oc;
                    const int32_t value = epilogue(p, oc, acc);
                    if (p->out_int16) {
                        ((int16_t *)output)[index] = (int16_t)value;
                    } else {
                        ((int8_t *)output)[index] = (int8_t)value;
                    }
                }
            }
        }
    }
}

void mfn_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t sa = mfn_requantize((a[i] - p->a_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->a_mult, p->a_shift);
        const int32_t sb = mfn_requantize((b[i] - p->b_zp) * (1 << MFN_ADD_LEFT_SHIFT), p->b_mult, p->b_shift);
        const int32_t sum = mfn_requantize(sa + sb, p->out_mult, p->out_shift) + p->out_zp;
        out[i] = (int8_t)clamp(sum, p->act_min, p->act_max);
    }
}

void mfn_pixels_to_input(const uint8_t *pixels, int8_t *input, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; ++i) {
        input[i] = (int8_t)((int32_t)pixels[i] - 128);
    }
}
