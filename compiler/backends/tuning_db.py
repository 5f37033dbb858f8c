"""Where MetaSchedule tuning databases live, and moving them between machines.

A database belongs to one (target, model hash): `<root>/<target>/<hash[:16]>/` holds
MetaSchedule's two JSON-lines files (`database_workload.json`,
`database_tuning_record.json`) and our `meta.json` (full model hash, TVM target,
module equality, trials run, tasks). The root is `$MFNC_TUNING_DIR`, else
`$MFNC_CACHE_DIR/tuning`, else `~/.cache/mfnc/tuning`.

Records are keyed by the conv block alone ("anchor-block" equality), so one database
serves every calibration of the same network: the requantization constants live in
the epilogue, which the anchor's schedule is replayed onto.

An exported database is one JSON file (`mfnc_tuning_db` = format version) that
`tune --import` puts back into the cache and `build --tuning-db` uses directly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compiler import ui
from compiler.errors import BadInput

FORMAT_VERSION = 1
MODULE_EQUALITY = "anchor-block"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
META = "meta.json"


def tuning_root() -> Path:
    if os.environ.get("MFNC_TUNING_DIR"):
        return Path(os.environ["MFNC_TUNING_DIR"])
    root = os.environ.get("MFNC_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mfnc") / "tuning"


def database_dir(target: str, model_hash: str, root: Path | None = None) -> Path:
    if not model_hash:
        raise BadInput("the model has no hash to key a tuning database on")
    return (root or tuning_root()) / target / model_hash[:16]


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


@dataclass
class TuningDatabase:
    """One database folder and what its meta.json says about it."""

    path: Path
    meta: dict

    @property
    def records(self) -> int:
        return len(_lines(self.path / RECORDS))

    @property
    def trials(self) -> int:
        return int(self.meta.get("trials", 0))

    def summary(self) -> dict:
        return {
            "path": str(self.path),
            "target": self.meta.get("target"),
            "model_hash": self.meta.get("model_hash"),
            "trials": self.trials,
            "records": self.records,
            "tasks": len(self.meta.get("tasks", [])),
            "measured_on": self.meta.get("measured_on"),
        }

    def save_meta(self) -> None:
        ui.write_atomic(self.path / META, json.dumps(self.meta, indent=2) + "\n")


def open_database(path: Path) -> TuningDatabase | None:
    """The database in `path`, or None when there is none (no meta or no records)."""
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path / META}: not a tuning database ({exc})") from None
    db = TuningDatabase(path, meta)
    return db if db.records else None


def find_database(target: str, model_hash: str) -> TuningDatabase | None:
    """The cached database for (target, model), if tuning has recorded anything."""
    if not model_hash:
        return None
    db = open_database(database_dir(target, model_hash))
    if db is not None and db.meta.get("model_hash") != model_hash:
        return None  # a 16-hex-digit prefix collision: never apply another model's schedules
    return db


def export_database(db: TuningDatabase, file: Path) -> Path:
    payload = {
        "mfnc_tuning_db": FORMAT_VERSION,
        "meta": db.meta,
        "workloads": _lines(db.path / WORKLOADS),
        "records": _lines(db.path / RECORDS),
    }
    ui.write_atomic(file, json.dumps(payload) + "\n")
    return file


def read_export(file: Path) -> dict:
    try:
        payload = json.loads(Path(file).read_text())
    except FileNotFoundError:
        raise BadInput(f"--tuning-db {file}: no such file") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{file}: not an exported tuning database ({exc})") from None
    if not isinstance(payload, dict) or payload.get("mfnc_tuning_db") != FORMAT_VERSION:
        raise BadInput(f"{file}: not an mfnc tuning database (field 'mfnc_tuning_db' must be {FORMAT_VERSION})")
    for key in ("meta", "workloads", "records"):
        if key not in payload:
            raise BadInput(f"{file}: field '{key}' is missing")
    return payload


def unpack_export(file: Path, target: str, model_hash: str, dest: Path) -> TuningDatabase:
    """Write an exported database into `dest` (replacing it) after checking it is for
    this target and model."""
    payload = read_export(file)
    meta = payload["meta"]
    if meta.get("target") != target:
        raise BadInput(f"{file}: tuned for target '{meta.get('target')}', not '{target}'")
    if meta.get("model_hash") != model_hash:
        raise BadInput(
            f"{file}: tuned for model {str(meta.get('model_hash'))[:16]}, not this model ({model_hash[:16]})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=dest.parent))
    (staging / WORKLOADS).write_text("".join(line + "\n" for line in payload["workloads"]))
    (staging / RECORDS).write_text("".join(line + "\n" for line in payload["records"]))
    (staging / META).write_text(json.dumps(meta, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return TuningDatabase(dest, meta)


def materialize(file: Path, target: str, model_hash: str, scratch: Path) -> TuningDatabase:
    """An exported database unpacked into a scratch folder, for `build --tuning-db`."""
    db = unpack_export(file, target, model_hash, scratch / "tuning-db")
    if not db.records:
        raise BadInput(f"{file}: the database has no tuning records")
    return db
