"""Dose maths and the volume-time integrator against an exact Fraction reference."""
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from pumpcore import dose
from pumpcore.dose import VolumeLine

K = 217078  # nL per 1000 microsteps, the nominal 50 mL syringe


@given(st.integers(0, 100000), st.integers(0, 500000))
def test_dose_ug_is_floor_of_exact(dose_ug_kg, wt_g):
    assert dose.dose_ug(dose_ug_kg, wt_g) == int(Fraction(dose_ug_kg) * Fraction(wt_g, 1000))


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_volume_nl_is_floor_of_exact(amount_ug, conc):
    v = dose.volume_nl(amount_ug, conc)
    exact = Fraction(amount_ug, conc) * 10**6
    assert v == int(exact) and v <= exact < v + 1


@given(st.integers(1, 10**9), st.integers(1, 345600000))
def test_rate_and_duration_round_safely(vol, dur):
    r = dose.rate_ul_h(vol, dur)
    exact = Fraction(vol, dur) * 3600
    assert r == int(exact)          # never faster than programmed
    if r:
        d = dose.duration_ms(vol, r)
        assert d >= dur or Fraction(vol * 3600, r) <= d  # ceil: never shorter
        assert Fraction(vol * 3600, r) <= d < Fraction(vol * 3600, r) + 1


def test_ketamine_reference_numbers():
    amount = dose.dose_ug(500, 70000)
    assert amount == 35000
    vol = dose.volume_nl(amount, 1000)
    assert vol == 35_000_000
    assert dose.rate_ul_h(vol, 40 * 60000) == 52500


@settings(max_examples=200)
@given(st.integers(100, 1200000), st.integers(1000, 50_000_000),
       st.lists(st.integers(0, 200), min_size=1, max_size=400), st.integers(150000, 450000))
def test_volume_line_tracks_exact_line(rate, limit, dts, k):
    line = VolumeLine(k)
    line.reset(limit)
    t = 0
    steps = 0
    for dt in dts:
        steps += line.advance(rate, dt)
        t += dt
        exact_nl = min(Fraction(rate * t, 3600), limit)
        # target is the exact line rounded down, steps follow the target exactly
        assert line.target_nl == int(exact_nl) or line.target_nl == limit
        assert steps == line.steps == line.target_nl * 1000 // k
        assert line.delivered_nl == line.steps * k // 1000
        assert line.delivered_nl <= line.target_nl <= limit
        for v in (line.target_nl, line.steps, line.delivered_nl, line._vol_rem, line._step_rem, line._del_rem):
            assert 0 <= v < 2**30
