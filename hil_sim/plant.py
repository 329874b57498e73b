"""Syringe-pump plant in virtual time: stepper + lead screw + syringe + line, and its sensors.

This module owns the physics the firmware drives and nothing else (no firmware, no link, no
clock of its own beyond the plant's integration time). Everything is plain floats and `math`
so the per-tick cost stays around a microsecond; it is deterministic for a seed (one
`random.Random` per noisy component, seeded from a string derived from the seed).

Model
-----
* Motor → plunger: the motor position ``m`` (µsteps) drives the plunger ``x`` (µsteps of
  travel) through a dead band of ``slack_usteps``: the plunger is pushed when ``m ≥ x + slack``
  and pulled back when ``m ≤ x`` (so it starts disengaged: the first ``slack`` µsteps move
  nothing, and every reversal costs the slack again). Displaced volume = x × µL/µstep
  × (1 + pitch error).
* Syringe + line: one lumped compliance ``C`` (mL/mmHg) discharging through a line
  resistance ``R`` (mmHg·s/mL) into a vein at ``Pv``: ``C·dP/dt = Q_in − (P − Pv)/R``.
  Integrated with the exact exponential solution over each interval of constant ``Q_in``
  (stable for any dt); outflow = ``Q_in·dt − C·ΔP`` (mass balance) is the gravimetric
  (delivered) volume. A downstream occlusion sets ``R = ∞``: ``P += Q_in·dt / C``.
* Steps a controller call issues are spread evenly over ``[t_k, t_k + window)``; the plant
  keeps windows that run past the current slice and overlaps them when calls come faster
  than the control tick.
* Sensors: line pressure + seeded gaussian noise, quantised to integer mmHg and clamped to
  the sensor's range; encoder counts ∝ plunger travel; door/air flags; battery mV.

Default parameters and where they come from
-------------------------------------------
* 50 mL syringe, 26.6 mm bore, 1.25 mm lead, 200 × 16 µsteps/rev → 217.078 nL/µstep:
  CONTEXT §4 (typical drive) and the firmware's nominal calibration.
* slack 32 µsteps (1/100 rev, 12.5 µm, ~7 µL): "small but nonzero" backlash/slack before
  engagement, CONTEXT §4; at 1 mL/h it delays first flow by ~25 s.
* compliance 0.015 mL/kPa = 0.0020 mL/mmHg: mid-range of 0.009–0.021 mL/kPa (Snijder 2015,
  CONTEXT §3); 1 mL/h into a closed line then rises ~8.3 mmHg/min (CONTEXT: 6–14).
* line resistance 800 mmHg·s/mL: *derived* from Hagen–Poiseuille for water (~1 mPa·s)
  through a 22 G × 25 mm cannula (~270) plus a 150 cm × 1 mm ID extension line (~460),
  rounded up; 52.5 mL/h (the ketamine job, CONTEXT §1) then sits at Pv + 11.7 ≈ 20 mmHg, and
  the line time constant R·C is 1.6 s.
* vein pressure 8 mmHg: typical peripheral venous pressure (textbook physiology, 5–10 mmHg).
* pressure noise σ 1.5 mmHg, 1 mmHg quantisation, 0–1500 mmHg range: a strain-gauge plunger
  force sensor; the range covers ECRI's 1,034 mmHg maximum occlusion pressure (CONTEXT §3).
* encoder 3200 counts/rev of the lead screw (one count per µstep of plunger travel), so the
  firmware can compare issued steps with measured travel directly.
* battery 4000 mV: a nominal Li-ion cell.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

KPA_PER_MMHG = 0.133322387415  # 1 mmHg in kPa


@dataclass(frozen=True)
class PlantParams:
    """Mechanism, fluid path and sensor parameters (see the module docstring for sources)."""

    syringe_ml: float = 50.0
    bore_mm: float = 26.6
    lead_pitch_mm: float = 1.25
    full_steps_per_rev: int = 200
    microsteps: int = 16
    pitch_error_pct: float = 0.0          # actual lead vs nominal (+ = delivers more)
    slack_usteps: int = 32
    compliance_ml_per_mmhg: float = 0.015 * KPA_PER_MMHG
    line_resistance_mmhg_s_per_ml: float = 800.0
    vein_mmhg: float = 8.0
    pressure_noise_mmhg: float = 1.5
    pressure_max_mmhg: int = 1500
    encoder_counts_per_rev: int = 3200
    battery_mv: int = 4000
    record_every_s: float = 1.0           # gravimetric sample period (virtual time)

    @property
    def usteps_per_rev(self) -> int:
        return self.full_steps_per_rev * self.microsteps

    @property
    def nominal_nl_per_ustep(self) -> float:
        """Volume per µstep the firmware assumes (nominal geometry): 217.078 nL by default."""
        area_mm2 = math.pi * (self.bore_mm / 2.0) ** 2
        return area_mm2 * self.lead_pitch_mm / self.usteps_per_rev * 1000.0

    @property
    def ml_per_ustep(self) -> float:
        """Volume the plunger actually displaces per µstep of travel (with pitch error)."""
        return self.nominal_nl_per_ustep * 1e-6 * (1.0 + self.pitch_error_pct / 100.0)

    @property
    def tau_s(self) -> float:
        return self.compliance_ml_per_mmhg * self.line_resistance_mmhg_s_per_ml


@dataclass
class Record:
    """Gravimetric time series, one row per sample period, as columns (cheap to append)."""

    t_s: list[float] = field(default_factory=list)
    delivered_ml: list[float] = field(default_factory=list)
    pressure_mmhg: list[float] = field(default_factory=list)
    cmd_ml_h: list[float] = field(default_factory=list)   # motor command over the period

    def __len__(self) -> int:
        return len(self.t_s)

    def rows(self) -> list[tuple[float, float, float, float]]:
        return list(zip(self.t_s, self.delivered_ml, self.pressure_mmhg, self.cmd_ml_h))


class Plant:
    """The syringe pump's mechanics and fluid path, integrated in virtual time (ms since start)."""

    def __init__(self, params: PlantParams | None = None, seed: int = 0) -> None:
        self.params = p = params or PlantParams()
        self.seed = seed
        self._rng_pressure = random.Random(f"{seed}:plant:pressure")
        self.t_ms: float = 0.0
        self.motor: float = 0.0          # µsteps issued (net)
        self.plunger: float = 0.0        # µsteps of plunger travel
        self.pressure: float = p.vein_mmhg
        self.delivered_ml: float = 0.0   # out of the line into the patient
        self.occluded: bool = False
        self.door_open: bool = False
        self.air: bool = False
        self.battery_mv: int = p.battery_mv
        self.record = Record()
        # constants used in the hot path
        self._slack = float(p.slack_usteps)
        self._ml_step = p.ml_per_ustep
        self._C = p.compliance_ml_per_mmhg
        self._R = p.line_resistance_mmhg_s_per_ml
        self._Pv = p.vein_mmhg
        self._tau_ms = p.tau_s * 1000.0
        self._enc_per_ustep = p.encoder_counts_per_rev / p.usteps_per_rev
        self._exp_dt = -1.0
        self._exp_val = 0.0
        self._windows: list[list[float]] = []   # [t_end_ms, µsteps per ms] still running
        self._rec_every_ms = p.record_every_s * 1000.0
        self._next_rec_ms = self._rec_every_ms
        self._rec_motor = 0.0

    # ------------------------------------------------------------------ sensors
    def sensors(self) -> tuple[int, int, int, int]:
        """One sensor reading: (pressure mmHg, encoder count, flags, battery mV)."""
        p = self.params
        v = self.pressure + self._rng_pressure.gauss(0.0, p.pressure_noise_mmhg)
        press = int(round(v))
        if press < 0:
            press = 0
        elif press > p.pressure_max_mmhg:
            press = p.pressure_max_mmhg
        enc = math.floor(self.plunger * self._enc_per_ustep)
        flags = (1 if self.door_open else 0) | (2 if self.air else 0)
        return press, enc, flags, self.battery_mv

    @property
    def displaced_ml(self) -> float:
        """Volume pushed out of the syringe barrel (delivered + stored in the compliance)."""
        return self.plunger * self._ml_step

    def set_occluded(self, on: bool) -> None:
        self.occluded = bool(on)

    # ------------------------------------------------------------------ dynamics
    def drive(self, t0_ms: float, step_ms: float, steps: list[int], window_ms: float) -> None:
        """Apply the µsteps of consecutive controller calls at t0, t0+step, … and advance the
        plant to t0 + len(steps)·step. Call k's steps are spread evenly over
        [t_k, t_k + window_ms)."""
        if abs(t0_ms - self.t_ms) > 1e-6:
            raise ValueError(f"plant is at {self.t_ms} ms, asked to drive from {t0_ms} ms")
        if step_ms == window_ms and not self._windows:
            span = self._span
            for s in steps:
                span(step_ms, s)
            self.t_ms = t0_ms + len(steps) * step_ms   # drop float dust from slack splits
            return
        windows = self._windows
        t = t0_ms
        for s in steps:
            if s:
                windows.append([t + window_ms, s / window_ms])
            t_next = t + step_ms
            self._advance_windows(t_next)
            t = t_next

    def idle(self, dt_ms: float) -> None:
        """Advance with no new motor command (pending windows still run)."""
        if self._windows:
            self._advance_windows(self.t_ms + dt_ms)
        else:
            self._span(dt_ms, 0)

    def _advance_windows(self, t_target: float) -> None:
        windows = self._windows
        t = self.t_ms
        while t < t_target - 1e-9:
            t_next = t_target
            rate = 0.0
            for w in windows:
                rate += w[1]
                if w[0] < t_next:
                    t_next = w[0]
            self._span(t_next - t, rate * (t_next - t))
            t = self.t_ms = t_next
            if windows:
                windows[:] = [w for w in windows if w[0] > t + 1e-9]
        self.t_ms = t_target

    def _span(self, dt_ms: float, dm: float) -> None:
        """Advance dt_ms with the motor moving dm µsteps at a constant rate."""
        motor = self.motor
        x = self.plunger
        if dm > 0:
            gap = x + self._slack - motor          # forward slack left
            if gap <= 0.0:
                self._flow(dt_ms, dm)
            elif dm <= gap:
                self._flow(dt_ms, 0.0)
            else:
                f = gap / dm
                self._flow(dt_ms * f, 0.0)
                self._flow(dt_ms * (1.0 - f), dm - gap)
        elif dm < 0:
            gap = motor - x                         # reverse slack left
            if gap <= 0.0:
                self._flow(dt_ms, dm)
            elif -dm <= gap:
                self._flow(dt_ms, 0.0)
            else:
                f = gap / -dm
                self._flow(dt_ms * f, 0.0)
                self._flow(dt_ms * (1.0 - f), dm + gap)
        else:
            self._flow(dt_ms, 0.0)
        self.motor = motor + dm
        self._rec_motor += dm
        if self.t_ms >= self._next_rec_ms - 1e-9:
            self._sample()

    def _flow(self, dt_ms: float, dx: float) -> None:
        """Fluid path over dt_ms while the plunger travels dx µsteps at a constant rate."""
        if dt_ms <= 0.0:
            self.plunger += dx
            return
        dv = dx * self._ml_step                     # mL displaced
        p = self.pressure
        if self.occluded:
            self.pressure = p + dv / self._C
        else:
            if dt_ms != self._exp_dt:
                self._exp_dt = dt_ms
                self._exp_val = math.exp(-dt_ms / self._tau_ms)
            p_ss = self._Pv + dv * 1000.0 / dt_ms * self._R   # Pv + Q·R
            pn = p_ss + (p - p_ss) * self._exp_val
            self.pressure = pn
            self.delivered_ml += dv - self._C * (pn - p)
        self.plunger += dx
        self.t_ms += dt_ms

    def _sample(self) -> None:
        rec = self.record
        period_s = self._rec_every_ms / 1000.0
        rec.t_s.append(self.t_ms / 1000.0)
        rec.delivered_ml.append(self.delivered_ml)
        rec.pressure_mmhg.append(self.pressure)
        rec.cmd_ml_h.append(self._rec_motor * self._ml_step * 3600.0 / period_s)
        self._rec_motor = 0.0
        while self._next_rec_ms <= self.t_ms + 1e-9:
            self._next_rec_ms += self._rec_every_ms
