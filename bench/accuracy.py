"""Section 5: int8 accuracy against float, ours and the peers' quantizers, same faces.

Every quantized model is compared with the same float reference (our lowered float
graph, equal to onnxruntime on the source model within 1e-5) on the same held-out
faces: mean and minimum cosine per image, and the verification AUC drop when the faces
have identities. Quantizers:
- ours: each range algorithm (`--algo`) in the fused mode, and the tflite mode with
  the default algorithm, each with the int16 fallback `build` applies when the gate
  fails (recorded per row);
- onnxruntime `quantize_static` (QDQ, per-channel int8 weights, its default MinMax
  calibration) on the same calibration faces;
- TensorFlow's own int8 converter (full integer, per-channel), which needs a Keras
  model: the default model rebuilt in Keras with its own weights
  (`bench/keras_weights.py`); the foamliu model has no Keras definition;
- rknn-toolkit2 (rk3588, int8 normal quantization) through `build --target rk3588`.
"""

from __future__ import annotations

import numpy as np

from bench.artifacts import Artifacts
from compiler import ui

ALGOS = ("minmax", "percentile", "kl", "mse")
# Every range algorithm in the fused mode (what `build` runs), and the tflite mode (the
# one whose integers LiteRT and TFLite Micro reproduce) with the default algorithm.
FULL_RUNS = (*((a, "fused") for a in ALGOS), ("mse", "tflite"))
QUICK_RUNS = (("mse", "fused"),)


def _row(quantizer: str, info: dict, **extra) -> dict:
    row = {
        "quantizer": quantizer,
        "mean_cosine": round(info["mean_cosine"], 5),
        "min_cosine": round(info["min_cosine"], 5),
        "auc_float": round(info["float"]["auc"], 5) if "float" in info else None,
        "auc_int8": round(info["int8"]["auc"], 5) if "int8" in info else None,
        "auc_drop": round(info["auc_drop"], 5) if "auc_drop" in info else None,
        "n_eval": info["n_eval"],
    }
    row.update(extra)
    return row


def ours(art: Artifacts, runs: tuple[tuple[str, str], ...]) -> list[dict]:
    rows = []
    for algo, mode in runs:
        _, info = art.quantized(algo, mode)
        int16 = info.get("int16", {}).get("tensors", [])
        rows.append(_row(f"ours: {algo}, {mode}", info, int16_tensors=len(int16)))
    return rows


def _reference(art: Artifacts) -> tuple[np.ndarray, object]:
    from compiler.quantization import float_embeddings

    def make():
        held = art.datasets()[1]
        with ui.step(f"{art.model.name}: float reference on {len(held.images)} faces"):
            return float_embeddings(art.lowered()[1], held.images), held

    return art._memo("float_reference", make)


def onnxruntime_static(art: Artifacts) -> dict:
    import onnxruntime as ort

    from compiler.quantization import compare_embeddings

    reference, held = _reference(art)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(art.ort_qdq()), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    embeddings = np.concatenate(
        [
            session.run(None, {name: art.normalized(held.images[i : i + 1])})[0].reshape(1, -1)
            for i in range(len(held.images))
        ]
    )
    return _row("onnxruntime quantize_static (QDQ)", compare_embeddings(reference, embeddings, held))


def rknn(art: Artifacts, chip: str = "rk3588") -> dict:
    report, seconds = art.build(chip)
    q = report["quantization"]
    return _row(f"rknn-toolkit2 ({chip}, {q['step']})", q, build_seconds=round(seconds, 1))


def tensorflow_converter(art: Artifacts) -> dict:
    """TensorFlow's full-integer converter on the default model rebuilt in Keras (bench/keras_weights.py)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from bench import keras_weights
    from compiler.family.mobilefacenet import import_keras
    from compiler.quantization import compare_embeddings

    reference, held = _reference(art)
    calib = art.datasets()[0]
    keras = import_keras()
    inner = keras_weights.load(art.model.onnx)
    pixels = keras.Input((112, 112, 3), batch_size=1)  # TFLite wants a fixed batch of 1
    saved = art.work / f"{art.model.name}-keras-savedmodel"
    keras.Model(pixels, inner(pixels)).export(str(saved), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([art.normalized(calib[i : i + 1], "NHWC")] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with ui.step(f"{art.model.name}: TensorFlow int8 converter on {len(calib)} faces"):
        data = converter.convert()
    interpreter = Interpreter(model_content=data, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for i in range(len(held.images)):
        interpreter.set_tensor(inp["index"], art.normalized(held.images[i : i + 1], "NHWC"))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"]).reshape(1, -1).astype(np.float64))
    return _row("TensorFlow int8 converter", compare_embeddings(reference, np.concatenate(rows), held))


def run(arts: list[Artifacts], quick: bool, with_rknn: bool, with_tensorflow: bool) -> dict:
    out: dict = {}
    for art in arts:
        rows = ours(art, QUICK_RUNS if quick else FULL_RUNS)
        rows.append(onnxruntime_static(art))
        if with_rknn:
            try:
                rows.append(rknn(art))
            except Exception as exc:  # the toolkit's own failures must not cost the other sections
                rows.append({"quantizer": "rknn-toolkit2 (rk3588)", "error": str(exc).splitlines()[0]})
        if with_tensorflow and art.model.name == "default":  # the only one with a Keras definition
            rows.append(tensorflow_converter(art))
        out[art.model.name] = {"source": art.datasets()[1].source, "rows": rows}
    return out
