"""Build the RP2040 firmware image: MicroPython v1.28.0 with pumpcore and the board frozen in.

``image()`` is ``infusekit firmware image``: it builds ``firmware.uf2`` (and the raw
``firmware.bin`` the emulator loads) for ``ports/rp2`` BOARD=RPI_PICO with
``FROZEN_MANIFEST=firmware/manifest.py``, from

- a MicroPython source tree at the pinned version (``micropython=DIR``: a clone made with
  ``git clone --recursive -b v1.28.0 https://github.com/micropython/micropython``), or
- the archives in ``shared/vendor/`` (``micropython-1.28.0-rp2-sources.tar.xz`` and
  ``picotool-2.2.0-sources.tar.xz``), found beside the checkout (``../shared/vendor`` or
  ``../../shared/vendor``) or where ``$INFUSEKIT_VENDOR`` points; unpacked once.

pico-sdk 2.x writes the UF2 with picotool, which it would otherwise download: picotool is
built for the host from its source (vendor archive, or ``picotool=DIR``) and handed to the
build with ``PICOTOOL_FETCH_FROM_GIT_PATH``.

Caching (everything under ``build/rp2/``, or ``$INFUSEKIT_BUILD/rp2``): the unpacked sources
and picotool are kept per archive hash; the port's build folder is kept per source tree (make
rebuilds only what changed); the finished image is kept under the SHA-256 of its inputs —
the source tree's identity, the manifest and every frozen file, the board, the compiler's
version — so a second ``image()`` with the same inputs returns at once. A lock file makes
concurrent builds wait for each other.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from host._firmware import firmware_dir, firmware_version
from host.firmware_tools import FirmwareToolError

MICROPYTHON_VERSION = "1.28.0"
MP_ARCHIVE = "micropython-1.28.0-rp2-sources.tar.xz"
PICOTOOL_ARCHIVE = "picotool-2.2.0-sources.tar.xz"
BOOTROM = "rp2040-bootrom-B1.bin"
ENV_VENDOR = "INFUSEKIT_VENDOR"
ENV_BUILD = "INFUSEKIT_BUILD"
#: board name (as the CLI and firmware_tools know it) -> MicroPython's ports/rp2 BOARD
BOARDS = {"rp2_pico": "RPI_PICO"}
#: flash layout of BOARD=RPI_PICO (ports/rp2/mpconfigport.h, rp2_flash.c): 2 MB, 1408 KB of
#: littlefs at the end, the firmware in the 640 KB before it
FLASH_BYTES = 2 * 1024 * 1024
FS_BYTES = 1408 * 1024
FS_OFFSET = FLASH_BYTES - FS_BYTES
APT_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib cmake g++"


class ImageError(FirmwareToolError):
    """The image could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    uf2: Path
    bin: Path
    size: int                  # bytes of firmware (the .bin)
    micropython: str           # MicroPython version of the tree
    fw: str                    # pumpcore.VERSION frozen in (what HELLO reports)
    key: str                   # the input hash the image is cached under
    cached: bool               # True: an earlier build was reused

    def to_json(self) -> dict:
        return {"uf2": str(self.uf2), "bin": str(self.bin), "size": self.size,
                "micropython": self.micropython, "fw": self.fw, "key": self.key,
                "cached": self.cached}


def repo_root() -> Path:
    return firmware_dir().resolve().parent


def build_root() -> Path:
    env = os.environ.get(ENV_BUILD)
    return (Path(env) if env else repo_root() / "build") / "rp2"


def vendor_dir() -> Path:
    """The folder with the vendored archives: $INFUSEKIT_VENDOR, else shared/vendor beside the
    checkout (CI: ../shared; a worktree under /work/wt: ../../shared)."""
    env = os.environ.get(ENV_VENDOR)
    cands = [Path(env)] if env else []
    root = repo_root()
    cands += [p / "shared" / "vendor" for p in (root.parent, root.parent.parent)]
    for c in cands:
        if (c / MP_ARCHIVE).exists():
            return c
    raise ImageError(f"no {MP_ARCHIVE} in " + ", ".join(str(c) for c in cands)
                     + f": pass --micropython DIR (a v{MICROPYTHON_VERSION} tree) or set "
                       f"{ENV_VENDOR}")


