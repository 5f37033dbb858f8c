"""`hil`: run a built artifact on a board (or its emulator) over the serial protocol and
check it against the golden simulator and the float model.

What is reported and why: `bit_exact` (device integers equal to the golden
simulator's: the compiler's contract), `cosine_vs_float` (what the int8 model costs),
verification metrics from the device's own embeddings when identities are known,
latency with its honest unit, and the link's throughput.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import ui
from compiler.errors import BadInput, HilCheckFailed
from compiler.targets import Target, load_target

DEFAULT_SYNTHETIC = 8


@dataclass(frozen=True)
class HilOptions:
    target: str
    port: str | None = None
    emulate: bool = False
    build: Path | None = None
    faces: Path | None = None
    synthetic: int | None = None
    limit: int | None = None
    pairs: Path | None = None
    warmup: int = 0
    repeat: int = 1
    per_layer: bool = False
    baud: int | None = None
    min_cosine: float | None = None
    run_timeout_s: float = 600.0


@dataclass
class Artifact:
    folder: Path
    report: dict
    program: Path | None

    @property
    def model_hash(self) -> str:
        return self.report["model"].get("sha256", "")


def load_artifact(folder: Path, target: Target, npu_ok: bool = False) -> Artifact:
    report_path = folder / "report.json"
    if not report_path.is_file():
        raise BadInput(f"{folder}: no report.json: build it first (mfnc build --target {target.name})")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as exc:
        raise BadInput(f"{report_path}: not valid JSON ({exc})") from None
    if report.get("target") != target.name:
        raise BadInput(f"{folder}: built for {report.get('target')}, not {target.name}")
    firmware = (report.get("c") or report.get("tvm") or report.get("rknn") or {}).get("firmware") or {}
    if report.get("backend") == "rknn" and not npu_ok and not firmware.get("program"):
        raise BadInput(
            f"{folder}: an NPU (rknn) build without its board program: rebuild with --rknn-sdk DIR (Rockchip's "
            "runtime: rknn_api.h, librknnrt.so); the model itself was checked in the rknn-toolkit2 simulator"
        )
    program = folder / Path(firmware["program"]).relative_to(report["out"]) if firmware.get("program") else None
    return Artifact(folder, report, program)


def _inputs(opts: HilOptions, height: int, width: int):
    from compiler.evaluate import face_index, load_faces, synthetic_faces

    if opts.faces is not None and opts.synthetic is not None:
        raise BadInput("--faces and --synthetic are exclusive")
    if opts.faces is not None:
        if not opts.faces.is_dir():
            raise BadInput(f"--faces {opts.faces}: not a folder")
        files, identities = face_index(opts.faces)
        if opts.limit:
            files, identities = files[: opts.limit], identities[: opts.limit]
        return load_faces(opts.faces, height, width, files, identities)
    count = opts.synthetic if opts.synthetic is not None else (opts.limit or DEFAULT_SYNTHETIC)
    if count < 2:
        raise BadInput(f"--synthetic {count}: need at least 2 images")
    faces = synthetic_faces(count, height, width)
    if opts.limit and opts.limit < count:
        from compiler.evaluate import FaceSet

        faces = FaceSet(faces.pixels[: opts.limit], faces.labels[: opts.limit], [], faces.source)
    return faces


def _float_embeddings(report: dict, meta: dict, pixels: np.ndarray) -> np.ndarray | None:
    """The source float model's embeddings, when it can still be found (and is unchanged)."""
    from compiler.evaluate import float_embedder
    from compiler.frontend import load_model
    from compiler.preprocess import parse_preprocess

    model = report["model"]
    path = model.get("path", "") if model.get("format") != "mfnq" else meta.get("path", "")
    spec = report["preprocess"].get("spec") or meta.get("preprocess", {}).get("spec")
    if not path or not spec or not Path(path).exists():
        return None
    loaded = load_model(path)
    if loaded.sha256 != meta.get("sha256", loaded.sha256):
        ui.warn(f"{path} changed since it was quantized: no cosine vs float")
        return None
    embedder = float_embedder(loaded, parse_preprocess(spec))
    return np.stack([embedder.one(pixels[i : i + 1]) for i in range(len(pixels))])


