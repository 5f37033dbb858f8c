/*
 * The device program for the Rockchip NPU backend: a .rknn model run by Rockchip's
 * runtime (librknnrt.so, rknn_api.h from the user's SDK; mfnc never ships them),
 * served over the HIL protocol (firmware/device/, docs/protocol.md) on whatever link
 * the POSIX port provides (stdin/stdout).
 *
 * The model's facts come from the build (compiler/backends/rknn_board.py) as -D
 * flags. The model file is argv[1], or model.rknn next to this program. The host
 * uploads raw uint8 RGB pixels, HWC, as a camera gives them; the .rknn normalises
 * them itself (mean/std were given to the toolkit), so the runner only reorders the
 * channels for a BGR model and hands the frame over as NHWC uint8. RESULT carries the
 * first output as float32 (the NPU has no golden of ours: the host compares it with
 * the float model).
 *
 * Exit codes: 2 the model cannot be loaded or does not match the build, 3 an
 * inference failed. The reason goes to stderr (one line).
 */
#define _POSIX_C_SOURCE 200809L /* readlink */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mfn_device.h"
#include "mfn_port.h"
#include "rknn_api.h"

#ifndef MFN_TARGET
#define MFN_TARGET "unknown"
#endif
#ifndef MFN_MODEL_HASH
#define MFN_MODEL_HASH "unknown"
#endif
#ifndef MFN_SWAP_RB
#define MFN_SWAP_RB 0
#endif
#if !defined(MFN_INPUT_H) || !defined(MFN_INPUT_W) || !defined(MFN_OUTPUT_COUNT)
#error "the build must define MFN_INPUT_H, MFN_INPUT_W and MFN_OUTPUT_COUNT"
#endif
#define MFN_INPUT_C 3
#define MFN_INPUT_BYTES (MFN_INPUT_H * MFN_INPUT_W * MFN_INPUT_C)
#define MFN_OUTPUT_BYTES (MFN_OUTPUT_COUNT * 4)
#if MFN_OUTPUT_BYTES > MFN_MAX_OUTPUT_BYTES
#error "the model's output is larger than the protocol's output buffer"
#endif
#define MFN_MAX_MODEL_BYTES (256u * 1024u * 1024u)

#define MFN_STR2(x) #x
#define MFN_STR(x) MFN_STR2(x)

static rknn_context ctx;
static uint8_t frame[MFN_INPUT_BYTES];   /* the protocol uploads here */
static uint8_t ordered[MFN_INPUT_BYTES]; /* the frame in the model's channel order */

static void fail(int code, const char *what, const char *detail)
{
    fprintf(stderr, "mfn_rknn_runner: %s: %s\n", what, detail);
    exit(code);
}

static void fail_code(int code, const char *what, int ret)
{
    char detail[32];
    snprintf(detail, sizeof detail, "error %d", ret);
    fail(code, what, detail);
}

/* argv[1], or model.rknn in this program's folder. */
static void model_path(int argc, char **argv, char *path, size_t size)
{
    const char *name = argc > 1 ? argv[1] : "model.rknn";
    if (strchr(name, '/') != NULL) {
        snprintf(path, size, "%s", name);
        return;
    }
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (n <= 0 || slash == NULL) {
        snprintf(path, size, "%s", name);
        return;
    }
    *slash = '\0';
    snprintf(path, size, "%s/%s", self, name);
}

static void load(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        fail(2, path, "cannot open the model");
    }
    if (fseek(file, 0, SEEK_END) != 0) {
        fail(2, path, "cannot read the model");
    }
    const long size = ftell(file);
    if (size <= 0 || (unsigned long)size > MFN_MAX_MODEL_BYTES) {
        fail(2, path, "empty or larger than 256 MiB");
    }
    rewind(file);
    /* The runtime copies what it needs; the blob is freed right after rknn_init. */
    void *blob = malloc((size_t)size);
    if (blob == NULL || fread(blob, 1, (size_t)size, file) != (size_t)size) {
        fail(2, path, "cannot read the model");
    }
    fclose(file);
    const int ret = rknn_init(&ctx, blob, (uint32_t)size, 0, NULL);
    free(blob);
    if (ret != RKNN_SUCC) {
        fail_code(2, "rknn_init", ret);
    }
    rknn_input_output_num io;
    memset(&io, 0, sizeof io);
    if (rknn_query(ctx, RKNN_QUERY_IN_OUT_NUM, &io, sizeof io) != RKNN_SUCC || io.n_input != 1 || io.n_output < 1) {
        fail(2, path, "not a one-input model");
    }
}

static void run_model(const uint8_t *input, uint8_t *output, mfn_device_hook_t hook, void *context)
{
    const uint8_t *pixels = input;
    if (MFN_SWAP_RB) {
        for (uint32_t i = 0; i < MFN_INPUT_BYTES; i += 3) {
            ordered[i] = input[i + 2];
            ordered[i + 1] = input[i + 1];
            ordered[i + 2] = input[i];
        }
        pixels = ordered;
    }
    rknn_input in;
    memset(&in, 0, sizeof in);
    in.index = 0;
    in.buf = (void *)pixels;
    in.size = MFN_INPUT_BYTES;
    in.pass_through = 0;
    in.type = RKNN_TENSOR_UINT8;
    in.fmt = RKNN_TENSOR_NHWC;
    int ret = rknn_inputs_set(ctx, 1, &in);
    if (ret != RKNN_SUCC) {
        fail_code(3, "rknn_inputs_set", ret);
    }
    ret = rknn_run(ctx, NULL);
    if (ret != RKNN_SUCC) {
        fail_code(3, "rknn_run", ret);
    }
    rknn_output out;
    memset(&out, 0, sizeof out);
    out.index = 0;
    out.want_float = 1;
    ret = rknn_outputs_get(ctx, 1, &out, NULL);
    if (ret != RKNN_SUCC) {
        fail_code(3, "rknn_outputs_get", ret);
    }
    if (out.size != MFN_OUTPUT_BYTES) {
        fail(3, "rknn_outputs_get", "the output size differs from the build's (" MFN_STR(MFN_OUTPUT_BYTES) " bytes)");
    }
    memcpy(output, out.buf, MFN_OUTPUT_BYTES);
    rknn_outputs_release(ctx, 1, &out);
    if (hook != NULL) {
        hook(0, context);
    }
}

int main(int argc, char **argv)
{
    char path[4352];
    model_path(argc, argv, path, sizeof path);
    load(path);
    mfn_device_model_t model;
    memset(&model, 0, sizeof model);
    model.target = MFN_TARGET;
    model.backend = "rknn";
    model.model_hash = MFN_MODEL_HASH;
    model.input_shape = MFN_STR(MFN_INPUT_H) "x" MFN_STR(MFN_INPUT_W) "x" MFN_STR(MFN_INPUT_C);
    model.output_dtype = "float32";
    model.kernels = "npu";
    model.input_bytes = MFN_INPUT_BYTES;
    model.output_count = MFN_OUTPUT_COUNT;
    model.output_bytes = MFN_OUTPUT_BYTES;
    model.arena_bytes = 0; /* the runtime owns the NPU's memory */
    model.layer_count = 1;
    model.input = frame;
    model.run = run_model;
    mfn_port_init();
    mfn_device_serve(&model);
    rknn_destroy(ctx);
    return 0;
}
