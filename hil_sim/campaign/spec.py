"""Campaign specs: the strict schema of ``hil_sim/campaigns/*.toml`` (pydantic, unknown keys refused).

A spec states *distributions*: over the patient (weight, PK model and its parameters, BP/HR
response, hypertension onset), the syringe model and the mechanism (any `PlantParams` field),
the program (drug-library forms, inside and outside the library's limits, or plain rates),
disturbances that must not cause an alarm, at most one fault per run (every fault
`hil_sim.cosim.FAULTS` knows, with its onset) and the runtime. `hil_sim.campaign.draw` turns
(spec, campaign seed, run index) into one ordinary scenario. The format is documented with an
example in docs/simulator.md ("Campaigns").

A distribution is a bare value (a constant) or a table with ``dist``:
``{dist="uniform", low, high}``, ``{dist="loguniform", low, high}``,
``{dist="normal", mean, sd, low?, high?}`` (clipped), ``{dist="choice", values, weights?}``,
``{dist="bernoulli", p}``, ``{dist="int", low, high}`` (inclusive).
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hil_sim.cosim import FAULTS
from hil_sim.patient import PK_MODELS, PatientParams
from hil_sim.bedside import BedsideParams
from hil_sim.plant import SYRINGE_MODELS, SYRINGES, PlantParams

CAMPAIGN_DIR = Path(__file__).resolve().parent.parent / "campaigns"


class SpecError(ValueError):
    """The campaign spec is malformed (the message names the field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Scalar = Union[bool, int, float, str]


class Uniform(_Strict):
    dist: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            raise ValueError("uniform: high < low")
        return self


class LogUniform(_Strict):
    dist: Literal["loguniform"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self):
        if self.high < self.low:
            raise ValueError("loguniform: high < low")
        return self


class Normal(_Strict):
    dist: Literal["normal"]
    mean: float
    sd: float = Field(ge=0)
    low: float | None = None
    high: float | None = None


class Choice(_Strict):
    dist: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self):
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("choice: weights and values differ in length")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("choice: weights must be >= 0 with a positive sum")
        return self


class Bernoulli(_Strict):
    dist: Literal["bernoulli"]
    p: float = Field(ge=0, le=1)


class IntRange(_Strict):
    dist: Literal["int"]
    low: int
    high: int


Dist = Union[Scalar, Annotated[Union[Uniform, LogUniform, Normal, Choice, Bernoulli, IntRange],
                               Field(discriminator="dist")]]

_PLANT_FIELDS = {f.name for f in dataclasses.fields(PlantParams)} - {"bedside", "syringe_model"}
_BEDSIDE_FIELDS = {f.name for f in dataclasses.fields(BedsideParams)}
_PATIENT_FIELDS = {f.name for f in dataclasses.fields(PatientParams)} - {"weight_kg", "model", "hypertensive"}
#: faults a run may get as its one fault; disturbances are the rest (they need no alarm)
DISTURBANCES = {"height_cm", "link_drop", "link_corrupt", "link_delay", "sensor_drift", "mains",
                "battery_soc"}


def _only_known(kind: str, known: set[str]):
    """A field validator: the dict's keys must be names in ``known`` (the model's fields)."""
    def check(cls, v):
        bad = set(v) - known
        if bad:
            raise ValueError(f"unknown {kind} parameter(s) {sorted(bad)}; known: {sorted(known)}")
        return v
    return classmethod(check)


RUNTIMES = ("cpython", "micropython")
REGIONS = ("inside", "soft", "hard")
FORMS = ("rate", "dose", "dose_rate", "loading", "steps")


