"""The drug library on the host side: load ``firmware/druglib.json``, render it, pre-check limits.

The pump enforces the library it was flashed with (HELLO reports its ``lib`` version and
``libh``, the first 16 hex digits of the file's SHA-256). The host reads the same file to
show it (``infusekit drugs list|show``) and to refuse a program that breaks a *hard* limit
before it is sent — the pump checks again; the host check only saves a round trip and gives
a friendlier message. The dose arithmetic mirrors ``pumpcore/dose.py`` (integers, rounded
down) so both sides compute the same volume and rate.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from host._firmware import firmware_dir
from host.errors import LimitExceeded, Refused


class UnknownDrug(Refused, KeyError):
    """A drug name the library does not have, with the closest names (code ``DRUG``, as the
    pump's own refusal); a ``KeyError`` too."""

    def __init__(self, reason: str) -> None:
        super().__init__("DRUG", reason)

    def __str__(self) -> str:
        return self.reason
from host import units

LIB_FILE = "druglib.json"


@dataclass(frozen=True)
class Limits:
    """hard_min ≤ soft_min ≤ soft_max ≤ hard_max, in the unit of the JSON key."""
    hard_min: Fraction
    soft_min: Fraction
    soft_max: Fraction
    hard_max: Fraction

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Limits":
        hmin, hmax = units.to_fraction(d["hard_min"]), units.to_fraction(d["hard_max"])
        smin = units.to_fraction(d.get("soft_min", d["hard_min"]))
        smax = units.to_fraction(d.get("soft_max", d["hard_max"]))
        if not 0 <= hmin <= smin <= smax <= hmax:
            raise ValueError(f"limits out of order: {d}")
        return cls(hmin, smin, smax, hmax)

    def scaled(self, factor: int) -> "Limits":
        return Limits(self.hard_min * factor, self.soft_min * factor,
                      self.soft_max * factor, self.hard_max * factor)


@dataclass(frozen=True)
class Drug:
    """One library entry; limits are kept in the JSON's units (µg/kg, min, kg, mL/h)."""
    name: str
    conc_ug_ml: int
    syringe_ml: Fraction
    dose_unit: str
    dose_ug_kg: Limits
    over_min: Limits
    weight_kg: Limits
    rate_ml_h_max: Fraction
    notes: str = ""
    concs_ug_ml: tuple[int, ...] = ()          # every concentration the pump accepts
    dose_rate_unit: str | None = None          # continuous dosing (None: not allowed)
    dose_ug_kg_h: Limits | None = None
    bolus_max_ul: int | None = None            # one clinician bolus
    bolus_lockout_min: int | None = None       # between two boluses
    bolus_max_h_ug: int | None = None          # bolus dose in any hour
    kvo_ul_h: int | None = None                # keep-vein-open rate after the VTBI
    vitals: tuple[tuple[str, int], ...] = ()   # interlock limits (sbp_max, hr_min, …)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Drug":
        def opt_int(k: str) -> int | None:
            return int(d[k]) if d.get(k) is not None else None
        return cls(
            name=str(d["name"]), conc_ug_ml=int(d["conc_ug_ml"]),
            syringe_ml=units.to_fraction(d.get("syringe_ml", 0)),
            dose_unit=str(d.get("dose_unit", "ug/kg")),
            dose_ug_kg=Limits.from_json(d["dose_ug_kg"]),
            over_min=Limits.from_json(d["over_min"]),
            weight_kg=Limits.from_json(d["weight_kg"]),
            rate_ml_h_max=units.to_fraction(d["rate_ml_h_max"]),
            notes=str(d.get("notes", "")),
            concs_ug_ml=tuple(int(c) for c in d.get("concs_ug_ml", [d["conc_ug_ml"]])),
            dose_rate_unit=d.get("dose_rate_unit") if "dose_ug_kg_h" in d else None,
            dose_ug_kg_h=Limits.from_json(d["dose_ug_kg_h"]) if "dose_ug_kg_h" in d else None,
            bolus_max_ul=opt_int("bolus_max_ul"), bolus_lockout_min=opt_int("bolus_lockout_min"),
            bolus_max_h_ug=opt_int("bolus_max_h_ug"), kvo_ul_h=opt_int("kvo_ul_h"),
            vitals=tuple((str(k), int(v)) for k, v in (d.get("vitals") or {}).items()),
        )

    def to_json(self) -> dict[str, Any]:
        def lim(x: Limits) -> dict[str, float]:
            return {k: _num(getattr(x, k)) for k in ("hard_min", "soft_min", "soft_max", "hard_max")}
        return {"name": self.name, "conc_ug_ml": self.conc_ug_ml,
                "syringe_ml": _num(self.syringe_ml), "dose_unit": self.dose_unit,
                "dose_ug_kg": lim(self.dose_ug_kg), "over_min": lim(self.over_min),
                "weight_kg": lim(self.weight_kg), "rate_ml_h_max": _num(self.rate_ml_h_max),
                "concs_ug_ml": list(self.concs_ug_ml), "dose_rate_unit": self.dose_rate_unit,
                "dose_ug_kg_h": lim(self.dose_ug_kg_h) if self.dose_ug_kg_h else None,
                "bolus_max_ul": self.bolus_max_ul, "bolus_lockout_min": self.bolus_lockout_min,
                "bolus_max_h_ug": self.bolus_max_h_ug, "kvo_ul_h": self.kvo_ul_h,
                "vitals": dict(self.vitals), "notes": self.notes}


def _num(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


@dataclass(frozen=True)
class DosePlan:
    """What the pump will compute for a dose program (pumpcore/dose.py arithmetic)."""
    drug: str
    dose_ug: int
    vtbi_nl: int
    rate_ul_h: int
    over_ms: int
    hard: tuple[str, ...]   # hard-limit violations (the pump refuses with LIMIT)
    soft: tuple[str, ...]   # soft-limit violations (the pump wants confirm=1)


@dataclass(frozen=True)
class DrugLibrary:
    version: str
    drugs: tuple[Drug, ...]
    sha16: str          # first 16 hex digits (upper case) of the file's SHA-256, as HELLO's libh
    path: Path | None = None

    @classmethod
    def parse(cls, raw: bytes, path: Path | None = None) -> "DrugLibrary":
        doc = json.loads(raw)
        return cls(version=str(doc["version"]),
                   drugs=tuple(Drug.from_json(d) for d in doc["drugs"]),
                   sha16=hashlib.sha256(raw).hexdigest()[:16].upper(), path=path)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "DrugLibrary":
        """Load ``path`` (default: ``firmware/druglib.json``)."""
        p = Path(path) if path else firmware_dir() / LIB_FILE
        return cls.parse(p.read_bytes(), p)

    def get(self, name: str) -> Drug:
        """The drug called ``name`` (case-insensitive); KeyError listing the known names."""
        for d in self.drugs:
            if d.name.lower() == name.lower():
                return d
        near = self.suggest(name)
        raise UnknownDrug(f"no drug {name!r} in library {self.version}"
                          + (f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else "")
                          + f" (known: {', '.join(d.name for d in self.drugs) or 'none'})")

    def suggest(self, name: str) -> list[str]:
        """Library names close to a misspelt ``name`` (difflib), best first."""
        import difflib
        names = {d.name.lower(): d.name for d in self.drugs}
        return [names[n] for n in difflib.get_close_matches(name.lower(), list(names), n=2,
                                                             cutoff=0.6)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(d.name.lower() == name.lower() for d in self.drugs)

    def plan(self, name: str, dose_ug_kg: int, wt_g: int, over_ms: int) -> DosePlan:
        """Compute volume and rate like the pump and list the limits the program breaks."""
        d = self.get(name)
        dose_ug = dose_ug_kg * wt_g // 1000
        vtbi = dose_ug * 1_000_000 // d.conc_ug_ml
        rate = vtbi * 3600 // over_ms if over_ms > 0 else 0
        hard: list[str] = []
        soft: list[str] = []

        def check(label: str, value: int, lim: Limits, fmt: Callable[[int], str]) -> None:
            def bound(v: Fraction) -> str:
                return fmt(v) if v.denominator == 1 else f"{float(v):g}"
            for kind, ok in (("hard min", value >= lim.hard_min), ("hard max", value <= lim.hard_max)):
                if not ok:
                    b = lim.hard_min if kind == "hard min" else lim.hard_max
                    hard.append(f"{label} {fmt(value)} {'below' if 'min' in kind else 'above'} "
                                f"{kind} {bound(b)}")
                    return
            for kind, ok in (("soft min", value >= lim.soft_min), ("soft max", value <= lim.soft_max)):
                if not ok:
                    b = lim.soft_min if kind == "soft min" else lim.soft_max
                    soft.append(f"{label} {fmt(value)} {'below' if 'min' in kind else 'above'} "
                                f"{kind} {bound(b)}")
                    return

        check("weight", wt_g, d.weight_kg.scaled(1000), lambda g: f"{_num(Fraction(g, 1000)):g} kg")
        check("dose", dose_ug_kg, d.dose_ug_kg, lambda v: units.fmt_dose(int(v), d.dose_unit))
        check("duration", over_ms, d.over_min.scaled(60_000), lambda v: units.fmt_duration(int(v)))
        if rate > d.rate_ml_h_max * 1000:
            hard.append(f"rate {units.fmt_rate(rate)} above hard max "
                        f"{_num(d.rate_ml_h_max)} mL/h")
        return DosePlan(d.name, dose_ug, vtbi, rate, over_ms, tuple(hard), tuple(soft))

    def precheck(self, name: str, dose_ug_kg: int, wt_g: int, over_ms: int) -> DosePlan:
        """``plan()`` that raises LimitExceeded on a hard-limit violation."""
        p = self.plan(name, dose_ug_kg, wt_g, over_ms)
        if p.hard:
            raise LimitExceeded(f"{p.drug}: " + "; ".join(p.hard))
        return p

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "libh": self.sha16,
                "drugs": [d.to_json() for d in self.drugs]}


# ------------------------------------------------------------------ rendering (rich)

def _range(lim: Limits, fmt) -> tuple[str, str]:
    return f"{fmt(lim.soft_min)} – {fmt(lim.soft_max)}", f"{fmt(lim.hard_min)} – {fmt(lim.hard_max)}"


def _in_unit(unit: str):
    """Wire µg/kg (or µg/kg/h) -> the number in ``unit`` (mg/kg, mcg/kg/min, …)."""
    norm = units._norm_unit(unit)
    factor = Fraction(1000 if norm.startswith("mg") else 1) * (60 if norm.endswith("/min") else 1)
    return lambda v: f"{float(Fraction(v) / factor):.4g}"


def _dose_fmt(d: Drug):
    return _in_unit(d.dose_unit)


def _plain(v) -> str:
    return f"{_num(Fraction(v)):g}"


def rows(d: Drug) -> list[tuple[str, str, str, str, str]]:
    """Every limit the pump enforces for ``d``, in the drug's units:
    (limit, hard min, soft min, soft max, hard max); "" where a bound does not apply."""
    out = []
    for label, lim, fmt in ((f"dose ({d.dose_unit})", d.dose_ug_kg, _dose_fmt(d)),
                            ("duration (min)", d.over_min, _plain),
                            ("weight (kg)", d.weight_kg, _plain)):
        out.append((label, fmt(lim.hard_min), fmt(lim.soft_min), fmt(lim.soft_max),
                    fmt(lim.hard_max)))
    if d.dose_ug_kg_h is not None and d.dose_rate_unit:
        fmt = _in_unit(d.dose_rate_unit)
        lim = d.dose_ug_kg_h
        out.append((f"dose rate ({d.dose_rate_unit})", fmt(lim.hard_min), fmt(lim.soft_min),
                    fmt(lim.soft_max), fmt(lim.hard_max)))
        out.append((f"loading dose ({d.dose_unit})", *[_dose_fmt(d)(getattr(d.dose_ug_kg, k))
                                                      for k in ("hard_min", "soft_min",
                                                                "soft_max", "hard_max")]))
    out.append(("rate (mL/h)", "", "", "", _plain(d.rate_ml_h_max)))
    if d.bolus_max_ul is not None:
        out.append(("bolus (mL)", "", "", "", _plain(Fraction(d.bolus_max_ul, 1000))))
    mass = "µg" if units._norm_unit(d.dose_unit).startswith("ug") else "mg"
    if d.bolus_max_h_ug is not None:
        out.append((f"bolus dose per hour ({mass})", "", "", "",
                    _plain(Fraction(d.bolus_max_h_ug, 1 if mass == "µg" else 1000))))
    if d.bolus_lockout_min is not None:
        out.append(("bolus lockout (min)", _plain(d.bolus_lockout_min), "", "", ""))
    names = {"sbp": "systolic BP (mmHg)", "dbp": "diastolic BP (mmHg)",
             "hr": "heart rate (/min)", "spo2": "SpO2 (%)"}
    vit: dict[str, list[str]] = {}
    for key, v in d.vitals:
        kind, _, side = key.rpartition("_")
        lo_hi = vit.setdefault(kind, ["", ""])
        lo_hi[0 if side == "min" else 1] = str(v)
    for kind, (lo, hi) in vit.items():
        out.append((f"interlock: {names.get(kind, kind)}", lo, "", "", hi))
    return out


def render_list(lib: DrugLibrary):
    """A rich Table: one row per drug with every limit the pump enforces (soft | hard)."""
    from rich.table import Table
    t = Table(title=f"Drug library {lib.version} (libh {lib.sha16})")
    for col in ("drug", "conc", "dose soft | hard", "over (min) soft | hard", "weight (kg)",
                "dose rate soft | hard", "max rate", "bolus", "KVO"):
        t.add_column(col, no_wrap=col == "drug")
    for d in lib.drugs:
        dfmt = _dose_fmt(d)
        ds, dh = _range(d.dose_ug_kg, dfmt)
        os_, oh = _range(d.over_min, _plain)
        _, wh = _range(d.weight_kg, _plain)
        if d.dose_ug_kg_h is not None and d.dose_rate_unit:
            rs, rh = _range(d.dose_ug_kg_h, _in_unit(d.dose_rate_unit))
            rate = f"{rs} | {rh} {d.dose_rate_unit}"
        else:
            rate = "-"
        bolus = "-" if d.bolus_max_ul is None else (
            f"≤ {_plain(Fraction(d.bolus_max_ul, 1000))} mL"
            + (f", {d.bolus_lockout_min} min apart" if d.bolus_lockout_min else "")
            + (f", ≤ {_plain(Fraction(d.bolus_max_h_ug, 1000))} mg/h" if d.bolus_max_h_ug
               else ""))
        kvo = "-" if d.kvo_ul_h is None else ("none" if d.kvo_ul_h == 0
                                              else f"{_plain(Fraction(d.kvo_ul_h, 1000))} mL/h")
        concs = ", ".join(f"{c / 1000:g}" for c in d.concs_ug_ml) + " mg/mL"
        t.add_row(d.name, concs, f"{ds} | {dh} {d.dose_unit}", f"{os_} | {oh}", wh, rate,
                  f"{_num(d.rate_ml_h_max):g} mL/h", bolus, kvo)
    return t


def render_show(d: Drug):
    """A rich Table with every limit of one drug the pump enforces."""
    from rich.table import Table
    t = Table(title=d.name, show_header=True)
    for col in ("limit", "hard min", "soft min", "soft max", "hard max"):
        t.add_column(col)
    for r in rows(d):
        t.add_row(*r)
    concs = ", ".join(f"{c} µg/mL" for c in d.concs_ug_ml)
    t.caption = (f"concentration {concs}, syringe {_num(d.syringe_ml):g} mL, "
                 + (f"KVO {_plain(Fraction(d.kvo_ul_h, 1000))} mL/h after the VTBI"
                    if d.kvo_ul_h else "no KVO")
                 + (f"\n{d.notes}" if d.notes else ""))
    return t
