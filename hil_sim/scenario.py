"""Scenario files (TOML) and the runner that plays host, monitor and fault injector.

A scenario names the pump (syringe, fill, height, power), the program, the patient, a
timeline of faults and host commands, and expectations; `run_scenario` runs it in virtual
time under one runtime and checks every expectation. The format is documented with examples
in docs/simulator.md; the library is ``hil_sim/scenarios/*.toml``.

The runner is the host: it sends CFG/TLM/PROG/START through the paced link (the same frames
`host.Pump` sends), a heartbeat (``[host] heartbeat_s``), and — when the scenario has a patient
and ``monitor_period_s`` — plays the bedside monitor by relaying VITALS readings. It reads the
pump's frames back off the link and timestamps every event with the virtual time it arrived.
"""
from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from host.codec import Event, FrameError, LineSplitter, Reply, decode_line, encode_request
from host.statemachine import GUARDED_WORDS

from hil_sim import analysis
from hil_sim.cosim import FAULTS, Simulation
from hil_sim.patient import PatientParams
from hil_sim.bedside import BedsideParams
from hil_sim.plant import PlantParams

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
RUNTIMES = ("cpython", "micropython")


class ScenarioError(ValueError):
    """The scenario file is malformed."""


@dataclass
class Scenario:
    name: str
    path: Path | None
    raw: dict[str, Any]
    text: str = ""

    # convenient views
    @property
    def meta(self) -> dict:
        return self.raw.get("scenario", {})

    @property
    def status(self) -> str:
        return self.meta.get("status", "active")

    @property
    def runtimes(self) -> list[str]:
        return list(self.meta.get("runtimes", list(RUNTIMES)))

    @property
    def controller(self) -> str:
        return self.meta.get("controller", "firmware")


_TOP = {"scenario", "pump", "program", "config", "patient", "host", "run", "events", "expect",
        "campaign",   # campaign: a drawn run's facts, judged by hil_sim.campaign.oracle
        "monitor"}    # [monitor]: the HL7 bedside monitor (hil_sim.monitor, docs/hl7.md)


def load(path_or_name: str | Path) -> Scenario:
    """A scenario from a file, or by name from the library."""
    p = Path(path_or_name)
    if not p.exists():
        cand = SCENARIO_DIR / (str(path_or_name) + ("" if str(path_or_name).endswith(".toml") else ".toml"))
        if not cand.exists():
            raise FileNotFoundError(f"no scenario {path_or_name!r} (file or name in {SCENARIO_DIR})")
        p = cand
    text = p.read_text()
    return parse(text, p)


def parse(text: str, path: Path | None = None) -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path or 'scenario'}: {e}") from None
    unknown = set(raw) - _TOP
    if unknown:
        raise ScenarioError(f"{path or 'scenario'}: unknown section(s) {sorted(unknown)}; "
                            f"known: {sorted(_TOP)}")
    from hil_sim import schema
    schema.validate(raw, text, path)          # every key and its type (file:line: key: …)
    for ev in raw.get("events", []):
        if "at_s" not in ev:
            raise ScenarioError(f"event without at_s: {ev}")
        if "fault" in ev and ev["fault"] not in FAULTS:
            raise ScenarioError(f"unknown fault {ev['fault']!r}; known: {sorted(FAULTS)}")
        if "fault" not in ev and "command" not in ev:
            raise ScenarioError(f"event needs a fault or a command: {ev}")
    name = raw.get("scenario", {}).get("name") or (path.stem if path else "scenario")
    st = raw.get("scenario", {}).get("status", "active")
    if st not in ("active", "pending"):
        raise ScenarioError("status must be 'active' or 'pending'")
    if st == "pending" and not raw["scenario"].get("pending_reason"):
        raise ScenarioError("a pending scenario needs a pending_reason")
    return Scenario(name, path, raw, text)


def library() -> list[Scenario]:
    return [load(p) for p in sorted(SCENARIO_DIR.glob("*.toml"))]


