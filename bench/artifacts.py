"""The same model in every engine's format, made once per benchmark run.

From one source model: our lowered float graph and int8 graphs (fused and tflite
modes, each range algorithm), our own float and int8 `.tflite` exports (LiteRT and
TFLite Micro run exactly the model we run), onnxruntime's own QDQ int8 model from
`quantize_static` on the same calibration faces, and our x86_64 C runtime program.
Calibration and held-out faces are the real Friends faces when present (100 to
calibrate, the rest held out, as `build --calib` splits them), else synthetic ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bench.common import BenchModel
from compiler import ui


@dataclass
class Artifacts:
    model: BenchModel
    work: Path
    quick: bool
    _cache: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)  # wall time of the costly steps, for the compile-cost table

    # --- inputs ---------------------------------------------------------------------
    def quant_options(self, algo: str = "mse", mode: str = "fused"):
        from compiler.quantization import QuantizeOptions

        if self.model.calib is not None:
            base = QuantizeOptions(calib=self.model.calib, calib_limit=20 if self.quick else 100)
        else:
            base = QuantizeOptions(synthetic=20 if self.quick else 100)
        return replace(base, algo=algo, mode=mode, eval_limit=16 if self.quick else 200)

    def _memo(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def lowered(self):
        """(LoadedModel, lowered float graph, Preprocess)."""
        from compiler.lowering import ingest_and_lower
        from compiler.preprocess import parse_preprocess

        def make():
            pre = parse_preprocess(self.model.preprocess)
            loaded, graph, _, _ = ingest_and_lower(self.model.spec, pre, self.model.calib)
            return loaded, graph, pre

        return self._memo("lowered", make)

    def datasets(self):
        """(calibration pixels, HeldOut): uint8 NCHW faces."""
        from compiler.quantization import datasets

        def make():
            _, graph, _ = self.lowered()
            calib, held = datasets(self.quant_options(), *graph.image_hw())
            return calib.images, held

        return self._memo("datasets", make)

    def image(self) -> np.ndarray:
        """One held-out face [1,3,H,W] uint8, the input every latency engine runs."""
        return np.ascontiguousarray(self.datasets()[1].images[:1])

    def normalized(self, pixels: np.ndarray, layout: str | None = None) -> np.ndarray:
        """Pixels -> the source model's float input (its preprocessing and layout)."""
        loaded, _, pre = self.lowered()
        x = pre.normalize(pixels)
        if (layout or loaded.graph.meta.get("source_layout")) == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    # --- ours -----------------------------------------------------------------------
    def quantized(self, algo: str = "mse", mode: str = "fused"):
        """(QGraph, accuracy info) as `build` makes it (int16 fallback included)."""
        from compiler.quantization import quantize_and_measure

        def make():
            _, graph, _ = self.lowered()
            start = time.monotonic()
            with ui.step(f"{self.model.name}: quantizing ({algo}, {mode})"):
                qgraph, info = quantize_and_measure(graph, self.quant_options(algo, mode))
            self.seconds[("quantize", algo, mode)] = time.monotonic() - start
            return qgraph, info

        return self._memo(("q", algo, mode), make)

    def mfnq(self) -> Path:
        """The default int8 model (mse, fused) as `mfnc quantize` writes it: every CPU/MCU
        build below starts from it, as a user quantizing once for several boards would."""
        from calibration import qgraph as qformat
        from compiler.quantization import quantized_meta

        def make():
            loaded, _, pre = self.lowered()
            qgraph, info = self.quantized()
            qgraph.meta = quantized_meta(loaded, pre, info)
            path = self.work / f"{self.model.name}.mfnq"
            qformat.save(qgraph, path)
            return path

        return self._memo("mfnq", make)

    def float_tflite(self) -> Path:
        from calibration.tflite_float_export import export_float_tflite

        def make():
            path = self.work / f"{self.model.name}-float.tflite"
            path.write_bytes(export_float_tflite(self.lowered()[1]))
            return path

        return self._memo("float_tflite", make)

    def int8_tflite(self) -> Path:
        """Our tflite-mode int8 model as a .tflite: LiteRT and TFLite Micro run our integers."""
        from calibration.tflite_export import export_tflite

        def make():
            path = self.work / f"{self.model.name}-int8.tflite"
            path.write_bytes(export_tflite(self.quantized("mse", "tflite")[0]))
            return path

        return self._memo("int8_tflite", make)

    def c_program(self) -> Path:
        """Our C runtime for this host (the x86_64 target's optimised kernels), from the fused int8 graph."""
        from bench.kernel_speed import build
        from compiler.targets import load_target

        def make():
            with ui.step(f"{self.model.name}: building the x86_64 C runtime"):
                folder = self.work / f"{self.model.name}-c-x86_64"
                return build(load_target("x86_64"), self.quantized()[0], folder, "auto")

        return self._memo("c_program", make)

    def build(self, target: str, backend: str = "auto") -> tuple[dict, float]:
        """(report, wall seconds) of `mfnc build` for a target, once per run.

        CPU and MCU targets build from the saved int8 model (`mfnq`); NPU targets from
        the float model, since rknn-toolkit2 quantizes it itself."""
        from compiler.build import BuildOptions, build
        from compiler.targets import load_target

        def make():
            npu = load_target(target).npu_usable and backend in ("auto", "rknn")
            spec = self.model.spec if npu else str(self.mfnq())
            out = self.work / f"{self.model.name}-build-{target}-{backend}"
            start = time.monotonic()
            report = build(BuildOptions(target, spec, backend, self.model.preprocess, out, self.quant_options()))
            return report, time.monotonic() - start

        return self._memo(("build", target, backend), make)

    # --- onnxruntime's own int8 -----------------------------------------------------
    def ort_qdq(self) -> Path:
        """onnxruntime's `quantize_static` (QDQ, per-channel int8 weights) on our calibration faces."""

        def make():
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

            loaded, _, _ = self.lowered()
            name = loaded.graph.meta["source_input"]
            calib = self.datasets()[0]
            feeds = [{name: self.normalized(calib[i : i + 1])} for i in range(len(calib))]

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.items = iter(feeds)

                def get_next(self):
                    return next(self.items, None)

            source = self.source_onnx()
            out = self.work / f"{self.model.name}-ort-qdq.onnx"
            quiet = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process goes to the root logger
            with ui.step(f"{self.model.name}: onnxruntime quantize_static on {len(feeds)} faces"):
                quantize_static(
                    str(source),
                    str(out),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                )
            logging.getLogger().setLevel(quiet)
            return out

        return self._memo("ort_qdq", make)

    def source_onnx(self) -> Path:
        loaded, _, _ = self.lowered()
        path = self.work / f"{self.model.name}-source.onnx"
        if not path.exists():
            path.write_bytes(loaded.reference.SerializeToString())
        return path