class CampaignMeta(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    runs: int = Field(100, ge=1, le=10_000_000)
    #: one runtime, or a distribution over them (``{dist="choice", values=[...], weights}``)
    runtime: Union[Literal["cpython", "micropython"], Choice] = "cpython"
    controller: Literal["firmware", "baseline"] = "firmware"


class PatientSpec(_Strict):
    p: float = Field(1.0, ge=0, le=1)          # share of runs with a patient (and a monitor)
    weight_kg: Dist = 70.0
    model: Dist = "clements"
    hypertensive: Dist = False                  # a hypertensive responder from the start
    monitor_period_s: Dist = 60
    interlock: Dist = True                      # CFG interlock=1 (vitals pause the infusion)
    params: dict[str, Dist] = Field(default_factory=dict)   # PatientParams fields

    _known = field_validator("params")(_only_known("patient", _PATIENT_FIELDS))


class PumpSpec(_Strict):
    syringe_ml: Dist = 50
    syringe_model: Dist | None = None           # a name in plant.SYRINGE_MODELS (sets the size)
    fill_frac: Dist = 1.0                       # fill as a share of the syringe size
    primed: Dist = True
    occl_mmhg: Dist | None = None               # CFG occl_mmhg (None: the pump's default)
    params: dict[str, Dist] = Field(default_factory=dict)   # PlantParams fields
    bedside: dict[str, Dist] = Field(default_factory=dict)  # BedsideParams fields (hil_sim.bedside)

    _known = field_validator("params")(_only_known("plant", _PLANT_FIELDS))
    _known_bedside = field_validator("bedside")(_only_known("bedside", _BEDSIDE_FIELDS))


class ProgramSpec(_Strict):
    """One program form; a run draws one form by ``weight``.

    ``form = "rate"``: ``rate_ml_h`` and ``vtbi_ml`` (clipped to the fill).
    The drug forms take a ``drug`` of the library and a ``region`` where the drawn value
    falls: ``inside`` (inside the soft limits), ``soft`` (between a soft and a hard limit,
    sent with confirm=1), ``hard`` (beyond a hard limit: the pump must refuse it) — each a
    distribution (a choice of the three):

    ``form = "dose"``: a dose over a time (``dose_ug_kg``, ``over_min`` limits).
    ``form = "dose_rate"``: a continuous dose (``dose_ug_kg_h`` limits) for a maintenance
    volume ``vtbi_ml`` (clipped to the fill and the run's cap).
    ``form = "loading"``: a loading dose (``dose_ug_kg`` over ``over_min`` limits) and then a
    dose rate as above; ``region`` puts one of the three values there.
    ``form = "steps"``: ``n_steps`` steps, each at a ``rate_ml_h`` for ``vtbi_ml``/n; a
    ``drug`` (or "none") caps the rates at its ``rate_ml_h_max``; ``region`` is ``inside``
    or ``hard`` (one step above the cap: the library has no soft rate limit).

    ``dose_rate``, ``loading`` and ``steps`` send ``kvo_ml_h`` (a distribution, default 0:
    no KVO, the run ends in COMPLETE like the other forms); a KVO rate keeps the vein open
    after the VTBI at min(KVO, the last rate); above the drug's library KVO (remifentanil: 0)
    the pump must refuse the program (region ``hard``, limit ``kvo``)."""
    weight: float = Field(1.0, ge=0)
    form: Literal["rate", "dose", "dose_rate", "loading", "steps"]
    rate_ml_h: Dist = 10.0
    vtbi_ml: Dist = 5.0
    drug: Dist = "ketamine"
    region: Dist = "inside"
    n_steps: Dist = 3
    kvo_ml_h: Dist = 0

    @model_validator(mode="after")
    def _values(self):
        from hil_sim.campaign.draw import _library
        lib = _library()
        for r in _choice_values(self.region):
            ok = ("inside", "hard") if self.form == "steps" else REGIONS
            if r not in ok:
                raise ValueError(f"program form {self.form!r}: region {r!r} not one of {list(ok)}")
        if self.form in ("dose", "dose_rate", "loading", "steps"):
            for name in _choice_values(self.drug):
                if name == "none" and self.form == "steps":
                    continue
                if name not in lib:
                    raise ValueError(f"program form {self.form!r}: drug {name!r} not in the "
                                     f"library ({sorted(lib)})")
                if self.form in ("dose_rate", "loading") and "dose_ug_kg_h" not in lib[name]:
                    raise ValueError(f"program form {self.form!r}: drug {name!r} has no "
                                     f"continuous-dose limits (dose_ug_kg_h)")
        if self.form in ("rate", "dose") and self.kvo_ml_h != 0:
            raise ValueError(f"program form {self.form!r}: kvo_ml_h is drawn for dose_rate, "
                             "loading and steps only")
        if self.form == "steps":
            for n in _choice_values(self.n_steps):
                if not (isinstance(n, int) and 1 <= n <= 8):
                    raise ValueError(f"program form 'steps': n_steps {n!r} not 1..8")
            if isinstance(self.n_steps, IntRange) and not (1 <= self.n_steps.low <= self.n_steps.high <= 8):
                raise ValueError("program form 'steps': n_steps must lie in 1..8")
        return self


class EventSpec(_Strict):
    """A fault (one per run, drawn by ``weight``) or a disturbance (each drawn with ``p``)."""
    name: str
    weight: float = Field(1.0, ge=0)            # faults only
    p: float = Field(1.0, ge=0, le=1)           # disturbances only
    onset_frac: Dist = 0.3                      # onset as a share of the program's duration ...
    onset_s: Dist | None = None                 # ... or in seconds after the start
    value: Dist = True
    clear_after_s: Dist | None = None           # then the fault is removed (value False / 0)
    ramp_s: Dist | None = None                  # height_cm, resistance: change over N s

    @field_validator("name")
    @classmethod
    def _known(cls, v):
        if v != "none" and v not in FAULTS:
            raise ValueError(f"unknown fault {v!r}; known: {sorted(FAULTS)} or 'none'")
        return v


class HostSpec(_Strict):
    heartbeat_s: Dist = 5
    hb_ms: Dist = 0                             # CFG hb_ms (0: no communication-loss watch)
    hb_action: Dist = "pause"


class RunSpec(_Strict):
    settle_s: float = Field(60.0, ge=0)         # after the program's end, or after the fault's deadline
    max_s: float = Field(4 * 3600.0, gt=0)      # cap on one run's virtual time


class CampaignSpec(_Strict):
    campaign: CampaignMeta
    patient: PatientSpec | None = None
    pump: PumpSpec = PumpSpec()
    program: list[ProgramSpec] = Field(min_length=1)
    faults: list[EventSpec] = Field(default_factory=lambda: [EventSpec(name="none")])
    disturbances: list[EventSpec] = Field(default_factory=list)
    host: HostSpec = HostSpec()
    run: RunSpec = RunSpec()

    @model_validator(mode="after")
    def _checks(self):
        for r in _choice_values(self.campaign.runtime):
            if r not in RUNTIMES:
                raise ValueError(f"campaign.runtime: {r!r} not one of {list(RUNTIMES)}")
        if sum(p.weight for p in self.program) <= 0:
            raise ValueError("program: weights must have a positive sum")
        if sum(f.weight for f in self.faults) <= 0:
            raise ValueError("faults: weights must have a positive sum")
        for d in self.disturbances:
            if d.name == "none":
                raise ValueError("disturbances: 'none' is not a disturbance")
        for name in _choice_values(self.pump.syringe_ml):
            if int(name) not in SYRINGES:
                raise ValueError(f"pump.syringe_ml: {name} not one of {sorted(SYRINGES)}")
        if self.pump.syringe_model is not None:
            for name in _choice_values(self.pump.syringe_model):
                if name not in SYRINGE_MODELS:
                    raise ValueError(f"pump.syringe_model: {name!r} not one of {sorted(SYRINGE_MODELS)}")
        if self.patient is not None:
            for m in _choice_values(self.patient.model):
                if m not in PK_MODELS:
                    raise ValueError(f"patient.model: {m!r} not one of {sorted(PK_MODELS)}")
        return self


def _choice_values(d) -> list:
    if isinstance(d, Choice):
        return list(d.values)
    if isinstance(d, (Uniform, LogUniform, Normal, Bernoulli, IntRange)):
        return []
    return [d]


def parse(text: str, source: str = "campaign spec") -> CampaignSpec:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{source}: {e}") from None
    return from_dict(raw, source)


def from_dict(raw: dict[str, Any], source: str = "campaign spec") -> CampaignSpec:
    try:
        return CampaignSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()]
        raise SpecError(f"{source}: " + "; ".join(lines)) from None


def load(path_or_name: str | Path) -> CampaignSpec:
    """A spec from a file, or by name from ``hil_sim/campaigns``."""
    p = Path(path_or_name)
    if not p.exists():
        cand = CAMPAIGN_DIR / (str(path_or_name) + ("" if str(path_or_name).endswith(".toml") else ".toml"))
        if not cand.exists():
            raise FileNotFoundError(f"no campaign spec {path_or_name!r} (file or name in {CAMPAIGN_DIR})")
        p = cand
    return parse(p.read_text(), str(p))
