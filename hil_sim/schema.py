"""The scenario file's schema (pydantic): every key the runner reads, with its type, and
nothing else — a misspelt key (``lastest_s``, ``max_bolus``) is an error naming the file,
the line, the key and the closest known key, instead of a check that silently never runs.

One job: validation and its messages. ``validate(raw, text, path)`` raises
``hil_sim.scenario.ScenarioError``; the runner keeps reading the plain dict. Sections listed
in ``scenario._TOP`` but not modelled here (``[monitor]``, ``[campaign]``: owned and checked by
their own modules) pass through untouched. ``[pump.params]``, ``[pump.bedside]`` and
``[patient.params]`` are checked against the fields of PlantParams, BedsideParams and
PatientParams, so the schema never keeps a second copy of those lists.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fields_of(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(d: dict[str, Any], cls, where: str) -> dict[str, Any]:
    known = _fields_of(cls)
    bad = [k for k in d if k not in known]
    if bad:
        near = difflib.get_close_matches(bad[0], sorted(known), n=1)
        raise ValueError(f"unknown key {bad[0]!r} in {where}"
                         + (f" (did you mean {near[0]!r}?)" if near
                            else f"; known: {', '.join(sorted(known))}"))
    return d


class Meta(_Strict):
    name: str | None = None
    description: str = ""
    runtimes: list[Literal["cpython", "micropython"]] = ["cpython", "micropython"]
    seed: int = 0
    status: Literal["active", "pending"] = "active"
    pending_reason: str | None = None
    controller: Literal["firmware", "baseline"] = "firmware"


class Pump(_Strict):
    syringe_ml: int | None = None
    syringe_model: str | None = None
    fill_ml: float | None = None
    height_cm: float | None = None
    mains: bool | None = None
    battery_soc: float | None = Field(None, ge=0, le=1)
    primed: bool | None = None
    params: dict[str, Any] = {}
    bedside: dict[str, Any] = {}

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        from hil_sim.plant import PlantParams
        return _check_keys(v, PlantParams, "[pump.params]")

    @field_validator("bedside")
    @classmethod
    def _bedside(cls, v: dict[str, Any]) -> dict[str, Any]:
        from hil_sim.bedside import BedsideParams
        return _check_keys(v, BedsideParams, "[pump.bedside]")


class ProgramStep(_Strict):
    """One step of a multi-step program: a rate for a volume or for a time (``STEP i``)."""
    rate_ml_h: float = Field(gt=0)
    vtbi_ml: float | None = Field(None, gt=0)
    over_min: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self) -> "ProgramStep":
        if (self.vtbi_ml is None) == (self.over_min is None):
            raise ValueError("a step needs exactly one of vtbi_ml and over_min")
        return self


class Program(_Strict):
    """Every PROG form of docs/protocol.md, in clinical units; `hil_sim.scenario` turns them
    into wire fields with the host library's conversion (`host.client`):

    * rate: ``rate_ml_h`` [, ``vtbi_ml``];
    * dose over time: ``drug``, ``dose_mg_kg``, ``over_min``;
    * dose rate: ``drug``, ``dose_rate_mg_kg_h`` and one of ``vtbi_ml`` / ``over_min`` (the
      maintenance volume or time), optionally a loading dose ``loading_mg_kg`` over
      ``loading_min``;
    * steps: ``steps = [{rate_ml_h, vtbi_ml | over_min}, ...]`` (1..8) [, ``drug``];

    each with ``weight_kg`` (drug forms), ``confirm`` and ``kvo_ml_h`` (0: no KVO)."""
    drug: str | None = None
    dose_mg_kg: float | None = Field(None, ge=0)
    over_min: float | None = Field(None, gt=0)
    dose_rate_mg_kg_h: float | None = Field(None, ge=0)
    loading_mg_kg: float | None = Field(None, ge=0)
    loading_min: float | None = Field(None, gt=0)
    steps: list[ProgramStep] | None = Field(None, min_length=1, max_length=8)
    kvo_ml_h: float | None = Field(None, ge=0)
    weight_kg: float | None = Field(None, gt=0)
    confirm: bool = False
    rate_ml_h: float | None = Field(None, gt=0)
    vtbi_ml: float | None = Field(None, gt=0)
    conc_mg_ml: float | None = Field(None, gt=0)
    start_at_s: float | None = Field(None, ge=0)
    prog_at_s: float | None = Field(None, ge=0)
    start: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> "Program":
        def given(*keys: str) -> list[str]:
            return [k for k in keys if getattr(self, k) is not None]

        if (self.loading_mg_kg is None) != (self.loading_min is None):
            raise ValueError("a loading dose needs both loading_mg_kg and loading_min")
        if self.loading_mg_kg is not None and self.dose_rate_mg_kg_h is None:
            raise ValueError("a loading dose (loading_mg_kg) is part of a dose-rate program: "
                             "it needs dose_rate_mg_kg_h")
        if self.steps is not None:
            extra = given("rate_ml_h", "vtbi_ml", "dose_mg_kg", "over_min", "dose_rate_mg_kg_h")
            if extra:
                raise ValueError("a steps program gives its rates and volumes per step; "
                                 f"not {', '.join(extra)}")
        elif self.dose_rate_mg_kg_h is not None:
            extra = given("rate_ml_h", "dose_mg_kg")
            if self.drug is None or extra or (self.vtbi_ml is None) == (self.over_min is None):
                raise ValueError("a dose-rate program needs drug, dose_rate_mg_kg_h and exactly "
                                 "one of vtbi_ml and over_min"
                                 + (f" (and no {', '.join(extra)})" if extra else ""))
        elif self.drug is not None:
            missing = [k for k in ("dose_mg_kg", "over_min") if getattr(self, k) is None]
            if missing or self.rate_ml_h is not None:
                raise ValueError("a program by drug needs dose_mg_kg and over_min (and no "
                                 "rate_ml_h)" + (f"; missing {', '.join(missing)}" if missing
                                                 else ""))
        elif self.rate_ml_h is None:
            raise ValueError("a program needs rate_ml_h (and vtbi_ml); or drug, dose_mg_kg "
                             "and over_min; or drug and dose_rate_mg_kg_h; or steps")
        return self


class Patient(_Strict):
    weight_kg: float = Field(70.0, gt=0)
    model: str = "clements"
    hypertensive: bool = False
    monitor_period_s: float = Field(0, ge=0)
    monitor_silent: bool = False
    params: dict[str, Any] = {}

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        from hil_sim.patient import PatientParams
        return _check_keys(v, PatientParams, "[patient.params]")


class Host(_Strict):
    heartbeat_s: float = Field(0, ge=0)
    telemetry_ms: int = Field(0, ge=0)


class Run(_Strict):
    duration_s: float = Field(3600, gt=0)
    until: Literal["duration", "complete"] = "duration"
    settle_s: float = Field(30, ge=0)
    slice_ms: int = Field(200, gt=0)


class Event(BaseModel):
    """A fault (``fault``/``value``, ``where``/``ramp_s``, further faults by name) or a host
    command (``command``/``fields``) at ``at_s``."""
    model_config = ConfigDict(extra="allow")
    at_s: float = Field(ge=0)
    fault: str | None = None
    value: Any = None
    note: str | None = None
    where: Literal["down", "up"] | None = None
    ramp_s: float | None = Field(None, ge=0)
    on: Any = None
    command: str | None = None
    fields: dict[str, Any] | None = None

    @field_validator("fault")
    @classmethod
    def _fault(cls, v: str | None) -> str | None:
        from hil_sim.cosim import FAULTS
        if v is not None and v not in FAULTS:
            near = difflib.get_close_matches(v, list(FAULTS), n=1)
            raise ValueError(f"unknown fault {v!r}" + (f" (did you mean {near[0]!r}?)" if near
                                                       else "")
                             + f"; known: {', '.join(sorted(FAULTS))}")
        return v

    def model_post_init(self, _ctx: Any) -> None:
        from hil_sim.cosim import FAULTS
        for k in (self.model_extra or {}):
            if k not in FAULTS:
                known = sorted(set(Event.model_fields) | set(FAULTS))
                near = difflib.get_close_matches(k, known, n=1)
                raise ValueError(f"unknown key {k!r}" + (f" (did you mean {near[0]!r}?)"
                                                         if near else ""))
        if self.fault is None and self.command is None and not self.model_extra:
            raise ValueError("an event needs a fault or a command")


class AlarmExpect(_Strict):
    name: str
    earliest_s: float = Field(0, ge=0)
    latest_s: float | None = Field(None, ge=0)
    prio: int | None = Field(None, ge=0, le=3)


class Expect(_Strict):
    alarm: list[AlarmExpect] = []
    allow: list[str] = []
    no_other_alarms: bool = True
    no_alarm: list[str] = []
    final_state: str | None = None
    delivered_ml: float | None = Field(None, ge=0)
    delivered_tol_ml: float | None = Field(None, ge=0)
    delivered_tol_pct: float | None = Field(None, ge=0)
    max_delivered_ml: float | None = Field(None, ge=0)
    min_delivered_ml: float | None = Field(None, ge=0)
    max_bolus_ml: float | None = Field(None, ge=0)
    restarts: int | None = Field(None, ge=0)
    max_cp_ng_ml: float | None = Field(None, ge=0)
    cp_ng_ml: tuple[float, float] | None = None


class ScenarioFile(BaseModel):
    """The modelled sections; other sections named in scenario._TOP pass through."""
    model_config = ConfigDict(extra="allow")
    scenario: Meta = Meta()
    pump: Pump = Pump()
    program: Program | None = None
    config: dict[str, int | bool | str] = {}
    patient: Patient | None = None
    host: Host = Host()
    run: Run = Run()
    events: list[Event] = []
    expect: Expect = Expect()


# ------------------------------------------------------------------------ where in the file

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\- ]+?)\s*\]\]?\s*(#.*)?$")


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of ``loc`` (a pydantic error location such as ('events', 2,
    'lastest_s') or ('expect', 'alarm', 0, 'lastest_s')) in the TOML ``text``."""
    lines = text.splitlines()
    headers = []                      # (line index, dotted name, is array)
    for i, ln in enumerate(lines):
        m = _HEADER.match(ln)
        if m:
            headers.append((i, m.group(2).replace(" ", ""), m.group(1) == "[["))
    # the most specific table header on the path (with the array index for [[x]])
    parts = [p for p in loc]
    start, end = 0, len(lines)
    best = None
    for depth in range(len(parts), 0, -1):
        names = [p for p in parts[:depth] if isinstance(p, str)]
        dotted = ".".join(names)
        idx = next((p for p in parts[depth:depth + 1] if isinstance(p, int)), None)
        hits = [h for h in headers if h[1] == dotted]
        if not hits:
            continue
        if hits[0][2] and idx is not None and idx < len(hits):
            best = hits[idx]
        else:
            best = hits[0]
        break
    if best is not None:
        start = best[0]
        later = [h[0] for h in headers if h[0] > start]
        end = later[0] if later else len(lines)
    key = next((p for p in reversed(parts) if isinstance(p, str)), None)
    if key is not None:
        pat = re.compile(r"(^|[\s{,])" + re.escape(key) + r"\s*=")
        for i in range(start + (1 if best is not None else 0), end):
            if pat.search(lines[i].split("#", 1)[0]):
                return i + 1
    return start + 1 if best is not None else None


