"""`flash`: put a built device program on a board.

- emulated boards: start the emulator in the background and print its socket:// URL
  (`flash --stop` ends it); the state lives in BUILD/emulator.json;
- `openocd` boards (stm32h743): program the ELF over the ST-Link;
- Linux boards: copy the program over ssh and serve it on a TCP port with socat.

Paths that need hardware take `--dry-run`, which prints the exact commands.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from compiler import ui
from compiler.errors import BadInput, ExternalFailure
from compiler.hil.check import load_artifact
from compiler.targets import Target, load_target

STATE_FILE = "emulator.json"
FLASH_TIMEOUT_S = 120
REMOTE_PROGRAM = "/tmp/mfnc-device"
REMOTE_BUNDLE = "/tmp/mfnc-device-bundle"
DEFAULT_REMOTE_PORT = 4700


@dataclass(frozen=True)
class FlashOptions:
    target: str
    build: Path | None = None
    host: str | None = None
    remote_port: int | None = None
    emulate: bool = False
    stop: bool = False
    dry_run: bool = False


def flash_commands(target: Target, program: Path, host: str | None, remote_port: int) -> list[list[str]]:
    """The commands that flash `program` onto a real board of `target`."""
    method = target.flash.method
    if method == "openocd":
        return [target.flash.argv(str(program))]
    if method == "scp":
        if not host:
            raise BadInput(f"{target.name} is flashed over ssh: give --host user@board (or a lab board)")
        npu_model = program.parent / "model.rknn"
        if npu_model.exists():  # the NPU program reads model.rknn next to it; the board has librknnrt
            remote = f"{REMOTE_BUNDLE}/{program.name}"
            return [
                ["ssh", "-o", "BatchMode=yes", host, f"mkdir -p {REMOTE_BUNDLE}"],
                ["scp", "-o", "BatchMode=yes", str(program), str(npu_model), f"{host}:{REMOTE_BUNDLE}/"],
                ["ssh", "-o", "BatchMode=yes", host, _serve(remote, remote_port)],
            ]
        bundle = (program.parent / "model.so").exists()  # a TVM runner needs its libraries next to it
        remote = f"{REMOTE_BUNDLE}/{program.name}" if bundle else REMOTE_PROGRAM
        copy = (
            ["scp", "-o", "BatchMode=yes", "-r", str(program.parent), f"{host}:{REMOTE_BUNDLE}"]
            if bundle
            else ["scp", "-o", "BatchMode=yes", str(program), f"{host}:{REMOTE_PROGRAM}"]
        )
        return [copy, ["ssh", "-o", "BatchMode=yes", host, _serve(remote, remote_port)]]
    raise BadInput(f"{target.name}: flash method '{method}' cannot be automated ({target.flash.note})")


def _serve(remote: str, remote_port: int) -> str:
    """The board-side shell command that serves `remote` on a TCP port with socat."""
    return (
        f"pkill -f 'TCP-LISTEN:{remote_port},' ; chmod +x {remote} && "
        f"nohup socat TCP-LISTEN:{remote_port},reuseaddr,nodelay,fork EXEC:{remote} "
        ">/tmp/mfnc-device.log 2>&1 </dev/null &"
    )


def _run(cmd: list[str]) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FLASH_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ExternalFailure(f"{cmd[0]}: not installed") from None
    except subprocess.TimeoutExpired:
        raise ExternalFailure(f"{cmd[0]}: no result within {FLASH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise ExternalFailure(f"{cmd[0]} failed ({proc.returncode}): {lines[-1] if lines else 'no output'}")


def flash(opts: FlashOptions) -> dict:
    from compiler.hil import emulate

    target = load_target(opts.target)
    folder = opts.build or Path("build") / target.name
    state = folder / STATE_FILE
    if opts.stop:
        if not state.exists():
            raise BadInput(f"{folder}: no emulator started by flash (no {STATE_FILE})")
        running = json.loads(state.read_text())
        emulate.stop_process_group(int(running["pid"]))
        state.unlink()
        ui.info(f"stopped the {target.name} emulator ({running['url']})")
        return {"target": target.name, "stopped": running["url"]}
    artifact = load_artifact(folder, target)
    if artifact.program is None or not artifact.program.exists():
        raise BadInput(f"{folder}: the build has no device program for {target.name}")
    use_emulator = opts.emulate or (target.flash.method == "none" and target.emulation.kind != "none")
    if use_emulator and artifact.report.get("backend") == "rknn":
        raise BadInput(
            f"{folder}: the NPU program runs only on a board with Rockchip's runtime; "
            f"`mfnc hil --target {target.name} --emulate` checks the model in the rknn-toolkit2 simulator"
        )
    if use_emulator:
        if opts.dry_run:
            cmd, _ = emulate.emulator_command(target, artifact.program, emulate.free_port(), folder / "emulator")
            return {"target": target.name, "dry_run": True, "commands": [cmd]}
        if state.exists():
            old = json.loads(state.read_text())
            emulate.stop_process_group(int(old["pid"]))
        board = emulate.start(target, artifact.program, folder / "emulator")
        info = {
            "target": target.name,
            "url": board.url,
            "pid": board.pid,
            "command": board.command,
            "ticks_to_instructions": board.ticks_to_instructions,
        }
        ui.write_atomic(state, json.dumps(info, indent=2) + "\n")
        ui.info(f"{target.name} emulator running; stop it with: mfnc flash --target {target.name} --stop")
        return info
    commands = flash_commands(target, artifact.program, opts.host, opts.remote_port or DEFAULT_REMOTE_PORT)
    if opts.dry_run:
        return {"target": target.name, "dry_run": True, "commands": commands}
    for cmd in commands:
        with ui.step(f"{cmd[0]} ({target.flash.method})"):
            _run(cmd)
    result: dict = {"target": target.name, "flashed": str(artifact.program), "commands": commands}
    if target.flash.method == "scp" and opts.host:
        result["url"] = f"socket://{opts.host.split('@')[-1]}:{opts.remote_port or DEFAULT_REMOTE_PORT}"
    return result