def _latency(elapsed: list[int], unit: str, clock_hz: int, ticks_scale: float | None, emulated: bool) -> dict:
    """Median and p90 in an honest unit: never call emulated time cycles."""
    if not elapsed or unit == "none":
        return {"unit": "none", "median": None, "p90": None, "n": 0}
    values = np.asarray(elapsed, dtype=np.float64)
    if unit == "systick":
        if emulated and ticks_scale and clock_hz:
            values, unit = values * ticks_scale / clock_hz, "instructions"
        elif emulated:
            unit = "systick"
        else:
            unit = "cycles"  # SysTick on the core clock
    return {
        "unit": unit,
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "n": int(values.size),
    }


def run_hil(opts: HilOptions, board_url: str | None = None) -> dict:
    """The whole check; raises HilCheckFailed (exit 4) after writing nothing half-done."""
    from calibration import qgraph as qformat
    from compiler.backends.c_host import golden_as_device
    from compiler.hil import emulate
    from compiler.hil.link import DeviceLink
    from compiler.hil.session import check_identity, run_inputs
    from compiler.quantization import row_cosines

    target = load_target(opts.target)
    if (opts.port is None) == (not opts.emulate):
        raise BadInput("give exactly one of --port URL and --emulate")
    if opts.emulate and target.emulation.kind == "none":
        raise BadInput(f"{target.name} has no emulator: use --port with a real board (docs/hil.md)")
    if not 1 <= opts.repeat <= 64 or opts.warmup < 0:
        raise BadInput("--repeat must be 1-64 and --warmup >= 0")
    artifact = load_artifact(opts.build or Path("build") / target.name, target, npu_ok=True)
    if artifact.report.get("backend") == "rknn":
        from compiler.hil.npu_sim import run_on_board, run_simulated

        faces = _inputs(opts, *artifact.report["model"]["input_shape"][2:])
        if opts.emulate:
            return run_simulated(target, artifact, faces, opts, _float_embeddings, _verification)
        if artifact.program is None:
            raise BadInput(
                f"{artifact.folder}: an NPU (rknn) build without its board program: rebuild with --rknn-sdk DIR, "
                "or use --emulate for the rknn-toolkit2 simulator"
            )
        return run_on_board(target, artifact, faces, opts, _float_embeddings, _verification)
    qgraph = qformat.load(artifact.folder / "model.mfnq")
    _, _, height, width = qgraph.tensors[qgraph.input].shape
    faces = _inputs(opts, height, width)
    n = len(faces.pixels)
    ui.info(f"{n} input(s) from {faces.source}")

    board = None
    started = time.monotonic()
    if opts.emulate:
        if artifact.program is None or not artifact.program.exists():
            raise BadInput(f"{artifact.folder}: no device program in the build for {target.name}")
        with ui.step(f"starting the {target.name} emulator"):
            board = emulate.start(target, artifact.program, artifact.folder / "emulator")
        url = board.url
    else:
        url = opts.port or ""
    # an emulator started by `flash` for this build: its counter is emulated time, not cycles
    started_by_flash = _flashed_emulator(artifact.folder, url)
    emulated = opts.emulate or started_by_flash is not None
    try:
        baud = opts.baud or (target.serial.baud if target.serial else 115200)
        with DeviceLink(url, baud=baud) as link:
            info = link.info()
            check_identity(info, {"model": artifact.model_hash, "target": target.name}, url)
            with ui.progress(f"running on {target.name}") as advance:
                done = [0]

                def tick() -> None:
                    done[0] += 1
                    advance(done[0], n)

                runs = run_inputs(
                    link,
                    faces.pixels,
                    warmup=opts.warmup,
                    timed=opts.repeat,
                    per_layer=opts.per_layer,
                    run_timeout_s=opts.run_timeout_s,
                    advance=tick,
                    info=info,
                )
            link_stats = {
                "bytes_per_s": runs.upload_bytes / runs.upload_seconds if runs.upload_seconds else None,
                "retries": link.retries_used,
                "device_resets": link.resets_seen,
                "damaged_frames": link.reader.bad_frames,
            }
    finally:
        if board is not None:
            board.stop()

    with ui.step("golden simulator and float reference"):
        expected = golden_as_device(qgraph, faces.pixels)
        floats = _float_embeddings(artifact.report, qgraph.meta, faces.pixels)
    equal = [bool(np.array_equal(d, e)) for d, e in zip(runs.outputs, expected, strict=True)]
    out_t = qgraph.tensors[qgraph.outputs[0]]
    device_float = (runs.outputs.astype(np.float64) - out_t.zero_point) * out_t.scale
    cosines = row_cosines(device_float, floats) if floats is not None else None
    result = {
        "target": target.name,
        "backend": info.get("backend", artifact.report.get("backend")),
        "transport": url.split("://")[0] if "://" in url else "serial",
        "url": url,
        "emulated": emulated,
        "n_inputs": n,
        "bit_exact": int(sum(equal)),
        "mismatched_inputs": [i for i, ok in enumerate(equal) if not ok],
        "cosine_vs_float": None
        if cosines is None
        else {"mean": float(np.mean(cosines)), "min": float(np.min(cosines))},
        "latency": _latency(
            runs.elapsed,
            info.get("counter", "none"),
            int(info.get("clock_hz", "0") or 0),
            board.ticks_to_instructions if board else (started_by_flash or {}).get("ticks_to_instructions"),
            emulated,
        ),
        "link": link_stats,
        "device": info,
        "inputs": faces.source,
        "seconds": time.monotonic() - started,
    }
    if runs.layers is not None:
        names = (artifact.report.get("c") or {}).get("layer_names") or [f"layer{i}" for i in range(len(runs.layers))]
        result["per_layer"] = [{"layer": nm, "count": c} for nm, c in zip(names, runs.layers, strict=False)]
    result["verification"] = _verification(device_float, faces, opts)
    return result


