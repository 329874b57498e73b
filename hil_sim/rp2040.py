"""The third firmware runtime: the shipped RP2040 image on an emulated RP2040 (rp2040js).

This module owns the emulated chip's host side: the flash image it boots from, the Node
harness process (``hil_sim/rp2040/harness.js``, documented there and in docs/simulator.md),
and the slice contract of `hil_sim.runtime` on top of it. The firmware is the image
`host.rp2_image.image()` builds (MicroPython v1.28.0, pumpcore and ``boards/rp2_pico.py``
frozen in); nothing of the firmware is imported or imitated here.

* Flash: ``firmware.bin`` at offset 0, and at the board's filesystem offset a littlefs
  image made by the real ``micropython`` interpreter's ``VfsLfs2`` with the parameters the
  rp2 port mounts it with (4 KB blocks, 256-byte programs), holding what ``infusekit firmware
  flash`` deploys: ``main.py``, ``druglib.json`` and its ``.sha256``, and ``key.bin`` when a
  key is provisioned.
* The plant's inputs become pin levels, ADC codes and quadrature edges; STEP edges become
  the step counts per control tick, the lamps the alarm priority (harness.js).
* ``restart()`` is a power cycle: a new chip on the same flash array.
* `metrics()` reads the harness's counters (STEP gaps, tick-probe durations, flash
  operations, UART overruns); `read_file()` reads a file back from the chip's littlefs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hil_sim.runtime import FirmwareError, MicroPythonRuntime, _exe, _fw_dir

HERE = Path(__file__).resolve().parent / "rp2040"
HARNESS = HERE / "harness.js"
RP2040JS_VERSION = "1.4.1"
LFS_BLOCK = 4096

# runs under the `micropython` interpreter: mkfs/mount VfsLfs2 on a RAM block device, then
# either write files into it (argv: image, out, name=path...) or read one file (argv: image, name)
_LFS_TOOL = r"""
import sys
try:
    import vfs
except ImportError:
    import os as vfs
class BD:
    def __init__(self, data):
        self.d = data
    def readblocks(self, n, buf, off=0):
        a = n * 4096 + off
        buf[:] = self.d[a:a + len(buf)]
    def writeblocks(self, n, buf, off=None):
        if off is None:
            self.d[n * 4096:n * 4096 + 4096] = b'\xff' * 4096
            off = 0
        a = n * 4096 + off
        self.d[a:a + len(buf)] = buf
    def ioctl(self, op, arg):
        if op == 4:
            return len(self.d) // 4096
        if op == 5:
            return 4096
        if op == 6:
            self.d[arg * 4096:arg * 4096 + 4096] = b'\xff' * 4096
            return 0
        return 0
mode = sys.argv[1]
if mode == 'mk':
    bd = BD(bytearray(b'\xff' * int(sys.argv[3])))
    vfs.VfsLfs2.mkfs(bd, progsize=256)
    fs = vfs.VfsLfs2(bd, progsize=256)
    for a in sys.argv[4:]:
        name, src = a.split('=', 1)
        with open(src, 'rb') as f:
            data = f.read()
        with fs.open(name, 'wb') as f:
            f.write(data)
    with open(sys.argv[2], 'wb') as f:
        f.write(bd.d)
else:
    with open(sys.argv[2], 'rb') as f:
        bd = BD(bytearray(f.read()))
    fs = vfs.VfsLfs2(bd, progsize=256)
    with fs.open(sys.argv[3], 'rb') as f:
        data = f.read()
    sys.stdout.write(data.hex())
