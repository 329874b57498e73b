"""host.units: exact parsing of rates, volumes, durations, doses and weights (vs Fraction)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host import units


@pytest.mark.parametrize("fn, text, expected", [
    (units.rate_ul_h, "52.5 mL/h", 52500),
    (units.rate_ul_h, "52.5", 52500),
    (units.rate_ul_h, 52.5, 52500),
    (units.rate_ul_h, "52.5ml/hr", 52500),
    (units.rate_ul_h, "100 µL/h", 100),
    (units.rate_ul_h, "100 uL/h", 100),
    (units.rate_ul_h, "1 mL/min", 60000),
    (units.rate_ul_h, "0.1 mL/h", 100),
    (units.volume_nl, "35 mL", 35_000_000),
    (units.volume_nl, 35, 35_000_000),
    (units.volume_nl, "1 µL", 1000),
    (units.volume_nl, "0.5 L", 500_000_000),
    (units.duration_ms, "40 min", 2_400_000),
    (units.duration_ms, "1 h", 3_600_000),
    (units.duration_ms, "90 s", 90_000),
    (units.duration_ms, "2400000 ms", 2_400_000),
    (units.duration_ms, "1 h 30 min", 5_400_000),
    (units.duration_ms, "1h30min", 5_400_000),
    (units.duration_ms, "0.5 h", 1_800_000),
    (units.duration_ms, dt.timedelta(minutes=40), 2_400_000),
    (units.dose_ug_kg, "0.5 mg/kg", 500),
    (units.dose_ug_kg, "500 mcg/kg", 500),
    (units.dose_ug_kg, "500 ug/kg", 500),
    (units.dose_ug_kg, "500 µg/kg", 500),      # micro sign
    (units.dose_ug_kg, "500 μg/kg", 500),      # Greek mu
    (units.weight_g, "70 kg", 70_000),
    (units.weight_g, "70", 70_000),
    (units.weight_g, 70, 70_000),
    (units.weight_g, "70.5 kg", 70_500),
    (units.weight_g, "3500 g", 3500),
    (units.weight_g, Decimal("70.25"), 70_250),
    (units.weight_g, Fraction(141, 2), 70_500),
])
def test_examples(fn, text, expected):
    assert fn(text) == expected


def test_dose_default_unit():
    assert units.dose_ug_kg("0.5", default_unit="mg/kg") == 500
    assert units.dose_ug_kg(0.5, default_unit="mg/kg") == 500
    with pytest.raises(ValueError, match="needs a unit"):
        units.dose_ug_kg("0.5")


@pytest.mark.parametrize("fn, text, message", [
    (units.rate_ul_h, "-5 mL/h", "negative"),
    (units.rate_ul_h, "5 furlongs/h", "unknown rate unit"),
    (units.rate_ul_h, "0.0001 mL/h", "whole number"),
    (units.rate_ul_h, "abc", "cannot read"),
    (units.rate_ul_h, "", "cannot read"),
    (units.rate_ul_h, float("nan"), "finite"),
    (units.rate_ul_h, True, "boolean"),
    (units.volume_nl, "35 mg", "unknown volume unit"),
    (units.volume_nl, "1e-7 mL", "whole number"),
    (units.duration_ms, "40", "needs a unit"),
    (units.duration_ms, 40, "needs a unit"),
    (units.duration_ms, "0.0001 s", "whole number"),
    (units.duration_ms, "40 parsecs", "unknown duration unit"),
    (units.dose_ug_kg, "0.5 mg", "unknown dose unit"),
    (units.dose_ug_kg, "0.0005 ug/kg", "whole number"),
    (units.weight_g, "154 lb", "unknown weight unit"),
    (units.weight_g, "-70", "negative"),
])
def test_errors_are_clear(fn, text, message):
    with pytest.raises(ValueError, match=message):
        fn(text)


# ------------------------------------------------------------------------------ properties

decimals = st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False,
                       allow_infinity=False)

CASES = [
    (units.rate_ul_h, "mL/h", 1000), (units.rate_ul_h, "uL/h", 1),
    (units.rate_ul_h, "mL/min", 60000),
    (units.volume_nl, "mL", 10**6), (units.volume_nl, "µL", 1000), (units.volume_nl, "L", 10**9),
    (units.duration_ms, "min", 60000), (units.duration_ms, "h", 3_600_000),
    (units.duration_ms, "s", 1000), (units.duration_ms, "ms", 1),
    (units.dose_ug_kg, "mg/kg", 1000), (units.dose_ug_kg, "mcg/kg", 1),
    (units.weight_g, "kg", 1000), (units.weight_g, "g", 1),
]


@pytest.mark.parametrize("fn, unit, factor", CASES)
@given(value=decimals)
def test_matches_fraction_arithmetic(fn, unit, factor, value):
    text = f"{value} {unit}"
    exact = Fraction(value) * factor
    if exact.denominator == 1:
        assert fn(text) == exact
    else:
        with pytest.raises(ValueError, match="whole number"):
            fn(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_integer_round_trip_through_formatting(n):
    assert units.volume_nl(units.fmt_ml(n * 1000)) == n * 1000
    assert units.rate_ul_h(units.fmt_rate(n)) == n
    assert units.duration_ms(units.fmt_duration(n)) == n


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_floats_are_read_by_their_decimal_repr(x):
    exact = Fraction(repr(x)) * 1000
    if exact.denominator == 1:
        assert units.rate_ul_h(x) == exact
    else:
        with pytest.raises(ValueError):
            units.rate_ul_h(x)


def test_no_float_rounding_surprises():
    with pytest.raises(ValueError, match="whole number"):
        units.rate_ul_h(0.1 + 0.2 - 0.2)       # 0.10000000000000003: refused, not rounded
    assert units.rate_ul_h(0.1) == 100
    assert units.volume_nl("0.000001 mL") == 1
    assert units.rate_ul_h("1200 mL/h") == 1_200_000


def test_formatting():
    assert units.fmt_rate(52500) == "52.5 mL/h"
    assert units.fmt_ml(35_000_000) == "35 mL"
    assert units.fmt_duration(2_400_000) == "40 min"
    assert units.fmt_duration(5_400_000) == "1 h 30 min"
    assert units.fmt_duration(0) == "0 s"
    assert units.fmt_dose(500) == "0.5 mg/kg"
    assert units.fmt_dose(500, "mcg/kg") == "500 mcg/kg"
