"""What the patient and the bedside do to the line: venous-pressure disturbances in virtual time.

This module owns the pressure at the far end of the line that is *not* the pump's doing
(CONTEXT §8; sources of every default in docs/simulator.md): breathing, coughs, straining
(Valsalva), the patient moving the cannulated arm, and the pump's height relative to the
cannula changed by staff (both directions, as a step or a ramp). `Bedside.offset_mmhg(t_ms)`
is what the plant adds to the resting venous pressure; the height part is hydrostatic
(1 cmH2O = 0.7356 mmHg; the pump *above* the cannula pushes, so it reads less).

Every random event comes from one `random.Random` seeded from the plant's seed, drawn lazily
as time advances, so a run is reproducible from the seed alone. All amplitudes default to 0
(a resting patient, a pump that stays put): a scenario or the disturbance battery turns them on.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

MMHG_PER_CM_H2O = 0.73555912


@dataclass(frozen=True)
class BedsideParams:
    """Disturbance amplitudes and rates (0 = off). Sources: docs/simulator.md."""

    breath_mmhg: float = 0.0          # peak venous swing with breathing
    breath_per_min: float = 15.0      # 12-20 breaths/min
    cough_mmhg: float = 0.0           # peak of a cough transient
    cough_s: float = 1.0              # its duration
    cough_every_s: float = 0.0        # mean interval (Poisson); 0 = never
    strain_mmhg: float = 0.0          # straining / Valsalva plateau
    strain_s: float = 10.0
    strain_every_s: float = 0.0
    arm_cm: float = 0.0               # the cannulated arm moves to a height within ±arm_cm
    arm_move_s: float = 1.5           # ... over this long
    arm_every_min_s: float = 30.0     # ... every 30-120 s (uniform)
    arm_every_max_s: float = 120.0

    @property
    def active(self) -> bool:
        return bool(self.breath_mmhg or (self.cough_mmhg and self.cough_every_s)
                    or (self.strain_mmhg and self.strain_every_s) or self.arm_cm)


class Bedside:
    """Venous-pressure offset (mmHg) and pump height (cm above the cannula) over time."""

    def __init__(self, params: BedsideParams, seed: int, height_cm: float = 0.0) -> None:
        self.p = params
        self._rng = random.Random(f"{seed}:bedside")
        self._phase = self._rng.uniform(0.0, 2.0 * math.pi)
        self._w = 2.0 * math.pi * params.breath_per_min / 60000.0   # rad per ms
        # height: a ramp from h0 at t0 to h1 at t1 (a step has t1 = t0)
        self._h0 = self._h1 = float(height_cm)
        self._t0 = self._t1 = 0.0
        # events: next start times (ms) and the current one
        self._next_cough = self._draw(params.cough_every_s) if params.cough_mmhg else math.inf
        self._cough_t = -math.inf
        self._cough_a = 0.0
        self._next_strain = self._draw(params.strain_every_s) if params.strain_mmhg else math.inf
        self._strain_t = -math.inf
        self._strain_a = 0.0
        self._arm_from = self._arm_to = 0.0
        self._arm_t = -math.inf
        self._next_arm = (self._rng.uniform(params.arm_every_min_s, params.arm_every_max_s) * 1000.0
                          if params.arm_cm else math.inf)
        self.active = params.active

    def _draw(self, mean_s: float) -> float:
        return self._rng.expovariate(1.0 / (mean_s * 1000.0)) if mean_s > 0 else math.inf

    # ------------------------------------------------------------------ height
    def set_height(self, t_ms: float, cm: float, ramp_s: float = 0.0) -> None:
        """Move the pump to `cm` above the cannula, from where it is now, over ramp_s."""
        self._h0 = self.height_cm(t_ms)
        self._h1 = float(cm)
        self._t0 = t_ms
        self._t1 = t_ms + max(0.0, ramp_s) * 1000.0

    def height_cm(self, t_ms: float) -> float:
        if t_ms >= self._t1:
            return self._h1
        if t_ms <= self._t0:
            return self._h0
        return self._h0 + (self._h1 - self._h0) * (t_ms - self._t0) / (self._t1 - self._t0)

    @property
    def moving(self) -> bool:
        return self._t1 > self._t0

    # ------------------------------------------------------------------ venous side
    def offset_mmhg(self, t_ms: float) -> float:
        """Venous pressure above the resting level at t (breathing, coughs, strain, arm)."""
        p = self.p
        v = 0.0
        if p.breath_mmhg:
            v += p.breath_mmhg * math.sin(self._w * t_ms + self._phase)
        if p.cough_mmhg:
            while t_ms >= self._next_cough:
                self._cough_t = self._next_cough
                self._cough_a = p.cough_mmhg * self._rng.uniform(0.5, 1.0)
                self._next_cough += p.cough_s * 1000.0 + self._draw(p.cough_every_s)
            d = (t_ms - self._cough_t) / (p.cough_s * 1000.0)
            if 0.0 <= d < 1.0:
                v += self._cough_a * math.sin(math.pi * d)
        if p.strain_mmhg:
            while t_ms >= self._next_strain:
                self._strain_t = self._next_strain
                self._strain_a = p.strain_mmhg * self._rng.uniform(0.5, 1.0)
                self._next_strain += p.strain_s * 1000.0 + self._draw(p.strain_every_s)
            d = (t_ms - self._strain_t) / 1000.0
            if 0.0 <= d < p.strain_s:
                # 1 s up, plateau, 1 s down
                r = min(1.0, d, p.strain_s - d)
                v += self._strain_a * r
        if p.arm_cm:
            while t_ms >= self._next_arm:
                self._arm_from = self._arm_now(self._next_arm)
                self._arm_to = self._rng.uniform(-p.arm_cm, p.arm_cm)
                self._arm_t = self._next_arm
                self._next_arm += self._rng.uniform(p.arm_every_min_s, p.arm_every_max_s) * 1000.0
            # the cannula higher than the pump: the pump pushes against more head
            v += self._arm_now(t_ms) * MMHG_PER_CM_H2O
        return v

    def _arm_now(self, t_ms: float) -> float:
        d = (t_ms - self._arm_t) / (self.p.arm_move_s * 1000.0)
        if d >= 1.0:
            return self._arm_to
        if d <= 0.0:
            return self._arm_from
        return self._arm_from + (self._arm_to - self._arm_from) * d
