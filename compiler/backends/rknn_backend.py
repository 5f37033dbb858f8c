"""The Rockchip NPU backend: rknn-toolkit2 builds the `.rknn`, its simulator checks it.

The toolkit gets the float ONNX model and our calibration images as NCHW uint8 `.npy`
files in the model's channel order, with the preprocessing as its mean/std (pixel
units): the toolkit normalises inside the model, exactly once, as the board will. Its
simulator then embeds our held-out faces and we compare them with our float
reference (the lowered float graph), as for the C backend: mean/min cosine and, with
identities, the verification metrics and the AUC drop, against the same gate.

When the gate fails, the build climbs a per-chip ladder and records every step:
`normal` -> `mmse` -> `mmse` + the toolkit's automatic hybrid quantization (layers
whose cosine drops below its threshold stay in 16 bit) -> fp16 (no quantization),
except on rv1103/rv1106, whose NPU refuses unquantized models.

Every conversion runs in its own process of the toolkit's virtualenv
(`rknn_worker.py`) with a timeout; a crash or a hang is exit 5 with the log's path.
The inputs are kept in the artifact (`rknn/inputs/`), so a later `hil --emulate` can
rebuild the same model in the simulator.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from compiler import ui
from compiler.errors import BadInput, ExternalFailure
from compiler.preprocess import Preprocess
from compiler.quantization import QuantizeOptions, compare_embeddings, datasets, float_embeddings, gate

WORKER = Path(__file__).with_name("rknn_worker.py")
CONVERSION_TIMEOUT_S = 900.0
NO_FP16 = ("rv1103", "rv1103b", "rv1106", "rv1106b")  # these NPUs refuse do_quantization=False


@dataclass(frozen=True)
class Step:
    name: str
    algorithm: str
    quantize: bool = True
    auto_hybrid: bool = False

    def as_dict(self) -> dict:
        return {
            "step": self.name,
            "algorithm": self.algorithm,
            "quantize": self.quantize,
            "auto_hybrid": self.auto_hybrid,
        }


def ladder(platform: str) -> list[Step]:
    """The conversions tried in order until one passes the gate."""
    steps = [Step("int8 normal", "normal"), Step("int8 mmse", "mmse"), Step("int8 mmse + hybrid", "mmse", True, True)]
    if platform not in NO_FP16:
        steps.append(Step("fp16", "normal", quantize=False))
    return steps


def _image_input(model_proto: onnx.ModelProto) -> onnx.ValueInfoProto:
    initializers = {i.name for i in model_proto.graph.initializer}
    inputs = [i for i in model_proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadInput(f"the NPU backend takes a model with one image input, this one has {len(inputs)}")
    return inputs[0]


def nchw_front(model_proto: onnx.ModelProto) -> onnx.ModelProto:
    """An NHWC model (Keras/TFLite through tf2onnx) with an NCHW input in front: a new
    input `<name>_nchw` and a Transpose to the old one. The toolkit then sees the same
    layout as for every other model, and applies mean/std per channel as usual."""
    from onnx import helper

    old = _image_input(model_proto)
    dims = [d.dim_value or 1 for d in old.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[3] != 3:
        raise BadInput(f"input '{old.name}' has shape {dims}: expected NHWC with 3 channels")
    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    graph = model.graph
    new_name = f"{old.name}_nchw"
    new = helper.make_tensor_value_info(new_name, old.type.tensor_type.elem_type, [1, 3, dims[1], dims[2]])
    graph.input.remove(next(i for i in graph.input if i.name == old.name))
    graph.input.insert(0, new)
    graph.node.insert(0, helper.make_node("Transpose", [new_name], [old.name], perm=[0, 2, 3, 1]))
    onnx.checker.check_model(model)
    return model


def _input_facts(model_proto: onnx.ModelProto) -> tuple[str, list[int]]:
    image = _image_input(model_proto)
    dims = [d.dim_value or 1 for d in image.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise BadInput(f"input '{image.name}' has shape {dims}: the NPU backend takes NCHW (or NHWC) RGB/BGR models")
    return image.name, [1, *dims[1:]]


def run_worker(python: Path, request: dict, workdir: Path, what: str) -> dict:
    """Run one conversion in the toolkit's Python; its result JSON, or exit 5."""
    request_file = workdir / "request.json"
    request_file.write_text(json.dumps(request))
    log = workdir / "toolkit.log"
    try:
        with log.open("wb") as sink:
            proc = subprocess.run(
                [str(python), str(WORKER), str(request_file)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                timeout=CONVERSION_TIMEOUT_S,
                check=False,
            )
    except subprocess.TimeoutExpired:
        raise ExternalFailure(
            f"rknn-toolkit2 took over {CONVERSION_TIMEOUT_S:.0f} s for {what}; its log: {_keep(log)}"
        ) from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise ExternalFailure(f"rknn-toolkit2 crashed ({name}) during {what}; its log: {_keep(log)}")
    result_file = Path(request["result"])
    if not result_file.exists():
        raise ExternalFailure(
            f"rknn-toolkit2 exited with {proc.returncode} during {what} without a result; its log: {_keep(log)}"
        )
    result = json.loads(result_file.read_text())
    if not result.get("ok"):
        raise ExternalFailure(
            f"rknn-toolkit2 {result.get('stage')} failed for {what}: {result.get('message')} (log: {_keep(log)})"
        )
    return result


def parse_error_analysis(path: Path) -> list[dict]:
    """The toolkit's per-layer table (error_analysis.txt): one row per layer with the
    cosine of the simulator vs its float run, accumulated ("entire") and for the layer
    alone ("single"). Empty when the file is missing or not in the expected format."""
    rows = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        if not line.startswith("["):
            continue
        op, _, rest = line[1:].partition("]")
        fields = rest.replace("|", " ").split()
        if len(fields) < 5:
            continue
        try:
            entire, single = float(fields[1]), float(fields[3])
        except ValueError:
            continue
        rows.append({"layer": fields[0], "op": op, "cosine_single": single, "cosine_entire": entire})
    return rows


def _keep(log: Path) -> Path:
    """A copy of a failed conversion's log that outlives its scratch folder."""
    fd, name = tempfile.mkstemp(prefix="mfnc-rknn-", suffix="-toolkit.log")
    with open(fd, "wb") as handle:
        handle.write(log.read_bytes() if log.exists() else b"")
    return Path(name)


def _request(inputs: Path, names: list[str], conversion: dict, eval_npz: Path, work: Path) -> dict:
    """A worker request: the recorded inputs and one conversion's settings; outputs in `work`."""
    (work / "dataset.txt").write_text("".join(f"{inputs / n}\n" for n in names))
    return {
        **conversion,
        "onnx": str(inputs / "model.onnx"),
        "dataset": str(work / "dataset.txt"),
        "eval_npz": str(eval_npz),
        "rknn": str(work / "model.rknn"),
        "outputs_npz": str(work / "outputs.npz"),
        "result": str(work / "result.json"),
    }


def simulate(folder: Path, report: dict, pixels: np.ndarray) -> tuple[np.ndarray, bool]:
    """Rebuild a build's .rknn from its recorded inputs and run `pixels` (uint8 RGB NCHW)
    through the simulator (which only runs in the process that built the model).

    Returns the outputs (float32, one row per image) and whether the rebuilt model gives
    exactly the build's outputs on the build's held-out images. (The .rknn files
    themselves differ between two builds of the same inputs: the toolkit writes
    ~1.5 KB of what look like memory addresses into them.)
    """
    from compiler.backends.rknn_env import toolkit_python

    section = report["rknn"]
    inputs = folder / "rknn" / "inputs"
    conversion = section.get("conversion")
    if conversion is None or not (inputs / "eval_outputs.npy").is_file():
        raise BadInput(f"{folder}: the NPU build does not record its toolkit inputs (rebuild it)")
    order = [0, 1, 2] if section.get("channel_order", "rgb") == "rgb" else [2, 1, 0]
    held = np.load(inputs / "eval.npz")["images"]
    recorded = np.load(inputs / "eval_outputs.npy")
    with tempfile.TemporaryDirectory(prefix="mfnc-rknn-sim-") as tmp:
        work = Path(tmp)
        np.savez(work / "images.npz", images=np.concatenate([held, np.ascontiguousarray(pixels[:, order])]))
        request = _request(inputs, section["calibration_files"], conversion, work / "images.npz", work)
        run_worker(toolkit_python(), request, work, "the simulator rebuild")
        outputs = np.load(work / "outputs.npz")["outputs"]
    return outputs[len(held) :], bool(np.array_equal(outputs[: len(held)], recorded))


def compile_rknn(model, lowered, pre: Preprocess, target, out: Path, opts: QuantizeOptions) -> dict:
    """Build the target's .rknn, climbing the ladder until the accuracy gate passes.

    Returns the report's `quantization` section and the backend's section.
    """
    from compiler.backends.rknn_env import TOOLKIT_VERSION, toolkit_python

    platform = target.npu.platform
    source = model.reference if lowered.meta.get("source_layout", "NCHW") == "NCHW" else nchw_front(model.reference)
    input_name, input_shape = _input_facts(source)
    _, _, h, w = input_shape
    calib, held = datasets(opts, h, w)
    order = pre.source_channel  # the model's channels, taken from RGB pixels
    mean = [float(pre.mean[c]) for c in order]
    std = [float(pre.std[c]) for c in order]

    folder = out / "rknn"
    inputs = folder / "inputs"
    (inputs / "calib").mkdir(parents=True, exist_ok=True)
    onnx.save(source, inputs / "model.onnx")
    names = []
    for i, image in enumerate(calib.images):
        name = f"calib/{i:04d}.npy"
        np.save(inputs / name, np.ascontiguousarray(image[order][None]))
        names.append(name)
    np.savez(inputs / "eval.npz", images=np.ascontiguousarray(held.images[:, order]))
    with ui.step(f"float reference embeddings of {len(held.images)} held-out images"):
        reference = float_embeddings(lowered, held.images)
    python = toolkit_python()

    steps: list[dict] = []
    chosen = None
    for step in ladder(platform):
        conversion = {
            "input_name": input_name,
            "input_shape": input_shape,
            "platform": platform,
            "mean": mean,
            "std": std,
            "algorithm": step.algorithm,
            "method": "channel",
            "quantize": step.quantize,
            "auto_hybrid": step.auto_hybrid,
        }
        with tempfile.TemporaryDirectory(prefix="mfnc-rknn-") as tmp:
            work = Path(tmp)
            request = _request(inputs, names, conversion, inputs / "eval.npz", work)
            if step.quantize:
                request["analyse"] = str(inputs / names[0])
            with ui.step(f"rknn-toolkit2 {TOOLKIT_VERSION}: {step.name} for {platform}, checked in its simulator"):
                result = run_worker(python, request, work, f"the {step.name} conversion")
            outputs = np.load(work / "outputs.npz")["outputs"]
            measured = compare_embeddings(reference, outputs, held)
            failures = gate(measured, opts)
            record = {
                **step.as_dict(),
                **result["timings"],
                "mean_cosine": measured["mean_cosine"],
                "min_cosine": measured["min_cosine"],
                **({"auc_drop": measured["auc_drop"]} if "auc_drop" in measured else {}),
                "passed": not failures,
                "failures": failures,
            }
            layers = parse_error_analysis(work / "snapshot" / "error_analysis.txt")
            if layers:
                record["worst_layers"] = [r["layer"] for r in sorted(layers, key=lambda r: r["cosine_single"])[:5]]
            steps.append(record)
            ui.info(
                f"{step.name}: cosine vs float mean {measured['mean_cosine']:.4f} min {measured['min_cosine']:.4f}"
                + (f", AUC drop {measured['auc_drop']:.4f}" if "auc_drop" in measured else "")
                + (" - passes the gate" if not failures else " - below the gate")
            )
            if chosen is None or not failures or measured["mean_cosine"] > chosen[1]["mean_cosine"]:
                (work / "model.rknn").replace(folder / "model.rknn")
                np.save(inputs / "eval_outputs.npy", outputs)
                chosen = (step, measured, failures, result, conversion, layers)
            if not failures:
                break
    step, measured, failures, result, conversion, layers = chosen  # the passing step, else the most accurate one
    quantization = {
        "mode": "rknn",
        "algorithm": step.algorithm if step.quantize else "fp16",
        "step": step.name,
        "n_calib": len(calib.images),
        "calib_source": calib.source,
        **measured,
        "gate": {"mean_cosine_min": opts.gate_cosine, "auc_drop_max": opts.gate_auc_drop, "failures": failures},
        "passed": not failures,
        "ladder": steps,
        "int16": {"tensors": []},
        "worst_layers": [r["layer"] for r in sorted(layers, key=lambda r: r["cosine_single"])[:10]],
        **({"layers": sorted(layers, key=lambda r: r["cosine_single"])} if layers else {}),
    }
    section = {
        "toolkit": f"rknn-toolkit2 {TOOLKIT_VERSION}",
        "platform": platform,
        "model": str(folder / "model.rknn"),
        "mean": mean,
        "std": std,
        "channel_order": pre.order,
        "inputs": str(inputs),
        "calibration_files": names,
        "conversion": conversion,  # what `hil --emulate` rebuilds the model from
        "memory": {"rknn_bytes": result["rknn_bytes"]},
    }
    return {"quantization": quantization, "rknn": section}