# ---------------------------------------------------------------------------- results
@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Result:
    scenario: str
    runtime: str
    controller: str
    fw_version: str
    passed: bool = False
    checks: list[Check] = field(default_factory=list)
    alarms: list[dict] = field(default_factory=list)      # {t_s, name, prio}
    cleared: list[dict] = field(default_factory=list)
    states: list[dict] = field(default_factory=list)
    log: list[tuple[float, str, str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    sim_s: float = 0.0
    wall_s: float = 0.0
    # kept out of JSON
    sim: Any = None
    scn: Any = None
    t_start_s: float | None = None

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("scenario", "runtime", "controller", "fw_version",
                                            "passed", "alarms", "cleared", "states", "metrics",
                                            "sim_s", "wall_s", "t_start_s")}
        d["checks"] = [asdict(c) for c in self.checks]
        d["log_lines"] = len(self.log)
        d["speed_x"] = round(self.sim_s / self.wall_s, 1) if self.wall_s else None
        return d


# ---------------------------------------------------------------------------- building
def plant_params(pump: dict) -> PlantParams:
    """PlantParams from a scenario's [pump] table: syringe_ml or syringe_model, the plain keys,
    [pump.params] (any PlantParams field) and [pump.bedside] (any BedsideParams field)."""
    kw = dict(pump.get("params", {}))
    for key in ("fill_ml", "height_cm", "mains", "battery_soc", "primed"):
        if key in pump:
            kw[key] = pump[key]
    if "bedside" in pump:
        try:
            kw["bedside"] = BedsideParams(**pump["bedside"])
        except TypeError as e:
            raise ScenarioError(f"[pump.bedside]: {e}") from None
    try:
        if "syringe_model" in pump:
            return PlantParams.for_model(str(pump["syringe_model"]), **kw)
        return PlantParams.for_syringe(int(pump.get("syringe_ml", 50)), **kw)
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"[pump.params]: {e}") from None


def _q(x: Any, unit: str) -> str:
    """A scenario number with its unit, for the host library's exact unit parser."""
    return f"{x!r} {unit}" if isinstance(x, float) else f"{x} {unit}"


def program_frames(prog: dict, weight_kg: float) -> tuple[list[dict[str, int | str]],
                                                           dict[str, int | str]]:
    """(the STEP fields of each step, the PROG fields) a host sends for the scenario's
    ``[program]`` — dose rate, loading and steps through the host library's own conversion
    (`host.client.dose_rate_fields`, `steps_frames`), so the wire fields have one home."""
    from host.client import Step, dose_rate_fields, steps_frames
    from host import units
    kvo = prog.get("kvo_ml_h")
    extra: dict[str, int | str] = {}
    if kvo is not None:
        extra["kvo_ul_h"] = units.rate_ul_h(_q(kvo, "mL/h"))
    if "steps" in prog:
        steps = [Step(_q(st["rate_ml_h"], "mL/h"),
                      volume=_q(st["vtbi_ml"], "mL") if "vtbi_ml" in st else None,
                      over=_q(st["over_min"], "min") if "over_min" in st else None)
                 for st in prog["steps"]]
        wires, f = steps_frames(steps, drug=prog.get("drug"), confirm=bool(prog.get("confirm")))
        f.update(extra)
        return wires, f
    if "dose_rate_mg_kg_h" in prog:
        load = prog.get("loading_mg_kg")
        f = dose_rate_fields(
            prog["drug"], _q(prog["dose_rate_mg_kg_h"], "mg/kg/h"),
            _q(prog.get("weight_kg", weight_kg), "kg"),
            vtbi=_q(prog["vtbi_ml"], "mL") if "vtbi_ml" in prog else None,
            over=_q(prog["over_min"], "min") if "over_min" in prog else None,
            load=_q(load, "mg/kg") if load is not None else None,
            load_over=_q(prog["loading_min"], "min") if load is not None else None,
            confirm=bool(prog.get("confirm")), extra=extra)
        return [], f
    if "drug" in prog:
        f = {"drug": prog["drug"], "dose_ug_kg": int(round(prog["dose_mg_kg"] * 1000)),
             "wt_g": int(round(prog.get("weight_kg", weight_kg) * 1000)),
             "over_ms": int(round(prog["over_min"] * 60000))}
        f.update(extra)
        if prog.get("confirm"):
            f["confirm"] = 1
        return [], f
    rate = int(round(prog["rate_ml_h"] * 1000))
    vtbi = int(round(prog.get("vtbi_ml", 50) * 1e6))
    return [], {"rate_ul_h": rate, "vtbi_nl": vtbi, **extra}


def _program_frame(prog: dict, weight_kg: float) -> dict[str, int | str]:
    return program_frames(prog, weight_kg)[1]


