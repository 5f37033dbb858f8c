"""One device, many inputs: upload, run, collect outputs and timings.

Shared by `hil` and by `build`'s own check of the program it just compiled, so both
exercise the same protocol path a board sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compiler.errors import ExternalFailure
from compiler.hil.link import DeviceError, DeviceLink
from compiler.hil.protocol import ErrorCode


@dataclass
class DeviceRuns:
    info: dict[str, str]
    outputs: np.ndarray  # [N, output_count] int8 or int16, in the device's (NHWC) order
    elapsed: list[int] = field(default_factory=list)  # every timed run, in the device's counter unit
    layers: list[int] | None = None
    upload_bytes: int = 0
    upload_seconds: float = 0.0


def image_bytes(pixels_chw: np.ndarray) -> bytes:
    """One uint8 RGB image, NCHW in our arrays, as the device takes it: HWC."""
    return np.ascontiguousarray(np.asarray(pixels_chw, dtype=np.uint8).transpose(1, 2, 0)).tobytes()


def check_identity(info: dict[str, str], expected: dict[str, str], where: str) -> None:
    """Refuse to measure a device that runs another model or target than the build's."""
    for key, want in expected.items():
        got = info.get(key)
        if want and got != want:
            raise ExternalFailure(f"{where}: the device reports {key}={got!r}, the build has {want!r} (flash it again)")


def run_inputs(
    link: DeviceLink,
    pixels: np.ndarray,
    *,
    warmup: int = 0,
    timed: int = 1,
    per_layer: bool = False,
    run_timeout_s: float = 600.0,
    advance: Callable[[], None] | None = None,
    info: dict[str, str] | None = None,
) -> DeviceRuns:
    """Run every image (uint8 NCHW) on the device; a device reset mid-way is recovered once per image.

    The first RUN may take up to run_timeout_s; later ones get four times the slowest
    RUN seen so far (at least 5 s), so a lost reply is retried in seconds, not minutes.
    `info` is the device's INFO reply when the caller already asked for it.
    """
    slowest = 0.0
    info = info or link.info()
    count = int(info.get("output_count", "0"))
    dtype = {"int16": np.int16, "float32": np.float32}.get(info.get("output_dtype", ""), np.int8)
    expected_bytes = int(info.get("input_bytes", "0"))
    runs = DeviceRuns(info, np.zeros((len(pixels), count), dtype=dtype))
    for i, image in enumerate(pixels):
        data = image_bytes(image)
        if len(data) != expected_bytes:
            raise ExternalFailure(
                f"{link.url}: the device takes {expected_bytes} input bytes, the image has {len(data)}"
            )
        for attempt in (0, 1):
            started = time.monotonic()
            link.load(data)
            runs.upload_seconds += time.monotonic() - started
            runs.upload_bytes += len(data)
            budget = min(run_timeout_s, max(5.0, 4 * slowest)) if slowest else run_timeout_s
            started = time.monotonic()
            try:
                reply = link.run(warmup, timed, per_layer and i == 0, timeout_s=budget)
                slowest = max(slowest, time.monotonic() - started)
                break
            except DeviceError as exc:
                if exc.code != ErrorCode.NOT_READY or attempt:
                    raise
        output = np.frombuffer(reply.output, dtype=dtype)
        if output.size != count:
            raise ExternalFailure(f"{link.url}: RUN returned {output.size} values, INFO says {count}")
        runs.outputs[i] = output
        runs.elapsed += reply.elapsed
        if per_layer and i == 0:
            runs.layers = link.layers()
        if advance:
            advance()
    return runs
