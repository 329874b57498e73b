"""The simulated patient: weight-scaled ketamine pharmacokinetics and the vital signs it moves.

This module owns the patient and nothing else: drug in (mg over an interval, from the plant's
gravimetric delivery × concentration), plasma level and vitals out.

* **PK** (CONTEXT.md §1, per-kg parameters as encoded in the open-source opentiva library):
  Clements 1981 two-compartment, Domino 1982 three-compartment and Hijazi 2003 two-compartment
  mammillary models, V1 in L/kg, rate constants in /min. Integrated with Heun's method in
  steps of at most 1 s (the fastest rate constant, Domino's k10+k12+k13 = 1.6 /min, is 0.027
  per step, so the integration error is far below the models' own uncertainty).
* **Effect site**: Ce follows Cp with ke0 = 0.2 /min (an assumption: a t½ of ~3.5 min, in line
  with the minutes-scale onset of ketamine's effects; no single published value is used).
* **Haemodynamics**: SBP/DBP/HR rise linearly with Ce, scaled so that Ce = 185 ng/mL (the
  plasma level after 0.5 mg/kg over 40 min, Zarate 2006) gives +16/+11 mmHg (Yale 2024 mean
  rise at 40 min) and +8 /min (assumption). A *hypertensive responder* (Yale 2024: 12.5 % of
  patients; Rodrigues 2022: 44 % reached ≥ 165/100) has a higher baseline and three times the
  gain. A reading adds seeded gaussian noise (σ 4/3 mmHg, 2 /min, 0.5 % SpO2).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# per kg: V1 (L/kg), k10, k12, k21, k13, k31 (/min)
PK_MODELS: dict[str, tuple[float, float, float, float, float, float]] = {
    "clements": (1.75, 0.0109, 0.0186, 0.0137, 0.0, 0.0),
    "domino": (0.063, 0.4381, 0.5921, 0.2470, 0.5900, 0.0146),
    "hijazi": (1.08, 0.0333, 0.0088, 0.0030, 0.0, 0.0),
}

CE_REF_NG_ML = 185.0          # Zarate 2006, 0.5 mg/kg over 40 min
SBP_RISE_REF = 16.0           # Yale 2024: +16/+11 mmHg at 40 min
DBP_RISE_REF = 11.0
HR_RISE_REF = 8.0             # assumption


@dataclass(frozen=True)
class PatientParams:
    weight_kg: float = 70.0
    model: str = "clements"
    ke0_per_min: float = 0.2
    sbp0: float = 122.0
    dbp0: float = 76.0
    hr0: float = 72.0
    spo2: float = 98.0
    hypertensive: bool = False
    responder_gain: float = 3.0
    hypertensive_sbp0: float = 138.0
    hypertensive_dbp0: float = 86.0
    noise: bool = True
    v1_scale: float = 1.0          # between-patient variability: central volume × this
    k10_scale: float = 1.0         # ... and elimination rate × this (campaigns draw both)


class Patient:
    def __init__(self, params: PatientParams | None = None, seed: int = 0) -> None:
        self.params = p = params or PatientParams()
        if p.model not in PK_MODELS:
            raise ValueError(f"unknown PK model {p.model!r} (have {sorted(PK_MODELS)})")
        v1, self.k10, self.k12, self.k21, self.k13, self.k31 = PK_MODELS[p.model]
        self.v1_l = v1 * p.weight_kg * p.v1_scale
        self.k10 *= p.k10_scale
        self.a = [0.0, 0.0, 0.0]     # mg in compartments 1..3
        self.ce = 0.0                # effect-site ng/mL
        self.t_s = 0.0
        self.total_mg = 0.0
        self.hypertensive = p.hypertensive
        self._rng = random.Random(f"{seed}:patient:vitals")

    @property
    def cp(self) -> float:
        """Plasma concentration, ng/mL (= µg/L)."""
        return self.a[0] / self.v1_l * 1000.0

    def _deriv(self, a: list[float], rate_mg_min: float) -> tuple[float, float, float]:
        a1, a2, a3 = a
        d1 = rate_mg_min - (self.k10 + self.k12 + self.k13) * a1 + self.k21 * a2 + self.k31 * a3
        d2 = self.k12 * a1 - self.k21 * a2
        d3 = self.k13 * a1 - self.k31 * a3
        return d1, d2, d3

    def advance(self, dt_s: float, dose_mg: float = 0.0) -> None:
        """Advance dt_s with dose_mg entering the plasma evenly over the interval."""
        if dt_s <= 0:
            self.total_mg += dose_mg
            self.a[0] += dose_mg
            return
        n = max(1, int(dt_s + 0.999999))
        h = dt_s / n / 60.0               # min
        rate = dose_mg / (dt_s / 60.0)
        ke0 = self.params.ke0_per_min
        for _ in range(n):
            a = self.a
            k1 = self._deriv(a, rate)
            b = [a[i] + h * k1[i] for i in range(3)]
            k2 = self._deriv(b, rate)
            cp0 = self.cp
            self.a = [a[i] + 0.5 * h * (k1[i] + k2[i]) for i in range(3)]
            cp1 = self.cp
            # effect site: dCe/dt = ke0 (Cp - Ce), Heun with Cp linear over the step
            d1 = ke0 * (cp0 - self.ce)
            ce_e = self.ce + h * d1
            d2 = ke0 * (cp1 - ce_e)
            self.ce += 0.5 * h * (d1 + d2)
        self.total_mg += dose_mg
        self.t_s += dt_s

    # ---------------------------------------------------------------- vitals
    def _gain(self) -> float:
        return self.params.responder_gain if self.hypertensive else 1.0

    def true_vitals(self) -> tuple[float, float, float, float]:
        p = self.params
        x = self.ce / CE_REF_NG_ML * self._gain()
        sbp0 = p.hypertensive_sbp0 if self.hypertensive else p.sbp0
        dbp0 = p.hypertensive_dbp0 if self.hypertensive else p.dbp0
        return (sbp0 + SBP_RISE_REF * x, dbp0 + DBP_RISE_REF * x,
                p.hr0 + HR_RISE_REF * x, p.spo2)

    def vitals(self) -> tuple[int, int, int, int]:
        """One monitor reading (integers, as relayed with VITALS): sbp, dbp, hr, spo2."""
        sbp, dbp, hr, spo2 = self.true_vitals()
        if self.params.noise:
            g = self._rng.gauss
            sbp += g(0, 4.0)
            dbp += g(0, 3.0)
            hr += g(0, 2.0)
            spo2 += g(0, 0.5)
        return int(round(sbp)), int(round(dbp)), int(round(hr)), min(100, int(round(spo2)))


def plasma_after_infusion(mg_per_kg: float = 0.5, minutes: float = 40.0, weight_kg: float = 70.0,
                          model: str = "clements") -> float:
    """Cp (ng/mL) at the end of a constant infusion of mg_per_kg over `minutes`."""
    pt = Patient(PatientParams(weight_kg=weight_kg, model=model, noise=False))
    dose = mg_per_kg * weight_kg
    for _ in range(int(minutes)):
        pt.advance(60.0, dose / minutes)
    return pt.cp