"""


def node_modules() -> Path:
    """``hil_sim/rp2040/node_modules`` with the pinned rp2040js, installed with npm on first
    use (`npm ci` from the committed package-lock.json)."""
    mod = HERE / "node_modules" / "rp2040js"
    if not (mod / "package.json").exists():
        npm = shutil.which("npm")
        if not npm:
            raise FirmwareError("npm not found: install Node.js >= 18 and npm (apt-get install "
                                "nodejs npm), then `npm ci --prefix hil_sim/rp2040`")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE,
                           capture_output=True, text=True)
        if r.returncode:
            raise FirmwareError("npm ci in hil_sim/rp2040 failed", r.stdout + r.stderr)
    return mod.parent


def _lfs_tool(args: list[str]) -> str:
    r = subprocess.run([_exe("micropython"), "-X", "heapsize=24M", "-c", _LFS_TOOL, *args], capture_output=True,
                       text=True)
    if r.returncode:
        raise FirmwareError("littlefs image tool failed", r.stdout + r.stderr)
    return r.stdout


def littlefs_image(files: dict[str, bytes], size: int) -> bytes:
    """A littlefs image of ``size`` bytes holding ``files`` (name -> contents), formatted as
    the rp2 port formats its flash (``VfsLfs2.mkfs(bdev, progsize=256)``, 4 KB blocks)."""
    with tempfile.TemporaryDirectory(prefix="infusekit-lfs-") as tmp:
        args = ["mk", str(Path(tmp) / "fs.img"), str(size)]
        for i, (name, data) in enumerate(sorted(files.items())):
            p = Path(tmp) / f"f{i}"
            p.write_bytes(data)
            args.append(f"{name}={p}")
        _lfs_tool(args)
        return (Path(tmp) / "fs.img").read_bytes()


def littlefs_read(image: bytes, name: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="infusekit-lfs-") as tmp:
        p = Path(tmp) / "fs.img"
        p.write_bytes(image)
        return bytes.fromhex(_lfs_tool(["rd", str(p), name]).strip())


def default_main(nl_per_kstep: int | None = None) -> bytes:
    """``firmware/main.py`` as deployed; with a calibration for another syringe, the board's
    NL_PER_KSTEP is set first (as the other runtimes do for the plant's syringe)."""
    src = (_fw_dir(None) / "main.py").read_bytes()
    if nl_per_kstep:
        src = src.replace(b"run(rp2_pico.Board())",
                          b"rp2_pico.Board.NL_PER_KSTEP = %d\nrun(rp2_pico.Board())"
                          % int(nl_per_kstep), 1)
    return src


def deployed_files(firmware_dir: Path, main: bytes, key: bytes | None = None,
                   extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = {"main.py": main}
    for name in ("druglib.json", "druglib.json.sha256"):
        if (firmware_dir / name).exists():
            files[name] = (firmware_dir / name).read_bytes()
    if key is not None:
        files["key.bin"] = key
    files.update(extra or {})
    return files


class RP2040Runtime(MicroPythonRuntime):
    """The firmware image on rp2040js in a Node process, one text round trip per slice (the
    same protocol as the ``micropython`` runtime's stdio server)."""

    name = "rp2040"
    #: the plant's encoder count is renewed every control tick: the board reads its encoder
    #: continuously, and the rate loop's runaway check assumes a reading at most two ticks old
    max_slice_ms = 50

    def __init__(self, firmware_dir: str | os.PathLike | None = None,
                 nl_per_kstep: int | None = None, timeout_s: float = 300.0,
                 key: bytes | None = None, main: bytes | None = None,
                 files: dict[str, bytes] | None = None, micropython: str | None = None,
                 image=None) -> None:
        from host.rp2_image import FS_BYTES, FS_OFFSET, bootrom_path
        from host.rp2_image import image as build_image
        src = _fw_dir(firmware_dir)
        self.firmware_dir = src
        self.compiled = True
        self.timeout_s = timeout_s
        self.image = img = image if image is not None else build_image(micropython=micropython)
        self.fw_version = img.fw
        fw = img.bin.read_bytes()
        if len(fw) > FS_OFFSET:
            raise FirmwareError(f"firmware image {len(fw)} B overlaps the filesystem at {FS_OFFSET}")
        self.files = deployed_files(src, main or default_main(nl_per_kstep), key, files)
        lfs = littlefs_image(self.files, FS_BYTES)
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, self.flash_path = tempfile.mkstemp(prefix="infusekit-rp2-", suffix=".img", dir=shm)
        with os.fdopen(fd, "wb") as f:
            f.write(fw + b"\xff" * (FS_OFFSET - len(fw)) + lfs)
        self.run_dir = HERE
        node_modules()
        self._cmd = [_node(), str(HARNESS), str(bootrom_path()), self.flash_path]
        self._env = dict(os.environ)
        self._start()
        self.fw_version = self.image.fw

    def restart(self, cause: str = "power") -> None:
        """Power cycle: a new chip (cores, peripherals, RAM) on the same flash."""
        self._in.write(b"P\n")
        line = self._readline()
        while not line.startswith("READY"):
            self._note(line)
            line = self._readline()

    def _command(self, cmd: str, reply: str) -> str:
        try:
            self._in.write(cmd.encode() + b"\n")
        except (BrokenPipeError, ValueError, OSError):
            raise self._fail("closed its input") from None
        line = self._readline()
        while not line.startswith(reply):
            if line.startswith("E"):
                raise self._fail(f"rejected {cmd!r}: {line!r}")
            self._note(line)
            line = self._readline()
        return line

    def metrics(self, reset: bool = False) -> dict[str, int]:
        """The harness's counters since the last reset: ``steps`` (signed STEP edges),
        ``gap_max_us`` (longest pause between STEP edges while enabled), ``tick_*_us`` (the
        tick probe on GP25, when the main.py drives one), ``erases``/``programs`` (4 KB
        sectors / 256 B pages), ``stall_us`` (CPU stalled by flash), ``rx_overruns``."""
        line = self._command("M 0" if reset else "M", "M ")
        return {k: int(v) for k, v in (f.split("=", 1) for f in line.split()[1:])}

    def flash(self) -> bytes:
        """The chip's whole flash as it is now."""
        fd, path = tempfile.mkstemp(prefix="infusekit-rp2-dump-")
        os.close(fd)
        try:
            self._command(f"D {path}", "OK")
            return Path(path).read_bytes()
        finally:
            os.unlink(path)

    def read_file(self, name: str) -> bytes:
        """A file from the chip's littlefs, as the firmware left it."""
        from host.rp2_image import FS_BYTES, FS_OFFSET
        return littlefs_read(self.flash()[FS_OFFSET:FS_OFFSET + FS_BYTES], name)


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise FirmwareError("node not found: install Node.js >= 18 (apt-get install nodejs npm)")
    return node


def image_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
