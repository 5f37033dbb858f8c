"""Terminal output: human text to stderr (rich), machine JSON to a file or stdout.

Keeping the two apart is part of the CLI contract: `--json -` output must parse even
while progress is being shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Show a spinner while a long step runs, then a done line with its duration."""
    import time

    start = time.monotonic()
    if console.is_terminal:
        with console.status(f"{title}..."):
            yield
    else:
        console.print(f"{title}...")
        yield
    console.print(f"[green]done[/green] {title} ({time.monotonic() - start:.1f} s)")


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write a file so that readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as handle:
            handle.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def emit_json(target: str | None, payload: Any) -> None:
    """Honour --json FILE|-: '-' is stdout, anything else a file written atomically."""
    if target is None:
        return
    text = json.dumps(payload, indent=2, default=_jsonable) + "\n"
    if target == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(Path(target), text)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextlib.contextmanager
def progress(title: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for a counted loop; yields `advance(done, total)`.

    On a terminal it is a live bar; in logs (CI, pipes) it prints a line every 25 %.
    """
    import time

    start = time.monotonic()
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress(
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(title, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
    else:
        reported = [-1]

        def advance(done: int, total: int) -> None:
            quarter = 4 * done // max(total, 1)
            if quarter > reported[0]:
                reported[0] = quarter
                console.print(f"{title}: {done}/{total}")

        yield advance
    console.print(f"[green]done[/green] {title} ({time.monotonic() - start:.1f} s)")