def _suggest(loc: tuple[Any, ...]) -> str:
    """For an unknown key, the closest key the model knows at that place."""
    model: Any = ScenarioFile
    for p in loc[:-1]:
        if isinstance(p, int):
            continue
        field = getattr(model, "model_fields", {}).get(p)
        if field is None:
            return ""
        ann = field.annotation
        for arg in (getattr(ann, "__args__", None) or (ann,)):
            inner = getattr(arg, "__args__", None)
            cand = inner[0] if inner else arg
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return ""
    known = list(getattr(model, "model_fields", {}))
    near = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def validate(raw: dict[str, Any], text: str, path: Path | None) -> ScenarioFile:
    """Check ``raw`` (the parsed TOML of ``text``); ScenarioError on the first problem:
    ``FILE:LINE: [section] key: what is wrong``."""
    from hil_sim.scenario import ScenarioError
    try:
        return ScenarioFile.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            m = re.search(r"unknown key '([^']+)'", err["msg"])
            line = locate(text, loc + ((m.group(1),) if m else ()))
            where = f"{path or 'scenario'}" + (f":{line}" if line else "")
            dotted = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in loc)[1:]
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + _suggest(loc)
            problems.append(f"{where}: {dotted}: {msg}")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ScenarioError(problems[0] + more + ("\n" + "\n".join(problems[1:])
                                                   if len(problems) > 1 else "")) from None
