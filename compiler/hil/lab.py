"""Board instances: which serial port, baud rate or ssh host a named board uses.

A lab file (`lab.toml`, docs/hil.md) lets CI jobs say `--board h743-desk` instead of
repeating ports; flags given on the command line win over the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import BadInput

DEFAULT_LAB = Path("lab.toml")
KNOWN_KEYS = {"target", "port", "baud", "host", "remote_port", "probe"}


@dataclass(frozen=True)
class Board:
    name: str
    target: str
    port: str | None = None
    baud: int | None = None
    host: str | None = None
    remote_port: int | None = None
    probe: str | None = None


def lab_path(given: Path | None) -> Path:
    return given or Path(os.environ.get("MFNC_LAB", DEFAULT_LAB))


def load_board(name: str, lab: Path | None) -> Board:
    """The [boards.NAME] table of the lab file, validated."""
    path = lab_path(lab)
    if not path.is_file():
        raise BadInput(f"--board {name}: no lab file at {path} (pass --lab FILE or set MFNC_LAB)")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid TOML ({exc})") from None
    boards = data.get("boards", {})
    if name not in boards:
        raise BadInput(f"{path}: no board '{name}' (known: {', '.join(sorted(boards)) or 'none'})")
    entry = boards[name]
    unknown = set(entry) - KNOWN_KEYS
    if unknown:
        raise BadInput(f"{path}: boards.{name}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(entry.get("target"), str):
        raise BadInput(f"{path}: boards.{name}.target: required, a target name")
    for key, kind in (("baud", int), ("remote_port", int), ("port", str), ("host", str), ("probe", str)):
        if key in entry and not isinstance(entry[key], kind):
            raise BadInput(f"{path}: boards.{name}.{key}: must be {'an integer' if kind is int else 'a string'}")
    return Board(name, **entry)
