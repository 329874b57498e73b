"""Refusals in the user's words: the pump's wire-unit reasons (``rate_ul_h must be
100..1200000``, ``dose_ug_kg_h above hard max 6000``) rewritten in clinical units with the
bound (``rate must be 0.1–1200 mL/h``, ``dose rate above the hard max 6 mg/kg/h``).

One job: text. ``refusal(err, drug)`` is what the CLI prints for a ``Refused``; the library's
exceptions keep the pump's exact ``reason`` (``err.reason``) for programs that parse it.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable

from host import units


def _g(x: Fraction) -> str:
    return f"{float(x):.6g}"


def _dose(unit: str | None, per_h: bool) -> Callable[[int], str]:
    """µg/kg (or µg/kg/h) on the wire -> the drug's unit (mg/kg, mcg/kg, …/min, …/h)."""
    def fmt(n: int) -> str:
        u = unit or ("mg/kg" if n >= 1000 else "µg/kg") + ("/h" if per_h else "")
        norm = units._norm_unit(u)
        factor = Fraction(1000 if norm.startswith("mg") else 1)
        if norm.endswith("/min"):
            factor *= 60
        return f"{_g(Fraction(n) / factor)} {u}"
    return fmt


def _fields(drug_unit: str | None, rate_unit: str | None) -> dict[str, tuple[str, Callable[[int], str]]]:
    ml = lambda n: f"{_g(Fraction(n, 1_000_000))} mL"      # noqa: E731
    return {
        "rate_ul_h": ("rate", lambda n: f"{_g(Fraction(n, 1000))} mL/h"),
        "kvo_ul_h": ("KVO rate", lambda n: f"{_g(Fraction(n, 1000))} mL/h"),
        "vtbi_nl": ("volume", ml), "vol_nl": ("volume", ml),
        "bolus_ul": ("bolus volume", lambda n: f"{_g(Fraction(n, 1000))} mL"),
        "dose_ug_kg": ("dose", _dose(drug_unit, False)),
        "load_ug_kg": ("loading dose", _dose(drug_unit, False)),
        "dose_ug_kg_h": ("dose rate", _dose(rate_unit, True)),
        "wt_g": ("weight", lambda n: f"{_g(Fraction(n, 1000))} kg"),
        "over_ms": ("duration", units.fmt_duration), "dur_ms": ("duration", units.fmt_duration),
        "load_ms": ("loading duration", units.fmt_duration),
        "conc_ug_ml": ("concentration", lambda n: f"{_g(Fraction(n, 1000))} mg/mL"),
    }


_WORD = r"([a-z_]+_(?:ul_h|nl|ug_kg_h|ug_kg|g|ms|ug_ml|ul))"
_BOUND = re.compile(_WORD + r" (above hard max|below hard min|above soft max|below soft min) (\d+)")
_RANGE = re.compile(_WORD + r" must be (0 or )?(\d+)\.\.(\d+)")


def user_units(reason: str, drug_unit: str | None = None, rate_unit: str | None = None) -> str:
    """``reason`` with every wire field and number it names in clinical units."""
    table = _fields(drug_unit, rate_unit)

    def bound(m: re.Match) -> str:
        f = table.get(m.group(1))
        if f is None:
            return m.group(0)
        label, fmt = f
        return f"{label} {m.group(2).replace('max', 'maximum').replace('min', 'minimum')} " \
               f"{fmt(int(m.group(3)))}"

    def rng(m: re.Match) -> str:
        f = table.get(m.group(1))
        if f is None:
            return m.group(0)
        label, fmt = f
        lo, hi = fmt(int(m.group(3))), fmt(int(m.group(4)))
        return f"{label} must be {'0 or ' if m.group(2) else ''}{lo} to {hi}"

    return _RANGE.sub(rng, _BOUND.sub(bound, reason))


def refusal(err, drug: str | None = None) -> str:
    """The text of a ``Refused`` for people: the reason in the drug's units, and for a
    limit where to see the drug's limits; an unknown drug keeps its did-you-mean."""
    entry = None
    if drug:
        try:
            from host.druglib import DrugLibrary
            lib = DrugLibrary.load()
            entry = lib.get(drug) if drug in lib else None
        except (OSError, ValueError):
            entry = None
    text = user_units(err.reason, entry.dose_unit if entry else None,
                      entry.dose_rate_unit if entry else None)
    if err.code == "DRUG" and drug and "did you mean" not in text:
        try:
            from host.druglib import DrugLibrary
            near = DrugLibrary.load().suggest(drug)
        except (OSError, ValueError):
            near = []
        if near:
            text += f"; did you mean {' or '.join(repr(n) for n in near)}?"
    if err.code in ("LIMIT", "SOFT") and entry is not None:
        text += f" (every limit: `infusekit drugs show {entry.name}`)"
    return text
