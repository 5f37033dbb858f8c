"""MetaSchedule tuning of the integer Relax module's conv kernels.

Tasks come from the fused module (`tvm_compile.fuse`, DESIGN section 7), extracted
with "anchor-block" equality: kernels whose conv block is the same share one task,
whatever their requantization epilogue. We keep exactly the tasks whose anchor is a
conv2d block (by block name, not by task-name substring); pads, the input conversion
and the output reshape are memory moves with nothing to schedule.

Measurement is local on x86_64 (the kernels run here for real), or through TVM's RPC
tracker on a board (`tvm_rpc`), whose candidates are cross-compiled to shared
libraries with the target's C++ compiler. Every measured batch is committed to the
database folder as it arrives, and meta.json counts the trials, so an interrupted
run resumes: `--trials N` is the total budget, a rerun adds what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compiler.backends import tuning_db
from compiler.backends.tvm_rpc import Tracker
from compiler.errors import ExternalFailure
from compiler.targets import Target

CONV_BLOCKS = ("conv2d",)  # conv2d_nhwc, group_conv2d_nhwc, depthwise ...: all contain it
BUILD_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 60.0
RECYCLE_BATCHES = 25
SESSION_TIMEOUT_S = 120


@dataclass
class ConvTask:
    name: str
    weight: int  # how many kernels of the model share it
    flops: float
    extracted: object = field(repr=False)  # ms.ExtractedTask


def conv_tasks(fused, tvm_target) -> tuple[list[ConvTask], int]:
    """The conv tasks of a fused module, heaviest first, and how many others were skipped."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    selected, skipped = [], 0
    for task in ms.relax_integration.extract_tasks(fused, tvm_target, module_equality=tuning_db.MODULE_EQUALITY):
        func = task.dispatched[0]
        schedule = s_tir.Schedule(func)
        blocks = [schedule.get(b).name_hint for b in schedule.get_child_blocks(schedule.get_sblock("root"))]
        if any(token in name for name in blocks for token in CONV_BLOCKS):
            flops = float(s_tir.analysis.estimate_tir_flops(func))
            selected.append(ConvTask(task.task_name, int(task.weight), flops, task))
        else:
            skipped += 1
    selected.sort(key=lambda t: -t.flops * t.weight)
    return selected, skipped


def trials_per_round(trials: int, n_tasks: int) -> int:
    """Candidates per task per round: two rounds over every task fit the budget, so the
    gradient scheduler has budget left for the tasks that keep improving."""
    return max(1, min(64, trials // max(1, 2 * n_tasks)))


def search_strategy(per_round: int):
    """MetaSchedule's evolutionary search, with a population sized to the round: its
    default 512 candidates cost ~4 s of search per round, wasted on 1-candidate rounds."""
    from tvm.s_tir import meta_schedule as ms

    population = max(64, min(512, 64 * per_round))
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population // 2)
    )


def _export_shared(cxx: str, mod) -> str:
    """LocalBuilder export for a board: a shared library linked by the cross compiler
    (the board's rpc_server loads it as is; TVM's default tar would need a compiler there)."""
    import tempfile

    import tvm

    path = os.path.join(tempfile.mkdtemp(prefix="mfnc-tune-"), "candidate.so")
    mod.export_library(path, fcompile=tvm.support.cc.cross_compiler(cxx))
    return path


def import_tensor_intrinsics() -> None:
    """Import `tvm.s_tir.tensor_intrin` in ~2 s instead of ~16 s.

    MetaSchedule imports it on the first build or design space: it parses ~500 TVMScript
    functions, and TVMScript calls `inspect.stack()` for each, which reads the source
    context of every frame. The parser only uses the frame objects (to resolve names in
    enclosing scopes), so during this one import `inspect.stack` returns them without
    source context.
    """
    import inspect

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return

    def frames_only(context: int = 1) -> list[inspect.FrameInfo]:
        out, frame = [], sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            out.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None))
            frame = frame.f_back
        return out

    original = inspect.stack
    inspect.stack = frames_only
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = original


def _warm_worker() -> None:
    """Builder worker initializer: pay the tensor-intrinsics import once per worker."""
    from compiler.backends.tvm_tune import import_tensor_intrinsics

    import_tensor_intrinsics()


