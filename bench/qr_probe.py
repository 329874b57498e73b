"""Prototype measurement for a stored-volume test that could meet REQ-OCC-25 (issue 12 §3,
session 13; not built into the firmware): does a probe of the pump's own rate measure a
closing line's flow pressure Q·R through the barrel's friction profile, a held height change
and the bedside?

A closing line's pressure above the venous one is Q·R and follows the rate; friction, drift,
heights and the bedside do not. The probe is the controller's own pattern (occlusion
`probing`: half the line's rate, then 1.5 ×, paying back what the half rate held back: never
ahead of the line), forced from outside here with the trend test held (`occl.hold`): T s at
half the rate (the first `dead` s settling through R·C, then measured), T s at 1.5 × (the
same), and the contrast K = (L_before + L_1.5×)/2 − L_half = 0.75·Q·R (a linear drift
cancels; the levels are means of the firmware's own pressure reading). Compared with the
plant's Q·R (the program's rate × the plant's R now).

    python bench/qr_probe.py closing [--set tune] [--rate 50] [--model BD50] [--stage 10]
    python bench/qr_probe.py height   ...   (the pump lowered 60 cm and held, no closing)
    python bench/qr_probe.py bedside  ... [--seeds 3] [--hours 1]   (through the bedside:
                                          the error's spread; a step test; two in a row)

CPython in-process (the firmware object is reached through the harness), one process.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

_P_LOW, _P_HIGH = 2, 3          # occlusion._P_LOW, _P_HIGH: the controller's probe rates


class Prober:
    """One pump with the probe forced from outside and every tick's reading kept."""

    def __init__(self, setname, rate, model, seed, disturbed):
        import battery as B
        self.B = B
        self.p = B.draw_params(setname, seed, model, disturbed=disturbed)
        self.pump = B.Pump(self.p, seed)
        self.sim = self.pump.sim
        self.plant = self.sim.plant
        self.o = self.sim.runtime.harness.app.ctl.occl
        self.rd: list[float] = []
        self.on = False
        self.rate = rate
        self.size = B._SIZE[model]
        orig = self.o.update

        def upd(pv, dt):
            self.rd.append(pv)
            if self.on:
                self.o.hold = 1000              # the trend test held while probing
            return orig(pv, dt)
        self.o.update = upd

    def probe(self, stage_s, dead_s):
        """(measured Q·R, the plant's Q·R, a bedside step seen) for one probe."""
        T = int(stage_s * 20)
        D = int(dead_s * 20)
        M = T - D
        n0 = len(self.rd)
        self.on = True
        self.o.probing = _P_LOW
        self.pump.run(T * 50)
        self.o.probing = _P_HIGH
        self.pump.run(T * 50)
        self.o.probing = 0
        self.on = False
        rd = self.rd
        L0 = sum(rd[n0 - M:n0]) / M
        L1 = sum(rd[n0 + D:n0 + T]) / M
        L2 = sum(rd[n0 + T + D:n0 + 2 * T]) / M
        k = (L0 + L2) / 2 - L1
        # the step test: 1-s means jumping > 6 mmHg outside the 8 s after each rate change
        sub = [sum(rd[i:i + 20]) / 20 for i in range(n0 - M, n0 + 2 * T - 19, 20)]
        step = False
        for j in range(1, len(sub)):
            ts = (j * 20 - M) / 20.0
            if 0 <= ts < 8 or stage_s <= ts < stage_s + 8:
                continue
            step = step or abs(sub[j] - sub[j - 1]) > 6.0
        return 4 * k / 3, self.rate / 3600.0 * self.plant._R, step

    def close(self):
        self.pump.close()


def _pump(setname, rate, model, seed, disturbed):
    pr = Prober(setname, rate, model, seed, disturbed)
    pr.pump.start(rate, pr.size * 0.9, model)
    return pr


