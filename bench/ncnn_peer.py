"""ncnn as a benchmark peer: Tencent's mobile inference engine on the same ONNX model as ours.

Why: ncnn is the engine most MobileFaceNet deployments on ARM phones and boards use, so
it is the peer a user compares us with. Running it on *our* ONNX file (not on a model
converted some other way) keeps the comparison about the engine alone.

How:
- Conversion: pnnx (PyPI `pnnx`) reads the ONNX file offline and writes ncnn's
  .param/.bin (`pnnx model.onnx inputshape=[1,3,112,112] fp16=0`; fp16=0 keeps the
  weights fp32). We run pnnx's self-contained executable in a subprocess with a timeout.
  The `pnnx` Python package itself is not used: its `__init__` imports torch (so does
  its console script), and its wheel declares `torch` as a dependency although the
  executable does not need it. That is why pnnx is not in requirements.lock (installing
  it from there would pull torch and CUDA): the executable is taken from an installed
  `pnnx` (`pip install --no-deps pnnx==PNNX_VERSION`), from $MFNC_PNNX, or fetched once
  with `pip download --no-deps` into the git-ignored .mfnc-cache/.
- Inference: the `ncnn` wheel (pinned in requirements.lock), `ncnn.Net` with
  `num_threads` threads, light mode, fp32 only (fp16/bf16 storage, packing and
  arithmetic off, no Vulkan) so that its embeddings compare with onnxruntime fp32.
  Input/output blob names come from the converted .param (pnnx names them in0/out0).

    from bench.ncnn_peer import available, convert, make_engine
    param, bin_ = convert(Path("model.onnx"), Path("work"))
    run = make_engine(param, bin_, threads=1, image_nchw=x)   # x: float32 [1,3,H,W]
    embedding = run()                                         # float32 [128]
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

PNNX_VERSION = "20261020"
NCNN_VERSION = "1.0.20261020"
PNNX_MAX_IR_VERSION = 13  # its onnxruntime 1.30
CONVERT_TIMEOUT_S = 300
DOWNLOAD_TIMEOUT_S = 600
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CACHE = Path(__file__).resolve().parents[1] / ".mfnc-cache" / f"pnnx-{PNNX_VERSION}"


def _installed_pnnx() -> Path | None:
    """The executable inside an installed pnnx package, found without importing it (torch)."""
    env = os.environ.get("MFNC_PNNX")
    if env:
        return Path(env) if Path(env).is_file() else None
    spec = importlib.util.find_spec("pnnx")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        exe = Path(folder) / "pnnx"
        if exe.is_file() and os.access(exe, os.X_OK):
            return exe
    cached = _CACHE / "pnnx"
    return cached if cached.is_file() else None


def pnnx_executable() -> Path:
    """The pnnx executable; fetched once with `pip download --no-deps` if not installed."""
    exe = _installed_pnnx()
    if exe is not None:
        return exe
    if os.environ.get("MFNC_PNNX"):
        raise RuntimeError(f"$MFNC_PNNX={os.environ['MFNC_PNNX']} is not a file")
    with tempfile.TemporaryDirectory(prefix="pnnx-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        cmd += ["-d", tmp, f"pnnx=={PNNX_VERSION}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pnnx=={PNNX_VERSION}: pip download timed out after {DOWNLOAD_TIMEOUT_S} s") from None
        wheels = list(Path(tmp).glob("pnnx-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"pnnx=={PNNX_VERSION} is not installed and pip download failed: {' | '.join(tail)}")
        _CACHE.mkdir(parents=True, exist_ok=True)
        partial = _CACHE / f"pnnx.{os.getpid()}.part"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open("pnnx/pnnx") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.chmod(0o755)
        partial.replace(_CACHE / "pnnx")
    return _CACHE / "pnnx"


def available() -> str | None:
    """None if ncnn can run here, else why not. (pnnx, if missing, is fetched by convert().)"""
    try:
        import ncnn
    except ImportError as exc:
        return f"ncnn is not installed ({exc}); pip install ncnn=={NCNN_VERSION}"
    if not hasattr(ncnn, "Net"):
        return f"the ncnn module at {getattr(ncnn, '__file__', '?')} has no Net"
    if sys.platform != "linux":
        return f"pnnx conversion is only set up for Linux here, not {sys.platform}"
    return None


def _input_shape(onnx_path: Path) -> list[int]:
    """The first graph input's shape (symbolic or unknown dimensions as 1)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise RuntimeError(f"{onnx_path}: not a readable ONNX model ({exc})") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise RuntimeError(f"{onnx_path}: expected one input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.dim_value > 0 else 1 for d in dims]


