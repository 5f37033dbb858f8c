"""rknn-toolkit2's own virtualenv, created the first time an NPU target is built.

The toolkit (2.5.0, cp311 x86_64) pins numpy<=1.26.4, onnx<=1.18 and torch<=2.4, none
of which can share mfnc's environment (numpy 2). Following DESIGN section 4 we install
a CPU torch first, the toolkit with `--no-deps`, then the rest of its dependencies with
its pins (opencv headless: no GUI), and `setuptools<81` (the toolkit imports
`pkg_resources`). torch is a large download on a machine without a local wheel
(~200 MB for the CPU build; PyPI's default Linux build pulls CUDA libraries, ~2.8 GB):
point `MFNC_RKNN_TORCH_INDEX` at a CPU-only index to avoid that.

Location: `$MFNC_RKNN_VENV`, else `<cache>/rknn-toolkit2-<version>` (`$MFNC_CACHE_DIR`
or `~/.cache/mfnc`). A stamp marks a finished install; an interrupted one is redone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from compiler import ui
from compiler.errors import ExternalFailure

TOOLKIT_VERSION = "2.5.0"
TORCH = "torch==2.13.0"  # the newest CPU torch the toolkit works with (it asks for <=2.4, but runs)
DEPENDENCIES = (
    "numpy==1.26.4",
    "onnx==1.18.0",
    "onnxruntime>=1.17,<1.23",
    "protobuf>=4.21.6,<=4.25.4",
    "psutil>=5.9.0",
    "ruamel.yaml>=0.17.21",
    "scipy>=1.9.3,<1.14",
    "tqdm>=4.64.1",
    "opencv-python-headless>=4.5.5.64,<4.11",
    "fast-histogram>=0.11",
    "setuptools<81",
)
STAMP = ".mfnc-complete"
PIP_TIMEOUT_S = 1800


def venv_dir() -> Path:
    if os.environ.get("MFNC_RKNN_VENV"):
        return Path(os.environ["MFNC_RKNN_VENV"])
    root = os.environ.get("MFNC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mfnc") / f"rknn-toolkit2-{TOOLKIT_VERSION}"


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{what} took over {PIP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise ExternalFailure(f"{what} failed: {why.strip()}")


def toolkit_python() -> Path:
    """The toolkit venv's python, installing the venv on first use."""
    folder = venv_dir()
    python = folder / "bin" / "python"
    if (folder / STAMP).exists() and python.exists():
        return python
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    torch_index = os.environ.get("MFNC_RKNN_TORCH_INDEX")
    with ui.step(f"installing rknn-toolkit2 {TOOLKIT_VERSION} in its own virtualenv {folder} (once; torch is large)"):
        _run([sys.executable, "-m", "venv", str(folder)], "creating the rknn-toolkit2 virtualenv")
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        _run([*pip, TORCH, *(["--index-url", torch_index] if torch_index else [])], f"pip install {TORCH}")
        _run([*pip, "--no-deps", f"rknn-toolkit2=={TOOLKIT_VERSION}"], "pip install rknn-toolkit2")
        _run([*pip, *DEPENDENCIES], "pip install rknn-toolkit2's dependencies")
        _run([str(python), "-c", "from rknn.api import RKNN"], "importing rknn-toolkit2")
        (folder / STAMP).write_text(f"rknn-toolkit2=={TOOLKIT_VERSION}\n")
    return python
