"""Syringe-pump plant in virtual time: stepper, lead screw, syringe, line, sensors, power.

This module owns the physics the firmware drives and nothing else (no firmware, no link, no
clock of its own beyond the plant's integration time). Everything is plain floats and `math`
so a control tick costs a few microseconds; it is deterministic for a seed (one
`random.Random` per noisy component, seeded from a string derived from the seed).

Model (lengths in *u*, the nominal plunger travel of one microstep = lead / µsteps per rev)
----------------------------------------------------------------------------------------
1. **Stepper**: the controller's µsteps move the rotor unless the axial load exceeds the
   motor's pull-out force (``stall_force_n``, falling linearly to 0 at ``max_rpm``): then the
   steps of that interval are *missed*. Faults: ``stall`` (every step missed), ``runaway``
   (the driver steps at ``runaway_ml_h`` whatever it is told, while enabled).
2. **Lead screw nut**: a dead band of ``backlash_usteps`` between rotor and nut (every reversal
   costs it). Nut travel → carriage travel with the pitch error (``pitch_error_pct``) and a
   once-per-revolution periodic error (``periodic_error_um`` amplitude).
3. **Slack**: the pusher travels ``slack_usteps`` before it meets the plunger flange; from then
   on the flange is clamped to it (push and pull).
4. **Stopper** (stiction, stick–slip): the rubber stopper is a spring (``stopper_stiffness_n_mm``)
   between the plunger rod and the barrel wall. It sticks while the net force on it
   (spring − pressure × area) stays inside ±static friction, and slips until the net force
   equals the kinetic (glide) friction. Static friction = glide + ``stiction_delta_n`` + a
   breakaway excess that grows with the time at rest (``breakaway_n``, ``breakaway_tau_s``).
   The stopper stops at the end of the barrel (``fill_ml`` used up): the end-stop flag.
5. **Fluid path**: the syringe + line compliance ``C`` discharges through the line resistance
   ``R`` into the vein at ``Pv − ρgh`` (``height_cm``: pump above the patient, siphon):
   ``C·dP/dt = Q_in − (P − Pv + ρgh)/R``, integrated exactly over each interval of constant
   inflow; outflow (delivered, the gravimetric record) = inflow − C·ΔP. A downstream occlusion
   sets R = ∞ (the whole compliance fills); an upstream one (at the syringe tip, before the
   line) fills the syringe's compliance only, and the line drains. The stopper's own spring
   is part of the measured syringe compliance, so the fluid compliance is the rest.
6. **Sensors**: plunger force → mmHg (tared by the nominal glide force): + offset + drift +
   gaussian noise, quantised by an ADC of ``adc_bits`` over ``force_range_n``, clamped to
   0..``pressure_max_mmhg``; faults ``stuck`` / drift. Encoder: 1 count per u of *plunger
   flange* travel (sees slack, backlash, missed steps, pitch error; not stopper stick–slip);
   fault: stuck. Door/latch switch, end-stop switch, ultrasonic air sensor (air bubbles
   travel with the delivered volume from the syringe tip to the sensor), battery voltage.
7. **Power**: mains or battery (``flags`` bit 3); a Li-ion pack discharges with the drawn
   current (more when the motor is enabled) along an OCV curve, sags with its internal
   resistance, and browns out (the firmware stops) at ``brownout_mv``.

Flag bits (the board contract): 1 door open, 2 air at the sensor, 4 plunger at the end stop,
8 on battery. Every default's source is in docs/simulator.md; the short version is in
`PlantParams` below.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

from hil_sim.bedside import Bedside, BedsideParams

KPA_PER_MMHG = 0.133322387415  # 1 mmHg in kPa
PA_PER_MMHG = 133.322387415
MMHG_PER_CM_H2O = 0.73555912    # hydrostatic head of water (blood-like fluids: ~ the same)

FLAG_DOOR = 1
FLAG_AIR = 2
FLAG_END = 4
FLAG_BATTERY = 8

# syringe sizes: nominal mL -> bore mm, BD Plastipak bores from the pump makers' syringe
# tables (Harvard Apparatus / New Era lists); docs/simulator.md
SYRINGES: dict[int, float] = {10: 14.5, 20: 19.13, 50: 26.6}
_REF_BORE = 26.6


@dataclass(frozen=True)
class SyringeModel:
    """One syringe model as the plant sees it (docs/simulator.md, "Syringe models")."""

    name: str
    size_ml: int
    bore_mm: float                    # nominal bore (what the pump's syringe table stores)
    compliance_ml_kpa: float          # syringe + stopper, Snijder 2015: 0.009-0.021 (50 mL)
    glide_n: float                    # glide (dynamic) friction of the stopper
    breakloose_n: float               # break-loose excess over glide after a long rest
    stick_n: float                    # static - glide while moving (stick-slip)


# The pump's firmware carries the same names and nominal bores (pumpcore/syringes.py);
# compliance and friction here are the *physical* syringe, which a scenario may vary.
SYRINGE_MODELS: dict[str, SyringeModel] = {
    # compliance scaled with the stopper area from 0.015 mL/kPa on 50 mL (mid Snijder 2015);
    # glide 0.15 N per mm of bore, break-loose ~2.5x glide after a long rest, stick-slip
    # 0.4 N on 50 mL (docs/simulator.md: ISO 7886-1 force tests, published glide profiles)
    "BD10": SyringeModel("BD10", 10, 14.5, 0.015 * (14.5 / 26.6) ** 2, 2.2, 2.2, 0.22),
    "BD20": SyringeModel("BD20", 20, 19.13, 0.015 * (19.13 / 26.6) ** 2, 2.9, 2.9, 0.29),
    "BD50": SyringeModel("BD50", 50, 26.6, 0.015, 4.0, 4.0, 0.4),
    # a stiff and a soft 50 mL syringe: the ends of the Snijder 2015 range
    "STIFF50": SyringeModel("STIFF50", 50, 26.6, 0.009, 4.0, 4.0, 0.4),
    "SOFT50": SyringeModel("SOFT50", 50, 26.6, 0.021, 4.0, 4.0, 0.4),
}

# Li-ion open-circuit voltage (mV) vs state of charge: a typical 1-cell curve
_OCV = ((0.0, 3000.0), (0.03, 3300.0), (0.08, 3450.0), (0.15, 3580.0), (0.3, 3680.0),
        (0.5, 3760.0), (0.7, 3870.0), (0.85, 4000.0), (1.0, 4170.0))


def _ocv(soc: float) -> float:
    if soc <= 0.0:
        return _OCV[0][1]
    for (s0, v0), (s1, v1) in zip(_OCV, _OCV[1:]):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return _OCV[-1][1]


@dataclass(frozen=True)
class PlantParams:
    """Mechanism, fluid path, sensor and power parameters (sources: docs/simulator.md)."""

    # syringe and drive (CONTEXT §4)
    syringe_ml: float = 50.0
    bore_mm: float = 26.6                 # nominal (the pump's calibration)
    syringe_model: str = ""               # name in SYRINGE_MODELS ("" = by size)
    bore_tol_pct: float = 0.0             # this lot's bore vs nominal (ISO 7886-1 ranges)
    fill_ml: float = 50.0                 # volume in the syringe at the start
    lead_pitch_mm: float = 1.25
    full_steps_per_rev: int = 200
    microsteps: int = 16
    pitch_error_pct: float = 0.05         # actual lead vs nominal (+ = delivers more)
    periodic_error_um: float = 2.0        # once-per-rev lead error amplitude
    backlash_usteps: float = 8.0          # nut play (every reversal)
    slack_usteps: float = 640.0           # pusher to plunger flange at loading (0.25 mm)
    slack_ml: float | None = None         # the same as a volume (overrides slack_usteps)
    encoder: str = "plunger"              # plunger | motor (shaft, before backlash) | none
    primed: bool = False                  # loaded and purged: slack taken up, stopper loaded
    stall_force_n: float = 250.0          # motor pull-out force at standstill
    max_rpm: float = 600.0                # pull-out force falls to 0 here
    # stopper friction and stiffness
    glide_force_n: float | None = None    # None: 0.15 N per mm of bore (4.0 N on 50 mL)
    stiction_delta_n: float | None = None  # static - glide while moving; None: 0.0056 N/mm bore
    breakaway_n: float | None = None      # extra breakaway after a long rest; None: 0.04 N/mm
    friction_var_pct: float = 0.0         # glide friction varies along the barrel by ± this
    friction_period_mm: float = 8.0       # ... with this period of stopper travel
    breakloose_var_pct: float = 0.0       # stick-slip and break-loose excess vary by ± this
                                          # along the barrel (same period, own phase)
    breakaway_tau_s: float = 60.0
    stopper_stiffness_n_mm: float = 200.0
    # fluid path
    compliance_ml_per_mmhg: float | None = None   # syringe (incl. stopper); None: by bore
    line_compliance_ml_per_mmhg: float = 0.0001
    line_resistance_mmhg_s_per_ml: float = 800.0
    vein_mmhg: float = 8.0
    height_cm: float = 0.0                # pump above the patient's vein
    line_volume_to_air_sensor_ml: float = 0.1
    # sensors
    force_noise_n: float = 0.11           # white noise of one force reading, 1 σ
    force_lf_noise_n: float = 0.0         # low-frequency (1st-order, tau below) noise, 1 σ
    force_lf_tau_s: float = 20.0
    force_drift_n_h: float = 0.0          # zero drift (warm-up, temperature), N per hour
    pressure_noise_mmhg: float | None = None   # legacy: only white noise, σ in mmHg on this syringe
    pressure_offset_mmhg: float = 0.0
    adc_bits: int = 12
    force_range_n: float = 150.0
    pressure_max_mmhg: int = 1500
    encoder_counts_per_rev: int = 3200
    air_min_detect_ul: float = 5.0
    # power
    battery_mah: float = 2000.0
    battery_soc: float = 1.0
    mains: bool = True
    idle_ma: float = 80.0
    motor_ma: float = 250.0
    battery_r_ohm: float = 0.15
    brownout_mv: float = 3000.0
    charge_ma: float = 1000.0
    record_every_s: float = 1.0           # gravimetric sample period (virtual time)
    # the patient and the bedside (off by default; hil_sim.bedside)
    bedside: BedsideParams = field(default_factory=BedsideParams)

    @classmethod
    def for_syringe(cls, size_ml: int, **kw) -> PlantParams:
        """Defaults for a 10, 20 or 50 mL syringe (bore from the syringe table)."""
        if int(size_ml) not in SYRINGES:
            raise ValueError(f"no syringe of {size_ml} mL (have {sorted(SYRINGES)})")
        kw.setdefault("fill_ml", float(size_ml))
        return cls(syringe_ml=float(size_ml), bore_mm=SYRINGES[int(size_ml)], **kw)

    @classmethod
    def for_model(cls, name: str, **kw) -> PlantParams:
        """Defaults for a syringe model of `SYRINGE_MODELS` (bore, compliance, friction)."""
        m = SYRINGE_MODELS.get(name)
        if m is None:
            raise ValueError(f"no syringe model {name!r} (have {sorted(SYRINGE_MODELS)})")
        kw.setdefault("fill_ml", float(m.size_ml))
        kw.setdefault("compliance_ml_per_mmhg", m.compliance_ml_kpa * KPA_PER_MMHG)
        kw.setdefault("glide_force_n", m.glide_n)
        kw.setdefault("breakaway_n", m.breakloose_n)
        kw.setdefault("stiction_delta_n", m.stick_n)
        return cls(syringe_ml=float(m.size_ml), bore_mm=m.bore_mm, syringe_model=m.name, **kw)

    def with_(self, **kw) -> PlantParams:
        return replace(self, **kw)

    # -- derived
    @property
    def usteps_per_rev(self) -> int:
        return self.full_steps_per_rev * self.microsteps

    @property
    def area_mm2(self) -> float:
        """Nominal plunger area (the syringe table's bore)."""
        return math.pi * (self.bore_mm / 2.0) ** 2

    @property
    def true_area_mm2(self) -> float:
        """This lot's plunger area (the bore with its tolerance)."""
        return math.pi * (self.bore_mm * (1.0 + self.bore_tol_pct / 100.0) / 2.0) ** 2

    @property
    def slack_u(self) -> float:
        if self.slack_ml is not None:
            return self.slack_ml / (self.nominal_nl_per_ustep * 1e-6)
        return float(self.slack_usteps)

    @property
    def white_noise_n(self) -> float:
        if self.pressure_noise_mmhg is not None:
            return self.pressure_noise_mmhg * self.n_per_mmhg
        return self.force_noise_n

    @property
    def noise_mmhg(self) -> float:
        """σ of one reading's white noise, as mmHg on this syringe (force ÷ area)."""
        return self.white_noise_n / self.n_per_mmhg

    @property
    def nominal_nl_per_ustep(self) -> float:
        """Volume per µstep the firmware assumes (nominal geometry): 217.078 nL for 50 mL."""
        return self.area_mm2 * self.lead_pitch_mm / self.usteps_per_rev * 1000.0

    @property
    def nl_per_kstep(self) -> int:
        """The board calibration the firmware gets (nL per 1000 µsteps, nominal)."""
        return int(round(self.nominal_nl_per_ustep * 1000))

    @property
    def ml_per_ustep(self) -> float:
        """Volume the plunger displaces per µstep on average (pitch error, bore tolerance)."""
        return (self.nominal_nl_per_ustep * 1e-6 * (1.0 + self.pitch_error_pct / 100.0)
                * self.true_area_mm2 / self.area_mm2)

    @property
    def syringe_compliance(self) -> float:
        if self.compliance_ml_per_mmhg is not None:
            return self.compliance_ml_per_mmhg
        # 0.015 mL/kPa for 50 mL (mid Snijder 2015), scaled with the stopper area
        return 0.015 * KPA_PER_MMHG * (self.bore_mm / _REF_BORE) ** 2

    @property
    def total_compliance(self) -> float:
        """What a closed line shows: dP/dt = Q / total_compliance (mL/mmHg)."""
        return self.syringe_compliance + self.line_compliance_ml_per_mmhg

    @property
    def glide_n(self) -> float:
        return self.glide_force_n if self.glide_force_n is not None else 0.15 * self.bore_mm

    @property
    def stiction_n(self) -> float:
        return self.stiction_delta_n if self.stiction_delta_n is not None else 0.0056 * self.bore_mm

    @property
    def breakaway_excess_n(self) -> float:
        return self.breakaway_n if self.breakaway_n is not None else 0.04 * self.bore_mm

    @property
    def n_per_mmhg(self) -> float:
        """Axial force of 1 mmHg on the stopper (N)."""
        return self.area_mm2 * 1e-6 * PA_PER_MMHG

    @property
    def mm_per_ustep(self) -> float:
        return self.lead_pitch_mm / self.usteps_per_rev

    @property
    def tau_s(self) -> float:
        return self.total_compliance * self.line_resistance_mmhg_s_per_ml

    @property
    def sensor_lsb_mmhg(self) -> float:
        return self.force_range_n / (1 << self.adc_bits) / self.n_per_mmhg


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
    """The syringe pump's mechanics, fluid path and power, integrated in virtual time (ms)."""

    def __init__(self, params: PlantParams | None = None, seed: int = 0) -> None:
        self.params = p = params or PlantParams()
        self.seed = seed
        self._rng_pressure = random.Random(f"{seed}:plant:pressure")
        self._rng_mech = random.Random(f"{seed}:plant:mechanism")
        self._fric_phase = self._rng_mech.uniform(0.0, 2.0 * math.pi)
        self._bl_phase = self._rng_mech.uniform(0.0, 2.0 * math.pi)   # drawn after: old seeds keep theirs
        self.bedside = Bedside(p.bedside, seed, p.height_cm)
        self._lf_n = 0.0                 # low-frequency force noise (N), first-order process
        self._lf_t = 0.0
        self._drift_n = 0.0
        self._r_from = self._r_to = 1.0  # line resistance multiplier ramp (partial occlusion)
        self._r_t0 = self._r_t1 = 0.0
        self._v_off = 0.0                # venous offset now (bedside), mmHg
        self.t_ms: float = 0.0
        # mechanism state (u = nominal µstep of travel)
        self.commanded: float = 0.0      # µsteps the controller issued (net)
        self.motor: float = 0.0          # rotor position, µsteps (missed steps excluded)
        self.missed: float = 0.0         # µsteps lost to overload or stall
        self.nut: float = 0.0            # nut position after backlash, µsteps of rotation
        self.pusher: float = 0.0         # pusher (carriage) travel, u
        self.plunger: float = 0.0        # plunger flange travel, u (0 until the slack is gone)
        self.engaged: bool = p.slack_u <= 0
        self.stopper: float = 0.0        # stopper sealing-rim travel, u
        self._rest_ms: float = 1e12      # time the stopper has been at rest
        self.at_end: bool = False
        # fluid
        self.pressure: float = p.vein_mmhg            # barrel pressure
        self.line_pressure: float = p.vein_mmhg
        self.delivered_ml: float = 0.0   # out of the line into the patient
        self.occluded: bool = False      # downstream
        self.occluded_up: bool = False   # upstream (syringe tip)
        self._height_now: float = p.height_cm
        # switches, faults
        self.door_open: bool = False
        self.stall: bool = False
        self.runaway: bool = False
        self.runaway_ml_h: float = 100.0
        self.encoder_stuck: int | None = None
        self.sensor_stuck: int | None = None
        self.sensor_drift_mmhg_min: float = 0.0
        self._drift: float = 0.0
        self.enable: int = 0             # motor driver enable (from the firmware)
        # air: [start, end) of each bubble in delivered-volume coordinates at the sensor
        self._bubbles: list[list[float]] = []
        self.air_delivered_ml: float = 0.0
        self._air_forced: bool | None = None
        # power
        self.mains: bool = p.mains
        self.soc: float = p.battery_soc
        self._batt_override: int | None = None
        self.powered: bool = True
        self.record = Record()
        self._init_constants()
        self._s0 = 0.0
        if p.primed:
            # a purge took up the slack and loaded the stopper spring to the glide force
            self.engaged = True
            self.nut = self.motor = p.slack_u / self._lead
            self.pusher = self._slack = self.nut * self._lead + self._per * math.sin(self._w * self.nut)
            self._s0 = self.stopper = -(self._Fk + self._An * self.pressure) / self._k
            self._stroke += self._s0
        self._exp_dt = -1.0
        self._exp_val = 0.0
        self._eg: dict[float, tuple[float, float]] = {}
        self._windows: list[list[float]] = []   # [t_end_ms, µsteps per ms] still running
        self._rec_every_ms = p.record_every_s * 1000.0
        self._next_rec_ms = self._rec_every_ms
        self._rec_motor = 0.0
        self._pv_now = self._Pv
        self._update_pv()

    def _init_constants(self) -> None:
        p = self.params
        ratio = p.true_area_mm2 / p.area_mm2
        self._a = p.nominal_nl_per_ustep * 1e-6 * ratio   # mL per u of stopper travel (this lot)
        self._k = p.stopper_stiffness_n_mm * p.mm_per_ustep   # N per u
        self._An = p.n_per_mmhg * ratio                   # N per mmHg on this lot's stopper
        self._An_nom = p.n_per_mmhg                       # what the pump divides the force by
        c_stopper = self._An / self._k * self._a          # mL/mmHg of the stopper spring
        self._Cs = max(p.syringe_compliance - c_stopper, 0.05 * p.syringe_compliance)
        self._Cl = p.line_compliance_ml_per_mmhg
        self._R = self._R0 = p.line_resistance_mmhg_s_per_ml
        self._Pv = p.vein_mmhg
        self._lead = 1.0 + p.pitch_error_pct / 100.0
        self._per = p.periodic_error_um / 1000.0 / p.mm_per_ustep   # u
        self._w = 2.0 * math.pi / p.usteps_per_rev
        self._slack = float(p.slack_u)
        self._backlash = float(p.backlash_usteps)
        self._Fk = self._Fk0 = p.glide_n
        self._fvar = p.friction_var_pct / 100.0 * p.glide_n
        self._fw = 2.0 * math.pi * p.mm_per_ustep / p.friction_period_mm if p.friction_period_mm > 0 else 0.0
        self._dF = self._dF0 = p.stiction_n
        self._Fb = self._Fb0 = p.breakaway_excess_n
        self._bvar = p.breakloose_var_pct / 100.0
        self._tau_b = p.breakaway_tau_s * 1000.0
        self._stroke = p.fill_ml / self._a                # u of stopper travel to the end
        self._stick_u = max(self._dF / self._k, 1e-9)
        self._fmax = p.stall_force_n
        self._rpm_per_ustep_ms = 60000.0 / p.usteps_per_rev
        self._enc_per_u = p.encoder_counts_per_rev / p.usteps_per_rev
        self._lsb_n = p.force_range_n / (1 << p.adc_bits)
        self._wn = p.white_noise_n
        self._enc_mode = {"plunger": 0, "motor": 1, "none": 2}.get(p.encoder)
        if self._enc_mode is None:
            raise ValueError(f"encoder must be plunger, motor or none, not {p.encoder!r}")

    # ------------------------------------------------------------------ derived values
    @property
    def height_cm(self) -> float:
        """Pump height above the cannula now (cm)."""
        return self.bedside.height_cm(self.t_ms)

    @height_cm.setter
    def height_cm(self, cm: float) -> None:
        self.set_height(cm)

    def set_height(self, cm: float, ramp_s: float = 0.0) -> None:
        """Move the pump to `cm` above the cannula (negative: below), as a step or a ramp."""
        self.bedside.set_height(self.t_ms, cm, ramp_s)
        self._update_pv()

    def set_resistance(self, factor: float, ramp_s: float = 0.0) -> None:
        """Partial occlusion: the line resistance goes to `factor` × its nominal value,
        linearly over ramp_s (a kinking or clotting line); 1 is an open line."""
        if factor <= 0:
            raise ValueError("resistance factor must be > 0")
        self._r_from = self._R / self._R0
        self._r_to = float(factor)
        self._r_t0 = self.t_ms
        self._r_t1 = self.t_ms + max(0.0, ramp_s) * 1000.0
        self._update_r()

    def _update_r(self) -> None:
        t = self.t_ms
        if t >= self._r_t1:
            f = self._r_to
        else:
            f = self._r_from + (self._r_to - self._r_from) * (t - self._r_t0) / (self._r_t1 - self._r_t0)
        r = self._R0 * f
        if r != self._R:
            self._R = r
            self._eg.clear()
            self._exp_dt = -1.0

    def _update_pv(self) -> None:
        """The pressure the line drains into now: vein + bedside − hydrostatic head."""
        b = self.bedside
        self._height_now = h = b.height_cm(self.t_ms)
        self._v_off = b.offset_mmhg(self.t_ms) if b.active else 0.0
        self._pv_now = self._Pv + self._v_off - h * MMHG_PER_CM_H2O

    @property
    def C(self) -> float:
        """Fluid compliance now (mL/mmHg): the syringe's while the tip is occluded."""
        return self._Cs if self.occluded_up else self._Cs + self._Cl

    @property
    def displaced_ml(self) -> float:
        """Volume pushed out of the barrel (delivered + stored in the compliance)."""
        return (self.stopper - self._s0) * self._a

    @property
    def remaining_ml(self) -> float:
        return max(0.0, self.params.fill_ml - self.displaced_ml)

    @property
    def force_n(self) -> float:
        """Force between plunger rod and stopper (what the force sensor carries)."""
        if not self.engaged:
            return 0.0
        return self._k * (self.plunger - self.stopper)

    @property
    def air(self) -> bool:
        if self._air_forced is not None:
            return self._air_forced
        v = self.delivered_ml
        for b in self._bubbles:
            if b[0] <= v < b[1]:
                return True
        return False

    def air_edge_near(self, ml: float) -> bool:
        """A bubble's front or back is within `ml` of the air sensor (delivered volume)."""
        v = self.delivered_ml
        for b in self._bubbles:
            if -ml <= b[0] - v <= ml or -ml <= b[1] - v <= ml:
                return True
        return False

    @air.setter
    def air(self, on: bool | None) -> None:
        """Force the air sensor (True/False) or give it back to the bubbles (None)."""
        self._air_forced = on

    @property
    def battery_mv(self) -> int:
        if self._batt_override is not None:
            return self._batt_override
        p = self.params
        i = p.idle_ma + (p.motor_ma if self.enable else 0.0)
        return int(_ocv(self.soc) - (0.0 if self.mains else i * p.battery_r_ohm))

    @battery_mv.setter
    def battery_mv(self, mv: int | None) -> None:
        """Force the battery reading (None: back to the discharge model)."""
        self._batt_override = None if mv is None else int(mv)

    # ------------------------------------------------------------------ sensors
    def sensors(self) -> tuple[int, int, int, int]:
        """One sensor reading: (pressure mmHg, encoder count, flags, battery mV)."""
        p = self.params
        if self.sensor_stuck is not None:
            press = self.sensor_stuck
        else:
            # the force sensor carries the rod's force; the pump tares the nominal glide force
            # and divides by the nominal plunger area. Noise, low-frequency noise and drift
            # are forces; the ADC is bipolar (a pull reads negative).
            rng = self._rng_pressure
            dt = self.t_ms - self._lf_t
            self._lf_t = self.t_ms
            legacy = p.pressure_noise_mmhg is not None
            if p.force_lf_noise_n and dt > 0 and not legacy:
                e = math.exp(-dt / (p.force_lf_tau_s * 1000.0))
                self._lf_n = self._lf_n * e + p.force_lf_noise_n * math.sqrt(1.0 - e * e) * rng.gauss(0.0, 1.0)
            f = (self.force_n - self._Fk0) if self.engaged else 0.0
            if not legacy:
                f += self._lf_n + p.force_drift_n_h * self.t_ms / 3.6e6
            if self._wn:
                f += rng.gauss(0.0, self._wn)
            f = round(f / self._lsb_n) * self._lsb_n
            v = f / self._An_nom + p.pressure_offset_mmhg + self._drift
            press = int(round(v))
            if press < -p.pressure_max_mmhg:
                press = -p.pressure_max_mmhg
            elif press > p.pressure_max_mmhg:
                press = p.pressure_max_mmhg
        if self.encoder_stuck is not None:
            enc = self.encoder_stuck
        elif self._enc_mode == 0:
            enc = math.floor(self.plunger * self._enc_per_u + 1e-9)
        elif self._enc_mode == 1:
            enc = math.floor(self.motor * self._enc_per_u + 1e-9)
        else:
            enc = 0
        flags = ((FLAG_DOOR if self.door_open else 0) | (FLAG_AIR if self.air else 0)
                 | (FLAG_END if self.at_end else 0) | (0 if self.mains else FLAG_BATTERY))
        return press, enc, flags, self.battery_mv

    # ------------------------------------------------------------------ faults / inputs
    def set_occluded(self, on: bool, where: str = "down") -> None:
        if where == "up":
            if self.occluded_up and not on:
                # the charged syringe meets the relaxed line
                self.pressure = ((self._Cs * self.pressure + self._Cl * self.line_pressure)
                                 / (self._Cs + self._Cl))
            elif on and not self.occluded_up:
                self.line_pressure = self.pressure
            self.occluded_up = bool(on)
        else:
            self.occluded = bool(on)

    def add_bubble(self, ul: float) -> None:
        """An air bubble of ``ul`` µL leaves the syringe tip now; it reaches the air sensor
        after the line volume to the sensor has been delivered and is seen while it passes
        (bubbles under ``air_min_detect_ul`` pass unseen)."""
        ml = ul / 1000.0
        if ul >= self.params.air_min_detect_ul:
            start = self.delivered_ml + self.params.line_volume_to_air_sensor_ml
            self._bubbles.append([start, start + ml])
        self.air_delivered_ml += ml

    def set_empty(self) -> None:
        """The syringe is (nearly) empty: only what the stopper has already travelled."""
        self._stroke = self.stopper + 1e-6

    def set_fill(self, ml: float) -> None:
        self._stroke = self.stopper + ml / self._a
        self.at_end = False

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
            while dt_ms > 0:          # keep the record and the battery sampled
                d = min(dt_ms, 1000.0)
                self._span(d, 0)
                dt_ms -= d

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
        """Advance dt_ms with the controller commanding dm µsteps at a constant rate."""
        if self.bedside.active or self.bedside.moving:
            self._update_pv()
        if self._r_t1 >= self.t_ms or self._R != self._R0 * self._r_to:
            self._update_r()
        if self._fvar:
            # glide friction along the barrel (lubricant, moulding): at the stopper's place
            self._Fk = self._Fk0 + self._fvar * math.sin(self._fw * self.stopper + self._fric_phase)
        if self._bvar:
            # ... and the static excess over glide (stick-slip, break-loose), CONTEXT §8
            f = 1.0 + self._bvar * math.sin(self._fw * self.stopper + self._bl_phase)
            self._dF = self._dF0 * f
            self._Fb = self._Fb0 * f
            self._stick_u = max(self._dF / self._k, 1e-9)
        self.commanded += dm
        self._rec_motor += dm
        if not self.powered:
            dm = 0.0
        elif self.runaway and self.enable:
            dm = self.runaway_ml_h / 3600.0 / self._a * dt_ms / 1000.0
        if dm:
            # the motor's pull-out force falls with speed; above it the steps are missed
            if self.stall:
                self.missed += dm
                dm = 0.0
            elif dm > 0:
                rpm = dm / dt_ms * self._rpm_per_ustep_ms
                fmax = self._fmax * (1.0 - rpm / self.params.max_rpm) if rpm < self.params.max_rpm else 0.0
                if self.force_n > fmax:
                    self.missed += dm
                    dm = 0.0
        if dm:
            self.motor += dm
            # nut dead band
            nut = self.nut
            m = self.motor
            if m > nut:
                nut = m
            elif m < nut - self._backlash:
                nut = m + self._backlash
            dn = nut - self.nut
            self.nut = nut
        else:
            dn = 0.0
        if dn:
            c_new = nut * self._lead + self._per * math.sin(self._w * nut)
            dc = c_new - self.pusher
            self.pusher = c_new
            if not self.engaged:
                over = c_new - self._slack
                if over > 0.0:
                    self.engaged = True
                    f = (dc - over) / dc if dc > 0 else 0.0
                    self._stopper_flow(dt_ms * f, 0.0)
                    self._stopper_flow(dt_ms * (1.0 - f), over)
                else:
                    self._stopper_flow(dt_ms, 0.0)
            else:
                self._stopper_flow(dt_ms, dc)
        else:
            self._stopper_flow(dt_ms, 0.0)
        if not self.mains:
            p = self.params
            i = p.idle_ma + (p.motor_ma if self.enable else 0.0)
            self.soc -= i * dt_ms / 3.6e6 / p.battery_mah
            if self.soc < 0.0:
                self.soc = 0.0
            if self.powered and self._batt_override is None and self.battery_mv < p.brownout_mv:
                self.powered = False
        elif self.soc < 1.0:
            self.soc = min(1.0, self.soc + self.params.charge_ma * dt_ms / 3.6e6 / self.params.battery_mah)
        if self.sensor_drift_mmhg_min:
            self._drift += self.sensor_drift_mmhg_min * dt_ms / 60000.0
        if self.t_ms >= self._next_rec_ms - 1e-9:
            self._sample()

    def _stopper_flow(self, dt_ms: float, dd: float) -> None:
        """The plunger moves dd u over dt_ms: stopper stick–slip, then the fluid path."""
        if dt_ms <= 0.0:
            self.plunger += dd
            return
        if not self.engaged:
            # a free plunger: only a siphon (negative barrel pressure) can pull it forward,
            # opening the gap to the pusher
            f = -self._An * self.pressure
            ds = 0.0
            if f > self._Fk + self._dF:
                ds = (f - self._Fk) / (self._An * self._a / self.C)
                self.stopper += ds
                self.plunger += ds
                self._slack += ds
            self._flow(dt_ms, ds)
            return
        n = 1
        if self._dF > 0.0 and dd:
            # at most one stick phase per sub-step
            n = int(abs(dd) / self._stick_u) + 1
            if n > 8:
                n = 8
        dts = dt_ms / n
        ddn = dd / n
        k = self._k
        An = self._An
        fs0 = self._Fk + self._dF
        for _ in range(n):
            self.plunger += ddn
            s = self.stopper
            f = k * (self.plunger - s) - An * self.pressure
            fs = fs0
            if self._Fb and self._rest_ms:
                fs += self._Fb * (1.0 - math.exp(-self._rest_ms / self._tau_b))
            ds = 0.0
            if f > fs or f < -fs:
                # slip to where spring, pressure at the end of the sub-step and glide friction
                # balance: P_end = P·e + (1 − e)·Pv' + g·ds, linear in ds
                if self.occluded or self.occluded_up:
                    e, g = 1.0, self._a / self.C
                else:
                    eg = self._eg.get(dts)
                    if eg is None:
                        C = self._Cs + self._Cl
                        e = math.exp(-dts / (C * self._R * 1000.0))
                        eg = self._eg[dts] = (e, (1.0 - e) * self._R * self._a * 1000.0 / dts)
                    e, g = eg
                pv = self._pv_now
                fe = k * (self.plunger - s) - An * (self.pressure * e + (1.0 - e) * pv)
                fk = self._Fk if f > 0 else -self._Fk
                ds = (fe - fk) / (k + An * g)
                if (f > 0) != (ds > 0):
                    ds = 0.0
            if ds:
                if s + ds > self._stroke:
                    ds = self._stroke - s
                    self.at_end = True
                self.stopper = s + ds
                self._rest_ms = 0.0
            else:
                self._rest_ms += dts
            self._flow(dts, ds)

    def _flow(self, dt_ms: float, ds: float) -> None:
        """Fluid path over dt_ms while the stopper displaces ds u at a constant rate."""
        dv = ds * self._a                        # mL displaced
        p = self.pressure
        if self.occluded or self.occluded_up:
            self.pressure = p + dv / self.C
            if self.occluded_up and not self.occluded:
                # the line drains into the vein on its own
                lp = self.line_pressure
                pv = self._pv_now
                lpn = pv + (lp - pv) * math.exp(-dt_ms / (self._Cl * self._R * 1000.0))
                self.delivered_ml += self._Cl * (lp - lpn)
                self.line_pressure = lpn
        else:
            C = self._Cs + self._Cl
            if dt_ms != self._exp_dt:
                self._exp_dt = dt_ms
                self._exp_val = math.exp(-dt_ms / (C * self._R * 1000.0))
            pv = self._pv_now
            p_ss = pv + dv * 1000.0 / dt_ms * self._R   # Pv + Q·R
            pn = p_ss + (p - p_ss) * self._exp_val
            self.pressure = pn
            self.line_pressure = pn
            self.delivered_ml += dv - C * (pn - p)
        self.t_ms += dt_ms

    def _sample(self) -> None:
        rec = self.record
        period_s = self._rec_every_ms / 1000.0
        rec.t_s.append(self.t_ms / 1000.0)
        rec.delivered_ml.append(self.delivered_ml)
        rec.pressure_mmhg.append(self.pressure)
        rec.cmd_ml_h.append(self._rec_motor * self._a * 3600.0 / period_s)
        self._rec_motor = 0.0
        while self._next_rec_ms <= self.t_ms + 1e-9:
            self._next_rec_ms += self._rec_every_ms