def persistent_builder(f_export=None, workers: int | None = None):
    """MetaSchedule's LocalBuilder work, on worker processes kept across batches.

    LocalBuilder starts fresh workers for every batch (against a leak in long-lived
    workers), so each batch pays the ~14 s first-build cost above: 17 s per batch for a
    1-candidate batch on this machine. We keep the workers and recycle them every
    RECYCLE_BATCHES batches instead.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PersistentBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = None
            self.batches = 0

        def _pool(self):
            if self.pool is None or self.batches >= RECYCLE_BATCHES:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(
                    max_workers=workers or os.cpu_count() or 1, timeout=BUILD_TIMEOUT_S, initializer=_warm_worker
                )
                self.batches = 0
            self.batches += 1
            return self.pool

        def build(self, build_inputs):
            jobs = [(None, f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
            results = []
            for done in self._pool().map_with_error_catching(lambda job: _worker_func(*job), jobs):
                if done.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(done.value, None))
                elif done.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"build timed out after {BUILD_TIMEOUT_S:.0f} s"))
                else:
                    results.append(BuilderResult(None, f"build failed: {done.value}"))
            return results

        def close(self) -> None:
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None

    return PersistentBuilder()


def _alloc_on_board(session, device, args_info, alloc_repeat: int):
    """RPCRunner argument allocation that fills tensors from this host.

    The default asks the server for `tvm.contrib.random.random_fill_for_measure`, which
    the runtime-only aarch64 wheel does not have; uploading random bytes works on any
    rpc_server (the tensors are small: one layer's input, weights and output).
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(tensor) -> None:
        dtype = np.dtype(str(tensor.dtype))
        shape = tuple(int(d) for d in tensor.shape)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            data = rng.integers(max(info.min, -128), min(info.max, 127), size=shape, endpoint=True).astype(dtype)
        else:
            data = rng.standard_normal(shape).astype(dtype)
        tensor.copyfrom(data)

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def _builder_and_runner(target: Target, tracker: Tracker | None, emulated: bool):
    from tvm.s_tir import meta_schedule as ms

    if tracker is None:
        evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40)
        return persistent_builder(), ms.runner.LocalRunner(timeout_sec=RUN_TIMEOUT_S, evaluator_config=evaluator)
    cxx = target.toolchain.cxx or "g++"
    builder = persistent_builder(functools.partial(_export_shared, cxx))
    # An emulated board's timings mean nothing: measure once, quickly.
    evaluator = (
        ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0)
        if emulated
        else ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40)
    )
    config = ms.runner.RPCConfig(
        tracker_host=tracker.host,
        tracker_port=tracker.port,
        tracker_key=tracker.key,
        session_timeout_sec=SESSION_TIMEOUT_S,
    )
    return builder, ms.runner.RPCRunner(
        rpc_config=config, evaluator_config=evaluator, max_workers=1, f_alloc_argument=_alloc_on_board
    )


