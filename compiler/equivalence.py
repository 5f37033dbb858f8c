"""Float equivalence: our IR (numpy executor) against onnxruntime on the original model.

Every graph pass must leave the model's function unchanged; this measures it as
max|a-b| / max|b| per output tensor (DESIGN section 8), on raw RGB pixel images fed
through the model's preprocessing exactly as a user's camera frames would be.
"""

from __future__ import annotations

import numpy as np
import onnx

from compiler import executor
from compiler.ir import Graph
from compiler.preprocess import Preprocess


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|a-b| / max|b| (0 when both are all zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected)))
    diff = float(np.max(np.abs(actual - expected)))
    return diff / scale if scale > 0 else diff


def random_pixels(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Uniform random uint8 RGB images, NCHW."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, 3, height, width), dtype=np.uint8)


class OnnxReference:
    """The original model under onnxruntime, fed from raw RGB pixels."""

    def __init__(
        self, model: onnx.ModelProto, input_name: str, source_layout: str, pre: Preprocess, cache: bool = True
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = input_name
        self.source_layout = source_layout
        self.pre = pre
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Pass checks feed the same few images after every pass; a data set seen once needs no cache.
        self._cache: dict[bytes, dict[str, np.ndarray]] | None = {} if cache else None

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """One NCHW uint8 image [1,3,H,W] -> {output name: value}."""
        key = pixels.tobytes() if self._cache is not None else b""
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        x = self.pre.normalize(pixels)
        if self.source_layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        values = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})
        result = dict(zip(self.output_names, values, strict=True))
        if self._cache is not None:
            self._cache[key] = result
        return result


def ir_feed(graph: Graph, pixels: np.ndarray, pre: Preprocess) -> np.ndarray:
    """What the IR's input expects for these pixels at its current stage of lowering."""
    x = pixels.astype(np.float32) if graph.meta.get("input_kind") == "pixels" else pre.normalize(pixels)
    if graph.meta.get("source_layout") == "NHWC" and graph.meta.get("input_layout") != "NCHW":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x)


def compare(graph: Graph, reference: OnnxReference, images: np.ndarray) -> float:
    """Worst relative error over all outputs and images (images: N,3,H,W uint8)."""
    worst = 0.0
    for i in range(images.shape[0]):
        pixels = images[i : i + 1]
        ours = executor.run(graph, ir_feed(graph, pixels, reference.pre))
        theirs = reference(pixels)
        for name in graph.outputs:
            worst = max(worst, relative_error(ours[name].reshape(theirs[name].shape), theirs[name]))
    return worst
