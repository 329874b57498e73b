"""Exact parsing of human quantities into the protocol's integer wire units.

All arithmetic is done with ``fractions.Fraction``; a float never takes part in the maths
(a Python float argument is read through its shortest decimal repr, so ``52.5`` means
exactly 52.5). A result that is not a whole number of the wire unit is refused, as are
negatives and unknown units — a dose must never be silently rounded. A dose or dose rate
without a unit is refused too (the drugs' units differ by a factor of 1000: ``1`` would be
1 mg/kg of ketamine but 1 µg/kg of remifentanil). Every refusal is a ``UnitError`` (a
``host.errors.PumpError`` and a ``ValueError``).

==========  ===========  ======================================  ============
parser      wire unit    accepted units (case-insensitive)        bare number
==========  ===========  ======================================  ============
rate_ul_h   µL/h         mL/h, µL/h (uL/h), L/h, mL/min           mL/h
volume_nl   nL           mL, µL (uL), nL, L                       mL
duration_ms ms           ms, s, min, h (and "1 h 30 min")         refused
dose_ug_kg  µg/kg        mg/kg, µg/kg (mcg/kg, ug/kg), g/kg       refused
dose_rate   µg/kg/h      mg/kg/h, µg/kg/h, µg/kg/min, mg/kg/min   refused
weight_g    g            kg, g                                    kg
==========  ===========  ======================================  ============
"""
from __future__ import annotations

import datetime as _dt
import re
from decimal import Decimal
from fractions import Fraction
from numbers import Rational
from typing import Union

from host.errors import UnitError

Quantity = Union[str, int, float, Decimal, Fraction]

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_QTY_RE = re.compile(r"\s*([+-]?)\s*(" + _NUM + r")\s*([^\d\s.+-][^\d]*?)?\s*\Z")
_PART_RE = re.compile(r"\s*(" + _NUM + r")\s*([a-zA-Z]+)")

_MICRO = ("µ", "μ")  # micro sign U+00B5 and Greek mu U+03BC


def _norm_unit(unit: str) -> str:
    u = unit.strip().lower().replace(" ", "")
    for m in _MICRO:
        u = u.replace(m, "u")
    u = u.replace("mcg", "ug").replace("per", "/")
    return u


# unit -> factor to the wire unit (exact)
_RATE = {
    "ml/h": 1000, "ml/hr": 1000, "ml/hour": 1000,
    "ul/h": 1, "ul/hr": 1, "ul/hour": 1,
    "l/h": 1_000_000, "l/hr": 1_000_000,
    "ml/min": 60_000, "ul/min": 60,
}
_VOLUME = {"ml": 1_000_000, "ul": 1000, "nl": 1, "l": 1_000_000_000}
_DURATION = {
    "ms": 1, "s": 1000, "sec": 1000, "secs": 1000, "second": 1000, "seconds": 1000,
    "m": 60_000, "min": 60_000, "mins": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hr": 3_600_000, "hrs": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
}
_DOSE = {"mg/kg": 1000, "ug/kg": 1, "g/kg": 1_000_000}
_WEIGHT = {"kg": 1000, "g": 1}
_DOSE_RATE = {"mg/kg/h": 1000, "mg/kg/hr": 1000, "ug/kg/h": 1, "ug/kg/hr": 1,
              "mg/kg/min": 60_000, "ug/kg/min": 60, "g/kg/h": 1_000_000}