def _progress_callback(on_batch: Callable[[int, int, str | None], None]):
    """A MeasureCallback reporting (measured, failed, first error) after each batch."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class Progress(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
            errors = [r.error_msg for r in builder_results if r.error_msg] + [
                r.error_msg for r in runner_results if r.error_msg
            ]
            on_batch(len(measure_candidates), len(errors), errors[0] if errors else None)

    return Progress()


@dataclass
class TuneResult:
    tasks: list[dict]
    trials_run: int
    failed: int
    seconds: float
    database: tuning_db.TuningDatabase


def _best_latencies(database, tasks: list[ConvTask]) -> list[float | None]:
    """Best measured seconds per task (None when none of its candidates ran)."""
    best = []
    for task in tasks:
        mod = task.extracted.dispatched[0]
        if not database.has_workload(mod):
            best.append(None)
            continue
        top = database.get_top_k(database.commit_workload(mod), 1)
        secs = [float(s) for s in top[0].run_secs] if top and top[0].run_secs else []
        best.append(sorted(secs)[len(secs) // 2] if secs else None)
    return best


def tune(
    qgraph,
    target: Target,
    model_hash: str,
    trials: int,
    db_dir: Path,
    *,
    tracker: Tracker | None = None,
    emulated: bool = False,
    advance: Callable[[int, int], None] | None = None,
) -> TuneResult:
    """Tune the conv tasks of `qgraph` for `target` up to `trials` in total, in `db_dir`."""
    from tvm.s_tir import meta_schedule as ms

    from compiler.backends.tvm_compile import fuse
    from compiler.backends.tvm_relax import build_relax_int
    from compiler.backends.tvm_runner import tvm_target

    start = time.monotonic()
    import_tensor_intrinsics()
    ttarget = tvm_target(target)
    fused = fuse(build_relax_int(qgraph), ttarget)
    tasks, skipped = conv_tasks(fused, ttarget)
    db_dir.mkdir(parents=True, exist_ok=True)
    db = tuning_db.open_database(db_dir) or tuning_db.TuningDatabase(db_dir, {})
    db.meta.update(
        {
            "target": target.name,
            "model_hash": model_hash,
            "tvm_target": str(ttarget),
            "module_equality": tuning_db.MODULE_EQUALITY,
            "measured_on": "emulator" if emulated else ("rpc " + tracker.key if tracker else "this host"),
            "tasks": [t.name for t in tasks],
            "skipped_tasks": skipped,
        }
    )
    db.meta.setdefault("trials", 0)
    remaining = trials - db.trials
    counts = {"run": 0, "failed": 0, "error": None}

    def on_batch(measured: int, failed: int, error: str | None) -> None:
        counts["run"] += measured
        counts["failed"] += failed
        counts["error"] = counts["error"] or error
        db.meta["trials"] = db.meta.get("trials", 0) + measured
        db.save_meta()
        if advance is not None:
            advance(min(counts["run"], remaining), remaining)

    database = ms.database.JSONDatabase(work_dir=str(db_dir), module_equality=tuning_db.MODULE_EQUALITY)
    if remaining > 0 and tasks:
        builder, runner = _builder_and_runner(target, tracker, emulated)
        per_round = trials_per_round(remaining, len(tasks))
        threads = os.environ.get("TVM_NUM_THREADS")
        os.environ["TVM_NUM_THREADS"] = "1"  # the targets are tuned for one thread (num-cores 1)
        try:
            # MetaSchedule's console log goes to "sys.stdout" as it is when its loggers are
            # created (with the tune contexts): stderr then, keeping stdout for --json -.
            with contextlib.redirect_stdout(sys.stderr):
                _quiet_console()
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    [t.extracted for t in tasks], str(db_dir), strategy=search_strategy(per_round)
                )
                callbacks = [*ms.measure_callback.MeasureCallback.create("default"), _progress_callback(on_batch)]
                ms.tune.tune_tasks(
                    tasks=contexts,
                    task_weights=weights,
                    work_dir=str(db_dir),
                    max_trials_global=remaining,
                    num_trials_per_iter=per_round,
                    builder=builder,
                    runner=runner,
                    database=database,
                    measure_callbacks=callbacks,
                    module_equality=tuning_db.MODULE_EQUALITY,
                )
        finally:
            builder.close()
            _shutdown(runner)
            if threads is None:
                os.environ.pop("TVM_NUM_THREADS", None)
            else:
                os.environ["TVM_NUM_THREADS"] = threads
        if counts["run"] and counts["failed"] == counts["run"]:
            first = (counts["error"] or "no message").strip().splitlines()
            raise ExternalFailure(
                f"every one of {counts['run']} tuning measurements failed on {db.meta['measured_on']}: "
                f"{_first_error_line(first)}"
            )
    db.save_meta()
    best = _best_latencies(database, tasks)
    rows = [
        {
            "task": t.name,
            "kernels": t.weight,
            "mflop": round(t.flops / 1e6, 3),
            "best_us": None if b is None else round(b * 1e6, 2),
        }
        for t, b in zip(tasks, best, strict=True)
    ]
    return TuneResult(rows, counts["run"], counts["failed"], time.monotonic() - start, db)


def _shutdown(runner) -> None:
    """Stop the runner's worker pool now: left to the garbage collector, its workers are
    killed whenever that runs, writing to whatever stderr is current then."""
    pool = getattr(runner, "pool", None)
    if pool is not None:
        with contextlib.suppress(Exception):
            pool.shutdown()


def _first_error_line(lines: list[str]) -> str:
    meaningful = [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("Traceback", "  File"))]
    return (meaningful[-1] if meaningful else "no message")[:300]


def _quiet_console() -> None:
    """MetaSchedule logs every batch and a task table at INFO; our progress bar replaces
    them on the console (its per-task logs still go to the database folder's logs/)."""
    import logging

    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    # A second tuning run in one process would re-add the first run's handlers, bound
    # to that run's streams and log folder (and MetaSchedule fails on unnamed ones).
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.WARNING)


def estimated_minutes(trials: int) -> float:
    """Rough wall time on 2 cores for the full model: bench.tvm_speed measured 405 trials
    in 435 s here (docs/tvm.md)."""
    return math.ceil(trials * 435 / 405 / 60)