def bootrom_path() -> Path:
    """The RP2040 B1 boot ROM the emulator runs (vendored; rp2040js ships none)."""
    p = vendor_dir() / BOOTROM
    if not p.exists():
        raise ImageError(f"boot ROM {p} missing")
    return p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(root: Path):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def tree_version(mp: Path) -> str:
    """MicroPython's version from ``py/mpconfig.h`` of the tree ("1.28.0")."""
    try:
        text = (mp / "py" / "mpconfig.h").read_text()
    except OSError:
        raise ImageError(f"{mp} is not a MicroPython tree (no py/mpconfig.h)") from None
    parts = [re.search(rf"#define MICROPY_VERSION_{k} \(?(\d+)", text) for k in
             ("MAJOR", "MINOR", "MICRO")]
    if not all(parts):
        raise ImageError(f"no version in {mp}/py/mpconfig.h")
    return ".".join(p.group(1) for p in parts if p)


def _check_tree(mp: Path) -> None:
    v = tree_version(mp)
    if v != MICROPYTHON_VERSION:
        raise ImageError(f"{mp} is MicroPython {v}; the image is pinned to v{MICROPYTHON_VERSION}"
                         f" (git clone --recursive -b v{MICROPYTHON_VERSION} "
                         "https://github.com/micropython/micropython)")
    for sub in ("ports/rp2", "lib/pico-sdk/src", "lib/tinyusb/src", "mpy-cross"):
        if not (mp / sub).is_dir():
            raise ImageError(f"{mp}/{sub} missing (clone with --recursive, or run "
                             "`git submodule update --init lib/pico-sdk lib/tinyusb lib/mbedtls "
                             "lib/micropython-lib` and `make -C ports/rp2 submodules`)")


def _unpack(archive: Path, dest: Path, strip_none: bool) -> None:
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as t:
        t.extractall(tmp, filter="tar")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _run(cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> None:
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if r.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-25:])
        raise ImageError(f"`{' '.join(cmd[:4])} …` failed (exit {r.returncode}); log {log}:\n{tail}")


def _need_tools() -> None:
    missing = [t for t in ("arm-none-eabi-gcc", "cmake", "make", "g++") if not shutil.which(t)]
    if missing:
        raise ImageError(f"{', '.join(missing)} not found: apt-get install {APT_PACKAGES}")


def _sources(micropython: str | Path | None, root: Path, log: Path) -> tuple[Path, str]:
    """(MicroPython tree, its identity for the cache key)."""
    if micropython is not None:
        mp = Path(micropython).resolve()
        _check_tree(mp)
        return mp, f"dir:{mp}:{tree_version(mp)}"
    archive = vendor_dir() / MP_ARCHIVE
    sha = _sha256(archive)
    mp = root / f"src-{sha[:12]}" / "mp"
    if not (mp.parent / ".complete").exists():
        _unpack(archive, mp, True)
        (mp.parent / ".complete").write_text(sha + "\n")
    _check_tree(mp)
    return mp, f"archive:{sha}"


def _picotool(mp: Path, picotool: str | Path | None, root: Path, log: Path) -> Path:
    """A host picotool built from source, installed flat; returns the install folder."""
    if picotool is not None:
        src = Path(picotool).resolve()
        ident = hashlib.sha256(str(src).encode()).hexdigest()
    else:
        archive = vendor_dir() / PICOTOOL_ARCHIVE
        ident = _sha256(archive)
        src = root / f"picotool-src-{ident[:12]}" / "picotool"
        if not (src.parent / ".complete").exists():
            _unpack(archive, src.parent / "x", True)
            shutil.rmtree(src, ignore_errors=True)
            os.replace(src.parent / "x" / "picotool", src)
            shutil.rmtree(src.parent / "x", ignore_errors=True)
            (src.parent / ".complete").write_text(ident + "\n")
    inst = root / f"picotool-{ident[:12]}"
    if not (inst / ".complete").exists():
        b = inst.with_name(inst.name + "-build")
        _run(["cmake", "-S", str(src), "-B", str(b), f"-DPICO_SDK_PATH={mp / 'lib' / 'pico-sdk'}",
              "-DPICOTOOL_NO_LIBUSB=1", f"-DCMAKE_INSTALL_PREFIX={inst}",
              "-DPICOTOOL_FLAT_INSTALL=1"], log)
        _run(["make", "-C", str(b), f"-j{_jobs()}", "install"], log)
        (inst / ".complete").write_text("ok\n")
    return inst


def _jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _gcc_version() -> str:
    try:
        return subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        return "?"


