"""The MobileFaceNet family: Keras definitions, deterministic random weights, ONNX export.

Family names without trained weights (DESIGN section 8) resolve to seed-0 random weights,
for structure and speed work. Importing this package must stay cheap: TensorFlow is only
imported when a model is actually built, so a cache hit in `family_onnx` costs a stat,
not a TensorFlow import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.errors import BadInput

# Needs only numpy and onnx, not TensorFlow, so it is cheap to import here.
from compiler.family.keras_to_onnx import export_onnx

if TYPE_CHECKING:
    import keras

FAMILY_NAMES: tuple[str, ...] = (
    "mobilefacenet",
    "mobilefacenet-112x96",
    "mobilefacenet-96x96",
    "mobilefacenet-m",
    "mobilefacenet-s",
    "mobilefacenet-relu",
    "mobilefacenet-x2",
)

# Bump whenever the architecture, the weight init or the exporter output changes, so
# stale cached exports are never picked up.
FAMILY_VERSION = 1

__all__ = ["FAMILY_NAMES", "FAMILY_VERSION", "build_keras_model", "export_onnx", "family_onnx"]


def _check_name(name: str) -> None:
    if name not in FAMILY_NAMES:
        raise BadInput(f"unknown family name {name!r}; valid names: {', '.join(FAMILY_NAMES)}")


def build_keras_model(name: str, seed: int | None = 0) -> keras.Model:
    """A trainable Keras model of family member `name`.

    With an int seed every weight comes from numpy's PCG64(seed), identical on any
    machine; seed=None keeps Keras' initializers, for training from scratch.
    """
    _check_name(name)
    from compiler.family.mobilefacenet import build_model

    return build_model(name, seed)


def cache_dir() -> Path:
    """Where exported family models live: $MFNC_CACHE_DIR/family, else ~/.cache/mfnc/family."""
    root = os.environ.get("MFNC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mfnc") / "family"


def family_onnx(name: str) -> Path:
    """Path of the ONNX export of `name` with seed-0 weights, built once and cached."""
    _check_name(name)
    path = cache_dir() / f"{name}-v{FAMILY_VERSION}.onnx"
    if path.is_file():  # checked before any TensorFlow import: a hit must stay fast
        return path
    export_onnx(build_keras_model(name, seed=0), path)
    return path
