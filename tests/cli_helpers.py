"""Running the CLI in-process and checking the one-line error contract."""

from __future__ import annotations

from compiler.cli import main


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mfnc ARGV`."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *fragments: str) -> None:
    """Exactly one `error:` line, no traceback, and it names every fragment."""
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
