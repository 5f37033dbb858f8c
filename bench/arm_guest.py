"""Guest side of bench/arm_peers.py: runs INSIDE the emulated aarch64 Python 3.11.

    python3.11 arm_guest.py '{"engine": "litert", "files": {"model": "x.tflite"}, "warmup": 2}'

Only the standard library, numpy and the engine's own package are available here (no
`compiler`, no rich). It loads the model with one engine on one thread, runs the
warm-up inferences, then measures ONE inference between two icount markers (see
docs/icount.md: sentinel, syscall 0x4d464e, read 8 bytes back) and prints one line
`MFN_ARM_PEER {json}` on stdout.

The figure is `(count after - count before) - (cost of an empty marker pair)`: the
marker pair itself (ctypes call, pwrite, pread, Python glue) is measured back to back
three times first, with the garbage collector off, and its smallest value subtracted.
These are guest instruction counts under QEMU TCG, not cycles.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time

MARKER = 0x4D464E  # "MFN": MFN_ICOUNT_MARKER in firmware/ports/posix/icount.h
SENTINEL = b"\xff" * 8
COUNT_FILE_ENV = "MFN_ICOUNT_FILE"
EMPTY_PAIRS = 3
SEED = 0


class Counter:
    """The running guest instruction count, through the plugin's count file."""

    def __init__(self) -> None:
        path = os.environ.get(COUNT_FILE_ENV)
        if not path:
            raise SystemExit(f"{COUNT_FILE_ENV} is not set: run under qemu-aarch64 with the mfn_icount plugin")
        self.fd = os.open(path, os.O_RDWR)
        if os.fstat(self.fd).st_size != 16:
            raise SystemExit(f"{path}: not the plugin's 16-byte count file (is the plugin loaded?)")
        syscall = ctypes.CDLL(None).syscall
        syscall.restype = ctypes.c_long
        syscall.argtypes = [ctypes.c_long]
        self.syscall = syscall
        self.read()  # one round trip proves the plugin answers

    def read(self) -> int:
        os.pwrite(self.fd, SENTINEL, 0)
        self.syscall(MARKER)  # -ENOSYS for QEMU; the plugin wrote the count before that
        data = os.pread(self.fd, 8, 0)
        if data == SENTINEL:
            raise SystemExit("icount marker not answered: the mfn_icount plugin is not loaded")
        return int.from_bytes(data, "little")

    def region(self, fn) -> int:
        before = self.read()
        fn()
        after = self.read()
        return after - before


def _noop() -> None:
    return None


def _pixels(np):
    """A fixed pseudo-face, HWC float32 pixels in [0, 255] (data steers values, not work)."""
    return np.random.default_rng(SEED).uniform(0.0, 255.0, size=(112, 112, 3)).astype(np.float32)


def _normalised(np):
    """The pixels as float models take them: the paper's (x - 127.5) / 128."""
    return (_pixels(np) - 127.5) / 128.0


def _float_input(files: dict, np):
    """files["input_kind"] == "pixels" for models with the preprocessing folded in."""
    return _pixels(np) if files.get("input_kind") == "pixels" else _normalised(np)


def _onnxruntime(files: dict, np):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(files["model"], options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    image = _float_input(files, np)
    if len(spec.shape) == 4 and spec.shape[1] == 3:
        image = image.transpose(2, 0, 1)
    feed = {spec.name: np.ascontiguousarray(image[None])}
    result = {}

    def infer() -> None:
        result["out"] = session.run(None, feed)[0]

    return ort.__version__, infer, lambda: result["out"]


def _litert(files: dict, np):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=files["model"], num_threads=1)
    interpreter.allocate_tensors()
    spec = interpreter.get_input_details()[0]
    out_spec = interpreter.get_output_details()[0]
    image = _float_input(files, np)
    if spec["dtype"] in (np.int8, np.uint8):
        scale, zero = spec["quantization"]
        info = np.iinfo(spec["dtype"])
        if "input_kind" not in files and scale * (info.max - zero) > 2.0:  # covers pixels (ours: 1.0, -128)
            image = _pixels(np)
        image = np.clip(np.round(image / scale) + zero, info.min, info.max)
    if spec["shape"][-1] != 3:
        image = image.transpose(2, 0, 1)
    image = image[None]
    interpreter.set_tensor(spec["index"], image.astype(spec["dtype"]))

    def output():
        out = interpreter.get_tensor(out_spec["index"]).astype(np.float32)
        scale, zero = out_spec["quantization"]
        return (out - zero) * scale if scale else out

    import importlib.metadata

    return importlib.metadata.version("ai-edge-litert"), interpreter.invoke, output


def _ncnn(files: dict, np):
    import ncnn

    net = ncnn.Net()
    opt = net.opt
    opt.lightmode = True
    opt.num_threads = 1
    opt.use_vulkan_compute = False
    for flag in (
        "use_fp16_packed",
        "use_fp16_storage",
        "use_fp16_arithmetic",
        "use_bf16_storage",
        "use_bf16_packed",
        "use_int8_inference",
    ):
        if hasattr(opt, flag):
            setattr(opt, flag, False)
    if net.load_param(files["param"]) != 0 or net.load_model(files["bin"]) != 0:
        raise SystemExit(f"ncnn cannot load {files['param']} / {files['bin']}")
    in_name, out_name = files.get("input"), files.get("output")
    if not in_name or not out_name:
        names = net.input_names(), net.output_names()
        in_name, out_name = in_name or names[0][0], out_name or names[1][-1]
    image = ncnn.Mat(np.ascontiguousarray(_float_input(files, np).transpose(2, 0, 1))).clone()
    result = {}

    def infer() -> None:
        extractor = net.create_extractor()
        extractor.input(in_name, image)
        status, out = extractor.extract(out_name)
        if status != 0:
            raise SystemExit(f"ncnn extract({out_name!r}) returned {status}")
        result["out"] = out

    return ncnn.__version__, infer, lambda: np.array(result["out"])


ENGINES = {"onnxruntime": _onnxruntime, "litert": _litert, "ncnn": _ncnn}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    start = time.monotonic()
    import numpy as np

    counter = Counter()
    version, infer, output = ENGINES[spec["engine"]](spec["files"], np)
    loaded = time.monotonic()
    for _ in range(int(spec.get("warmup", 2))):
        infer()
    warm = time.monotonic()
    gc.collect()
    gc.disable()
    empty = [counter.region(_noop) for _ in range(EMPTY_PAIRS)]
    raw = counter.region(infer)
    gc.enable()
    done = time.monotonic()
    out = np.asarray(output(), dtype=np.float64).ravel()
    report = {
        "engine": spec["engine"],
        "version": version,
        "instructions": raw - min(empty),
        "raw_instructions": raw,
        "marker_pairs": empty,
        "output_shape": list(np.asarray(output()).shape),
        "output_first": [round(float(v), 6) for v in out[:4]],
        "output": [round(float(v), 6) for v in out] if out.size <= 512 else None,
        "output_sum": round(float(out.sum()), 6),
        "guest_seconds": {
            "load": round(loaded - start, 3),
            "warmup": round(warm - loaded, 3),
            "measured": round(done - warm, 3),
        },
    }
    sys.stdout.write("MFN_ARM_PEER " + json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
