/*
 * A fake librknnrt.so for testing mfn_rknn_runner without an NPU. Its "model" file is
 * "FAKERKNN" + uint32 D (little endian); running it on an input of N bytes gives D
 * floats, out[k] = mean of the input bytes at positions i with i % D == k, which a
 * test recomputes in numpy. It checks the calls the real runtime would refuse.
 */
#include <stdint.h>
#include <string.h>

#include "rknn_api.h"

#define MAX_OUT 1024
#define MAX_IN (1024 * 1024)

static uint32_t outputs_n;
static uint8_t input[MAX_IN];
static uint32_t input_size;
static float result[MAX_OUT];

int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag, rknn_init_extend *extend)
{
    (void)flag;
    (void)extend;
    if (size < 12 || memcmp(model, "FAKERKNN", 8) != 0) {
        return RKNN_ERR_MODEL_INVALID;
    }
    const uint8_t *p = (const uint8_t *)model + 8;
    outputs_n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (outputs_n == 0 || outputs_n > MAX_OUT) {
        return RKNN_ERR_MODEL_INVALID;
    }
    *context = 1;
    return RKNN_SUCC;
}

int rknn_destroy(rknn_context context)
{
    return context == 1 ? RKNN_SUCC : RKNN_ERR_PARAM_INVALID;
}

int rknn_query(rknn_context context, rknn_query_cmd cmd, void *info, uint32_t size)
{
    if (context != 1 || cmd != RKNN_QUERY_IN_OUT_NUM || size != sizeof(rknn_input_output_num)) {
        return RKNN_ERR_PARAM_INVALID;
    }
    rknn_input_output_num *io = (rknn_input_output_num *)info;
    io->n_input = 1;
    io->n_output = 1;
    return RKNN_SUCC;
}

int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input inputs[])
{
    if (context != 1 || n_inputs != 1 || inputs[0].size > MAX_IN || inputs[0].type != RKNN_TENSOR_UINT8 ||
        inputs[0].fmt != RKNN_TENSOR_NHWC || inputs[0].pass_through != 0) {
        return RKNN_ERR_PARAM_INVALID;
    }
    memcpy(input, inputs[0].buf, inputs[0].size);
    input_size = inputs[0].size;
    return RKNN_SUCC;
}

int rknn_run(rknn_context context, rknn_run_extend *extend)
{
    (void)extend;
    if (context != 1 || input_size == 0) {
        return RKNN_ERR_FAIL;
    }
    for (uint32_t k = 0; k < outputs_n; k++) {
        uint64_t sum = 0;
        uint32_t count = 0;
        for (uint32_t i = k; i < input_size; i += outputs_n) {
            sum += input[i];
            count++;
        }
        result[k] = count ? (float)((double)sum / count) : 0.0f;
    }
    return RKNN_SUCC;
}

int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output outputs[], rknn_output_extend *extend)
{
    (void)extend;
    if (context != 1 || n_outputs != 1 || !outputs[0].want_float) {
        return RKNN_ERR_PARAM_INVALID;
    }
    outputs[0].buf = result;
    outputs[0].size = outputs_n * (uint32_t)sizeof(float);
    return RKNN_SUCC;
}

int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output outputs[])
{
    (void)outputs;
    return context == 1 && n_outputs == 1 ? RKNN_SUCC : RKNN_ERR_PARAM_INVALID;
}
