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


# ------------------------------------------------------------------ continuous dose, loading
# Wire units: dose rate µg/kg/h (mcg/kg/min × 60), weight g, concentration µg/mL.

@given(st.integers(0, 100000), st.integers(1000, 500000), st.integers(1, 100000))
def test_dose_rate_is_floor_of_exact(doseh, wt_g, conc):
    r = dose.dose_rate_ul_h(doseh, wt_g, conc)
    # µg/kg/h × kg / (µg/mL) = mL/h → × 1000 µL/h
    exact = Fraction(doseh) * Fraction(wt_g, 1000) / conc * 1000
    assert r == int(exact) and r <= exact < r + 1


@given(st.integers(0, 1200000), st.integers(0, 345600000))
def test_volume_for_ms_is_floor_of_exact(rate, dur):
    v = dose.volume_for_ms(rate, dur)
    exact = Fraction(rate * dur, 3600)            # µL/h × ms = nL × 3600
    assert v == int(exact) and v <= exact < v + 1


@given(st.integers(0, 10**9), st.integers(1, 100000))
def test_drug_ug_is_floor_of_exact(vol, conc):
    assert dose.drug_ug(vol, conc) == int(Fraction(vol, 10**6) * conc)


@given(st.integers(1, 6000), st.integers(30000, 250000), st.sampled_from([50, 1000, 10000]),
       st.integers(60000, 345600000))
def test_continuous_program_never_exceeds_prescription(doseh, wt_g, conc, dur):
    """rate, then volume for the duration, then the drug in that volume: each floor never
    exceeds the exact prescription (dose rate × weight × time) and every value a tick keeps
    stays below 2**30 for the library's hard limits."""
    rate = dose.dose_rate_ul_h(doseh, wt_g, conc)
    vol = dose.volume_for_ms(rate, dur)
    amount = dose.drug_ug(vol, conc)
    exact_ug = Fraction(doseh) * Fraction(wt_g, 1000) * Fraction(dur, 3600000)
    assert amount <= exact_ug
    # the shortfall is at most what rounding the rate down (< 1 µL/h) and the volume (< 1 nL) lose
    assert exact_ug - amount <= Fraction(conc, 1000) * Fraction(dur, 3600000) + Fraction(conc, 10**6) + 1
    for v in (rate, vol if vol <= 10**9 else 0, amount):
        assert 0 <= v < 2**30


@given(st.integers(0, 2500), st.integers(30000, 250000), st.sampled_from([1000, 10000]),
       st.integers(60000, 1800000))
def test_loading_dose_volume_and_rate(load_ug_kg, wt_g, conc, load_ms):
    amount = dose.dose_ug(load_ug_kg, wt_g)
    vol = dose.volume_nl(amount, conc)
    rate = dose.rate_ul_h(vol, load_ms)
    exact_vol = Fraction(load_ug_kg) * Fraction(wt_g, 1000) / conc * 10**6
    assert vol <= exact_vol and exact_vol - vol < Fraction(10**6, conc) + 1
    assert rate <= Fraction(vol * 3600, load_ms)
    # delivering vol at rate never finishes early
    if rate:
        assert dose.duration_ms(vol, rate) >= load_ms


@settings(max_examples=60, deadline=None)
@given(st.integers(100, 6000), st.integers(30000, 250000), st.integers(60000, 7200000))
def test_controller_continuous_program_matches_fraction(doseh, wt_g, dur):
    """Through the command interpreter: PROG by dose rate answers the exact floors (propofol,
    10 mg/mL), or refuses naming a limit; never anything else."""
    import sys
    sys.path.insert(0, str(__import__("conftest").ROOT / "tests" / "fw"))
    from fwkit import Rig
    r = Rig()
    rep = r.cmd("PROG", f"drug=propofol dose_ug_kg_h={doseh} wt_g={wt_g} dur_ms={dur} confirm=1")
    rate = int(Fraction(doseh) * Fraction(wt_g, 1000) / 10000 * 1000)
    vol = int(Fraction(rate * dur, 3600))
    if rep.startswith(b"1 OK"):
        assert f" rate_ul_h={rate} vtbi_nl={vol} ".encode() in rep, rep
        assert r.ctl.rate == rate and r.ctl.vtbi == vol
    elif rate > 150000:                       # propofol's rate_ml_h_max
        assert rep == b"1 ER LIMIT rate_ul_h above hard max 150000", rep
    else:
        assert rate < 100 or vol < 1000, rep  # outside the pump's own range
        assert rep.startswith(b"1 ER RANGE"), rep