def frozen_files(fw: Path) -> list[Path]:
    """The files the manifest freezes (pumpcore/, boards/__init__.py, boards/rp2_pico.py) and
    the manifest: what the image's cache key hashes."""
    files = sorted(p for p in (fw / "pumpcore").rglob("*.py") if "__pycache__" not in p.parts)
    return [fw / "manifest.py", fw / "boards" / "__init__.py", fw / "boards" / "rp2_pico.py",
            *files]


def input_key(board: str, source_id: str, fw: Path) -> str:
    h = hashlib.sha256(f"{board}\0{source_id}\0{_gcc_version()}\0".encode())
    for p in frozen_files(fw):
        h.update(p.relative_to(fw).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _fresh_work(work: Path, manifest: Path, log: Path) -> None:
    """Remove a port build folder CMake configured for another folder or another manifest
    (e.g. copied from another checkout's build/rp2): CMake keeps using the paths it cached,
    so make would freeze *that* checkout's firmware and call the result this one's image."""
    cache = work / "CMakeCache.txt"
    if not cache.exists():
        return
    text = cache.read_text(errors="replace")
    m = re.search(r"^# For build in directory: (.*)$", text, re.M)
    f = re.search(r"^MICROPY_FROZEN_MANIFEST:[A-Z]*=(.*)$", text, re.M)
    if (m is None or Path(m.group(1).strip()) != work
            or (f is not None and Path(f.group(1).strip()) != manifest)):
        with log.open("a") as fh:
            fh.write(f"{work} was configured for {m and m.group(1)} / {f and f.group(1)}: "
                     "removed, building afresh\n")
        shutil.rmtree(work)


def image(board: str = "rp2_pico", micropython: str | Path | None = None,
          out: str | Path | None = None, picotool: str | Path | None = None,
          progress=None) -> Image:
    """Build (or reuse) the image; with ``out``, copy ``firmware.uf2``/``.bin`` there too."""
    if board not in BOARDS:
        raise ImageError(f"no RP2040 image for board {board!r} (known: {', '.join(BOARDS)})")
    fw = firmware_dir().resolve()
    root = build_root()
    with _locked(root):
        log = root / "build.log"
        mp, source_id = _sources(micropython, root, log)
        key = input_key(board, source_id, fw)
        done = root / f"image-{key}"
        cached = (done / "info.json").exists()
        if not cached:
            _need_tools()
            t0 = time.monotonic()
            log.write_text(f"InfuseKit RP2040 image {key} from {mp}\n")
            if progress:
                progress(f"building the RP2040 image (log: {log}) …")
            pt = _picotool(mp, picotool, root, log)
            if not (mp / "mpy-cross" / "build" / "mpy-cross").exists():
                _run(["make", "-C", str(mp / "mpy-cross"), f"-j{_jobs()}"], log)
            work = root / f"work-{BOARDS[board]}-{hashlib.sha256(source_id.encode()).hexdigest()[:12]}"
            _fresh_work(work, fw / "manifest.py", log)
            env = dict(os.environ, PICOTOOL_FETCH_FROM_GIT_PATH=str(pt))
            _run(["make", "-C", str(mp / "ports" / "rp2"), f"BOARD={BOARDS[board]}",
                  f"BUILD={work}", f"FROZEN_MANIFEST={fw / 'manifest.py'}", f"-j{_jobs()}"],
                 log, env=env)
            tmp = root / f".image-{key}.part"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name in ("firmware.uf2", "firmware.bin", "firmware.elf.map"):
                if (work / name).exists():
                    shutil.copy2(work / name, tmp / name)
            if not (tmp / "firmware.uf2").exists():
                raise ImageError(f"the build wrote no firmware.uf2 in {work}; log {log}")
            info = {"board": board, "micropython": tree_version(mp), "fw": firmware_version(),
                    "source": source_id, "key": key, "build_s": round(time.monotonic() - t0, 1),
                    "sha256": _sha256(tmp / "firmware.uf2")}
            (tmp / "info.json").write_text(json.dumps(info, indent=1) + "\n")
            shutil.rmtree(done, ignore_errors=True)
            os.replace(tmp, done)
        info = json.loads((done / "info.json").read_text())
    uf2, binf = done / "firmware.uf2", done / "firmware.bin"
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        shutil.copy2(uf2, o / "firmware.uf2")
        shutil.copy2(binf, o / "firmware.bin")
        uf2, binf = o / "firmware.uf2", o / "firmware.bin"
    return Image(uf2, binf, binf.stat().st_size, info["micropython"], info["fw"], key, cached)
