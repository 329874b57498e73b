"""Shared helpers for the benchmarks behind `make bench`, and the registry.

Each area keeps its benchmarks in its own module `bench/bench_<area>.py` with a
`BENCHMARKS = {name: function}` dict; every function returns {figure key: value}.
`BENCHMARKS` here collects them all, in file-name order.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BENCH = ROOT / "bench"


def micropython_exe() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else (shutil.which("micropython") or "micropython")


def compiled_firmware(dest: Path) -> Path:
    """The firmware tree as `infusekit firmware build` ships it (mpy-cross, portable bytecode)."""
    from host.firmware_tools import build
    build("sim", dest)
    return dest


def _mp_json(script: str, cwd: Path, heapsize: str | None = None) -> dict | None:
    cmd = [micropython_exe()] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(BENCH / script)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])



def _collect() -> dict:
    import importlib
    found = {}
    for path in sorted(BENCH.glob("bench_*.py")):
        mod = importlib.import_module(path.stem)
        found.update(getattr(mod, "BENCHMARKS", {}))
    return found


class _Registry(dict):
    def __missing__(self, key):
        raise KeyError(f"no benchmark {key!r}; have {sorted(self)}")


BENCHMARKS = _Registry()


def load() -> dict:
    if not BENCHMARKS:
        BENCHMARKS.update(_collect())
    return BENCHMARKS


@contextlib.contextmanager
def served_pump(runtime: str = "micropython", speed: float = 1.0, seed: int = 0,
                timeout: float = 2.0):
    """A simulated pump served on a pty from a thread at ``speed`` (1.0: real time) and a
    `host.client.Pump` open on it: yields ``(sim, pump)``; everything is closed after."""
    from hil_sim.cosim import Simulation
    from hil_sim.link import PtyEndpoint
    from hil_sim.serve import serve
    from host.client import Pump
    sim = Simulation(runtime=runtime, seed=seed)
    ep = PtyEndpoint()
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(sim, ep, speed, stop), daemon=True)
    th.start()
    pump = None
    try:
        pump = Pump.open(ep.url, timeout=timeout)
        yield sim, pump
    finally:
        if pump is not None:
            pump.close()
        stop.set()
        th.join(timeout=10)
        ep.close()
        sim.close()
