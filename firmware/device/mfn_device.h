/*
 * The device side of the HIL protocol: one command loop shared by every device
 * program. A program describes its model with mfn_device_model_t and calls
 * mfn_device_serve(); the board behind it is mfn_port.h.
 */
#ifndef MFN_DEVICE_H
#define MFN_DEVICE_H

#include <stdint.h>

#define MFN_MAX_TIMED_RUNS 64u
#define MFN_MAX_LAYERS 256u
#define MFN_MAX_OUTPUT_BYTES 2048u

typedef void (*mfn_device_hook_t)(int32_t layer, void *context);

typedef struct {
    const char *target;      /* target name, e.g. "mps3-an547" */
    const char *backend;     /* "c", "tvm", "rknn" */
    const char *model_hash;  /* SHA-256 of the source model */
    const char *input_shape; /* "HxWxC" */
    const char *output_dtype;
    const char *kernels;     /* which kernel variant runs: "portable", "neon", "mve", ... */
    uint32_t input_bytes, output_count, output_bytes, arena_bytes, layer_count;
    uint8_t *input;          /* input_bytes of storage the host uploads into */
    /* Run the model once on input; hook (may be NULL) is called after each layer. */
    void (*run)(const uint8_t *input, uint8_t *output, mfn_device_hook_t hook, void *context);
} mfn_device_model_t;

/* Serve the protocol until the link closes for good (host programs) or forever. */
void mfn_device_serve(const mfn_device_model_t *model);

#endif
