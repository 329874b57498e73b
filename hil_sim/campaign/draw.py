"""Drawing one run of a campaign: (spec, campaign seed, index) -> (run seed, scenario).

The run's seed is a hash of the campaign seed and the index (SHA-256, so neighbouring
indices get unrelated streams); every value of the run is drawn from one `random.Random`
seeded with it, in a fixed order, and the scenario's own seed (plant noise, link, vitals) is
the run seed too. So a run depends on nothing but (spec, campaign seed, index): not on the
worker count, the order the runs finish in, or the engine — and it can be replayed alone.

The result is an ordinary scenario (the dict `hil_sim.scenario.parse` reads, plus a
``[campaign]`` table kept out of it: the drawn fault and what the oracle needs to know), so
`infusekit sim run` replays it.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from functools import lru_cache
from pathlib import Path
from typing import Any

from hil_sim.campaign.spec import (Bernoulli, CampaignSpec, Choice, EventSpec, IntRange,
                                   LogUniform, Normal, PatientSpec, Uniform)
from hil_sim.scenario import program_segments, programmed

from host._firmware import druglib_path

LIB_PATH = druglib_path()
START_S = 1.0          # the runner's START time (hil_sim.scenario default start_at_s)


def run_seed(campaign_seed: int, index: int) -> int:
    """The seed of run ``index`` of a campaign (31 bits, from SHA-256 of both)."""
    h = hashlib.sha256(f"infusekit-campaign:{int(campaign_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


@lru_cache(maxsize=4)
def _library(path: str = str(LIB_PATH)) -> dict[str, dict]:
    return {d["name"]: d for d in json.loads(Path(path).read_text())["drugs"]}


def sample(d: Any, rng: random.Random) -> Any:
    """One value of a distribution (a bare value is a constant)."""
    if isinstance(d, Uniform):
        return rng.uniform(d.low, d.high)
    if isinstance(d, LogUniform):
        return math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    if isinstance(d, Normal):
        x = rng.gauss(d.mean, d.sd)
        if d.low is not None:
            x = max(d.low, x)
        if d.high is not None:
            x = min(d.high, x)
        return x
    if isinstance(d, Choice):
        return rng.choices(d.values, weights=d.weights)[0]
    if isinstance(d, Bernoulli):
        return rng.random() < d.p
    if isinstance(d, IntRange):
        return rng.randint(d.low, d.high)
    return d


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _pick(items: list, weights: list[float], rng: random.Random):
    return rng.choices(items, weights=weights)[0]


def _dose_program(drug: str, region: str, weight_kg: float, rng: random.Random) -> tuple[dict, dict]:
    """A dose-over-time program for ``drug`` whose dose and time lie in ``region`` of the
    library's limits (inside the soft limits, between soft and hard, beyond hard)."""
    lib = _library()
    if drug not in lib:
        raise ValueError(f"drug {drug!r} not in the library ({sorted(lib)})")
    d = lib[drug]
    dose, over = d["dose_ug_kg"], d["over_min"]

    def inside(lim):
        return rng.uniform(lim["soft_min"], lim["soft_max"])

    dose_ug_kg = inside(dose)
    over_min = inside(over)
    which = rng.choice(("dose", "over"))
    lim = dose if which == "dose" else over
    if region == "soft":                   # between a soft and a hard limit, confirmed
        lo_side = lim["soft_min"] > lim["hard_min"] and rng.random() < 0.5
        v = (rng.uniform(lim["hard_min"], lim["soft_min"]) if lo_side
             else rng.uniform(lim["soft_max"], lim["hard_max"]))
    elif region == "hard":                 # beyond a hard limit: must be refused
        lo_side = lim["hard_min"] > 0 and rng.random() < 0.5
        v = (lim["hard_min"] * rng.uniform(0.3, 0.95) if lo_side
             else lim["hard_max"] * rng.uniform(1.05, 2.0))
    elif region == "inside":
        v = None
    else:
        raise ValueError(f"program region {region!r}: inside, soft or hard")
    if v is not None:
        if which == "dose":
            dose_ug_kg = v
        else:
            over_min = v
    ug = max(0, int(round(dose_ug_kg)))
    # keep a limit-crossing draw across its limit after rounding to the wire's integers
    if region == "hard" and which == "dose" and dose["hard_min"] <= ug <= dose["hard_max"]:
        ug = dose["hard_max"] + 1
    prog = {"drug": drug, "dose_mg_kg": ug / 1000.0, "over_min": _r(over_min, 2),
            "weight_kg": _r(weight_kg, 1)}
    # a dose and time inside their limits can still ask for a rate the library forbids
    ml = ug * weight_kg / d["conc_ug_ml"]
    rate = ml / (over_min / 60.0) if over_min > 0 else float("inf")
    if region != "hard" and (rate > d["rate_ml_h_max"] or rate < 0.1 or ug <= 0):
        region, which = "hard", "rate"
    if region == "soft":
        prog["confirm"] = True
    return prog, {"region": region, "limit": which, "conc_ug_ml": d["conc_ug_ml"]}


