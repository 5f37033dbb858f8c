/*
 * The device program for the TVM backend: a library exported by
 * compiler/backends/tvm_compile.export_library (kernels + Relax VM bytecode +
 * constants), run by TVM's runtime (libtvm_runtime.so + libtvm_ffi.so) and served
 * over the HIL protocol (firmware/device/, docs/protocol.md) on whatever link the
 * POSIX port provides (stdin/stdout).
 *
 * The model's facts come from the build (compiler/backends/tvm_runner.py) as -D
 * flags. The library is argv[1] (a bare file name is looked up next to this
 * program, e.g. `mfn_tvm_runner model-cortex-a53.so` for the LITTLE cores), or
 * MFN_TVM_LIBRARY next to this program. One Relax VM is made at start; each RUN feeds the uploaded uint8 HWC frame
 * (the host uploads straight into the VM's input tensor) to `main` and returns its
 * output bytes, which the module already gives in device (NHWC) order.
 *
 * There is no per-layer timing: the model is one call. `layers` is 1 and the hook,
 * when asked for, times the whole call as layer 0.
 *
 * Exit codes: 2 the library cannot be loaded or is not this model's, 3 an inference
 * failed. The reason goes to stderr (one line).
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include <unistd.h>

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

extern "C" {
#include "mfn_device.h"
#include "mfn_port.h"
}

#ifndef MFN_TARGET
#define MFN_TARGET "unknown"
#endif
#ifndef MFN_MODEL_HASH
#define MFN_MODEL_HASH "unknown"
#endif
#ifndef MFN_KERNELS
#define MFN_KERNELS "tvm"
#endif
#ifndef MFN_TVM_LIBRARY
#define MFN_TVM_LIBRARY "model.so"
#endif
#if !defined(MFN_INPUT_H) || !defined(MFN_INPUT_W) || !defined(MFN_OUTPUT_COUNT) || !defined(MFN_OUTPUT_BYTES) || \
    !defined(MFN_OUTPUT_DTYPE)
#error "the build must define MFN_INPUT_H, MFN_INPUT_W, MFN_OUTPUT_COUNT, MFN_OUTPUT_BYTES and MFN_OUTPUT_DTYPE"
#endif
#define MFN_INPUT_C 3
#define MFN_INPUT_BYTES (MFN_INPUT_H * MFN_INPUT_W * MFN_INPUT_C)
#if MFN_OUTPUT_BYTES > MFN_MAX_OUTPUT_BYTES
#error "the model's output is larger than the protocol's output buffer"
#endif

#define MFN_STR2(x) #x
#define MFN_STR(x) MFN_STR2(x)

namespace ffi = tvm::ffi;

namespace {

/* CPU storage with the 64-byte alignment TVM's kernels assume. */
struct AlignedAlloc {
    void AllocData(DLTensor *tensor)
    {
        const size_t bytes = (ffi::GetDataSize(*tensor) + 63u) & ~static_cast<size_t>(63u);
        tensor->data = std::aligned_alloc(64, bytes == 0 ? 64 : bytes);
        if (tensor->data == nullptr) {
            throw std::bad_alloc();
        }
    }
    void FreeData(DLTensor *tensor) { std::free(tensor->data); }
};

struct Runner {
    ffi::Module library;
    ffi::Module vm;
    ffi::Function main_fn;
    ffi::Tensor input;
};

Runner *runner;

[[noreturn]] void fail(int code, const char *what, const std::string &why)
{
    std::fprintf(stderr, "mfn_tvm_runner: %s: %s\n", what, why.c_str());
    std::fflush(stderr);
    std::_Exit(code);
}

std::string one_line(const std::string &text)
{
    const std::string::size_type end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
}

std::string library_path(int argc, char **argv)
{
    const std::string name = argc > 1 ? std::string(argv[1]) : std::string(MFN_TVM_LIBRARY);
    if (name.find('/') != std::string::npos) {
        return name;
    }
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    std::string program = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string(argv[0]);
    const std::string::size_type slash = program.rfind('/');
    return (slash == std::string::npos ? std::string(".") : program.substr(0, slash)) + "/" + name;
}