def program_segments(prog: dict, weight_kg: float) -> list[tuple[float, float]]:
    """[(rate mL/h, volume mL), ...] the program asks for, segment by segment (a loading dose,
    then its maintenance; each step), as the therapy envelope (`hil_sim.envelope`: the
    library and the PROG fields only, never the controller) plans it; [] when the library
    refuses the program."""
    from hil_sim import envelope
    wires, f = program_frames(prog, weight_kg)
    steps = [(int(w["rate_ul_h"]), int(w["vol_nl"]) if "vol_nl" in w
              else int(w["rate_ul_h"]) * int(w["dur_ms"]) // 3600) for w in wires] or None
    env = envelope.Envelope(_envelope_library())
    if env.program(dict(f), steps) is not None:
        return []
    return [(r / 1000.0, v / 1e6) for r, v in env.segs]


def programmed(prog: dict, weight_kg: float, lib_conc_ug_ml: float = 1000.0) -> tuple[float, float]:
    """(rate mL/h, volume mL) the program asks for (the pump's integer arithmetic). A program
    of several segments gives its mean rate (total volume over total time); the segments
    themselves: `program_segments`."""
    segs = program_segments(prog, weight_kg) if ("steps" in prog or "dose_rate_mg_kg_h" in prog) else None
    if segs is not None:
        if not segs:
            return 0.0, 0.0
        vol = round(sum(v for _, v in segs), 6)
        hours = sum(v / r for r, v in segs if r > 0)
        return (round(vol / hours, 6) if hours > 0 else 0.0), vol
    if "drug" in prog:
        wt = int(round(prog.get("weight_kg", weight_kg) * 1000))
        ug = int(round(prog["dose_mg_kg"] * 1000)) * wt // 1000
        vtbi = ug * 1_000_000 // int(lib_conc_ug_ml)
        rate = vtbi * 3600 // int(round(prog["over_min"] * 60000))
        return rate / 1000.0, vtbi / 1e6
    return int(round(prog["rate_ml_h"] * 1000)) / 1000.0, int(round(prog.get("vtbi_ml", 50) * 1e6)) / 1e6


_ENV_LIB: dict[str, Any] = {}


def _envelope_library() -> dict:
    """The drug library as the envelope reads it (parsed once per process)."""
    from host._firmware import druglib_path
    from hil_sim import envelope
    key = str(druglib_path())
    if key not in _ENV_LIB:
        _ENV_LIB[key] = envelope.load_library(key)
    return _ENV_LIB[key]


def _drug_conc_ug_ml(name: str) -> float:
    from host._firmware import druglib_path
    lib = json.loads(druglib_path().read_text())
    for d in lib["drugs"]:
        if d["name"] == name:
            return float(d["conc_ug_ml"])
    raise ScenarioError(f"drug {name!r} not in the library")


# ---------------------------------------------------------------------------- the runner
class _Host:
    """The runner's side of the link: request ids, frame decoding, the timestamped log."""

    def __init__(self, sim: Simulation, res: Result) -> None:
        self.sim = sim
        self.res = res
        self.rid = 0
        self.split = LineSplitter()
        self.replies: dict[int, Reply] = {}
        self.probes: dict[int, float] = {}     # STATUS request id -> reboot time (s)
        self.boot: int | None = None           # the pump's boot number (HELLO), protocol v1

    def send(self, word: str, fields: dict | None = None) -> int:
        self.rid = self.rid % 65535 + 1
        fields = dict(fields or {})
        if word in GUARDED_WORDS and self.boot is not None and "boot" not in fields:
            fields["boot"] = self.boot         # guarded requests name the boot they are for
        data = encode_request(self.rid, word, fields)
        self.sim.host_send(data)
        self.res.log.append((self.sim.t_ms / 1000.0, ">", data.decode().strip()))
        return self.rid

    def poll(self) -> None:
        data = self.sim.host_recv()
        if not data:
            return
        t = self.sim.t_ms / 1000.0
        for line in self.split.feed(data):
            text = line.decode(errors="replace").strip()
            try:
                fr = decode_line(line.rstrip(b"\r\n"))
            except FrameError:
                self.res.log.append((t, "<!", text))
                continue
            if isinstance(fr, Event):
                self.res.log.append((t, "<", text))
                if fr.name == "ALARM":
                    self.res.alarms.append({"t_s": round(t, 3), "name": fr.fields.get("alarm", "?"),
                                            "prio": int(fr.fields.get("prio", "0"))})
                elif fr.name == "CLEAR":
                    self.res.cleared.append({"t_s": round(t, 3), "name": fr.fields.get("alarm", "?")})
                elif fr.name == "STATE":
                    self.res.states.append({"t_s": round(t, 3), "state": fr.fields.get("state", "?")})
            elif isinstance(fr, Reply):
                self.res.log.append((t, "<", text))
                if fr.ok and fr.fields.get("boot", "").isdigit() and "dev" in fr.fields:
                    self.boot = int(fr.fields["boot"])            # a HELLO reply
                elif not fr.ok and fr.code == "BOOT":
                    # the pump rebooted since: re-read it (never re-send the command)
                    self.boot = None
                    self.send("HELLO")
                if fr.id is not None:
                    self.replies[fr.id] = fr
                    if fr.id in self.probes and fr.ok:
                        # a STATUS after a reboot: an alarm raised at boot counts from here
                        name = fr.fields.get("alarm", "NONE")
                        since = self.probes.pop(fr.id)
                        if name != "NONE" and not any(a["name"] == name and a["t_s"] >= since
                                                      for a in self.res.alarms):
                            self.res.alarms.append({"t_s": round(t, 3), "name": name,
                                                    "prio": int(fr.fields.get("prio", "0")),
                                                    "via": "STATUS"})


def run_scenario(scn: Scenario | str | Path, runtime: str | None = None, *,
                 controller: str | None = None, seed: int | None = None,
                 firmware_dir: str | Path | None = None) -> Result:
    """Run a scenario to its end under ``runtime`` (default: its first listed runtime) with
    its controller (``firmware`` or ``baseline``) and check its expectations."""
    if not isinstance(scn, Scenario):
        scn = load(scn)
    raw = scn.raw
    meta = scn.meta
    controller = controller or scn.controller
    runtime = runtime or scn.runtimes[0]
    rt_kind = "baseline" if controller == "baseline" else runtime
    pump = raw.get("pump", {})
    prog = raw.get("program", {})
    pat = raw.get("patient")
    hostc = raw.get("host", {})
    runc = raw.get("run", {})
    params = plant_params(pump)
    weight = float((pat or {}).get("weight_kg", prog.get("weight_kg", 70.0)))
    conc_ug_ml = _drug_conc_ug_ml(prog["drug"]) if "drug" in prog else float(prog.get("conc_mg_ml", 1.0)) * 1000
    patient = None
    if pat is not None:
        try:
            patient = PatientParams(weight_kg=weight, model=pat.get("model", "clements"),
                                    hypertensive=bool(pat.get("hypertensive", False)),
                                    **pat.get("params", {}))
        except TypeError as e:
            raise ScenarioError(f"[patient.params]: {e}") from None
    sim = Simulation(rt_kind, seed=int(meta.get("seed", 0) if seed is None else seed), params=params,
                     patient=patient, conc_mg_ml=conc_ug_ml / 1000.0,
                     slice_ms=int(runc.get("slice_ms", 200)),
                     firmware_dir=str(firmware_dir) if firmware_dir else os.environ.get("INFUSEKIT_FIRMWARE") or None)
    res = Result(scn.name, sim.runtime_name if controller == "firmware" else runtime, controller,
                 sim.fw_version, sim=sim, scn=scn)
    host = _Host(sim, res)
    wall0 = time.perf_counter()
    try:
        _play(sim, host, res, raw, prog, pat, hostc, runc, weight)
        _final_status(sim, host, res)
    finally:
        res.wall_s = time.perf_counter() - wall0
        res.sim_s = sim.t_ms / 1000.0
        sim.close()
    _measure(res, sim, raw, prog, weight, conc_ug_ml, params)
    _check(res, raw.get("expect", {}))
    if "campaign" in raw:       # a drawn campaign run: its oracle's verdict too
        from hil_sim.campaign.oracle import checks
        res.checks.extend(Check(w, ok, d) for w, ok, d in checks(raw, res))
        res.passed = all(c.ok for c in res.checks)
    return res


def _play(sim, host, res, raw, prog, pat, hostc, runc, weight) -> None:
    duration_ms = int(runc.get("duration_s", 3600) * 1000)
    until = runc.get("until", "duration")          # or "complete": stop settle_s after COMPLETE
    settle_ms = int(runc.get("settle_s", 30) * 1000)
    start_ms = int(prog.get("start_at_s", 1) * 1000) if prog else None
    hb_ms = int(hostc.get("heartbeat_s", 0) * 1000)
    tlm = int(hostc.get("telemetry_ms", 0))
    mon_ms = int((pat or {}).get("monitor_period_s", 0) * 1000)
    actions: list[tuple[int, int, str, Any]] = []
    n = 0
    for ev in raw.get("events", []):
        n += 1
        actions.append((int(ev["at_s"] * 1000), n, "event", ev))
    if raw.get("config"):
        actions.append((0, 0, "config", raw["config"]))
    if tlm:
        actions.append((0, 0, "tlm", tlm))
    if prog:
        prog_ms = int(prog["prog_at_s"] * 1000) if "prog_at_s" in prog else max(0, start_ms - 500)
        actions.append((prog_ms, 0, "prog", None))
        if prog.get("start", True):
            actions.append((start_ms, 0, "start", None))
    actions.sort(key=lambda a: (a[0], a[1]))
    n_restarts = 0
    probe_at: int | None = None
    next_hb = hb_ms if hb_ms else None
    next_mon = mon_ms if mon_ms else None
    hl7mon = _hl7_monitor(raw, sim, host, res)
    complete_at = None
    per = sim.slice_ms // sim.tick_ms
    i = 0
    hello = host.send("HELLO")                 # a host starts by reading the pump (boot=)
    for _ in range(40):                        # the link's latency: at most 2 s
        sim.slice(1)
        host.poll()
        if hello in host.replies:
            break
    while sim.t_ms < duration_ms:
        now = sim.t_ms
        while i < len(actions) and actions[i][0] <= now:
            _, _, kind, arg = actions[i]
            i += 1
            if kind == "config":
                host.send("CFG", {k: (int(v) if isinstance(v, bool) else v) for k, v in arg.items()})
            elif kind == "tlm":
                host.send("TLM", {"period_ms": arg})
            elif kind == "prog":
                wires, fields = program_frames(prog, weight)
                for w in wires:                # a multi-step program: its STEPs first
                    host.send("STEP", w)
                host.send("PROG", fields)
            elif kind == "start":
                host.send("START")
                res.t_start_s = now / 1000.0
            else:
                ev = arg
                if "fault" in ev:
                    kw = {k: v for k, v in ev.items() if k not in ("at_s", "fault", "value", "note")}
                    sim.inject(ev["fault"], value=ev.get("value", True), **kw)
                    res.log.append((now / 1000.0, "!", f"fault {ev['fault']}={ev.get('value', True)}"
                                    + (f" {kw}" if kw else "")))
                else:
                    host.send(ev["command"], ev.get("fields", {}))
        if len(sim.restarts) > n_restarts:
            n_restarts = len(sim.restarts)
            probe_at = now + 1000              # the host polls the pump after it rebooted
        if probe_at is not None and now >= probe_at and not sim.host_silent:
            probe_at = None
            host.send("HELLO")                 # the new boot number
            host.probes[host.send("STATUS")] = sim.restarts[-1][0] / 1000.0
        if next_hb is not None and now >= next_hb:
            if not sim.host_silent:
                host.send("HB")
            next_hb += hb_ms
        if next_mon is not None and now >= next_mon and sim.patient is not None:
            sbp, dbp, hr, spo2 = sim.patient.vitals()
            if not sim.host_silent and not raw.get("patient", {}).get("monitor_silent", False):
                host.send("VITALS", {"sbp": sbp, "dbp": dbp, "hr": hr, "spo2": spo2})
            next_mon += mon_ms
        if hl7mon is not None and not sim.host_silent:
            hl7mon(now)
        # run to the next thing due (at most one slice)
        due = duration_ms
        if i < len(actions):
            due = min(due, actions[i][0])
        if next_hb is not None:
            due = min(due, next_hb)
        if next_mon is not None:
            due = min(due, next_mon)
        k = max(1, min(per, -(-(due - now) // sim.tick_ms)))
        sim.slice(k)
        host.poll()
        if until == "complete" and complete_at is None and any(
                s["state"] in ("COMPLETE",) for s in res.states[-2:]):
            complete_at = sim.t_ms
            duration_ms = min(duration_ms, complete_at + settle_ms)


def _hl7_monitor(raw: dict, sim: Simulation, host: "_Host", res: Result):
    """With a ``[monitor]`` table: the HL7 path in virtual time. The simulated monitor's
    PCD-01 messages go through the vitals bridge's core (host.vitals_bridge.Bridge: the same
    parsing, patient match, MDC mapping and freshness as `infusekit vitals-bridge`), which
    relays VITALS with age_ms over the link; ``metrics["hl7"]`` counts the ACK codes."""
    if "monitor" not in raw or sim.patient is None:
        return None
    from host.vitals_bridge import Bridge
    from hil_sim.monitor import Monitor, MonitorParams

    try:
        params = MonitorParams.from_toml(raw["monitor"])
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"[monitor]: {e}") from None
    mon = Monitor(sim.patient, params, seed=sim.seed, epoch_s=1_767_225_600.0)  # 2026-01-01

    def relay(r) -> str:
        host.send("VITALS", {"sbp": r.sbp, "dbp": r.dbp, "hr": r.hr, "spo2": r.spo2,
                             "age_ms": r.age_ms})
        return "sent"

    bridge = Bridge(relay, patient=params.patient_id)
    res.metrics["hl7"] = bridge.counts

    def step(now_ms: int) -> None:
        for m in mon.poll(now_ms):
            bridge.handle(m)
    return step


def _final_status(sim, host, res) -> None:
    """Ask the pump for its STATUS over a clean link at the end (events may have been lost to
    link noise): ``metrics["status"]``."""
    if not sim.plant.powered:
        return
    sim.link.set_noise(0.0, 0.0)
    silent, sim.host_silent = sim.host_silent, False
    for _attempt in range(3):      # a line torn by earlier noise can swallow one reply
        rid = host.send("STATUS")
        for _ in range(10):
            sim.slice(2)
            host.poll()
            if rid in host.replies:
                break
        rep = host.replies.get(rid)
        if rep is not None and rep.ok:
            res.metrics["status"] = dict(rep.fields)
            break
    sim.host_silent = silent


def _t_of_fault(raw: dict, name: str, value_true: bool = True) -> list[float]:
    out = []
    for ev in raw.get("events", []):
        if ev.get("fault") == name and bool(ev.get("value", True)) == value_true:
            out.append(float(ev["at_s"]))
    return out


def _measure(res: Result, sim: Simulation, raw, prog, weight, conc_ug_ml, params) -> None:
    m = res.metrics
    rec = sim.record
    m["delivered_ml"] = round(sim.plant.delivered_ml, 6)
    m["displaced_ml"] = round(sim.plant.displaced_ml, 6)
    m["missed_steps"] = round(sim.plant.missed, 1)
    m["restarts"] = [{"t_s": t / 1000, "cause": c} for t, c in sim.restarts]
    if prog:
        rate, vol = programmed(prog, weight, conc_ug_ml)
        m["programmed_rate_ml_h"] = rate
        m["programmed_ml"] = vol
        m["error_pct"] = round((sim.plant.delivered_ml - vol) / vol * 100.0, 4) if vol > 0 else None
        t0 = res.t_start_s
        if t0 is not None:
            ff = analysis.first_flow_s(rec, t0)
            m["first_flow_s"] = ff
            dur = vol / rate * 3600.0 if rate > 0 else 7200.0
            times, flows = analysis.flow_curve(rec, t0, duration_s=min(7200.0, dur))
            m["startup_curve"] = {"t_min": times, "flow_ml_h": [round(q, 5) for q in flows]}
            st = analysis.startup_time_s(flows, rate)
            m["startup_s"] = st
            if len(flows) >= 240:
                m["trumpet"] = analysis.trumpet(flows, rate).as_dict()
    for t_occ in _t_of_fault(raw, "occlusion") + _t_of_fault(raw, "occlusion_up"):
        occ = [a for a in res.alarms if a["name"] == "OCCLUSION" and a["t_s"] >= t_occ]
        m.setdefault("occlusion", []).append({
            "t_s": t_occ, "time_to_alarm_s": round(occ[0]["t_s"] - t_occ, 3) if occ else None,
            "pressure_at_alarm_mmhg": None})
        if occ:
            i = min(len(rec.t_s) - 1, max(0, int(occ[0]["t_s"]) - 1))
            m["occlusion"][-1]["pressure_at_alarm_mmhg"] = round(rec.pressure_mmhg[i], 1) if rec.t_s else None
    rel = _t_of_fault(raw, "occlusion", False)
    if rel and "occlusion" in m:
        m["bolus_ml"] = round(analysis.bolus_ml(rec, rel[0]), 5)
    if m.get("programmed_rate_ml_h", 0) > 0:
        m["detection_limit_s"] = round(analysis.detection_limit_s(
            m["programmed_rate_ml_h"], params.total_compliance, params.noise_mmhg), 2)
    if sim.patient is not None:
        pt = sim.patient
        m["patient"] = {"cp_ng_ml": round(pt.cp, 2), "ce_ng_ml": round(pt.ce, 2),
                        "total_mg": round(pt.total_mg, 4), "hypertensive": pt.hypertensive,
                        "vitals_true": [round(x, 1) for x in pt.true_vitals()]}
    st = m.get("status", {}).get("state")
    m["final_state"] = st or (res.states[-1]["state"] if res.states else "IDLE")


def _check(res: Result, exp: dict) -> None:
    m = res.metrics
    add = res.checks.append
    names = [a["name"] for a in res.alarms]
    for spec in exp.get("alarm", []):
        nm = spec["name"]
        hits = [a for a in res.alarms if a["name"] == nm and a["t_s"] >= spec.get("earliest_s", 0)]
        if not hits:
            add(Check(f"alarm {nm}", False, f"never raised (raised: {names or 'none'})"))
            continue
        t = hits[0]["t_s"]
        ok = t <= spec.get("latest_s", float("inf"))
        if "prio" in spec:
            ok = ok and hits[0]["prio"] == spec["prio"]
        add(Check(f"alarm {nm} by {spec.get('latest_s', '∞')} s", ok,
                  f"raised at {t:.1f} s, priority {hits[0]['prio']}"))
    allowed = set(exp.get("allow", [])) | {s["name"] for s in exp.get("alarm", [])}
    if exp.get("no_other_alarms", True):
        other = sorted({n for n in names if n not in allowed})
        add(Check("no other alarms", not other, f"unexpected: {other}" if other else "none"))
    for nm in exp.get("no_alarm", []):
        add(Check(f"no {nm} alarm", nm not in names, f"{names.count(nm)} raised"))
    if "final_state" in exp:
        add(Check(f"final state {exp['final_state']}", m["final_state"] == exp["final_state"],
                  m["final_state"]))
    if "delivered_ml" in exp:
        want = float(exp["delivered_ml"])
        tol = float(exp.get("delivered_tol_ml", want * exp.get("delivered_tol_pct", 1.0) / 100.0))
        got = m["delivered_ml"]
        add(Check(f"delivered {want} ± {tol:.4g} mL", abs(got - want) <= tol, f"{got:.4f} mL"))
    for key, cmp in (("max_delivered_ml", "le"), ("min_delivered_ml", "ge")):
        if key in exp:
            got = m["delivered_ml"]
            ok = got <= exp[key] if cmp == "le" else got >= exp[key]
            add(Check(f"{key} {exp[key]}", ok, f"{got:.4f} mL"))
    if "max_bolus_ml" in exp:
        b = m.get("bolus_ml")
        add(Check(f"bolus ≤ {exp['max_bolus_ml']} mL", b is not None and b <= exp["max_bolus_ml"],
                  f"{b} mL" if b is not None else "no occlusion released"))
    if "restarts" in exp:
        add(Check(f"{exp['restarts']} firmware restart(s)", len(m["restarts"]) == exp["restarts"],
                  str(len(m["restarts"]))))
    if "max_cp_ng_ml" in exp and "patient" in m:
        add(Check(f"plasma ≤ {exp['max_cp_ng_ml']} ng/mL", m["patient"]["cp_ng_ml"] <= exp["max_cp_ng_ml"],
                  f"{m['patient']['cp_ng_ml']} ng/mL"))
    if "cp_ng_ml" in exp and "patient" in m:
        lo, hi = exp["cp_ng_ml"]
        add(Check(f"plasma in {lo}..{hi} ng/mL", lo <= m["patient"]["cp_ng_ml"] <= hi,
                  f"{m['patient']['cp_ng_ml']} ng/mL"))
    res.passed = all(c.ok for c in res.checks)
