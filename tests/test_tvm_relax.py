"""TVM from our IRs: the integer Relax module is bit-exact with the golden simulator.

The Relax module built from a QGraph (int8 conv2d accumulating in int32, integer
requantization, fused PReLU, zero points, per-channel input padding, 16x8 layers),
compiled untuned for this x86 host and run with the VM, must return the golden
simulator's integers on every image; the float module must match the float executor.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from calibration import fixedpoint
from calibration.observers import observe_ranges
from calibration.qgraph import QGraph, QNode, QTensor
from calibration.quantizer import quantize
from compiler import executor
from compiler.backends.c_host import golden_as_device
from compiler.errors import BadInput
from compiler.frontend import load_model
from compiler.passes import pipeline
from compiler.preprocess import parse_preprocess
from compiler.synthetic import synthetic_eval_set
from tests.conftest import FOAMLIU, FRIENDS
from tests.device_helpers import TINY_SIZE, tiny_qgraph

try:
    import tvm
    from tvm import te

    from compiler.backends import tvm_qops as qops
    from compiler.backends.tvm_compile import build, export_library, fuse, kernel_calls, x86_target
    from compiler.backends.tvm_relax import build_relax_float, build_relax_int, compile_and_run_x86
    from compiler.backends.tvm_run import VmRunner
except ImportError as exc:  # apache-tvm is pinned in requirements.lock
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(f"needs apache-tvm ({exc})", allow_module_level=True)

TEST_IMAGES = 3


def _lowered(spec: str, pre: str):
    graph = load_model(spec).graph
    for _, fn in pipeline(parse_preprocess(pre)):
        graph = fn(graph)
    return graph


def _images(n: int, size: int = 112) -> np.ndarray:
    """uint8 RGB NCHW: synthetic faces, the test ones real faces when present."""
    images = synthetic_eval_set(n, seed=4)[0][:, :, :size, :size]
    if size == 112 and FRIENDS.exists():
        from compiler.faces import list_images, load_images

        k = min(n, TEST_IMAGES)
        images[-k:] = load_images(list_images(FRIENDS)[:k], 112, 112)[0]
    return np.ascontiguousarray(images)


def _compile_and_run(mod, pixels: np.ndarray) -> tuple[np.ndarray, float]:
    compiled = build(mod, x86_target())
    return VmRunner(compiled.executable).run(pixels), compiled.seconds


def _assert_bit_exact(qgraph: QGraph, pixels: np.ndarray, device: np.ndarray) -> None:
    expected = golden_as_device(qgraph, pixels)
    assert device.dtype == expected.dtype
    assert len(np.unique(expected)) > 20 or expected.shape[1] < 20, "informative outputs, not saturated ones"
    mismatches = [int(np.sum(d != e)) for d, e in zip(device, expected, strict=True)]
    assert mismatches == [0] * len(pixels), f"elements differing from the golden, per image: {mismatches}"


# ---------------------------------------------------------------- the fixed-point primitives


def _run_te(fn, x: np.ndarray, params: list[np.ndarray]) -> np.ndarray:
    xt = te.placeholder(x.shape, "int64", name="x")
    pt = [te.placeholder(p.shape, "int64", name=f"p{i}") for i, p in enumerate(params)]
    out = te.compute(x.shape, lambda i, c: fn(xt[i, c], pt, c), name="out")
    executable = tvm.compile(te.create_prim_func([xt, *pt, out]), target=x86_target())
    result = tvm.runtime.tensor(np.zeros(x.shape, dtype=np.int64))
    executable["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(p) for p in params], result)
    return result.numpy()


def _multipliers(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    reals = np.concatenate([10.0 ** rng.uniform(-7, 1.5, 60), [0.5, 0.25, 1.0, 2.0, 1 / 3, 0.999999]])
    pairs = [fixedpoint.quantize_multiplier(float(r)) for r in reals]
    return np.array([m for m, _ in pairs], dtype=np.int64), np.array([s for _, s in pairs], dtype=np.int64)


def test_requantization_matches_tflite_fixed_point_on_every_rounding_case():
    """mbqm / mbqm64 as TIR == fixedpoint.py, on random accumulators, extremes and exact ties."""
    rng = np.random.default_rng(0)
    mult, shift = _multipliers(rng)
    channels = len(mult)
    x = np.concatenate(
        [
            rng.integers(-(2**31), 2**31, (400, channels)),
            rng.integers(-3000, 3000, (400, channels)),
            np.broadcast_to(np.arange(-64, 64)[:, None], (128, channels)),
            np.array([[-(2**31)], [2**31 - 1], [0], [1], [-1]]).repeat(channels, axis=1),
        ]
    ).astype(np.int64)
    # TFLite's domain: the left-shifted accumulator is an int32 (beyond it the golden's own
    # int64 arithmetic overflows, e.g. -2^31 << 2 times 2^30 is -2^63).
    left = np.maximum(shift, 0)
    x = np.clip(x, -(2**31) >> left, (2**31 - 1) >> left)
    # the data holds ties of both roundings: a*b == k*2^31 + 2^30, and high % 2^e == 2^(e-1)
    ab = x * mult
    assert np.sum((ab % (1 << 31)) == (1 << 30)) > 50
    high = fixedpoint.saturating_rounding_doubling_high_mul(x, mult)
    right = np.maximum(-shift, 0)
    assert np.sum((right > 0) & ((high % (1 << right)) == (1 << np.maximum(right - 1, 0)))) > 50

    table = qops.Table()
    table.add(qops.q31_rows("", mult, shift))
    got = _run_te(lambda v, p, c: qops.mbqm(v, table.getter(p, c)), x, table.arrays())
    want = fixedpoint.multiply_by_quantized_multiplier(x, mult, shift)
    assert np.sum(got != want) == 0

    # 16x8: accumulators beyond int32, multipliers with shifts <= 14
    keep = shift <= 14
    wide_x = np.concatenate([x[:, keep], rng.integers(-(2**40), 2**40, (200, int(keep.sum())))]).astype(np.int64)
    table = qops.Table()
    table.add(qops.q15_rows("", mult[keep], shift[keep]))
    got = _run_te(lambda v, p, c: qops.mbqm64(v, table.getter(p, c)), wide_x, table.arrays())
    want = fixedpoint.multiply_by_quantized_multiplier_64(wide_x, mult[keep], shift[keep])
    assert np.sum(got != want) == 0


# ---------------------------------------------------------------- whole models


def _tiny_float(tmp_path, pre: str = "paper"):
    import onnx

    from tests.onnx_builders import conv_bn_prelu

    onnx.save(conv_bn_prelu(TINY_SIZE), tmp_path / "tiny.onnx")
    return _lowered(str(tmp_path / "tiny.onnx"), pre)


@pytest.mark.parametrize("mode", ["fused", "tflite"])
def test_tiny_model_is_bit_exact_with_the_golden(tmp_path, mode):
    """conv + PReLU, depthwise + LeakyReLU, GDConv; tflite mode has separate PRELU ops."""
    if mode == "fused":
        qgraph = tiny_qgraph(tmp_path)
    else:
        graph = _tiny_float(tmp_path)
        images = synthetic_eval_set(4, seed=3)[0][:, :, :TINY_SIZE, :TINY_SIZE]
        qgraph = quantize(graph, observe_ranges(graph, images, "minmax"), "tflite")
        assert sum(n.op == "prelu" for n in qgraph.nodes) == 2
    pixels = _images(TEST_IMAGES + 2, TINY_SIZE)[-TEST_IMAGES:]
    _assert_bit_exact(qgraph, pixels, compile_and_run_x86(build_relax_int(qgraph), pixels))


@pytest.mark.parametrize(
    ("spec", "pre", "int16"),
    [
        pytest.param("mobilefacenet", "paper", False, id="mobilefacenet-int8"),
        # imagenet: the first conv pads with three different per-channel values
        pytest.param("mobilefacenet", "imagenet", True, id="mobilefacenet-int16-gdconv"),
        pytest.param(str(FOAMLIU), "imagenet", False, id="foamliu-relu6"),
    ],
)
def test_full_model_is_bit_exact_with_the_golden(spec, pre, int16):
    if spec == str(FOAMLIU) and not FOAMLIU.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must have the real model")
        pytest.skip(f"real model not present at {FOAMLIU}")
    graph = _lowered(spec, pre)
    images = _images(2 + TEST_IMAGES)
    ranges = observe_ranges(graph, images[:2], "minmax")
    qgraph = quantize(graph, ranges, "fused")
    if int16:
        gdconv = next(n for n in qgraph.nodes if n.attrs.get("kind") == "gdconv")
        qgraph = quantize(graph, ranges, "fused", frozenset({gdconv.inputs[0], gdconv.output}))
        assert qgraph.tensors[gdconv.inputs[0]].dtype == qgraph.tensors[gdconv.output].dtype == "int16"
    if pre == "imagenet":
        first = qgraph.nodes[0]
        pad_q = first.attrs["pad_q"]
        assert len(set(pad_q)) == 3 and qgraph.tensors[first.inputs[0]].zero_point not in pad_q
    device, seconds = _compile_and_run(build_relax_int(qgraph), images[2:])
    _assert_bit_exact(qgraph, images[2:], device)
    print(f"{spec} {pre} int16={int16}: TVM compile {seconds:.1f} s")


def test_each_conv_is_one_kernel_with_its_epilogue():
    """FuseOps must fuse conv2d + requantization (+ the residual add): what tuning will see."""
    graph = _lowered("mobilefacenet", "paper")
    qgraph = quantize(graph, observe_ranges(graph, _images(2), "minmax"), "fused")
    names = kernel_calls(fuse(build_relax_int(qgraph), x86_target()))
    convs = [n for n in names if re.match(r"fused_conv2d\d*_requant", n)]
    assert len(convs) == sum(n.op == "conv" for n in qgraph.nodes)
    assert sum("qadd" in n for n in convs) == sum(n.op == "add" for n in qgraph.nodes)
    assert not any(n.startswith(("requant", "qadd")) for n in names), "an epilogue left on its own"


def test_exported_library_runs_like_the_in_memory_executable(tmp_path):
    """The shared library (what a board or the C++ runner will load) gives the same integers."""
    qgraph = tiny_qgraph(tmp_path)
    pixels = _images(TEST_IMAGES, TINY_SIZE)
    library = export_library(build(build_relax_int(qgraph), x86_target()).executable, tmp_path / "model.so")
    device = VmRunner.load(library).run(pixels)
    assert np.array_equal(device, golden_as_device(qgraph, pixels))


def test_unsupported_ops_are_refused_by_name():
    t = QTensor((1, 3, 4, 4), 1.0, -128)
    graph = QGraph("g", "fused", "x", ["y"], {"x": t, "y": t}, [QNode("softmax", "sm", ["x"], "y")])
    with pytest.raises(BadInput, match="'sm' \\(softmax\\)"):
        build_relax_int(graph)


# ---------------------------------------------------------------- the float path


@pytest.mark.parametrize("model", ["tiny", "mobilefacenet"])
def test_float_module_matches_the_float_executor(tmp_path, model):
    if model == "tiny":  # imagenet: per-channel padding values in float
        graph, size = _tiny_float(tmp_path, "imagenet"), TINY_SIZE
    else:
        graph, size = _lowered("mobilefacenet", "paper"), 112
    pixels = _images(TEST_IMAGES, size)
    device, _ = _compile_and_run(build_relax_float(graph), pixels)
    ref = executor.run(graph, pixels.astype(np.float32))[graph.outputs[0]]
    if ref.ndim == 4:
        ref = ref.transpose(0, 2, 3, 1)
    ref = ref.reshape(len(pixels), -1)
    for d, r in zip(device, ref, strict=True):
        assert np.abs(d - r).max() / np.abs(r).max() < 1e-4


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a process allowed on 2+ cores")
def test_sizing_tvms_thread_pool_leaves_the_process_on_every_core():
    """TVM pins the calling thread when it sizes its pool; threads started later (onnxruntime's
    pools, compilers) would inherit one core. `set_threads` must restore the CPU set."""
    import threading

    from compiler.backends.tvm_run import set_threads

    before = os.sched_getaffinity(0)
    set_threads(1)
    seen: dict[str, set[int]] = {}
    worker = threading.Thread(target=lambda: seen.setdefault("cpus", os.sched_getaffinity(0)))
    worker.start()
    worker.join()
    assert os.sched_getaffinity(0) == before
    assert seen["cpus"] == before
