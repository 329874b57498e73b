"""Bedside height ramps (issue 12, session 11): false OCCLUSION alarms from the pump or the bed
moved 20-60 cm over 5-60 s, both directions, at 1-100 mL/h on 10/20/50 mL, and which detector
path fired. Fresh seeds (tuning ranges from 40000, held-back ranges and models from 60000),
the bedside's breathing, coughs and arm moves on.

Each run: one plant (`battery.draw_params`), four excursions — the pump ramped up or down
(alternately) by 20-60 cm, held ~40 s, ramped back — so each run holds four ramps of a rising
and four of a falling reading; every ramp's slope (mmHg/s) is drawn from the run's speed bin
(`BINS`). `python bench/ramps.py [--set tune|held] [--seeds N] [--jobs 2]` prints the map;
`sweep()` is the `occ12.ramps.*` figures (bench_sim)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import battery as B  # noqa: E402

MMHG_PER_CM = 0.7356
RATES = (1.0, 2.0, 5.0, 15.0, 25.0, 50.0, 100.0)
MODELS = {"tune": ("BD10", "BD20", "BD50"), "held": ("BD10", "BD20", "BD50", "STIFF50", "SOFT50")}
SEED0 = {"tune": 40000, "held": 60000}
# ramp slopes (mmHg/s): a bed raised 40 cm over 60 s is 0.5; 60 cm over 20 s 2.2; over 5 s 8.8
BINS = ((0.25, 0.75), (0.75, 1.5), (1.5, 2.2), (2.2, 3.5), (3.5, 8.8))
CM = (20.0, 60.0)
RAMP_S = (5.0, 60.0)
HOLD_S = (35.0, 50.0)


def _paths():
    """Wrap the firmware controller's OCCLUSION (CPython, in-process) to name the detector path
    behind each alarm. (Not Occlusion.update: its stored-volume return starts a Q·R probe
    first, so it returns _VOLUME twice for one alarm, or for none.)"""
    from host._firmware import pumpcore
    O = pumpcore("occlusion")
    C = pumpcore("controller")
    fired: list = []
    orig = C.Controller._occlusion

    def _occlusion(self, why):
        o = self.occl
        if why == O._TREND:
            path = "probe" if o.probe else {O._C_SLIDE: "slide", O._C_SLIDE2: "slide2"}.get(
                o.confirm, "trend")
        else:
            path = {O._THRESHOLD: "threshold", O._VOLUME: "volume"}.get(why, str(why))
        fired.append(path)
        return orig(self, why)
    C.Controller._occlusion = _occlusion
    return C, orig, fired


def run_one(setname: str, rate: float, model: str, b: int, seed: int) -> dict:
    """One plant, four excursions at slopes from BINS[b]: the alarms, which ramp was under way
    (rising / falling reading, its slope), the detector path."""
    C, orig, fired = _paths()
    rng = random.Random(f"ramps:{setname}:{seed}:{rate}:{model}:{b}")
    pump = B.Pump(B.draw_params(setname, seed, model), seed)
    ramps = []                                      # (t_start_s, t_end_s, rising, mmHg/s)
    try:
        pump.start(rate, B._SIZE[model] * 0.9, model)
        t = pump.sim.t_ms + 40_000 + rng.uniform(0, 20_000)
        for j in range(4):
            while True:
                g = rng.uniform(*BINS[b])
                cm = rng.uniform(*CM)
                rs = cm * MMHG_PER_CM / g
                if RAMP_S[0] <= rs <= RAMP_S[1]:
                    break
            up = j % 2 == 0                          # pump up: the reading falls, then rises back
            h = cm if up else -cm
            pump.sim.schedule(t, "height_cm", h, ramp_s=rs)
            ramps.append((t / 1000, t / 1000 + rs, not up, g))
            t += rs * 1000 + rng.uniform(*HOLD_S) * 1000
            pump.sim.schedule(t, "height_cm", 0.0, ramp_s=rs)
            ramps.append((t / 1000, t / 1000 + rs, up, g))
            t += rs * 1000 + rng.uniform(*HOLD_S) * 1000
        end = t + 20_000
        pump.run(int(end - pump.sim.t_ms))
        bad = pump.bad()
        out = []
        paths = iter(fired)                          # one per OCCLUSION, in order
        for ta, name in bad:
            last = [r for r in ramps if r[0] <= ta]
            r = last[-1] if last else None
            path = next(paths, "?") if name == "OCCLUSION" else "-"
            out.append({"t": ta, "alarm": name, "path": path,
                        "rising": r[2] if r else None, "slope": round(r[3], 2) if r else None,
                        "after_end_s": round(ta - r[1], 1) if r else None})
        n = sum(1 for r in ramps if not bad or r[0] <= bad[0][0])
        return {"rate": rate, "model": model, "bin": b, "seed": seed, "alarms": out, "ramps": n}
    finally:
        C.Controller._occlusion = orig
        pump.close()


def sweep(setname: str = "tune", seeds: int = 10, jobs: int = 2, rates=RATES, models=None,
          bins=None) -> list:
    models = models or MODELS[setname]
    bins = range(len(BINS)) if bins is None else bins
    args = []
    for m in models:
        for r in rates:
            for b in bins:
                for i in range(seeds):
                    args.append((setname, r, m, b, SEED0[setname] + i))
    return B._pool_map(run_one, args, jobs)


def figures(res: list, prefix: str) -> dict:
    return {f"{prefix}.false_alarms": sum(len(r["alarms"]) for r in res),
            f"{prefix}.ramps": sum(r["ramps"] for r in res)}


def table(res: list) -> str:
    """False-alarmed runs per (model, rate) and slope bin, with the paths that fired."""
    cells: dict = {}
    for r in res:
        c = cells.setdefault((r["model"], r["rate"]), {})
        n, k, paths = c.get(r["bin"], (0, 0, {}))
        n += 1
        if r["alarms"]:
            k += 1
            a = r["alarms"][0]
            key = f"{a['path']}{'+' if a['rising'] else '-'}"
            paths[key] = paths.get(key, 0) + 1
        c[r["bin"]] = (n, k, paths)
    hdr = "model rate  " + "  ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in BINS)
    lines = [hdr]
    for (m, rate), c in sorted(cells.items()):
        row = []
        for b in range(len(BINS)):
            n, k, paths = c.get(b, (0, 0, {}))
            s = f"{k}/{n}" + ("(" + ",".join(f"{p}{v}" for p, v in sorted(paths.items())) + ")"
                              if paths else "")
            row.append(f"{s:>9}")
        lines.append(f"{m:<6}{rate:>5g}  " + "  ".join(row))
    return "\n".join(lines)


def main(argv=None):
    import argparse
    import json
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", default="tune", choices=sorted(SEED0))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--rates", default=None, help="comma-separated mL/h")
    ap.add_argument("--models", default=None)
    ap.add_argument("--bins", default=None, help="comma-separated bin indices")
    ap.add_argument("--json", default=None, help="write every run here")
    a = ap.parse_args(argv)
    rates = tuple(float(x) for x in a.rates.split(",")) if a.rates else RATES
    models = tuple(a.models.split(",")) if a.models else None
    bins = [int(x) for x in a.bins.split(",")] if a.bins else None
    res = sweep(a.set, a.seeds, a.jobs, rates, models, bins)
    print(table(res))
    for k, v in figures(res, f"occ12.ramps.{a.set}").items():
        print(f"{k:<32} {v}")
    for r in res:
        for al in r["alarms"]:
            print(" ", r["model"], r["rate"], r["seed"], al)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
