"""Issue 12, session 9: a sudden occlusion at 0.5 mL/h on a 50 mL syringe (the stopper sticks
and slips with a ~50-65 s period and a ~30-40 mmHg saw in the reading) is found by the
stored-volume test, and a back-off after a late alarm ends on what the force sensor reads,
not on the model's compliance (a brand's is 0.6-1.4 × the model's). Virtual time only."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.req("REQ-OCC-19")
def test_half_ml_h_on_50ml_is_found_by_the_stored_volume_test():
    """The tuning set's case (0.5 mL/h, BD50, compliance 1.23 × the model's): levels of one
    whole stick-slip cycle each (~52 s, 2 × their planned 25.1 s) rise ~2.8 mmHg per cycle;
    the bound counted over the planned length (2.5 mmHg) dropped them. Two cycles of the same
    length in a row (a line the bedside does not reach) have their bound counted over their
    real length. Main before (b8141e0's rule): 1,688.4 s, 0.059 mL released; here 392.6 s."""
    import battery as B
    r = B.occlusion_case("tune", 0.5, "BD50", 8)
    assert r["early"] == [], r
    assert r["t_alarm"] is not None and r["t_alarm"] <= 600, r
    assert -0.05 <= r["bolus"] <= 0.05, r


def _threshold_case(cf, level="L", seed=4242, **over):
    """0.5 mL/h on BD50 whose compliance is cf × the model's, the limit at `level` (`over`:
    more plant parameters); a sudden occlusion after the flow settled. (OCCLUSION alarms
    after it, released volume mL)."""
    import battery as B
    from hil_sim import analysis
    from hil_sim.plant import KPA_PER_MMHG, SYRINGE_MODELS
    m = SYRINGE_MODELS["BD50"]
    p = B.draw_params("tune", seed, "BD50", disturbed=False,
                      compliance_ml_per_mmhg=m.compliance_ml_kpa * KPA_PER_MMHG * cf, **over)
    pump = B.Pump(p, seed)
    sim = pump.sim
    try:
        pump.send("CFG", {"occl_level": level})
        pump.start(0.5, 45.0, "BD50")
        pump.run(210_000)
        t_occ = sim.t_ms / 1000
        sim.inject("occlusion", value=True)
        pump.run(4000_000, until=lambda pp: any(a[1] == "OCCLUSION" for a in pp.alarms))
        alarms = [a for a in pump.bad() if a[0] >= t_occ]
        pump.run(30_000)
        sim.inject("occlusion", value=False)
        t_rel = sim.t_ms / 1000
        pump.run(61_000)
        return alarms, analysis.bolus_ml(sim.record, t_rel, 60.0)
    finally:
        pump.close()


@pytest.mark.req("REQ-OCC-19")
def test_threshold_backoff_ends_on_the_reading_whatever_the_compliance():
    """Compliance 0.6 × the model's: the line rises 0.11 mmHg/s, faster than the stored-volume
    test's 0.1 mmHg/s bound, so the 200 mmHg threshold (level L) finds it (1,473.8 s). The
    back-off used to retract until the *reading* was 10 mmHg above the level before the rise
    — while the stopper glides back the reading is the line's pressure less twice the glide
    friction (≈ 107 mmHg on 50 mL), so the line stayed that far above it: 0.12 mL released
    on main. Ending on the reading once the stopper glides back, by the rise the levels
    measured: −0.011 mL (never more than 1.5 × the model's C·ΔP pulled back)."""
    alarms, bolus = _threshold_case(0.6)
    assert [a[1] for a in alarms] == ["OCCLUSION"], alarms
    assert -0.05 <= bolus <= 0.05, bolus


@pytest.mark.req("REQ-OCC-19")
@pytest.mark.parametrize("k_n_mm", [120.0, 140.0, 250.0])
def test_threshold_backoff_does_not_assume_the_stoppers_stiffness(k_n_mm):
    """The same threshold case with the plant's stopper softer and stiffer than the 200 N/mm
    the pump's rod-spring constant assumes (CONTEXT §8 derives ~250 N/mm from assumed
    dimensions; rubber and rod vary). Phase S's first part must find where the stopper starts
    to glide back. Main's (session 9) took the stopper's travel as the flange's less the
    reading's fall ÷ (k/A) at 200 N/mm: a softer stopper looked as if it moved while it still
    stuck, the back-off ended from a reading inside the friction band, and the line kept
    pressure: +0.058 / +0.065 mL released at 120 / 140 N/mm (250: -0.027). The knee from the
    reading's slope per count against a threshold between the stuck slope (k/A) and the
    gliding one (a/C), the knee where their two lines meet: -0.048 / -0.044 / -0.024 mL. The
    pull-back beyond the line's level at soft stoppers is ΔP's, not the knee's: the last level
    over the lowest reads 10-29 mmHg above the rise where the closed line's saw is slow
    (docs/firmware.md, "Occlusion", 7a.); bounded here at 1.5 × the goal."""
    alarms, bolus = _threshold_case(0.6, stopper_stiffness_n_mm=k_n_mm)
    assert [a[1] for a in alarms] == ["OCCLUSION"], alarms
    assert bolus <= 0.05, bolus            # REQ-OCC-19: what is released when the line opens
    assert bolus >= -0.075, bolus
