"""Issue 12: a slowly developing occlusion (a kinking or clotting line, the resistance rising so
that the pressure climbs ~2.3 mmHg/min) alarms before the volume stored in the syringe's
compliance could become a bolus of more than 0.05 mL. The old detector saw it only at the
400 mmHg threshold after ~3.3 h and released 0.21 mL (1 mL/h, 50 mL)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.req("REQ-OCC-16")
@pytest.mark.parametrize("setname,rate,model,k", [("tune", 1.0, "BD50", 101),
                                                  ("tune", 5.0, "BD50", 105),
                                                  ("held", 1.5, "SOFT50", 120)])
def test_slow_occlusion_alarms_before_the_stored_volume_is_a_bolus(setname, rate, model, k):
    import battery as B
    r = B.occlusion_case(setname, rate, model, k, kind="slow")
    assert r["early"] == [], r
    assert r["t_alarm"] is not None and r["t_alarm"] <= 1800, r    # found by the trend of levels
    assert r["bolus"] <= 0.05, r


# --- the stopper's stick-slip saw (REQ-OCC-17) -----------------------------------------------
# The held-back accuracy case s11 (bench_sim.HELD_MECHANICS, 1 mL/h on BD50) raised a false
# OCCLUSION at 5,136.5 s: its stopper slipped every ~17 s, ~20 mmHg of saw in the reading,
# against levels of a fixed 16.35 s. A level of about one saw period holds a fraction of a
# period that drifts slowly, so the level series beats: it creeps up (slow increments, counted)
# and wraps down (one fast increment, dropped as the bedside) — a ratchet whose sign is that of
# the period minus the level length. Levels that end at a slip hold whole cycles.

def _saw_detector(ratio, rise_mmhg_min=0.0, hours=2.0, amp=20.0):
    """A detector planned for 1 mL/h on BD50 fed a stick-slip saw (a slow rise of `amp` mmHg
    while the stopper sticks, a drop at the slip; readings held 4 ticks) whose period is
    `ratio` × the level length; optionally a slow rise beneath it. (time s, kind) of the
    first alarm, or None."""
    sys.path.insert(0, str(ROOT / "firmware"))
    from pumpcore import occlusion as O
    from pumpcore import syringes as SYR
    c, sig = SYR.C_NL_MMHG[2], SYR.sigma_cmmhg(2, 110)
    o = O.Occlusion(400)
    o.set_syringe(c, sig)
    o.set_plan(*O.plan_ints(1000, c, sig))
    per = int(o.v_len * ratio) // 4 * 4
    p = 0
    for t in range(int(hours * 3600 / 0.05)):
        if t % 4 == 0:
            p = int(round(28 + amp * ((t % per) / per - 0.5) + rise_mmhg_min * t * 0.05 / 60))
        r = o.update(p, 50)
        if r:
            return t * 0.05, r
    return None


@pytest.mark.req("REQ-OCC-17")
@pytest.mark.parametrize("ratio", [0.55, 0.7, 0.93, 1.03, 1.2, 1.5, 1.9, 2.5, 2.9])
def test_a_stick_slip_saw_alone_raises_no_occlusion(ratio):
    """Main's fixed-length levels: a false OCCLUSION (the stored-volume test) at ratio 1.2."""
    assert _saw_detector(ratio) is None


@pytest.mark.req("REQ-OCC-16", "REQ-OCC-17")
@pytest.mark.parametrize("ratio", [0.55, 0.7, 0.93, 1.03, 1.2, 1.5, 1.9, 2.5])
def test_a_slow_occlusion_under_a_stick_slip_saw_is_found(ratio):
    """2.3 mmHg/min under the saw: found within 11 min whatever the saw's period (the test's
    threshold 14.3 mmHg is reached after ~6.2 min of rise; main's levels missed it for the
    hour at ratios 0.7, 1.5, 1.9 and 2.5: the dropped wraps took the rise out of the sum).
    Levels of one cycle count a 2.3 mmHg/min rise up to a saw of 2.6 × the level length
    (0.038 mmHg/s × the cycle ≤ the 0.1 mmHg/s × v_len bound)."""
    hit = _saw_detector(ratio, rise_mmhg_min=2.3, hours=1.0)
    assert hit is not None and hit[0] <= 660, hit


@pytest.mark.req("REQ-OCC-17")
def test_held_back_mechanics_s11_raise_no_false_occlusion():
    """The held-back accuracy case itself (HELD_MECHANICS seed 11, 1 mL/h, BD50): main raised
    OCCLUSION at 5,136.5 s; run to 5,400 s of virtual time."""
    import bench_sim
    from battery import Pump
    kw = dict(bench_sim.HELD_MECHANICS)[11]
    pump = Pump(bench_sim.realistic_mechanics(**kw), 11, "firmware")
    try:
        pump.start(1.0, 10.0)
        pump.run(5_400_000, until=lambda p: bool(p.bad()))
        assert pump.bad() == [], pump.bad()
    finally:
        pump.close()
