"""The bolus released after an occlusion over the line resistances a bedside has (issue 12):
the battery's occlusion cases (`battery.occlusion_case`: alarm, 30 s, line opened, pump left
in alarm, 60 s weighed) at 25/50/100 mL/h on every syringe model, with the line's resistance
R swept over 500-1600 mmHg·s/mL (cannulas 18-24 G and 150-250 cm of 1 mm extension by
Hagen-Poiseuille, docs/simulator.md), sudden occlusions at the fixed onset and two onset
phases, and slow ones (2.3 mmHg/min, where they alarm before the syringe is empty). The battery has R = 800 only; this sweep draws its own
cases (seeds 300+ of each set's parameter ranges, none of the battery's), so the battery's
draws are unchanged.

`python bench/bolus_r.py [--set tune|held] [--jobs 2]`; `bench/bench_sim.py` (`occ12r`)
runs both sets. Figures: the largest bolus over the sweep (goal <= 0.05 mL), the most
aspirated (the most negative bolus: what the back-off pulled back beyond the line's resting
level), the largest per R, the cases that did not alarm (slow occlusions that outlast
the syringe at these rates are not counted in the bolus), and the sudden occlusions' worst
time to alarm per rate.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

RATES = (25.0, 50.0, 100.0)
MODELS = ("BD10", "BD20", "BD50", "STIFF50", "SOFT50")
R_SWEEP = (500.0, 800.0, 1200.0, 1600.0)
SEEDS = (300, 301)
ONSETS = (0.0, 0.37, 0.89)      # fractions of battery.PHASE_SPAN_S
# slow occlusions where the stored-volume test alarms within the syringe (at 100 mL/h, and on
# 10/20 mL at 25-50 mL/h, the syringe is empty first at 2.3 mmHg/min — on main too)
SLOW_RATES = (25.0, 50.0)
SLOW_MODELS = ("BD50", "STIFF50", "SOFT50")


def _case(setname, rate, model, k, kind, onset_s, r):
    import battery
    res = battery.occlusion_case(setname, rate, model, k, kind, onset_s=onset_s,
                                 over={"line_resistance_mmhg_s_per_ml": r})
    res["R"] = r
    res["onset_s"] = onset_s
    return res


def cases(setname: str) -> list:
    import battery
    out = []
    for r in R_SWEEP:
        for rate in RATES:
            for m in MODELS:
                for k in SEEDS:
                    for f in ONSETS:
                        out.append((setname, rate, m, k, "sudden", f * battery.PHASE_SPAN_S, r))
                    if rate in SLOW_RATES and m in SLOW_MODELS:
                        out.append((setname, rate, m, k, "slow", 0.0, r))
    return out


def run_set(setname: str, jobs: int = 2, verbose: bool = False) -> dict:
    import battery
    res = battery._pool_map(_case, cases(setname), jobs)
    hit = [x for x in res if x["t_alarm"] is not None]
    if verbose:
        for x in res:
            print(f"  {x['kind']:6} {x['rate']:5} {x['model']:7} R {x['R']:6} onset {x['onset_s']:5.1f}"
                  f" t {x['t_alarm'] and round(x['t_alarm'], 1)} bolus {x['bolus']:.4f} {x['early']}",
                  file=sys.stderr)
    per_r = {str(int(r)): round(max(x["bolus"] for x in hit if x["R"] == r), 4) for r in R_SWEEP}
    return {
        "bolus_max_r_sweep_ml": round(max(x["bolus"] for x in hit), 4),
        "bolus_min_r_sweep_ml": round(min(x["bolus"] for x in hit), 4),
        "bolus_max_r_sweep_by_r_ml": per_r,
        "bolus_max_r_sweep_sudden_ml": round(max(x["bolus"] for x in hit if x["kind"] == "sudden"), 4),
        "bolus_max_r_sweep_slow_ml": round(max((x["bolus"] for x in hit if x["kind"] == "slow"),
                                               default=0.0), 4),
        "r_sweep_cases": len(res),
        "r_sweep_missed_sudden": sum(1 for x in res if x["t_alarm"] is None and x["kind"] == "sudden"),
        "r_sweep_missed_slow": sum(1 for x in res if x["t_alarm"] is None and x["kind"] == "slow"),
        "r_sweep_alarms_before": sum(len(x["early"]) for x in res),
        # the sudden occlusions' time to alarm by rate, worst over models, R, seeds and onsets
        # (the battery measures 25 mL/h on BD50 and 100 mL/h on BD50/BD10 only)
        "r_sweep_time_to_alarm_max_s_by_rate": {
            str(int(q)): round(max(x["t_alarm"] for x in hit if x["kind"] == "sudden"
                                   and x["rate"] == q), 1) for q in RATES},
    }


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", default="tune", choices=("tune", "held"))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    for k, v in run_set(a.set, a.jobs, verbose=True).items():
        print(f"{k:<32} {v}")


if __name__ == "__main__":
    main()
