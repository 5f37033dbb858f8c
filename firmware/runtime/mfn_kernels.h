/*
 * mfnc portable int8 kernels (C99, no malloc).
 *
 * Reference implementations of every op a quantized MobileFaceNet needs, with
 * exactly the integer arithmetic of the golden simulator (calibration/golden.py):
 * TFLite's fixed-point requantization, the fused PReLU epilogue, and the 16x8
 * variants for int16 activations. Optimised variants must match these bit for bit.
 *
 * Activations are NHWC (channels last). Dense conv weights are [out_c][kh][kw][in_c],
 * depthwise weights [kh][kw][c].
 */
#ifndef MFN_KERNELS_H
#define MFN_KERNELS_H

#include <stdint.h>

typedef struct {
    int in_h, in_w, in_c;
    int out_h, out_w, out_c;
    int kh, kw, stride_h, stride_w, pad_top, pad_left;
    int depthwise;  /* 1: out channel c reads input channel c only */
    int in_int16;   /* input activations are int16 (zero point 0) */
    int out_int16;  /* output activations are int16 */
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t *weights;
    const int32_t *bias;
    const int32_t *mult, *shift;          /* per output channel */
    const int32_t *neg_mult, *neg_shift;  /* fused PReLU: NULL when there is none */
    const int8_t *neg_sign;
    const int16_t *pad_value;             /* per input channel; NULL pads with in_zp */
} mfn_conv_t;

typedef struct {
    int32_t count;
    int32_t a_zp, b_zp, out_zp;
    int32_t a_mult, a_shift, b_mult, b_shift, out_mult, out_shift;
    int32_t act_min, act_max;
} mfn_add_t;

int32_t mfn_requantize(int32_t x, int32_t multiplier, int32_t shift);
int32_t mfn_requantize64(int64_t x, int32_t multiplier, int32_t shift);

void mfn_conv(const mfn_conv_t *p, const void *input, void *output);
void mfn_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out);
void mfn_pixels_to_input(const uint8_t *pixels, int8_t *input, int32_t count);

#endif
