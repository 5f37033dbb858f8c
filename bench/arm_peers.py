"""Instruction counts of peer engines (onnxruntime, LiteRT, ncnn) on aarch64 code.

    python -m bench.arm_peers [--onnx compiler/models/default.onnx] [--tflite X.tflite]
                              [--ncnn-param X.param --ncnn-bin X.bin] [--repeat 2]
                              [--timeout 900] [--json FILE]

Why: our rk3399 figures (bench/kernel_speed.py) are guest instructions of our C/NEON
runtime under `qemu-aarch64 -cpu cortex-a72` with our TCG counting plugin
(docs/icount.md). To compare with the peers on the same footing we run *their*
aarch64 builds - the cp311 aarch64 wheels from PyPI at the versions pinned on this
host - in the same emulator with the same plugin, and count one inference.

How:
- `compiler.backends.arm64_python.ensure(cache)` gives the emulated Python 3.11
  (Debian arm64 sysroot + numpy). `peer_wheels_site(cache)` adds a second site folder,
  `<cache>/arm64-peers/site`, with the onnxruntime, ai-edge-litert and ncnn aarch64
  wheels (none of them needs another package to import and run: measured).
- `<cache>/arm64-peers/root` is the sysroot QEMU gets with `-L`: symbolic links to
  arm64-python's sysroot plus a `proc/cpuinfo` of Cortex-A72 cores. qemu-user 7.2
  does not emulate /proc/cpuinfo for aarch64, so the guest would read the host's x86
  one; onnxruntime's cpuinfo library then dereferences NULL while importing
  (SIGSEGV), and XNNPACK would pick kernels for an unknown core. With `-L`, QEMU
  opens `<root>/proc/cpuinfo` instead. The hardware capabilities (AT_HWCAP) come
  from `-cpu cortex-a72` itself: no dot product, no fp16 arithmetic.
- `bench/arm_guest.py` runs inside the guest: loads the model on one thread, runs
  two warm-up inferences, then counts ONE inference between two icount markers and
  subtracts the cost of an empty marker pair.

These are **guest instruction counts, not cycles**: an A72 dual-issues and stalls on
memory, and engines differ in how many instructions per cycle they reach. They
compare code, like kernel_speed's rk3399 rows (which this module does not redo).
Counts are for a single-threaded guest (QEMU 7.2's inline counter is exact only
then); every engine is configured with one thread.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from compiler import ui
from compiler.backends import arm64_python, tvm_runner
from compiler.errors import BadInput, ExternalFailure, MfncError
from compiler.hil import icount

ROOT = Path(__file__).resolve().parents[1]
GUEST = Path(__file__).resolve().parent / "arm_guest.py"
DEFAULT_ONNX = ROOT / "compiler" / "models" / "default.onnx"
CPU = "cortex-a72"
# engine -> (PyPI distribution, model files the guest needs)
ENGINES = {
    "onnxruntime": ("onnxruntime", ("model",)),
    "litert": ("ai-edge-litert", ("model",)),
    "ncnn": ("ncnn", ("param", "bin")),
}
# GPU-only (17 MB); never loaded by a CPU interpreter.
SKIPPED_MEMBERS = ("ai_edge_litert/libLiteRtWebGpuAccelerator.so",)
STAMP = ".complete"
# Debian bookworm has glibc 2.36; ai-edge-litert ships manylinux_2_27 only, which
# tvm_runner's two platform tags (2_28, 2014) do not match: pip does not widen them.
WHEEL_PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, 37)))
DEFAULT_TIMEOUT_S = 900.0
DOWNLOAD_TIMEOUT_S = 600
RESULT_PREFIX = "MFN_ARM_PEER "
# One Cortex-A72 (r0p2, as in the RK3399) per host CPU; see the module docstring.
CPUINFO_CORE = (
    "processor\t: {i}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 2\n\n"
)


def _base(cache: Path | None) -> Path:
    return cache or tvm_runner.cache_dir().parent


def home(cache: Path | None = None) -> Path:
    return _base(cache) / "arm64-peers"


def peer_pins() -> tuple[dict[str, str], dict[str, str]]:
    """({distribution: host version}, {distribution: why skipped}) for the peer engines."""
    pins, skipped = {}, {}
    for dist, _files in ENGINES.values():
        try:
            pins[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            skipped[dist] = f"{dist} is not installed on the host, so it has no pinned version to mirror"
    return pins, skipped


def _cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            cores = sum(1 for line in handle if line.startswith("processor"))
    except OSError:
        cores = 0
    return "".join(CPUINFO_CORE.format(i=i) for i in range(cores or os.cpu_count() or 1))


def _write_root(root: Path, sysroot: Path) -> None:
    """Links to the arm64-python sysroot, plus our own proc/cpuinfo."""
    root.mkdir(parents=True, exist_ok=True)
    for entry in sorted(sysroot.iterdir()):
        if entry.name != "proc":
            (root / entry.name).symlink_to(entry.resolve())
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(_cpuinfo_text())


def _extract(wheel: Path, site: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member not in SKIPPED_MEMBERS:
                archive.extract(member, site)
    for so in site.rglob("*.so*"):
        so.chmod(0o755)


def _download(folder: Path, pins: dict[str, str]) -> dict[str, Path]:
    """The cp311 aarch64 wheels of `pins` in `folder`, with the wider platform tags LiteRT needs."""
    return tvm_runner.download_aarch64_wheels(folder, pins, WHEEL_PLATFORMS)


def _stamp(pins: dict[str, str], skipped: dict[str, str], sysroot: Path) -> str:
    return json.dumps({"pins": pins, "skipped": skipped, "sysroot": str(sysroot.resolve())}, sort_keys=True)


def peer_wheels_site(cache: Path | None = None) -> Path:
    """The site folder of the peers' aarch64 wheels, set up on first use (~95 MB).

    Rebuilt when the host's versions change (e.g. ncnn installed later). Built in a
    staging folder and renamed when complete, like arm64-python beside it.
    """
    final = home(cache)
    pins, skipped = peer_pins()
    if not pins:
        raise ExternalFailure("none of onnxruntime, ai-edge-litert, ncnn is installed on the host")
    sysroot = arm64_python.home(cache) / "root"
    stamp = _stamp(pins, skipped, sysroot)
    if (final / STAMP).is_file() and (final / STAMP).read_text() == stamp:
        return final / "site"
    arm64_python.ensure(cache)  # the sysroot our root links to
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".arm64-peers-", dir=final.parent))
    try:
        names = ", ".join(f"{d} {v}" for d, v in pins.items())
        with ui.step(f"setting up aarch64 wheels of {names} (once)"):
            for dist, why in skipped.items():
                ui.warn(f"{dist} skipped: {why}")
            wheels = _download(_base(cache) / "aarch64-wheels", pins)
            site = staging / "site"
            site.mkdir()
            for wheel in wheels.values():
                _extract(wheel, site)
            _write_root(staging / "root", sysroot)
            (staging / STAMP).write_text(stamp)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final / "site"


def _model_files(engine: str, model_files: dict) -> dict[str, str]:
    if engine not in ENGINES:
        raise BadInput(f"unknown peer engine {engine!r}; expected one of {', '.join(ENGINES)}")
    needed = ENGINES[engine][1]
    missing = [key for key in needed if key not in model_files]
    if missing:
        raise BadInput(f"{engine}: model_files needs {', '.join(needed)} (missing {', '.join(missing)})")
    files = {}
    for key, value in model_files.items():
        if key in needed:
            path = Path(value).resolve()
            if not path.is_file():
                raise BadInput(f"{engine}: {key} file {value} does not exist")
            files[key] = str(path)
        else:
            files[key] = str(value)  # e.g. ncnn blob names "input"/"output"
    return files


def count_instructions(
    engine: str,
    model_files: dict,
    cache: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    warmup: int = 2,
) -> dict:
    """Guest instructions of ONE inference of `engine` under qemu-aarch64 -cpu cortex-a72.

    model_files: onnxruntime and litert {"model": path}; ncnn {"param", "bin"} (and
    optionally the blob names "input", "output"). The input is a fixed pseudo-face:
    normalised ((x - 127.5) / 128) for float inputs unless "input_kind": "pixels" (models
    with the preprocessing folded in, like our .tflite exports); an int8 input whose
    quantization covers 0..255 gets pixels. Returns {"engine", "instructions",
    "seconds" (host wall time of the whole emulated run), ...the guest's details}.
    """
    files = _model_files(engine, model_files)
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise ExternalFailure("qemu-aarch64: not installed (run `make setup`)")
    arm64_python.ensure(cache)  # no-op once set up
    site = peer_wheels_site(cache)
    dist = ENGINES[engine][0]
    skipped = json.loads((home(cache) / STAMP).read_text())["skipped"]
    if dist in skipped:
        raise ExternalFailure(f"{engine}: {skipped[dist]}")
    root = home(cache) / "root"
    cpuinfo = root / "proc" / "cpuinfo"
    if cpuinfo.read_text() != _cpuinfo_text():  # the cache moved to a machine with other cores
        ui.write_atomic(cpuinfo, _cpuinfo_text())
    plugin = icount.build_plugin(_base(cache) / "icount-plugin")  # outlives site rebuilds
    python = arm64_python.home(cache) / "root" / "usr" / "bin" / "python3.11"
    spec = json.dumps({"engine": engine, "files": files, "warmup": warmup})
    env = {  # fixed: counts depend (slightly) on the environment's size, docs/icount.md
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C",
        "PYTHONPATH": f"{arm64_python.home(cache) / 'site'}:{site}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
    }
    with tempfile.TemporaryDirectory(prefix="mfn-arm-peer-") as tmp:
        cmd = icount.qemu_user_command(
            python, plugin, Path(tmp) / "count.bin", CPU, str(root), (str(GUEST), spec), qemu=qemu
        )
        with ui.step(f"{engine}: one inference counted under qemu-aarch64 -cpu {CPU}"):
            start = time.monotonic()
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise ExternalFailure(f"{engine} under qemu-aarch64: no result within {timeout:.0f} s") from None
            seconds = time.monotonic() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        errors = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = errors[-1].strip() if errors else "no output"
        status = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        raise ExternalFailure(f"{engine} under qemu-aarch64 failed ({status}): {why}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return {
        "engine": engine,
        "instructions": result.pop("instructions"),
        "seconds": round(seconds, 1),
        "cpu": CPU,
        **{k: v for k, v in result.items() if k != "engine"},
    }


def _ncnn_model(onnx: Path, work: Path) -> dict:
    from bench import ncnn_peer

    param, weights = ncnn_peer.convert(onnx, work)
    in_name, out_name = ncnn_peer.blob_names(param)
    return {"param": param, "bin": weights, "input": in_name, "output": out_name}


def count_all(art, cache: Path | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> dict:
    """Every peer variant of one bench model (a bench.artifacts.Artifacts), for bench/instructions.py.

    {"rows": [{"engine": label, "instructions", "seconds", ...} or {"engine", "error"}],
     "skipped": {label: why}}: an engine whose wheel is not set up is skipped, any other
    failure is that row's error and the other rows still run.
    """
    variants = (  # label, engine, model files (made lazily: each may fail on its own)
        ("LiteRT int8 (XNNPACK), our .tflite", "litert", lambda: {"model": art.int8_tflite()}),
        ("LiteRT fp32 (XNNPACK), our .tflite", "litert", lambda: {"model": art.float_tflite(), "input_kind": "pixels"}),
        ("onnxruntime fp32", "onnxruntime", lambda: {"model": art.model.onnx}),
        ("onnxruntime int8 (its QDQ)", "onnxruntime", lambda: {"model": art.ort_qdq()}),
        ("ncnn fp32 (pnnx)", "ncnn", lambda: _ncnn_model(art.model.onnx, art.work / "ncnn")),
    )
    rows, skipped = [], {}
    for label, engine, files in variants:
        try:
            row = count_instructions(engine, files(), cache, timeout)
        except ExternalFailure as exc:
            if "not installed on the host" in str(exc) or "qemu-aarch64: not installed" in str(exc):
                skipped[label] = str(exc)
            else:
                rows.append({"engine": label, "instructions": None, "error": str(exc).splitlines()[0]})
            continue
        except Exception as exc:  # a model that could not be made (export, conversion): that row only
            rows.append(
                {"engine": label, "instructions": None, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
            )
            continue
        rows.append({**row, "engine": label, "runtime": engine})
        ui.info(f"{label}: {row['instructions']:,d} instructions (emulated run {row['seconds']:.1f} s)")
    return {"unit": f"guest instructions under qemu-aarch64 -cpu {CPU} (not cycles)", "rows": rows, "skipped": skipped}


def _ncnn_files(args: argparse.Namespace) -> dict:
    """--ncnn-param/--ncnn-bin, else bench.ncnn_peer's pnnx conversion of --onnx (cached)."""
    if args.ncnn_param and args.ncnn_bin:
        from bench import ncnn_peer

        in_name, out_name = ncnn_peer.blob_names(args.ncnn_param)
        return {"param": args.ncnn_param, "bin": args.ncnn_bin, "input": in_name, "output": out_name}
    return _ncnn_model(Path(args.onnx), ROOT / ".mfnc-cache" / "ncnn")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.arm_peers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, default=DEFAULT_ONNX, help="float ONNX model for onnxruntime")
    ap.add_argument("--tflite", type=Path, help="a .tflite for LiteRT (e.g. from `mfnc quantize --tflite`)")
    ap.add_argument("--ncnn-param", type=Path, help="ncnn .param (default: bench.ncnn_peer.convert, if present)")
    ap.add_argument("--ncnn-bin", type=Path, help="ncnn .bin")
    ap.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    ap.add_argument("--repeat", type=int, default=1, help="emulated runs per engine (to check determinism)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per emulated run")
    ap.add_argument("--cache", type=Path, help="cache folder (default: beside the TVM runtime cache)")
    ap.add_argument("--json", help="write the results here ('-' for stdout)")
    args = ap.parse_args(argv)

    results, skipped = [], {}
    for engine in args.engines:
        try:
            if engine == "onnxruntime":
                files = {"model": args.onnx}
            elif engine == "litert":
                files = {"model": args.tflite} if args.tflite else None
            else:
                files = _ncnn_files(args)
        except (RuntimeError, OSError) as exc:  # ncnn_peer's conversion errors
            files, skipped[engine] = None, f"no ncnn model: {exc}"
        if files is None:
            skipped.setdefault(engine, "no model files given")
            ui.info(f"{engine}: skipped ({skipped[engine]})")
            continue
        for _ in range(args.repeat):
            try:
                row = count_instructions(engine, files, args.cache, args.timeout)
            except MfncError as exc:
                skipped[engine] = str(exc)
                ui.warn(f"{engine}: {exc}")
                break
            results.append(row)
            ui.info(
                f"{engine:12s} {row['version']:>10s}  {row['instructions']:>14,d} instructions"
                f"  (run {row['seconds']:.1f} s, first outputs {row['output_first']})"
            )
    ui.emit_json(
        args.json,
        {
            "unit": f"guest instructions under qemu-aarch64 -cpu {CPU} (not cycles)",
            "results": results,
            "skipped": skipped,
        },
    )
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