def _flashed_emulator(folder: Path, url: str) -> dict | None:
    """The state `flash` left for an emulator serving `url`, if any."""
    state = folder / "emulator.json"
    if not state.exists():
        return None
    try:
        running = json.loads(state.read_text())
    except json.JSONDecodeError:
        return None
    return running if running.get("url") == url else None


def _verification(embeddings: np.ndarray, faces, opts: HilOptions) -> dict | None:
    from compiler.verification import l2_normalize, read_pairs, resolve_pairs, verification_metrics

    labels = np.asarray(faces.labels)
    if labels.size < 2 or np.unique(labels).size < 2:
        return None
    pairs = None
    if opts.pairs is not None:
        lines, folds = read_pairs(opts.pairs)
        pairs = resolve_pairs(lines, folds, faces.files, [str(x) for x in labels], opts.pairs)
    try:
        return verification_metrics(l2_normalize(embeddings), labels, pairs)
    except BadInput as exc:
        ui.warn(f"no verification metrics: {exc}")
        return None


def failures(result: dict, opts: HilOptions) -> list[str]:
    problems = []
    if result["bit_exact"] is not None and result["bit_exact"] < result["n_inputs"]:
        problems.append(
            f"{result['n_inputs'] - result['bit_exact']} of {result['n_inputs']} outputs differ from the golden "
            f"simulator (inputs {result['mismatched_inputs'][:10]})"
        )
    cos = result["cosine_vs_float"]
    if opts.min_cosine is not None and cos is not None and cos["mean"] < opts.min_cosine:
        problems.append(f"mean cosine vs float {cos['mean']:.4f} < {opts.min_cosine}")
    return problems


def junit_cases(result: dict) -> list[tuple[str, str | None]]:
    if result["bit_exact"] is None:  # no golden (NPU): each input was embedded; the checks case judges
        return [(f"input {i} embedded", None) for i in range(result["n_inputs"])]
    cases = [
        (f"input {i} bit-exact", "differs from the golden simulator" if i in result["mismatched_inputs"] else None)
        for i in range(result["n_inputs"])
    ]
    return cases


def hil_failed(problems: list[str], target: str) -> HilCheckFailed:
    return HilCheckFailed(f"HIL check on {target} failed: {'; '.join(problems)}")
