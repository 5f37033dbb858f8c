"""Model ingest: any accepted model spec -> our IR plus the original ONNX as reference.

A spec is a file (`.onnx`, `.keras`, `.h5`, SavedModel directory, `.tflite`) or a
family name (DESIGN section 8). TensorFlow formats are converted to ONNX first, so
every model reaches the IR through the one ONNX importer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from compiler.errors import BadInput
from compiler.frontend.onnx_import import image_input, model_sha256, onnx_to_ir, read_onnx, simplify
from compiler.ir import Graph

DEFAULT_MODEL_NAME = "default"
# The shipped trained PReLU MobileFaceNet (docs/default-model.md).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent.parent / "models" / "default.onnx"


@dataclass
class LoadedModel:
    """An ingested model: the IR, and the original ONNX that checks compare against."""

    name: str
    path: Path
    sha256: str
    source_format: str
    reference: onnx.ModelProto
    graph: Graph
    notes: list[str] = field(default_factory=list)


def _kind_of(path: Path) -> str:
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise BadInput(f"{path}: a directory but not a SavedModel (no saved_model.pb)")
    suffix = path.suffix.lower()
    kinds = {".onnx": "onnx", ".keras": "keras", ".h5": "keras", ".hdf5": "keras", ".tflite": "tflite"}
    if suffix not in kinds:
        raise BadInput(
            f"{path}: unknown model format '{suffix or path.name}' "
            "(expected .onnx, .keras, .h5, .tflite or a SavedModel directory)"
        )
    return kinds[suffix]


def resolve_model_path(spec: str) -> tuple[str, Path]:
    """Turn a --model value into (display name, path), building family models on demand."""
    from compiler import family

    if spec in family.FAMILY_NAMES:
        return spec, family.family_onnx(spec)
    if spec == DEFAULT_MODEL_NAME:
        if not DEFAULT_MODEL_PATH.exists():
            raise BadInput(f"--model default: {DEFAULT_MODEL_PATH} is missing (a broken installation?)")
        return spec, DEFAULT_MODEL_PATH
    path = Path(spec)
    if not path.exists():
        raise BadInput(f"{spec}: no such model file or family name (family: {', '.join(family.FAMILY_NAMES)})")
    return path.name, path


def load_model(spec: str) -> LoadedModel:
    """Ingest a model spec into the IR (not yet transformed by any pass)."""
    name, path = resolve_model_path(spec)
    kind = _kind_of(path)
    if kind == "onnx":
        original = read_onnx(path)
    else:
        from compiler.frontend.tf_convert import convert_in_tempdir

        original = onnx.load_from_string(convert_in_tempdir(path, kind))
    source = str(path)
    input_name, shape, _layout = image_input(original, source)
    simplified, note = simplify(original, input_name, shape)
    graph = onnx_to_ir(simplified, source, name)
    return LoadedModel(name, path, model_sha256(path), kind, original, graph, [note])