def _clamp_ir_version(model_path: Path) -> None:
    """pnnx's bundled onnxruntime reads ONNX IR versions up to PNNX_MAX_IR_VERSION (newer
    ones crash pnnx with "Unsupported model IR version"); MobileFaceNets need nothing newer."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    if model.ir_version > PNNX_MAX_IR_VERSION:
        model.ir_version = PNNX_MAX_IR_VERSION
        onnx.save(model, str(model_path))


def convert(onnx_path: Path, work: Path) -> tuple[Path, Path]:
    """ONNX -> ncnn (.param, .bin) with pnnx, fp32 weights, cached in `work` by file content."""
    onnx_path, work = Path(onnx_path), Path(work)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
    param = work / f"{onnx_path.stem}-{digest}.ncnn.param"
    bin_ = param.with_suffix(".bin")
    if param.is_file() and bin_.is_file():
        return param, bin_
    shape = _input_shape(onnx_path)
    exe = pnnx_executable()
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pnnx-", dir=work) as tmp:
        scratch = Path(tmp)
        model = scratch / "model.onnx"  # pnnx writes its side files next to its input
        shutil.copyfile(onnx_path, model)
        _clamp_ir_version(model)
        cmd = [str(exe), model.name, f"inputshape=[{','.join(map(str, shape))}]", "fp16=0", "device=cpu"]
        cmd += ["ncnnparam=out.ncnn.param", "ncnnbin=out.ncnn.bin"]
        try:
            proc = subprocess.run(
                cmd, cwd=scratch, capture_output=True, text=True, errors="replace", timeout=CONVERT_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pnnx timed out after {CONVERT_TIMEOUT_S} s converting {onnx_path}") from None
        out_param, out_bin = scratch / "out.ncnn.param", scratch / "out.ncnn.bin"
        if proc.returncode != 0 or not out_param.is_file() or not out_bin.is_file():
            log = _ANSI.sub("", proc.stdout + proc.stderr).strip().splitlines()[-6:]
            raise RuntimeError(
                f"pnnx failed to convert {onnx_path} (exit {proc.returncode}): " + " | ".join(log or ["no output"])
            )
        out_bin.replace(bin_)
        out_param.replace(param)  # last: a .param present means the pair is complete
    return param, bin_


def blob_names(param: Path) -> tuple[str, str]:
    """(input, output) blob names of a single-input, single-output ncnn .param."""
    produced: list[str] = []
    consumed: set[str] = set()
    inputs: list[str] = []
    lines = Path(param).read_text().splitlines()
    for line in lines[2:]:  # magic, then "layer_count blob_count"
        fields = line.split()
        if len(fields) < 4:
            continue
        kind, n_in, n_out = fields[0], int(fields[2]), int(fields[3])
        bottoms, tops = fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]
        consumed.update(bottoms)
        produced += tops
        if kind == "Input":
            inputs += tops
    outputs = [b for b in produced if b not in consumed and b not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise RuntimeError(f"{param}: expected one input and one output blob, found {inputs} and {outputs}")
    return inputs[0], outputs[0]


def make_engine(param: Path, bin: Path, threads: int, image_nchw: np.ndarray) -> Callable[[], np.ndarray]:
    """A zero-argument call running one fp32 inference of `image_nchw` ([1,C,H,W]); returns
    the embedding as a flat float32 array."""
    import ncnn

    if image_nchw.ndim != 4 or image_nchw.shape[0] != 1:
        raise ValueError(f"expected one NCHW image [1,C,H,W], got shape {image_nchw.shape}")
    in_name, out_name = blob_names(param)
    net = ncnn.Net()
    opt = net.opt
    opt.lightmode = True
    opt.num_threads = int(threads)
    opt.use_vulkan_compute = False
    for flag in (
        "use_fp16_storage",
        "use_fp16_packed",
        "use_fp16_arithmetic",
        "use_bf16_storage",
        "use_bf16_packed",
        "use_int8_inference",
    ):
        setattr(opt, flag, False)
    if net.load_param(str(param)) != 0 or net.load_model(str(bin)) != 0:
        raise RuntimeError(f"ncnn could not load {param} / {bin}")
    chw = np.ascontiguousarray(image_nchw[0], dtype=np.float32)
    mat = ncnn.Mat(chw).clone()  # own copy: the numpy buffer may go away

    def run() -> np.ndarray:
        ex = net.create_extractor()
        if ex.input(in_name, mat) != 0:
            raise RuntimeError(f"ncnn: input blob {in_name!r} rejected")
        ret, out = ex.extract(out_name)
        if ret != 0:
            raise RuntimeError(f"ncnn: extracting {out_name!r} failed ({ret})")
        return np.array(out, dtype=np.float32).reshape(-1)

    run.net = net  # type: ignore[attr-defined]  # keep the Net and input alive with the call
    run.mat = mat  # type: ignore[attr-defined]
    return run