def to_fraction(value: Quantity) -> Fraction:
    """An exact Fraction from an int, Fraction, Decimal, float (via its repr) or numeric str."""
    if isinstance(value, bool):
        raise UnitError("a boolean is not a quantity")
    if isinstance(value, (int, Fraction, Rational)):
        return Fraction(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise UnitError(f"{value} is not a finite number")
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnitError(f"{value} is not a finite number")
        return Fraction(repr(value))
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except ValueError:
            raise UnitError(f"{value!r} is not a number") from None
    raise UnitError(f"cannot read a quantity from {type(value).__name__}")


def _split(text: Quantity, what: str) -> tuple[Fraction, str | None]:
    """(magnitude, normalised unit or None) from '52.5 mL/h', '52.5', 52.5."""
    if not isinstance(text, str):
        mag = to_fraction(text)
        unit = None
    else:
        m = _QTY_RE.match(text)
        if not m:
            raise UnitError(f"cannot read {what} {text!r}: expected a number and a unit, "
                             f"e.g. {_EXAMPLES[what]}")
        sign, num, unit = m.groups()
        mag = Fraction(num)
        if sign == "-":
            mag = -mag
        unit = _norm_unit(unit) if unit else None
    if mag < 0:
        raise UnitError(f"{what} must not be negative: {text!r}")
    return mag, unit


_EXAMPLES = {
    "rate": "'52.5 mL/h'", "volume": "'35 mL'", "duration": "'40 min'",
    "dose": "'0.5 mg/kg'", "weight": "'70 kg'", "dose rate": "'0.5 mg/kg/h'",
    "concentration": "'1 mg/mL'",
}


def _convert(text: Quantity, what: str, table: dict[str, int], default: str | None,
             wire: str) -> int:
    mag, unit = _split(text, what)
    if unit is None:
        if default is None:
            raise UnitError(f"{what} {text!r} needs a unit, e.g. {_EXAMPLES[what]}")
        unit = _norm_unit(default)
    if unit not in table:
        known = ", ".join(sorted({k for k in table}))
        raise UnitError(f"unknown {what} unit {unit!r} in {text!r} (known: {known})")
    value = mag * table[unit]
    if value.denominator != 1:
        raise UnitError(f"{what} {text!r} is not a whole number of {wire} "
                         f"({float(value):g} {wire}); give fewer decimals")
    return int(value)


def rate_ul_h(text: Quantity, default_unit: str = "mL/h") -> int:
    """'52.5 mL/h' or 52.5 (mL/h) → 52500 µL/h."""
    return _convert(text, "rate", _RATE, default_unit, "µL/h")


def volume_nl(text: Quantity, default_unit: str = "mL") -> int:
    """'35 mL' or 35 (mL) → 35000000 nL."""
    return _convert(text, "volume", _VOLUME, default_unit, "nL")


def duration_ms(text: Quantity | _dt.timedelta, default_unit: str | None = None) -> int:
    """'40 min', '1 h', '90 s', '2400000 ms', '1 h 30 min', a timedelta → ms.

    A bare number is refused unless ``default_unit`` says what it means.
    """
    if isinstance(text, _dt.timedelta):
        us = Fraction(text.days * 86_400_000_000 + text.seconds * 1_000_000 + text.microseconds)
        if us < 0:
            raise UnitError(f"duration must not be negative: {text}")
        if us.numerator % 1000:
            raise UnitError(f"duration {text} is not a whole number of ms")
        return int(us / 1000)
    if isinstance(text, str):
        parts = _PART_RE.findall(text)
        if len(parts) > 1 and "".join(n + u for n, u in parts) == re.sub(r"\s+", "", text):
            return sum(_convert(f"{n} {u}", "duration", _DURATION, None, "ms") for n, u in parts)
    return _convert(text, "duration", _DURATION, default_unit, "ms")


def dose_ug_kg(text: Quantity, default_unit: str | None = None) -> int:
    """'0.5 mg/kg', '500 mcg/kg', '500 ug/kg', '500 µg/kg' → 500 µg/kg.

    A bare number needs ``default_unit`` (e.g. the drug library's ``dose_unit``).
    """
    return _convert(text, "dose", _DOSE, default_unit, "µg/kg")


def dose_rate_ug_kg_h(text: Quantity, default_unit: str | None = None) -> int:
    """'0.5 mg/kg/h' → 500, '10 mcg/kg/min' → 600 µg/kg/h (mg/kg/h ×1000, mcg/kg/min ×60).

    A bare number needs ``default_unit``.
    """
    return _convert(text, "dose rate", _DOSE_RATE, default_unit, "µg/kg/h")


_CONC = {"ug/ml": 1, "mg/ml": 1000, "g/ml": 1_000_000, "mg/l": 1, "g/l": 1000}


def concentration_ug_ml(text: Quantity, default_unit: str = "ug/mL") -> int:
    """'1 mg/mL' → 1000 µg/mL; a bare number is µg/mL."""
    return _convert(text, "concentration", _CONC, default_unit, "µg/mL")


def weight_g(text: Quantity, default_unit: str = "kg") -> int:
    """'70 kg' or 70 (kg) → 70000 g."""
    return _convert(text, "weight", _WEIGHT, default_unit, "g")


# ------------------------------------------------------------------ formatting (display only)

def _fmt(value: Fraction, digits: int) -> str:
    text = f"{float(value):.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_ml(nl: int) -> str:
    """35000000 nL → '35 mL'."""
    return f"{_fmt(Fraction(nl, 1_000_000), 3)} mL"


def fmt_rate(ul_h: int) -> str:
    """52500 µL/h → '52.5 mL/h'."""
    return f"{_fmt(Fraction(ul_h, 1000), 3)} mL/h"


def fmt_duration(ms: int) -> str:
    """2400000 → '40 min', 5400000 → '1 h 30 min', 90500 → '1 min 30.5 s'."""
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    parts = []
    if h:
        parts.append(f"{h} h")
    if m:
        parts.append(f"{m} min")
    if rest or not parts:
        parts.append(f"{_fmt(Fraction(rest, 1000), 3)} s")
    return " ".join(parts)


def fmt_dose(ug_kg: int, unit: str = "mg/kg") -> str:
    """500 µg/kg → '0.5 mg/kg' (or in µg/kg)."""
    factor = _DOSE.get(_norm_unit(unit))
    if factor is None:
        raise UnitError(f"unknown dose unit {unit!r}")
    return f"{_fmt(Fraction(ug_kg, factor), 6)} {unit}"


def has_unit(text: Quantity) -> bool:
    """True when ``text`` is a string that names a unit ('0.5 mg/kg'), False for a bare
    number (0.5, '0.5')."""
    return isinstance(text, str) and bool(_QTY_RE.match(text)) and \
        _QTY_RE.match(text).group(3) is not None  # type: ignore[union-attr]