def _in_region(lim: dict, region: str, rng: random.Random) -> float:
    """A value of one library limit ``lim`` (hard_min/soft_min/soft_max/hard_max) in
    ``region``: inside the soft limits, between a soft and a hard limit, or beyond a hard one."""
    if region == "inside":
        return rng.uniform(lim["soft_min"], lim["soft_max"])
    if region == "soft":
        lo_side = lim["soft_min"] > lim["hard_min"] and rng.random() < 0.5
        return (rng.uniform(lim["hard_min"], lim["soft_min"]) if lo_side
                else rng.uniform(lim["soft_max"], lim["hard_max"]))
    if region == "hard":
        lo_side = lim["hard_min"] > 0 and rng.random() < 0.5
        return (lim["hard_min"] * rng.uniform(0.3, 0.95) if lo_side
                else lim["hard_max"] * rng.uniform(1.05, 2.0))
    raise ValueError(f"program region {region!r}: inside, soft or hard")


def _wire_int(v: float, lim: dict, region: str, scale: float = 1.0) -> int:
    """``v`` rounded to the wire's integer (in 1/scale units of the limit), kept on its side
    of the limits it was drawn against (a draw beyond a hard limit stays beyond it, a soft one
    between soft and hard, an inside one inside)."""
    x = int(round(v * scale))
    lo_h, hi_h = lim["hard_min"] * scale, lim["hard_max"] * scale
    lo_s, hi_s = lim["soft_min"] * scale, lim["soft_max"] * scale
    if region == "hard" and lo_h <= x <= hi_h:
        x = int(hi_h) + 1 if v * scale > (lo_h + hi_h) / 2 else max(0, int(math.ceil(lo_h)) - 1)
    elif region == "soft":
        x = min(max(x, int(math.ceil(lo_h))), int(hi_h))
        if lo_s <= x <= hi_s:                  # rounded back inside: to the nearer soft limit
            x = int(hi_s) + 1 if x - lo_s > hi_s - x or lo_s <= lo_h else int(math.ceil(lo_s)) - 1
    elif region == "inside":
        x = min(max(x, int(math.ceil(lo_s))), int(hi_s))
    return x


