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
    (5.0, "BD20", "lin", 5.0),         # 479 s, 0.035 mL
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


@pytest.mark.req("REQ-OCC-25")
@pytest.mark.xfail(strict=True, reason=_OPEN)
def test_the_barrels_friction_profile_alone_is_no_occlusion():
    """An open, motionless line at 5 mL/h on BD50 whose glide friction varies by ±20 % along
    the barrel (the top of the tuning set's range; 6.1-mm period): the reading swings ±11 mmHg
    at ~0.02 mmHg/s, under the stored-volume test's 0.1 mmHg/s bound, and main's slow sum
    climbs past its 14.3 mmHg: OCCLUSION at 947 s with nothing stored."""
    import battery as B
    seed = B.SETS["tune"]["seed0"] + 606
    p = B.draw_params("tune", seed, "BD50", disturbed=False, friction_var_pct=20.0)
    pump = B.Pump(p, seed)
    try:
        pump.start(5.0, 45.0, "BD50")
        pump.run(2 * 3600 * 1000, until=lambda pp: bool(pp.bad()))
        assert pump.bad() == []
    finally:
        pump.close()
