"""Reliability figures under the real `micropython` interpreter: frame fuzzing and power cuts.

* `rel.fuzz_frames` / `rel.fuzz_failures` — malformed frames fed to the firmware's parser and
  command interpreter in every state (tests/fw/fuzz.py) / crashes, hangs, heap allocations,
  therapy changes or wrong reply counts they caused (goal 0).
* `rel.power_cuts` / `rel.power_cut_losses` — power cuts injected at random points of flash
  writes and infusions, littlefs on the simulated NOR flash (tests/fw/pcut.py) / cuts after
  which the log or the delivered-volume record was lost, corrupt or wrong, or the pump came
  up infusing (goal 0). The CPython torn-append store runs the same sweep as a cross-check
  (`rel.power_cuts_mem`, `rel.power_cut_losses_mem`).
* `rel.power_cuts_programs` / `rel.program_losses` — power cuts through every program form
  (rate, volume/time, dose/time, dose rate, loading + maintenance, steps, bolus, titration,
  KVO) at random ticks and random flash writes, littlefs on the simulated NOR flash
  (tests/fw/pcut_programs.py) / cuts after which the pump came up delivering, or not paused
  with the program that was left, or left the therapy envelope after RESUME (goal 0);
  `rel.retry_after_reboot_executed`: retries of a pre-cut request (same bytes) the pump
  executed after the reboot (0 needs issue 11's reboot guard).
* `rel.gfuzz_frames` / `rel.envelope_violations` — grammar-aware stateful fuzzing
  (tests/fw/gfuzz.py): valid, CRC'd, correctly signed frames reaching every state with the
  plant moving / frames after which a reply was missing or doubled, a refused frame changed
  something, an accepted program or titration broke the library, the delivery left the
  therapy envelope (hil_sim/envelope.py), or an exception escaped (goal 0).
* `rel.log_retention_days` — days of a clinic's typical use under a sustained flood that
  the log keeps on the Pico-sized littlefs (tests/fw/retention.py; goal ≥ 30).
* `rel.log_damage` / `rel.log_unrecovered` — event-log damage trials (tests/fw/logdmg.py: bit
  flips, a bit flip that raises a record's seq near a segment's end, a record torn in the
  middle, a deleted record, a full flash, a re-key, a damaged heartbeat) / trials after which the
  pump did not boot safe, did not report the damage, lost a later record, reused a seq or
  recovered from a record older than the damage (goal 0).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from benchlib import FIRMWARE, ROOT, micropython_exe

FW_TESTS = ROOT / "tests" / "fw"
FUZZ_FRAMES = 100_000
POWER_CUTS = 1_000


def _run(exe: str, script: str, *args: object, heap: bool = False) -> dict:
    pre = ["-X", "heapsize=32M"] if heap else []
    p = subprocess.run([exe, *pre, str(FW_TESTS / script), *map(str, args)], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_fuzz() -> dict:
    r = _run(micropython_exe(), "fuzz.py", FUZZ_FRAMES, 20240601)
    for e in r["examples"]:
        print("   fuzz failure:", e)
    return {"rel.fuzz_frames": r["frames"], "rel.fuzz_failures": r["failures"],
            "rel.fuzz_max_step_us": r["max_us"]}


def bench_power() -> dict:
    r = _run(micropython_exe(), "pcut.py", POWER_CUTS, 20240601, "flash")
    m = _run(sys.executable, "pcut.py", POWER_CUTS, 20240602, "mem")
    for e in r["failures"] + m["failures"]:
        print("   power-cut loss:", e)
    return {"rel.power_cuts": r["cuts"], "rel.power_cut_losses": r["losses"],
            "rel.power_cuts_mem": m["cuts"], "rel.power_cut_losses_mem": m["losses"]}


def bench_power_programs() -> dict:
    r = _run(micropython_exe(), "pcut_programs.py", POWER_CUTS, 20261201, "flash")
    for e in r["failures"]:
        print("   program loss:", e)
    return {"rel.power_cuts_programs": r["cuts"], "rel.program_losses": r["losses"],
            "rel.power_cuts_programs_restored": r["restored"],
            "rel.power_cuts_programs_multi_segment": r["restored_multi"],
            "rel.retry_after_reboot_executed": r["retry_executed"]}


GFUZZ_FRAMES = 1_000_000
LOG_DAMAGE = 1_000


def bench_log_damage() -> dict:
    r = _run(sys.executable, "logdmg.py", LOG_DAMAGE, 20261204)
    for e in r["failures"]:
        print("   log damage unrecovered:", e)
    return {"rel.log_damage": r["trials"], "rel.log_unrecovered": r["unrecovered"],
            "rel.log_damage_detected": r["detected"],
            "rel.log_damage_interrupted": r["interrupted"]}


GFUZZ_WORKERS = max(1, min(2, os.cpu_count() or 1))


def _parallel(exe: str, script: str, jobs: list[tuple]) -> list[dict]:
    """Run the script once per job (its own seed) in parallel processes; their JSON lines."""
    procs = [subprocess.Popen([exe, str(FW_TESTS / script), *map(str, a)], cwd=str(FIRMWARE),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a in jobs]
    out = []
    for p in procs:
        so, se = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"{script} failed:\n{so[-2000:]}{se[-2000:]}")
        out.append(json.loads(so.strip().splitlines()[-1]))
    return out


def bench_gfuzz() -> dict:
    """1,000,000 frames, split over the cores (one seed per worker: the same seeds give the
    same frames whatever the machine), CPython (the firmware in-process)."""
    n = GFUZZ_WORKERS
    jobs = [(GFUZZ_FRAMES // n + (1 if i < GFUZZ_FRAMES % n else 0), 20261203 + 7919 * i) for i in range(n)]
    rs = _parallel(sys.executable, "gfuzz.py", jobs)
    states: dict = {}
    for r in rs:
        for e in r["examples"]:
            print("   gfuzz violation:", e)
        for k, v in r["states"].items():
            states[k] = states.get(k, 0) + v
    return {"rel.gfuzz_frames": sum(r["frames"] for r in rs),
            "rel.envelope_violations": sum(r["violations"] for r in rs),
            "rel.gfuzz_states": len(states), "rel.gfuzz_accepted": sum(r["accepted"] for r in rs),
            "rel.gfuzz_workers": n}


RETENTION_DAYS = 45


def bench_retention() -> dict:
    """A clinic day with a peer flooding it (tests/fw/clinic.py), replayed 45 times onto the
    Pico-sized littlefs with the firmware tree on it (tests/fw/retention.py, micropython):
    the days the log still holds, records and bytes a day (docs/safety/log-retention.md)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        day = os.path.join(d, "day.txt")
        p = subprocess.run([sys.executable, str(FW_TESTS / "clinic.py"), "dump", day, "flood"],
                           cwd=str(FIRMWARE), capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-2000:])
        with open(day, "rb") as f:
            lines = f.read().splitlines()
        r = _run(micropython_exe(), "retention.py", day, RETENTION_DAYS, "pico", heap=True)
    per_day = len(lines)
    return {"rel.log_retention_days": r["days_kept"], "rel.log_records_per_day_flood": per_day,
            "rel.log_bytes_per_day_flood": r["bytes_kept"] // max(r["days_kept"], 1),
            "rel.log_budget_bytes": r["budget"], "rel.log_free_blocks": r["free_blocks"],
            "rel.log_dropped_full": r["dropped_full"]}


BENCHMARKS = {"fuzz": bench_fuzz, "power": bench_power, "power_programs": bench_power_programs,
              "gfuzz": bench_gfuzz, "log_damage": bench_log_damage, "retention": bench_retention}