void load(const std::string &path)
{
    try {
        ffi::Module library = ffi::Module::LoadFromFile(path);
        ffi::Optional<ffi::Function> load_exec = library->GetFunction("vm_load_executable");
        if (!load_exec.has_value()) {
            fail(2, path.c_str(), "not a Relax VM library (no vm_load_executable)");
        }
        ffi::Module vm = (*load_exec)().cast<ffi::Module>();
        /* One CPU device (kDLCPU = 1, id 0) with the pooled allocator (2), as relax.VirtualMachine does. */
        vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
        ffi::Optional<ffi::Function> main_fn = vm->GetFunction("main");
        if (!main_fn.has_value()) {
            fail(2, path.c_str(), "the module has no main function");
        }
        const int64_t shape[4] = {1, MFN_INPUT_H, MFN_INPUT_W, MFN_INPUT_C};
        const DLDataType u8 = {kDLUInt, 8, 1};
        const DLDevice cpu = {kDLCPU, 0};
        ffi::Tensor input = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(shape, 4), u8, cpu);
        std::memset(input.data_ptr(), 0, MFN_INPUT_BYTES);
        runner = new Runner{library, vm, *main_fn, input};
    } catch (const ffi::Error &error) {
        fail(2, path.c_str(), one_line(error.kind() + ": " + error.message()));
    } catch (const std::exception &error) {
        fail(2, path.c_str(), one_line(error.what()));
    }
}

void run_model(const uint8_t *input, uint8_t *output, mfn_device_hook_t hook, void *context)
{
    (void)input; /* the host uploaded into runner->input's storage (model.input) */
    try {
        ffi::Any result = runner->main_fn(runner->input);
        std::optional<ffi::Tensor> tensor = result.as<ffi::Tensor>();
        if (!tensor.has_value()) {
            if (std::optional<ffi::Array<ffi::Any>> outs = result.as<ffi::Array<ffi::Any>>()) {
                if (!outs->empty()) {
                    tensor = (*outs)[0].as<ffi::Tensor>();
                }
            }
        }
        if (!tensor.has_value()) {
            fail(3, "main", "returned no tensor");
        }
        const DLTensor *out = tensor->GetDLTensorPtr();
        if (out->device.device_type != kDLCPU || !tensor->IsContiguous()) {
            fail(3, "main", "the output is not a contiguous CPU tensor");
        }
        const size_t bytes = ffi::GetDataSize(*out);
        if (bytes != MFN_OUTPUT_BYTES) {
            fail(3, "main", "returned " + std::to_string(bytes) + " bytes, the build says " MFN_STR(MFN_OUTPUT_BYTES));
        }
        std::memcpy(output, static_cast<const uint8_t *>(out->data) + out->byte_offset, bytes);
    } catch (const ffi::Error &error) {
        fail(3, "main", one_line(error.kind() + ": " + error.message()));
    } catch (const std::exception &error) {
        fail(3, "main", one_line(error.what()));
    }
    if (hook != nullptr) {
        hook(0, context);
    }
}

} // namespace

int main(int argc, char **argv)
{
    /* Untuned kernels are serial; one thread also keeps qemu instruction counts exact. */
    setenv("TVM_NUM_THREADS", "1", 0);
    load(library_path(argc, argv));
    mfn_device_model_t model;
    std::memset(&model, 0, sizeof model);
    model.target = MFN_TARGET;
    model.backend = "tvm";
    model.model_hash = MFN_MODEL_HASH;
    model.input_shape = MFN_STR(MFN_INPUT_H) "x" MFN_STR(MFN_INPUT_W) "x" MFN_STR(MFN_INPUT_C);
    model.output_dtype = MFN_OUTPUT_DTYPE;
    model.kernels = MFN_KERNELS;
    model.input_bytes = MFN_INPUT_BYTES;
    model.output_count = MFN_OUTPUT_COUNT;
    model.output_bytes = MFN_OUTPUT_BYTES;
    model.arena_bytes = 0; /* the VM's pooled allocator sizes its own memory */
    model.layer_count = 1;
    model.input = static_cast<uint8_t *>(runner->input.data_ptr());
    model.run = run_model;
    mfn_port_init();
    mfn_device_serve(&model);
    return 0;
}
