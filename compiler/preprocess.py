"""Preprocessing specs: how raw uint8 RGB pixels become the model's float input.

The device always receives raw RGB pixels (HWC, as a camera gives them); the spec says
what the model was trained on so that the compiler can fold it into the first layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.errors import BadInput

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT_HELP = "paper, imagenet, or rgb|bgr:MEAN_R,MEAN_G,MEAN_B:STD_R,STD_G,STD_B (0-255 pixel units)"


@dataclass(frozen=True)
class Preprocess:
    """Channel order the model expects, and per-RGB-channel mean/std in pixel units."""

    spec: str
    order: str  # "rgb" or "bgr": the model's input channel order
    mean: tuple[float, float, float]  # for R, G, B
    std: tuple[float, float, float]  # for R, G, B

    @property
    def source_channel(self) -> list[int]:
        """For each model input channel, the RGB channel it reads."""
        return [0, 1, 2] if self.order == "rgb" else [2, 1, 0]

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """RGB pixels NCHW (any numeric dtype) -> the model's float input, NCHW."""
        x = pixels.astype(np.float64)
        mean = np.asarray(self.mean).reshape(1, 3, 1, 1)
        std = np.asarray(self.std).reshape(1, 3, 1, 1)
        x = (x - mean) / std
        return x[:, self.source_channel].astype(np.float32)

    def as_dict(self) -> dict:
        return {"spec": self.spec, "order": self.order, "mean": list(self.mean), "std": list(self.std)}


def parse_preprocess(spec: str) -> Preprocess:
    """Parse --preprocess; errors name the bad part."""
    if spec == "paper":
        return Preprocess(spec, "rgb", (127.5, 127.5, 127.5), (128.0, 128.0, 128.0))
    if spec == "imagenet":
        mean = tuple(m * 255.0 for m in _IMAGENET_MEAN)
        std = tuple(s * 255.0 for s in _IMAGENET_STD)
        return Preprocess(spec, "rgb", mean, std)  # type: ignore[arg-type]
    parts = spec.split(":")
    if len(parts) != 3 or parts[0].lower() not in ("rgb", "bgr"):
        raise BadInput(f"--preprocess '{spec}': expected {FORMAT_HELP}")
    try:
        mean = tuple(float(v) for v in parts[1].split(","))
        std = tuple(float(v) for v in parts[2].split(","))
    except ValueError:
        raise BadInput(f"--preprocess '{spec}': mean and std must be numbers ({FORMAT_HELP})") from None
    if len(mean) != 3 or len(std) != 3:
        raise BadInput(f"--preprocess '{spec}': give three means and three stds ({FORMAT_HELP})")
    if any(not np.isfinite(s) or s <= 0 for s in std) or any(not np.isfinite(m) for m in mean):
        raise BadInput(f"--preprocess '{spec}': std must be positive and all values finite")
    return Preprocess(spec, parts[0].lower(), mean, std)  # type: ignore[arg-type]
