/*
 * The device program for the C backend: the generated model (model.h) served over
 * the HIL protocol on whatever link the board port provides.
 */
#include <stddef.h>

#include "mfn_device.h"
#include "mfn_kernels.h"
#include "mfn_port.h"
#include "model.h"

#ifndef MFN_TARGET
#define MFN_TARGET "unknown"
#endif

#if MFN_OUTPUT_BYTES > MFN_MAX_OUTPUT_BYTES
#error "the model's output is larger than the protocol's output buffer"
#endif
#if MFN_LAYER_COUNT > MFN_MAX_LAYERS
#error "the model has more layers than the protocol can time"
#endif

#define MFN_STR2(x) #x
#define MFN_STR(x) MFN_STR2(x)

/* The upload buffer: the raw RGB image the host sends with LOAD. */
static uint8_t pixels[MFN_INPUT_BYTES];

static void run_model(const uint8_t *input, uint8_t *output, mfn_device_hook_t hook, void *context)
{
    mfn_model_run(input, output, hook, context);
}

int main(void)
{
    static const mfn_device_model_t model = {
        MFN_TARGET,
        "c",
        MFN_MODEL_HASH,
        MFN_STR(MFN_INPUT_H) "x" MFN_STR(MFN_INPUT_W) "x" MFN_STR(MFN_INPUT_C),
        MFN_OUTPUT_INT16 ? "int16" : "int8",
        NULL,
        MFN_INPUT_BYTES,
        MFN_OUTPUT_COUNT,
        MFN_OUTPUT_BYTES,
        MFN_ARENA_BYTES,
        MFN_LAYER_COUNT,
        pixels,
        run_model,
    };
    mfn_device_model_t served = model;
    served.kernels = mfn_kernels_variant();
    mfn_port_init();
    mfn_device_serve(&served);
    return 0;
}
