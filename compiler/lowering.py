"""Ingest a model and lower it through the checked graph passes (shared by build and quantize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler import ui
from compiler.equivalence import OnnxReference, random_pixels
from compiler.faces import list_images, load_images, resize_pixels
from compiler.frontend import LoadedModel, load_model
from compiler.ir import Graph
from compiler.passes import PassRecord, run_passes
from compiler.preprocess import Preprocess
from compiler.synthetic import synthetic_eval_set

RANDOM_CHECK_IMAGES = 2
FACE_CHECK_IMAGES = 2


def check_images(calib: Path | None, height: int, width: int) -> tuple[np.ndarray, dict]:
    """Seeded random pixels plus the first faces of --calib (or synthetic faces)."""
    images = random_pixels(RANDOM_CHECK_IMAGES, height, width, seed=0)
    info: dict = {"random": RANDOM_CHECK_IMAGES}
    if calib is not None:
        faces, resized = load_images(list_images(calib)[:FACE_CHECK_IMAGES], height, width)
        info.update(faces_source=str(calib), resized=resized)
    else:
        faces = resize_pixels(synthetic_eval_set(FACE_CHECK_IMAGES)[0], height, width)
        info.update(faces_source="synthetic")
    info["faces"] = int(faces.shape[0])
    return np.concatenate([images, faces]), info


def ingest_and_lower(
    spec: str, pre: Preprocess, calib: Path | None
) -> tuple[LoadedModel, Graph, list[PassRecord], dict]:
    """(model, lowered graph, pass records, check-image info)."""
    with ui.step(f"ingesting {spec}"):
        model = load_model(spec)
    graph = model.graph
    images, info = check_images(calib, *graph.image_hw())
    reference = OnnxReference(model.reference, graph.meta["source_input"], graph.meta["source_layout"], pre)
    with ui.step("graph passes with float equivalence checks"):
        lowered, records = run_passes(graph, reference, images, pre)
    return model, lowered, records, info
