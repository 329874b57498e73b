"""Slowly developing occlusions (issue 12 §3): does the pump alarm before the volume stored in
the compliance above the line's resting pressure could become a bolus of more than 0.05 mL?

Each case infuses at a rate on a syringe model of one set's parameter ranges (the battery's
`draw_params`, seeds 600+ of each set: none of the battery's), lets the flow settle, then
makes the line's resistance R rise: *lin* — R linear in time so that the open-line pressure
Q·R climbs `rise` mmHg/min (0.5-10: the battery's slow cases are 2.3); *exp* — R grows
exponentially from the line's own R0, Q·(R − R0) = a·(e^(t/τe) − 1) with an initial climb of
0.5 mmHg/min (τe = 10 or 30 min: a clot that accelerates). Half the shapes also run through
the bedside (`disturbed`: breathing, coughs, arm moves, strains and the battery's height steps
and ramps, `battery._height_events`).

The figures come from the plant, not from the detector. The *stored volume* is what the
compliance holds above the line's resting pressure because the line is closing, and what
opening it would release: C·(P_q − Q·R0), C the plant's syringe + line compliance (stopper
spring included), Q·R0 the line's flow pressure before the rise, and P_q the flow's own part
of the barrel pressure — the fluid path C_f·dP/dt = q − (P − Pv)/R is linear in Pv, so the
barrel pressure is P_q + P_v, P_q driven by the stopper's real flow q (the plant's) through
the plant's R(t) with Pv = 0, integrated here step by step, and P_v what the bedside (height,
breathing, arm, coughs) does with R·C. A height step held for an hour also puts C·ΔPv into the
compliance, but it is not a closing line, and opening nothing releases it: it is in P_v, not
in the figure. (Per case also C·(P − Pv − Q·R0), the plant's whole barrel pressure over its
resting level, as `stored_p_ml`: the same on undisturbed lines.) It is taken at the tick
before the OCCLUSION alarm. A case ends at the alarm, or unalarmed when the stored volume
reaches 0.1 mL (2 × the goal), the syringe has delivered its program (0.9 × its size) or after
4 h. `stored_max_ml` is the largest stored volume any case reached without an alarm having
come (goal <= 0.05; 0.1 is the cap: a case stopped unalarmed), `missed` the cases in which it
passed 0.05 mL unalarmed. After an alarm the line is opened 30 s later (R back to R0, the
pump left in alarm) and the volume delivered over the next 60 s is the released bolus, as in
the battery.

`python bench/slow.py [--set tune|held] [--jobs 2] [--quick]`; `bench/bench_sim.py`
(`occ12slow`) runs both sets. `--friction`: no closing, an open motionless line whose barrel
friction varies by 10-25 % (the battery's ranges' upper part): false alarms from it alone.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

RATES = (1.0, 5.0, 25.0, 50.0, 100.0)
MODELS = ("BD10", "BD20", "BD50", "STIFF50", "SOFT50")
# (shape, parameter, disturbed): lin in mmHg/min, exp τe in minutes
SHAPES = (("lin", 0.5, False), ("lin", 1.0, False), ("lin", 2.3, False), ("lin", 5.0, False),
          ("lin", 10.0, False), ("exp", 10.0, False), ("exp", 30.0, False),
          ("lin", 1.0, True), ("lin", 5.0, True), ("exp", 10.0, True))
SEED0 = 600
GOAL_ML = 0.05
CAP_ML = 0.1
EXP_A_MMHG = lambda tau_min: 0.5 * tau_min     # initial climb 0.5 mmHg/min  # noqa: E731
EXP_STEP_S = 20.0


def _schedule_rise(sim, p, rate, shape, par, t0_ms, span_s):
    """R(t) for the shape from t0 on (piecewise linear for exp)."""
    q = rate / 3600.0
    r0 = p.line_resistance_mmhg_s_per_ml
    if shape == "lin":
        import battery
        factor = battery.linear_rise_factor(rate, r0, par, span_s)
        sim.schedule(t0_ms, "resistance", factor, ramp_s=span_s)
        return
    a = EXP_A_MMHG(par)
    tau = par * 60.0
    t = 0.0
    while t < span_s:
        t1 = t + EXP_STEP_S
        dp = a * (math.exp(t1 / tau) - 1.0)
        if dp > 3000.0:
            dp = 3000.0
        sim.schedule(t0_ms + t * 1000.0, "resistance", 1.0 + dp / q / r0, ramp_s=EXP_STEP_S)
        t = t1


def slow_case(setname: str, rate: float, model: str, k: int, shape: str, par: float,
              disturbed: bool = False) -> dict:
    import random

    import battery
    from hil_sim import analysis
    S = battery.SETS[setname]
    seed = S["seed0"] + SEED0 + k
    p = battery.draw_params(setname, seed, model, disturbed=disturbed)
    pump = battery.Pump(p, seed)
    sim = pump.sim
    plant = sim.plant
    size = battery._SIZE[model]
    try:
        pump.start(rate, size * 0.9, model)
        warm = 90 + max(0.0, 60.0 / rate)
        if disturbed:
            rng = random.Random(f"{setname}:{seed}:slow-events")
            battery._height_events(sim, rng, S, sim.t_ms + 30_000, sim.t_ms + 4 * 3.6e6)
        pump.run(int(warm * 1000))
        early = pump.bad()
        t_occ = sim.t_ms / 1000
        span = 4 * 3600.0
        _schedule_rise(sim, p, rate, shape, par, sim.t_ms, span)
        q = rate / 3600.0
        r0 = p.line_resistance_mmhg_s_per_ml
        c = p.total_compliance
        st = {"max": 0.0, "max_p": 0.0, "over_at": None, "pq": q * r0, "t": sim.t_ms,
              "x": plant.displaced_ml}
        cf = plant.C

        def watch(pp):
            if any(a[1] == "OCCLUSION" and a[0] >= t_occ for a in pp.alarms):
                return True
            dt = (sim.t_ms - st["t"]) / 1000.0
            if dt > 0:
                qa = (plant.displaced_ml - st["x"]) / dt
                qr = qa * plant._R
                st["pq"] = qr + (st["pq"] - qr) * math.exp(-dt / (cf * plant._R))
                st["t"], st["x"] = sim.t_ms, plant.displaced_ml
            v = c * (st["pq"] - q * r0)
            vp = c * (plant.pressure - plant._pv_now - q * r0)
            if v > st["max"]:
                st["max"] = v
            if vp > st["max_p"]:
                st["max_p"] = vp
            if v > GOAL_ML and st["over_at"] is None:
                st["over_at"] = sim.t_ms / 1000 - t_occ
            return v >= CAP_ML or plant.displaced_ml >= size * 0.9 - 1e-3 or bool(
                [a for a in pp.bad() if a[0] >= t_occ])
        pump.run(int(span * 1000), until=watch)
        occ = [a[0] for a in pump.alarms if a[1] == "OCCLUSION" and a[0] >= t_occ]
        t_alarm = occ[0] - t_occ if occ else None
        other = [a for a in pump.bad() if a[0] >= t_occ and a[1] != "OCCLUSION"]
        bolus = None
        if t_alarm is not None:
            pump.run(30_000)
            sim.unschedule("resistance")                  # the rise ends
            sim.inject("resistance", value=1.0)
            t_rel = sim.t_ms / 1000
            pump.run(61_000)
            bolus = analysis.bolus_ml(sim.record, t_rel, 60.0)
        return {"set": setname, "rate": rate, "model": model, "k": k, "shape": shape, "par": par,
                "disturbed": disturbed, "t_alarm": t_alarm, "stored_ml": st["max"],
                "stored_p_ml": st["max_p"],
                "over_at": st["over_at"], "bolus": bolus, "early": early, "other": other}
    finally:
        pump.close()


def friction_case(setname: str, rate: float, model: str, k: int, fric_pct: float) -> dict:
    """No closing at all: an open, motionless line (no bedside) whose glide friction varies
    by ±fric_pct along the barrel (the battery draws 5-20 % / 10-25 %) — the reading follows
    it, Δfriction ÷ A — for 2 h or the syringe: any OCCLUSION is a false alarm."""
    import battery
    S = battery.SETS[setname]
    seed = S["seed0"] + SEED0 + 300 + k
    p = battery.draw_params(setname, seed, model, disturbed=False, friction_var_pct=fric_pct)
    pump = battery.Pump(p, seed)
    size = battery._SIZE[model]
    try:
        pump.start(rate, size * 0.9, model)
        pump.run(int(min(2.0, 0.85 * size / rate) * 3.6e6), until=lambda pp: bool(pp.bad()))
        return {"rate": rate, "model": model, "k": k, "fric": fric_pct,
                "period_mm": p.friction_period_mm, "alarms": pump.bad()}
    finally:
        pump.close()


FRICTION_MAP = dict(rates=(1.0, 5.0, 25.0), fric=(10.0, 15.0, 20.0, 25.0), seeds=2)


def friction_map(setname: str, jobs: int = 2) -> list:
    import battery
    m = FRICTION_MAP
    args = [(setname, r, mod, k, f) for r in m["rates"] for mod in MODELS for f in m["fric"]
            for k in range(m["seeds"])]
    return battery._pool_map(friction_case, args, jobs)


def cases(setname: str, quick: bool = False) -> list:
    out = []
    k = 0
    for rate in RATES:
        for m in MODELS:
            for shape, par, dist in SHAPES:
                if quick and (dist or shape == "exp" or par not in (1.0, 5.0)):
                    continue
                out.append((setname, rate, m, k, shape, par, dist))
                k += 1
    return out


def summarize(res: list) -> dict:
    hit = [x for x in res if x["t_alarm"] is not None]
    miss = [x for x in res if x["stored_ml"] > GOAL_ML]
    return {
        "stored_max_ml": round(max(x["stored_ml"] for x in res), 4),
        "missed": len(miss),
        "cases": len(res),
        "alarmed": len(hit),
        "bolus_max_ml": round(max((x["bolus"] for x in hit), default=0.0), 4),
        "alarms_before": sum(len(x["early"]) for x in res),
        "other_alarms": sum(len(x["other"]) for x in res),
        "missed_by_rate": {str(r): sum(1 for x in miss if x["rate"] == r) for r in RATES},
    }


def run_set(setname: str, jobs: int = 2, verbose: bool = False, quick: bool = False) -> tuple:
    import battery
    res = battery._pool_map(slow_case, cases(setname, quick), jobs)
    if verbose:
        for x in res:
            print(f"  {x['rate']:5} {x['model']:7} {x['shape']} {x['par']:4} "
                  f"{'dist' if x['disturbed'] else '    '} t {x['t_alarm'] and round(x['t_alarm'], 1)}"
                  f" stored {x['stored_ml']:.4f} ({x['stored_p_ml']:.4f}) over@ {x['over_at'] and round(x['over_at'])}"
                  f" bolus {x['bolus'] if x['bolus'] is None else round(x['bolus'], 4)}"
                  f" {x['early']} {x['other']}", file=sys.stderr)
    return summarize(res), res


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", default="tune", choices=("tune", "held"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="lin 1 and 5 mmHg/min, undisturbed")
    ap.add_argument("--json", help="write every case here")
    ap.add_argument("--friction", action="store_true",
                    help="instead: false alarms from the barrel's friction profile alone")
    a = ap.parse_args(argv)
    if a.friction:
        res = friction_map(a.set, a.jobs)
        for x in res:
            print(f"  {x['rate']:5} {x['model']:7} fric {x['fric']:4} % k {x['k']} "
                  f"period {x['period_mm']:.1f} mm {x['alarms']}")
        m = FRICTION_MAP
        for r in m["rates"]:
            print(f"{r:5} mL/h  " + "  ".join(
                f"{f:.0f}%: " + "/".join(str(sum(1 for x in res if x['rate'] == r and x['fric'] == f
                                                and x['model'] == mod and x['alarms']))
                                         for mod in MODELS) for f in m["fric"]),
                  f"(false-alarmed runs of {m['seeds']} per model {'/'.join(MODELS)})")
        return
    summ, res = run_set(a.set, a.jobs, verbose=True, quick=a.quick)
    if a.json:
        import json
        Path(a.json).write_text(json.dumps(res, indent=1))
    for k, v in summ.items():
        print(f"{k:<20} {v}")


if __name__ == "__main__":
    main()
