"""Firmware figures under the real `micropython` interpreter: tick time, allocation, heap."""
from __future__ import annotations

from pathlib import Path
import tempfile

from benchlib import _mp_json, compiled_firmware


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



BENCHMARKS = {"firmware": bench_firmware}