def _dose_rate_program(ps, drug: str, region: str, weight_kg: float, fill_ml: float,
                       fit_s: float, loading: bool, rng: random.Random) -> tuple[dict, dict]:
    """A dose-rate program (``loading``: after a loading dose) for ``drug`` whose dose rate
    (or loading dose, or loading time) lies in ``region`` of the library's limits; the
    maintenance volume from ``ps.vtbi_ml``, clipped to the syringe and the run's cap."""
    d = _library()[drug]
    which = rng.choice(("dose_rate", "load", "load_time")) if loading else "dose_rate"
    lim_h = d["dose_ug_kg_h"]
    ug_h = _wire_int(_in_region(lim_h, region if which == "dose_rate" else "inside", rng),
                     lim_h, region if which == "dose_rate" else "inside")
    prog: dict[str, Any] = {"drug": drug, "dose_rate_mg_kg_h": ug_h / 1000.0,
                            "weight_kg": _r(weight_kg, 1),
                            "kvo_ml_h": _r(sample(ps.kvo_ml_h, rng), 1)}
    conc = float(d["conc_ug_ml"])
    load_ml = 0.0
    load_s = 0.0
    if loading:
        ld, lt = d["dose_ug_kg"], d["over_min"]
        ug = _wire_int(_in_region(ld, region if which == "load" else "inside", rng), ld,
                       region if which == "load" else "inside")
        # the loading time in whole 0.01 min (600 ms) steps
        mins = _wire_int(_in_region(lt, region if which == "load_time" else "inside", rng), lt,
                         region if which == "load_time" else "inside", 100) / 100.0
        prog["loading_mg_kg"] = ug / 1000.0
        prog["loading_min"] = max(0.01, mins)
        load_ml = ug * weight_kg / conc
        load_s = prog["loading_min"] * 60.0
    rate_ml_h = ug_h * weight_kg / conc
    room = min(fill_ml * 0.95 - load_ml, rate_ml_h * max(0.0, fit_s - load_s) / 3600.0)
    prog["vtbi_ml"] = _r(max(0.01, min(float(sample(ps.vtbi_ml, rng)), room)), 3)
    if region == "soft":
        prog["confirm"] = True
    return prog, {"region": region, "limit": which, "conc_ug_ml": d["conc_ug_ml"]}


def _steps_program(ps, drug: str, region: str, fill_ml: float, fit_s: float,
                   rng: random.Random) -> tuple[dict, dict]:
    """A multi-step program of ``ps.n_steps`` steps (rate from ``ps.rate_ml_h``, together
    ``ps.vtbi_ml``), capped at the drug's ``rate_ml_h_max`` (the pump's 1200 mL/h without a
    drug); ``region = "hard"`` puts one step above the cap."""
    d = _library().get(drug) if drug != "none" else None
    cap = float(d["rate_ml_h_max"]) if d else 1200.0
    n = int(sample(ps.n_steps, rng))
    rates = [min(cap, max(0.1, _r(sample(ps.rate_ml_h, rng), 1))) for _ in range(n)]
    if region == "hard":
        k = rng.randrange(n)
        rates[k] = _r(min(1500.0, cap * rng.uniform(1.05, 1.5)) + 0.1, 1)
    elif region != "inside":
        raise ValueError(f"steps: region {region!r}: inside or hard")
    total = min(float(sample(ps.vtbi_ml, rng)), fill_ml * 0.95)
    shares = [rng.uniform(0.5, 1.5) for _ in range(n)]
    vols = [total * w / sum(shares) for w in shares]
    hours = sum(v / r for v, r in zip(vols, rates))
    if hours * 3600.0 > fit_s:                 # finish within the run's cap
        vols = [v * fit_s / (hours * 3600.0) for v in vols]
    steps = [{"rate_ml_h": r, "vtbi_ml": _r(max(0.001, v), 3)} for r, v in zip(rates, vols)]
    prog: dict[str, Any] = {"steps": steps, "kvo_ml_h": _r(sample(ps.kvo_ml_h, rng), 1)}
    if d:
        prog["drug"] = drug
    return prog, {"region": region, "limit": "rate",
                  "conc_ug_ml": d["conc_ug_ml"] if d else 1000.0}


def _kvo_refused(prog: dict, weight_kg: float) -> bool:
    """The program is legal without its KVO rate (so the KVO is what the library refuses)."""
    if not prog.get("kvo_ml_h"):
        return False
    return bool(program_segments({**prog, "kvo_ml_h": 0}, weight_kg))