def closing(setname, rate, model, k=3, stage_s=20.0, dead_s=10.0, at=(60, 300, 600, 900),
            rise=2.3, height_cm=None):
    """Probes at `at` s after the onset of a line closing at `rise` mmHg/min (or, rise 0 and
    height_cm, of the pump moved and held there)."""
    import battery as B
    seed = B.SETS[setname]["seed0"] + 600 + k
    pr = _pump(setname, rate, model, seed, False)
    try:
        pr.pump.run(int((90 + 60 / rate) * 1000))
        q = rate / 3600.0
        r0 = pr.p.line_resistance_mmhg_s_per_ml
        t0 = pr.sim.t_ms
        if rise:
            pr.sim.inject("resistance", value=1 + rise / 60 / q * 14400 / r0, ramp_s=14400)
        if height_cm is not None:
            pr.sim.inject("height_cm", value=height_cm)
        out = []
        for ta in at:
            pr.pump.run(int(t0 + ta * 1000 - pr.sim.t_ms))
            m, true, _ = pr.probe(stage_s, dead_s)
            out.append((ta, round(m, 1), round(true, 1)))
            pr.pump.run(20_000)
        return out
    finally:
        pr.close()


def bedside(setname, rate, model, seeds=3, hours=1.0, stage_s=20.0, dead_s=10.0, every_s=60.0):
    """Probes every `every_s` + the probe through disturbed infusions (no closing): the error
    of the measured Q·R, with the step test, and the smaller error of two probes in a row."""
    import battery as B
    S = B.SETS[setname]
    errs, kept, pairs = [], [], []
    for k in range(seeds):
        seed = S["seed0"] + 900 + k
        pr = _pump(setname, rate, model, seed, True)
        try:
            rng = random.Random(f"{setname}:{seed}:events")
            B._height_events(pr.sim, rng, S, pr.sim.t_ms + 30_000, pr.sim.t_ms + hours * 3.6e6)
            pr.pump.run(60_000)
            tend = pr.sim.t_ms + min(hours * 3.6e6, 0.85 * pr.size / rate * 3.6e6)
            mine = []
            while pr.sim.t_ms < tend and not pr.pump.bad():
                pr.pump.run(int(every_s * 1000))
                m, true, step = pr.probe(stage_s, dead_s)
                mine.append(m - true)
                if not step:
                    kept.append(m - true)
            errs += mine
            pairs += [min(a, b) for a, b in zip(mine, mine[1:])]
        finally:
            pr.close()
    return errs, kept, pairs


def _stats(v):
    if not v:
        return "none"
    n = len(v)
    mu = sum(v) / n
    sd = (sum(x * x for x in v) / n - mu * mu) ** 0.5
    return f"n {n}  min {min(v):+.1f}  max {max(v):+.1f}  sd {sd:.2f} mmHg"


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("closing", "height", "bedside"))
    ap.add_argument("--set", default="tune", choices=("tune", "held"))
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--model", default="BD50")
    ap.add_argument("--stage", type=float, default=20.0,
                    help="s per rate (half, then 1.5 ×): the first half settles, the second is measured")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hours", type=float, default=1.0)
    a = ap.parse_args(argv)
    dead = a.stage / 2
    if a.what == "closing":
        for row in closing(a.set, a.rate, a.model, stage_s=a.stage, dead_s=dead):
            print("t %5d s  Q·R measured %6.1f  plant %6.1f mmHg" % row)
    elif a.what == "height":
        for row in closing(a.set, a.rate, a.model, stage_s=a.stage, dead_s=dead, rise=0.0,
                           height_cm=-60.0):
            print("t %5d s  Q·R measured %6.1f  plant %6.1f mmHg (pump 60 cm below)" % row)
    else:
        errs, kept, pairs = bedside(a.set, a.rate, a.model, a.seeds, a.hours, a.stage, dead)
        print("every probe:       ", _stats(errs))
        print("no step seen:      ", _stats(kept))
        print("two in a row (min):", _stats(pairs))
        print("… both >= 14 mmHg (30 µL on BD50):", sum(1 for x in pairs if x >= 14.0),
              "of", len(pairs), "pairs; single probes >= 14:", sum(1 for x in errs if x >= 14.0))


if __name__ == "__main__":
    main()
