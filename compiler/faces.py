"""Face image folders: find, load and size aligned face images as raw RGB pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compiler.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, so per-identity sub-folders work), sorted."""
    if not folder.is_dir():
        raise BadInput(f"{folder}: not a folder of face images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"{folder}: no images found ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image(path: Path, height: int, width: int) -> tuple[np.ndarray, bool]:
    """One image as uint8 RGB, NCHW [1,3,H,W]; the flag says whether it had to be resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput(f"{path}: cannot read image ({exc})") from None
    resized = rgb.size != (width, height)
    if resized:
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(pixels), resized


def load_images(paths: list[Path], height: int, width: int) -> tuple[np.ndarray, int]:
    """Several images stacked [N,3,H,W]; also returns how many needed a resize."""
    loaded = [load_image(p, height, width) for p in paths]
    return np.concatenate([pixels for pixels, _ in loaded]), sum(resized for _, resized in loaded)


def resize_pixels(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 RGB NCHW images (bilinear) when a model wants another input size."""
    from PIL import Image

    if images.shape[2:] == (height, width):
        return images
    out = [
        np.asarray(Image.fromarray(img.transpose(1, 2, 0)).resize((width, height), Image.Resampling.BILINEAR))
        for img in images
    ]
    return np.stack(out).transpose(0, 3, 1, 2).copy()
