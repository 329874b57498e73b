"""Issue 12, session 13 (`occ.limit_ratio_max`): a probe repeated because its 1.5 × stage read
low the way a sawing stopper's does (even, under 3 ×, only below 1 × or 2.5 ×) is decided by
its half rate (REQ-OCC-26); a repeat after a step-like failure still runs all six segments."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT / "tests"))

from test_occ12_probe import _closed_or_not  # noqa: E402


def _drive(rate_ml_h, fric_fall=0.0, step_mmhg=0.0, c=2100, sig=148):
    """A probed plan's detector alone on a closed line (test_occ12_probe's driver: the reading
    rises at the model's s × the probe's rate from tick 400). `fric_fall`: the stopper's mean
    friction falling as the probe speeds it up; `step_mmhg`: a bedside step half-way through
    the first probe's first measured 1.5 × segment. Returns (result, tick, the ticks where
    each probe began, the plan's L and probe segment Lp)."""
    probes, plan = [], {}
    r, i = _closed_or_not(rate_ml_h, True, c=c, sig=sig, fric_fall=fric_fall, probes=probes,
                          step_mmhg=step_mmhg, plan=plan)
    return r, i, probes, plan["L"], plan["Lj"]


@pytest.mark.req("REQ-OCC-26", "REQ-OCC-20")
@pytest.mark.parametrize("rate_ml_h,fall", [(2.0, 1.2), (5.0, 1.4)])
def test_a_closed_line_whose_first_probe_read_low_at_1_5x_is_found_at_the_repeats_half_rate(
        rate_ml_h, fall):
    """A closed line whose stopper's mean friction falls by more as the probe speeds it up
    (1.2 / 1.4 × s·L with a time constant of one segment): its first probe's 1.5 × stage
    reads even but below 1 × / 2.5 × the mean, passing the contrast — repeated. The repeat's
    half rate falls with the pump again (its sum 0.5-1.5 × the mean): OCCLUSION at the end of
    the repeat's half rate, three probe segments after the repeat began (main e56eb3c: six,
    at the repeat's end)."""
    r, i, probes, L, lp = _drive(rate_ml_h, fric_fall=fall)
    assert r == 1 and len(probes) == 2, (r, i, probes)           # occlusion._TREND
    assert i - probes[1] <= 3 * lp + 1, (i - probes[1], lp)


@pytest.mark.req("REQ-OCC-26", "REQ-OCC-22", "REQ-OCC-10")
@pytest.mark.parametrize("rate_ml_h", [2.0, 5.0])
def test_a_repeat_after_a_step_in_the_1_5x_stage_runs_its_whole_probe(rate_ml_h):
    """A bedside step (+3 × the mean rise per probe segment) half-way through the first
    measured 1.5 × segment fills one difference unevenly: the first probe fails and is
    repeated, but the repeat's half rate does not decide it (a bedside event, not the
    stopper's friction): the repeat runs all six segments, and the closed line is found at
    its end."""
    from pumpcore.occlusion import plan_ints
    a = abs(plan_ints(int(rate_ml_h * 1000), 2100, 148)[0])
    lp = a >> 11
    s = rate_ml_h * 1000 / 3.6 / 2100
    r, i, probes, L, lp = _drive(rate_ml_h, step_mmhg=3.0 * s * lp * 0.05)
    assert r == 1 and len(probes) == 2, (r, i, probes)
    assert i - probes[1] >= 6 * lp - 1, (i - probes[1], lp)


@pytest.mark.req("REQ-OCC-26")
def test_the_tuning_sets_2_mlh_bd50_occlusion_is_found_at_its_repeats_half_rate():
    """The tuning set's sudden occlusion at 2 mL/h on BD50 (bench/battery.py case 10, the
    worst limit ratio of main e56eb3c: 181.6 s, 11.37 × the physical limit): its first probe's
    1.5 × stage read 1.03 / 1.31 × the mean (even, the sum 2.34 < 2.5: a sawing stopper at
    1.5 × of 1 mL/h on 50 mL), the contrast passed, the repeat's half rate 1.21 ×: found
    there (149.4 s), and the volume released when the line opens within the bolus goal."""
    import battery as B
    r = B.occlusion_case("tune", 2.0, "BD50", 10)
    assert r["t_alarm"] is not None and r["t_alarm"] <= 0.85 * 181.6, r
    assert abs(r["bolus"]) <= 0.05, r
