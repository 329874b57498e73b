"""`make bench`: runs every benchmark, prints a table, writes bench/results.json.

Each benchmark returns {key: value}; keys are the PRODUCT.md figure names. Goals are printed
beside the figures; a missed goal is reported, not hidden (the exit status stays 0 so the
table is always written; CI does not run benchmarks).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

GOALS = {   # PRODUCT.md, Benchmarks
    "sim.speed_cpython_x": (">=", 2000),
    "sim.speed_micropython_x": (">=", 200),
    "fw.tick_us_micropython": ("<=", 50),
    "fw.tick_alloc_bytes": ("<=", 0),
    "fw.heap_peak_bytes": ("<=", 28672),          # the RP2040 image (bench_rp2040)
    "fw.tick_p99_us_rp2040": ("<=", 10000),
    "fw.step_gap_max_ms_rp2040": ("<=", 100),
    "sim.speed_rp2040_x": (">=", 1),
    "acc.ketamine_error_pct": ("<=", 0.5),
    "acc.trumpet_2min_1mlh_pct": ("<=", 2),
    "acc.startup_1mlh_s": ("<=", 60),
    "acc.startup_1mlh_slack1ml_s": ("<=", 180),
    "acc.trumpet_2min_5mlh_pct": ("<=", 2),
    "acc12.held.trumpet_2min_1mlh_pct": ("<=", 2),     # issue 12's held-back mechanics
    "acc12.held.trumpet_2min_5mlh_pct": ("<=", 2),
    "acc12.held.startup_1mlh_s": ("<=", 60),
    "acc12.held.startup_1mlh_slack1ml_s": ("<=", 180),
    "occ.false_alarms_disturbed": ("<=", 0),
    "occ.limit_ratio_max": ("<=", 3),
    "occ.time_to_alarm_100mlh_s": ("<=", 5),
    "occ.bolus_max_ml": ("<=", 0.05),
    "occ12.held.false_alarms_disturbed": ("<=", 0),
    "occ12.held.limit_ratio_max": ("<=", 3),
    "occ12.held.limit_ratio_1mlh": ("<=", 2),
    "occ12.held.time_to_alarm_25mlh_s": ("<=", 15),
    "occ12.held.time_to_alarm_100mlh_s": ("<=", 5),
    "occ12.held.bolus_max_ml": ("<=", 0.05),
    "occ12.bolus_max_r_sweep_ml": ("<=", 0.05),       # over R 500-1600 (bench/bolus_r.py)
    "occ12.held.bolus_max_r_sweep_ml": ("<=", 0.05),
    "occ12slow.stored_max_ml": ("<=", 0.05),          # slow occlusions (bench/slow.py)
    "occ12slow.missed": ("<=", 0),
    "occ12slow.held.stored_max_ml": ("<=", 0.05),
    "occ12slow.held.missed": ("<=", 0),
    "occ.time_to_alarm_1mlh_s": ("<=", 300),
    "occ.time_to_alarm_25mlh_s": ("<=", 15),
    "occ.limit_ratio_1mlh": ("<=", 2),
    "occ.bolus_ml": ("<=", 0.05),
    "occ.false_alarms_24h": ("<=", 0),
    "host.rtt_ms": ("<=", 15),
    "host.rtt_wire_ratio": ("<=", 1.5),
    "host.telemetry_hz": (">=", 50),
    "rel.fuzz_frames": (">=", 100000),
    "rel.fuzz_failures": ("<=", 0),
    "rel.power_cuts": (">=", 1000),
    "rel.power_cut_losses": ("<=", 0),
    "rel.power_cuts_programs": (">=", 1000),
    "rel.program_losses": ("<=", 0),
    "campaign.scaling_2w": (">=", 1.7),
    "vitals.hl7_to_pause_ms": ("<=", 500),
    "rel.gfuzz_frames": (">=", 1000000),
    "rel.envelope_violations": ("<=", 0),
    "rel.log_damage": (">=", 1000),
    "rel.log_unrecovered": ("<=", 0),
    "fw.mac_refusal_alloc_bytes": ("<=", 0),      # issue 11 (REQ-COM-03, REQ-SEC-09)
    "rel.log_retention_days": (">=", 30),
}


def _meets(key, value):
    if key not in GOALS or not isinstance(value, (int, float)):
        return ""
    op, goal = GOALS[key]
    ok = value >= goal if op == ">=" else abs(value) <= goal
    return f"{op} {goal}  {'ok' if ok else 'MISSED'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="comma-separated benchmark names")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    registry = benchlib.load()
    names = args.only.split(",") if args.only else list(registry)
    results: dict[str, object] = {}
    out = Path(args.out)
    if args.only and out.exists():      # a partial run updates the figures it measured
        results.update(json.loads(out.read_text()))
    for name in names:
        t = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        results.update(registry[name]())
        print(f"   {time.perf_counter() - t:.1f} s", flush=True)
    results["meta.machine"] = f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    results["meta.date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    width = max(len(k) for k in results)
    print()
    for k in sorted(results):
        v = results[k]
        vs = f"{v:.4g}" if isinstance(v, float) else str(v)
        print(f"{k:<{width}}  {vs:>14}  {_meets(k, v)}")
    Path(args.out).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
