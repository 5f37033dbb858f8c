/*
 * mfnc int8 kernels (C99, no malloc): portable reference and optimised variants.
 *
 * Reference implementations of every op a quantized MobileFaceNet needs, with
 * exactly the integer arithmetic of the golden simulator (calibration/golden.py):
 * TFLite's fixed-point requantization, the fused PReLU epilogue, and the 16x8
 * variants for int16 activations. Optimised variants must match these bit for bit.
 *
 * Activations are NHWC (channels last). Dense conv weights are [out_c][kh][kw][in_c],
 * depthwise weights [kh][kw][c].
 *
 * Structure: every convolution is computed one output row at a time by a row
 * routine (mfn_pointwise_row, mfn_depthwise_row, mfn_dense_row). mfn_conv walks the
 * rows of a whole tensor; mfn_expand_depthwise streams an expansion 1x1 conv into a
 * small ring of expanded rows and runs the depthwise on them, so the expanded tensor
 * never exists whole. An optimised (SIMD) variant replaces the row routines: NEON,
 * Helium (MVE), Armv7E-M DSP or AVX2, chosen at compile time from the target's
 * predefined macros; -DMFN_PORTABLE_KERNELS keeps the portable code (docs/kernels.md).
 *
 * Memory contract (the planner in compiler/backends/memory_plan.py relies on it):
 * the generated model may place a kernel's output so that it overlaps the bytes of
 * an input that dies with the call ("in place"). This is safe because the kernels
 * compute output rows in increasing order, one row at a time, and
 *   - mfn_conv reads, for output row y, only input rows >= y*stride_h - pad_top,
 *     and writes output row y only after rows before that are no longer needed;
 *   - mfn_expand_depthwise reads input rows only to fill the ring, in increasing
 *     order, and writes output row y after the ring holds every row it needs;
 *   - mfn_add and mfn_pixels_to_input read element i before writing element i.
 * A replacement must keep this order (it may vectorise within a row) and must not
 * declare the input and output pointers `restrict`.
 */
#ifndef MFN_KERNELS_H
#define MFN_KERNELS_H

#include <stdint.h>

/* Tallest kernel (rows) a row routine takes: the size of its row-pointer array. */
#define MFN_MAX_KERNEL_H 32

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

/*
 * Row routines: one output row (p->out_w pixels x p->out_c channels) each.
 * rows[ky] (ky < p->kh) points at input row oy*stride_h - pad_top + ky (in_w x in_c
 * values), or is NULL where that row is padding.
 */
/* 1x1 conv without padding: in_row is the input row oy*stride_h. */
void mfn_pointwise_row(const mfn_conv_t *p, const void *in_row, void *out_row);
/* Depthwise conv (multiplier 1), any kernel size, stride and padding. */
void mfn_depthwise_row(const mfn_conv_t *p, const void *const *rows, void *out_row);
/* Dense conv, any kernel size, stride and padding (e.g. the first 3x3 conv). */
void mfn_dense_row(const mfn_conv_t *p, const void *const *rows, void *out_row);
/* Picks one of the three above. */
void mfn_conv_row(const mfn_conv_t *p, const void *const *rows, void *out_row);

/* Whole-tensor convolution: mfn_conv_row over every output row, top to bottom. */
void mfn_conv(const mfn_conv_t *p, const void *input, void *output);

/*
 * Fused inverted-residual front: expand (1x1, stride 1, no padding) then dw
 * (depthwise, any kernel/stride/padding), without the expanded tensor.
 * ring: dw->kh expanded rows (dw->kh * dw->in_w * dw->in_c values of the expanded
 * type); each expanded row is computed once. Bit-exact with the two mfn_conv calls.
 */
void mfn_expand_depthwise(const mfn_conv_t *expand, const mfn_conv_t *dw, const void *input, void *ring,
                          void *output);

void mfn_add(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out);

/*
 * The portable reference routines, always compiled in: the optimised variant hands
 * them what it does not cover (int16 inputs, unusual shapes), and tests compare the
 * two on random data (tests/test_kernel_variants.py). The routines above give the
 * same integers for every input.
 */
void mfn_pointwise_row_portable(const mfn_conv_t *p, const void *in_row, void *out_row);
void mfn_depthwise_row_portable(const mfn_conv_t *p, const void *const *rows, void *out_row);
void mfn_dense_row_portable(const mfn_conv_t *p, const void *const *rows, void *out_row);
void mfn_add_portable(const mfn_add_t *p, const int8_t *a, const int8_t *b, int8_t *out);
/* The row routines this build uses: "neon", "mve", "dsp", "avx2" or "portable". */
const char *mfn_kernels_variant(void);
/* input may equal pixels (conversion in place). */
void mfn_pixels_to_input(const uint8_t *pixels, int8_t *input, int32_t count);

#endif