def draw(spec: CampaignSpec, campaign_seed: int, index: int) -> dict[str, Any]:
    """The scenario dict of run ``index`` (with its ``[campaign]`` facts for the oracle)."""
    seed = run_seed(campaign_seed, index)
    rng = random.Random(seed)
    meta = spec.campaign
    # --- fault first (it decides whether the run needs a patient)
    fault: EventSpec = _pick(spec.faults, [f.weight for f in spec.faults], rng)
    # --- patient
    pspec = spec.patient
    if fault.name == "hypertension" and pspec is None:
        pspec = PatientSpec()
    has_patient = pspec is not None and (rng.random() < pspec.p or fault.name == "hypertension")
    weight_kg = 70.0
    patient = None
    cfg: dict[str, Any] = {}
    if has_patient:
        weight_kg = _r(sample(pspec.weight_kg, rng), 1)
        patient = {"weight_kg": weight_kg, "model": str(sample(pspec.model, rng)),
                   "hypertensive": bool(sample(pspec.hypertensive, rng)),
                   "monitor_period_s": int(sample(pspec.monitor_period_s, rng))}
        pp = {k: _r(sample(v, rng), 4) for k, v in sorted(pspec.params.items())}
        if pp:
            patient["params"] = pp
        if bool(sample(pspec.interlock, rng)):
            cfg["interlock"] = 1
    # --- pump and syringe
    model = str(sample(spec.pump.syringe_model, rng)) if spec.pump.syringe_model is not None else None
    from hil_sim.plant import SYRINGE_MODELS
    syr = int(SYRINGE_MODELS[model].size_ml) if model else int(sample(spec.pump.syringe_ml, rng))
    fill = _r(syr * min(1.0, max(0.01, float(sample(spec.pump.fill_frac, rng)))), 2)
    pump: dict[str, Any] = {"syringe_ml": syr, "fill_ml": fill,
                            "primed": bool(sample(spec.pump.primed, rng))}
    params = {k: _r(sample(v, rng), 5) for k, v in sorted(spec.pump.params.items())}
    for k in ("mains", "battery_soc", "height_cm"):
        if k in params:
            pump[k] = params.pop(k)
    if "mains" in pump:
        pump["mains"] = bool(pump["mains"])
    if params:
        pump["params"] = params
    if model:
        pump["syringe_model"] = model
    bed = {k: _r(sample(v, rng), 4) for k, v in sorted(spec.pump.bedside.items())}
    if bed:
        pump["bedside"] = bed
    if spec.pump.occl_mmhg is not None:
        cfg["occl_mmhg"] = int(sample(spec.pump.occl_mmhg, rng))
    # --- program
    ps = _pick(spec.program, [p.weight for p in spec.program], rng)
    facts: dict[str, Any] = {"index": index, "seed": seed, "campaign_seed": int(campaign_seed),
                             "spec": meta.name, "form": ps.form}
    if ps.form == "rate":
        rate = max(0.1, _r(sample(ps.rate_ml_h, rng), 1))
        # inside the syringe, and short enough to finish within the run's cap
        fit = rate * (spec.run.max_s - spec.run.settle_s - START_S) / 3600.0 * 0.9
        vtbi = _r(min(float(sample(ps.vtbi_ml, rng)), fill * 0.95, fit), 2)
        prog: dict[str, Any] = {"rate_ml_h": rate, "vtbi_ml": max(0.01, vtbi)}
        facts["region"] = "inside"
        conc = 1000.0
    elif ps.form == "dose":
        region = str(sample(ps.region, rng))
        prog, extra = _dose_program(str(sample(ps.drug, rng)), region, weight_kg, rng)
        facts.update(extra)
        conc = float(extra["conc_ug_ml"])
    else:
        region = str(sample(ps.region, rng))
        drug = str(sample(ps.drug, rng))
        fit = (spec.run.max_s - spec.run.settle_s - START_S) * 0.9
        if ps.form == "steps":
            prog, extra = _steps_program(ps, drug, region, fill, fit, rng)
        else:
            prog, extra = _dose_rate_program(ps, drug, region, weight_kg, fill, fit,
                                             ps.form == "loading", rng)
        facts.update(extra)
        conc = float(extra["conc_ug_ml"])
    prog["start_at_s"] = START_S
    segs = program_segments(prog, weight_kg) if ps.form not in ("rate", "dose") else None
    if segs is not None:
        # the library (as the therapy envelope reads it) refuses what the draw meant to be
        # legal only where a limit other than the drawn one (a rate) is crossed
        if not segs and facts["region"] != "hard":
            facts["region"] = "hard"
            facts["limit"] = "kvo" if _kvo_refused(prog, weight_kg) else "rate"
        elif segs and facts["region"] == "hard":
            raise AssertionError(f"run {index}: a program drawn beyond a hard limit is legal: {prog}")
        facts["segments"] = [[_r(r, 3), _r(v, 6)] for r, v in segs]
        if segs and prog.get("kvo_ml_h"):
            # after the VTBI: the KVO rate, never above the last rate (docs/protocol.md)
            facts["kvo_ml_h"] = min(float(prog["kvo_ml_h"]), segs[-1][0])
    rate_ml_h, vol_ml = programmed(prog, weight_kg, conc)
    prog_s = vol_ml / rate_ml_h * 3600.0 if rate_ml_h > 0 else 60.0
    if facts["region"] == "hard":
        prog_s = 60.0                       # refused: nothing should happen
    facts["programmed_ml"] = vol_ml
    facts["programmed_rate_ml_h"] = rate_ml_h
    facts["program_s"] = _r(prog_s, 1)
    # --- host
    hb = int(sample(spec.host.heartbeat_s, rng))
    hb_ms = int(sample(spec.host.hb_ms, rng))
    if hb_ms:
        cfg["hb_ms"] = hb_ms
        cfg["hb_action"] = str(sample(spec.host.hb_action, rng))
    # --- events: disturbances (each with its p), then the fault
    events: list[dict[str, Any]] = []
    end_s = START_S + prog_s

    def onset(ev: EventSpec) -> float:
        if ev.onset_s is not None:
            return _r(START_S + float(sample(ev.onset_s, rng)), 1)
        return _r(START_S + prog_s * float(sample(ev.onset_frac, rng)), 1)

    def add(ev: EventSpec, kind: str) -> None:
        t = onset(ev)
        v = sample(ev.value, rng)
        v = _r(v, 4) if isinstance(v, float) else v
        e = {"at_s": t, "fault": ev.name, "value": v, "note": kind}
        if ev.ramp_s is not None:
            e["ramp_s"] = _r(sample(ev.ramp_s, rng), 1)
        events.append(e)
        if ev.clear_after_s is not None:
            off = False if isinstance(v, bool) else 0
            if ev.name == "power_cut":
                off = False
            events.append({"at_s": _r(t + float(sample(ev.clear_after_s, rng)), 1), "fault": ev.name,
                           "value": off, "note": kind + " cleared"})

    for dist in spec.disturbances:
        if rng.random() < dist.p:
            add(dist, "disturbance")
    facts["fault"] = fault.name
    if fault.name != "none":
        add(fault, "fault")
        facts["fault_at_s"] = next(e["at_s"] for e in events if e["note"] == "fault")
    # the runtime last, so a constant runtime leaves every other draw as it was
    runtime = str(sample(meta.runtime, rng))
    last = max([end_s] + [e["at_s"] for e in events])
    duration = min(spec.run.max_s, last + spec.run.settle_s)
    scn: dict[str, Any] = {
        "scenario": {"name": f"{meta.name}-{campaign_seed}-{index}",
                     "description": f"run {index} of campaign {meta.name!r} (seed {campaign_seed}); "
                                    f"fault {fault.name}",
                     "runtimes": [runtime], "controller": meta.controller, "seed": seed},
        "pump": pump,
        "program": prog,
        "host": {"heartbeat_s": hb, "telemetry_ms": 0},
        "run": {"duration_s": _r(duration, 1), "until": "complete", "settle_s": spec.run.settle_s},
        "events": sorted(events, key=lambda e: e["at_s"]),
        "expect": {"no_other_alarms": False},     # the oracle judges the alarms
        "campaign": facts,
    }
    if cfg:
        scn["config"] = cfg
    if patient is not None:
        scn["patient"] = patient
    return scn
