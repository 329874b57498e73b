"""Running campaign runs: one run (draw, simulate, judge) as a pure function of its inputs,
and the campaign's summary per hazard.

`run_one(spec_dict, campaign_seed, index, firmware_dir)` takes and returns plain data only,
so every engine (`hil_sim.campaign.engines`) ships it to a worker as it is. Its result holds
nothing that depends on where or when it ran except ``wall_s``, which `digest` leaves out:
equal digests mean identical per-run results.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from typing import Any

from hil_sim.campaign import draw as _draw
from hil_sim.campaign import oracle, stats
from hil_sim.campaign.spec import CampaignSpec, from_dict

_SPEC_CACHE: dict[str, CampaignSpec] = {}


def _spec(spec: dict | CampaignSpec) -> CampaignSpec:
    if isinstance(spec, CampaignSpec):
        return spec
    key = json.dumps(spec, sort_keys=True, default=str)
    s = _SPEC_CACHE.get(key)
    if s is None:
        s = _SPEC_CACHE[key] = from_dict(spec)
    return s


def run_one(spec: dict | CampaignSpec, campaign_seed: int, index: int,
            firmware_dir: str | None = None) -> dict[str, Any]:
    """Draw run ``index``, run it in virtual time, judge it. Never raises: a crash of the
    simulation or the firmware is the ``crash`` hazard of that run."""
    from hil_sim.scenario import parse, run_scenario
    import tomli_w

    sp = _spec(spec)
    raw = _draw.draw(sp, campaign_seed, index)
    facts = raw["campaign"]
    out: dict[str, Any] = {"index": index, "seed": facts["seed"], "fault": facts["fault"],
                           "form": facts["form"], "region": facts.get("region"),
                           "runtime": raw["scenario"]["runtimes"][0],
                           "fault_at_s": facts.get("fault_at_s"),
                           "programmed_ml": facts["programmed_ml"],
                           "rate_ml_h": facts["programmed_rate_ml_h"]}
    w0 = time.perf_counter()
    try:
        scn = parse(tomli_w.dumps(raw))
        res = run_scenario(scn, raw["scenario"]["runtimes"][0], controller=sp.campaign.controller,
                           firmware_dir=firmware_dir)
        verdict = oracle.judge(raw, res)
        out.update(verdict.to_json())
        out["false_alarms"] = verdict.false_alarms
        out["sim_s"] = round(res.sim_s, 1)
        out["final_state"] = res.metrics.get("final_state")
    except Exception as e:                       # noqa: BLE001 - every crash is a finding
        tb = traceback.format_exc(limit=6)
        out.update({"hazards": ["crash"], "findings": [["crash", f"{type(e).__name__}: {e}"]],
                    "figures": {}, "false_alarms": [], "sim_s": None, "final_state": None,
                    "traceback": tb})
    out["failed"] = bool(out["hazards"])
    out["digest"] = digest(out)
    out["wall_s"] = round(time.perf_counter() - w0, 4)
    return out


def digest(run: dict[str, Any]) -> str:
    """SHA-256 of a run's result without its wall time (equal on any engine and worker)."""
    d = {k: v for k, v in run.items() if k not in ("wall_s", "digest", "traceback")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def scenario_toml(spec: dict | CampaignSpec, campaign_seed: int, index: int) -> str:
    """Run ``index`` as a stand-alone scenario file (``infusekit sim run`` replays it)."""
    import tomli_w
    raw = _draw.draw(_spec(spec), campaign_seed, index)
    head = (f"# run {index} of campaign {raw['campaign']['spec']!r}, campaign seed {campaign_seed}\n"
            f"# replay: infusekit sim run THIS_FILE  (the [campaign] table makes the run's\n"
            f"# safety oracle part of the checks)\n")
    return head + tomli_w.dumps(raw)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-hazard counts with their 95 % Clopper–Pearson upper bounds, false alarms apart."""
    n = len(runs)
    hz: dict[str, Any] = {}
    for h in oracle.HAZARDS:
        if h == "false_alarm":
            idx = [r["index"] for r in runs if r.get("false_alarms")]
        else:
            idx = [r["index"] for r in runs if h in r["hazards"]]
        ref, reqs = oracle.HAZARD_REFS[h]
        hz[h] = {"count": len(idx), "n": n, "upper95": stats.upper(len(idx), n),
                 "hazard": ref, "requirements": reqs, "runs": idx[:50]}
    by_fault: dict[str, dict[str, int]] = {}
    for r in runs:
        b = by_fault.setdefault(r["fault"], {"runs": 0, "failed": 0, "false_alarm": 0})
        b["runs"] += 1
        b["failed"] += int(r["failed"])
        b["false_alarm"] += int(bool(r.get("false_alarms")))
    return {"n": n, "failed": sum(int(r["failed"]) for r in runs), "hazards": hz,
            "by_fault": dict(sorted(by_fault.items()))}
