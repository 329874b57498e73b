"""Issue 12 §3, session 13: a slowly developing occlusion must alarm before the compliance holds
more than 0.05 mL above the line's resting pressure (C·Q·(R − R0), from the plant: what
opening the line releases), at every rate and syringe model (bench/slow.py, `occ12slow`).

Cases from bench/slow.py's tuning grid (virtual time, CPython in-process). Where main meets the
goal the case is a regression test; where it does not, the case is a strict xfail naming the
cause (docs/performance.md, "Session 13"), so that a fix shows up as XPASS and is flipped."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

GOAL_ML = 0.05


def _case(rate, model, shape, par, disturbed=False):
    import slow
    k = next(c[3] for c in slow.cases("tune") if c[1:3] == (rate, model)
             and c[4:] == (shape, par, disturbed))
    return slow.slow_case("tune", rate, model, k, shape, par, disturbed)


def _met(res):
    return (res["early"] == [] and res["other"] == [] and res["t_alarm"] is not None
            and res["stored_ml"] <= GOAL_ML)


@pytest.mark.req("REQ-OCC-25")
@pytest.mark.parametrize("rate,model,shape,par", [
    (1.0, "BD50", "lin", 5.0),         # main e56eb3c: 286 s, 0.027 mL stored
    (5.0, "BD20", "lin", 5.0),         # 479 s, 0.035 mL (session 14: Q·R-confirmed, 522 s)
    (25.0, "BD50", "exp", 10.0),       # 778 s, 0.030 mL
])
def test_a_slow_occlusion_alarms_before_50_ul_are_stored(rate, model, shape, par):
    res = _case(rate, model, shape, par)
    assert _met(res), res
    assert res["bolus"] is not None and res["bolus"] <= GOAL_ML, res


@pytest.mark.req("REQ-OCC-25")
def test_the_stored_volume_is_the_plants():
    """The figure's definition: the flow's own part of the barrel pressure (bench/slow.py,
    integrated from the stopper's real flow through the plant's R) over the resting level
    agrees with the plant's whole barrel pressure over it, C·(P − Pv − Q·R0), on an
    undisturbed line."""
    res = _case(5.0, "SOFT50", "lin", 1.0)
    assert res["t_alarm"] is not None and res["stored_ml"] > 0.01, res
    assert res["stored_ml"] == pytest.approx(res["stored_p_ml"], abs=0.002), res


_OPEN = "REQ-OCC-25 not met on main (docs/performance.md, session 13)"


@pytest.mark.req("REQ-OCC-25")
@pytest.mark.xfail(strict=True, reason=_OPEN)
@pytest.mark.parametrize("rate,model,shape,par,why", [
    (50.0, "BD50", "lin", 2.3, "the friction profile's slope (±0.14 mmHg/s at 50 mL/h) exceeds "
     "the 0.1 mmHg/s bound: the increments kept average to 0, the syringe empties first"),
    (25.0, "BD20", "lin", 2.3, "the same at 25 mL/h on 20 mL"),
    (5.0, "BD50", "lin", 10.0, "a rise faster than 0.1 mmHg/s is dropped whole"),
    (1.0, "BD10", "lin", 1.0, "the sum's leak (τ 21 min) holds r·τ = 21 mmHg < 43 mmHg"),
], ids=["friction-50mlh-BD50", "friction-25mlh-BD20", "bound-5mlh-BD50-10mmHg/min",
        "leak-1mlh-BD10-1mmHg/min"])
def test_where_main_misses_the_goal(rate, model, shape, par, why):
    res = _case(rate, model, shape, par)
    assert _met(res), (why, res)


def _friction_run(seed, rate, model, fric, watch=False):
    """An open, motionless line (tuning ranges) whose glide friction varies by ±fric % along
    the barrel, 2 h or the syringe; with `watch`, tick by tick: the plant's rotor against the
    program's line (µsteps: the program's rate × the time since RUN at the pump's
    calibration) and the detector's mode / probing. Returns (alarms, rows, µL per µstep)."""
    import battery as B
    from host._firmware import pumpcore
    O = pumpcore("occlusion")
    SYR = pumpcore("syringes")
    i = SYR.find(model.encode())
    ul_per_ustep = SYR.nl_per_kstep(i, SYR.LEAD_NM_PER_KSTEP) / 1e6
    p = B.draw_params("tune", seed, model, disturbed=False, friction_var_pct=fric)
    pump = B.Pump(p, seed)
    rows = []
    orig = O.Occlusion.update

    def update(self, pv, dt):
        rows.append((pump.sim.t_ms, pump.sim.plant.motor, self.mode, self.probing))
        return orig(self, pv, dt)
    if watch:
        O.Occlusion.update = update
    try:
        size = B._SIZE[model]
        pump.start(rate, size * 0.9, model)
        pump.run(int(min(2.0, 0.85 * size / rate) * 3.6e6), until=lambda pp: bool(pp.bad()))
        alarms = pump.bad()
    finally:
        O.Occlusion.update = orig
        pump.close()
    if rows:
        t0 = rows[0][0]
        rows = [(tm, m - rate / 3.6 * (tm - t0) / 1000.0 / ul_per_ustep, mo, pr)
                for tm, m, mo, pr in rows]
    return alarms, rows, ul_per_ustep


@pytest.mark.req("REQ-OCC-25", "REQ-OCC-18")
def test_the_barrels_friction_profile_alone_is_no_occlusion():
    """An open, motionless line at 5 mL/h on BD50 whose glide friction varies by ±20 % along
    the barrel (the top of the tuning set's range; 6.1-mm period): the reading swings ±11 mmHg
    at ~0.02 mmHg/s, under the stored-volume test's 0.1 mmHg/s bound, and the slow sum climbs
    past its 14.3 mmHg (main 26d253b: OCCLUSION at 947 s with nothing stored). Session 14:
    the sum's alarm waits for a Q·R probe (half the rate for W = 60 µL ÷ Q, then 1.5 ×), which
    reads the line's resting flow pressure and not the swing: no alarm. And the probe keeps
    the motor behind the program's line: the lead over the line (from its level while nothing
    is probed) falls through the half rate and never exceeds the quiet level."""
    import battery as B
    alarms, rows, u = _friction_run(B.SETS["tune"]["seed0"] + 606, 5.0, "BD50", 20.0, True)
    assert alarms == [], alarms
    quiet = sorted(x for tm, x, mo, pr in rows[len(rows) // 20:] if mo == 0 and pr == 0)
    base = quiet[len(quiet) // 2]                  # the loop's level on the line
    probes = []
    k = 0
    while k < len(rows):
        if rows[k][2] == 2:                        # occlusion._VPROBE
            j = k
            while j < len(rows) and rows[j][2] == 2:
                j += 1
            probes.append((k, j))
            k = j
        k += 1
    assert probes, "the slow sum never reached its threshold: no Q·R probe ran"
    w = 4320000 // 5000                            # W ticks at 5 mL/h (60 µL of the rate)
    for k, j in probes:
        lead = [x - base for tm, x, mo, pr in rows[k:j + 2 * w]]
        assert max(lead) <= 6, (max(lead), k)      # never ahead (a few µsteps of the loop)
        # the half rate holds back Q·W/2 = 30 µL, and the 1.5 × pays it back
        assert min(lead) <= -0.8 * 30.0 / u, (min(lead), 30.0 / u)
        assert lead[-1] >= -6, (lead[-1], k)
