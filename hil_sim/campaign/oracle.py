"""The campaign's safety oracle: one verdict per run, written independently of the controller.

It judges a finished run from what a bench would see, never from the controller's variables:
the plant's truth (the gravimetric record: delivered volume, barrel pressure and rotor motion
every second; motor-enable changes), the pump's alarm frames on the link (name, priority, the
time they arrived), the board's alarm-priority output, the reboots, and the facts the draw
recorded (the program as sent, the injected fault and its onset). What the pump *should* do is
stated here from the requirements and the physics, not copied from the firmware:

======================  =========================================================  ==========
hazard (summary key)    the check                                                  hazards.md
======================  =========================================================  ==========
``crash``               the run raised, or the pump stopped answering (no STATUS)  H-RESET
``wrong_program``       a program beyond a drug's hard limit was accepted          H-WRONG
``valid_refused``       a program inside the limits (or confirmed soft) refused     H-DELAY
``over_infusion``       delivered > the program's line (segment by segment: a     H-OVER
                        loading dose then maintenance, each step; min(VTBI, rate·t)
                        for one rate) by more
                        than the accuracy claim (2 %, CONTEXT §3) + 20 µL + what
                        the injected fault may add before its deadline; and, when
                        `hil_sim.envelope` is present, the therapy envelope (#10)
``alarm_missed``        a fault that needs an alarm did not raise it by its         H-ALARM
                        deadline, with its priority (table `RULES`)
``not_stopped``         the rotor still moved forward > 1 s after a high-priority   H-FREE
                        alarm (nothing here acknowledges or resumes), or RUNAWAY
                        left the motor enabled
``bolus``               the bolus released when an occlusion opens > 0.5 mL (ECRI)  H-BOLUS
``inaccurate``          nothing went wrong, yet delivered ≠ programmed by more      H-UNDER
                        than 2 % + 20 µL (and a run without a fault must finish)
``silent_stop``         delivery fell short and no alarm of priority ≥ 2 said so    H-UNDER
``false_alarm``         an alarm no cause explains (counted separately: it is a     H-UNDER
                        nuisance that stops therapy, not a missed hazard)
======================  =========================================================  ==========

`judge(raw, result)` returns an `Outcome`; `hil_sim.scenario` calls `checks(raw, result)` for
a scenario that carries a ``[campaign]`` table, so ``infusekit sim run`` of a written failing
run fails on the same checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from hil_sim.report import fault_windows

try:                                   # the therapy-envelope oracle of issue 10, when landed
    from hil_sim import envelope as _envelope   # type: ignore[attr-defined]
except ImportError:                    # pragma: no cover - until #10 lands
    _envelope = None

HAZARDS = ("crash", "wrong_program", "valid_refused", "over_infusion", "alarm_missed",
           "not_stopped", "bolus", "inaccurate", "silent_stop", "false_alarm")
#: hazards.md IDs and the requirements each summary row is evidence for
HAZARD_REFS = {
    "crash": ("H-RESET", ["REQ-CAMP-05"]),
    "wrong_program": ("H-WRONG", ["REQ-LIM-01", "REQ-CAMP-05"]),
    "valid_refused": ("H-DELAY", ["REQ-CAMP-05"]),
    "over_infusion": ("H-OVER", ["REQ-VOL-01", "REQ-CAMP-05"]),
    "alarm_missed": ("H-ALARM", ["REQ-ALM-03", "REQ-CAMP-05"]),
    "not_stopped": ("H-FREE", ["REQ-ALM-01", "REQ-CAMP-05"]),
    "bolus": ("H-BOLUS", ["REQ-BOL-01", "REQ-CAMP-05"]),
    "inaccurate": ("H-UNDER", ["REQ-VOL-02", "REQ-CAMP-05"]),
    "silent_stop": ("H-UNDER", ["REQ-CAMP-05"]),
    "false_alarm": ("H-UNDER", ["REQ-CAMP-05"]),
}

ACC_FRAC = 0.02          # syringe-pump accuracy claim (CONTEXT §3: ±2 %)
ACC_ABS_ML = 0.02        # + 20 µL (a few microsteps of slack, the 1-s record resolution)
BOLUS_MAX_ML = 0.5       # released bolus after an occlusion (ECRI 2015, CONTEXT §3)
STOP_GRACE_S = 1.0       # a high-priority alarm stops forward motion within one tick; the
                         # record's resolution is 1 s
OCCL_DEFAULT_MMHG = 400  # the pump's documented default limit (docs/protocol.md CFG)
AIR_MUST_UL = 200.0      # a single bubble above every clinical limit (50-200 µL, CONTEXT §2)
AIR_MAY_UL = 50.0        # below the lowest clinical limit an AIR alarm is false
LINE_TO_SENSOR_ML = 0.1  # plant default (docs/simulator.md); read from the run when given
HIGH = 3


@dataclass(frozen=True)
class Rule:
    """What an injected fault requires: one of ``alarms`` at ``prio`` within ``deadline_s`` of
    the moment it becomes observable (onset unless a check below says otherwise), and which
    other alarms it may cause."""
    alarms: tuple[str, ...] = ()
    prio: int = HIGH
    deadline_s: float = 0.0
    allow: tuple[str, ...] = ()
    needs_running: bool = True       # only required when the motor was delivering at onset


#: per fault: the alarm a pump must raise (IEC 60601-2-24 / CONTEXT §2, docs/protocol.md) and
#: its deadline, from the requirements and library scenarios (docs/simulator.md)
RULES: dict[str, Rule] = {
    # occlusion: due once the true barrel pressure passes the configured limit (see judge)
    "occlusion": Rule(("OCCLUSION",), HIGH, 3.0, ("STALL",)),
    "occlusion_up": Rule(("OCCLUSION",), HIGH, 3.0, ("STALL",)),
    # a partial occlusion (rising line resistance): the same, once the pressure passes the limit
    "resistance": Rule(("OCCLUSION",), HIGH, 3.0, ("STALL",)),
    "door_open": Rule(("DOOR",), HIGH, 1.5),
    "air": Rule(("AIR",), HIGH, 1.5, ("AIR_CUM",)),
    "bubble_ul": Rule(("AIR",), HIGH, 3.0, ("AIR_CUM",)),      # from the bubble's arrival
    # empty: from the moment the stopper meets the barrel end (the end-stop switch, see _due)
    "empty": Rule(("EMPTY",), HIGH, 2.0, ("NEAR_EMPTY", "STALL", "OCCLUSION")),
    "fill_ml": Rule((), HIGH, 0.0, ("NEAR_EMPTY", "EMPTY", "STALL", "OCCLUSION")),
    "stall": Rule(("STALL",), HIGH, 30.0, ("OCCLUSION",)),
    "encoder_fail": Rule(("STALL", "FAULT"), HIGH, 30.0, ("STALL", "FAULT")),
    "runaway": Rule(("RUNAWAY",), HIGH, 10.0, ("OCCLUSION", "STALL")),
    "sensor_stuck": Rule(("FAULT", "OCCLUSION"), HIGH, 120.0, ("STALL",)),
    "sensor_drift": Rule((), HIGH, 0.0, ("OCCLUSION", "FAULT", "STALL")),
    "power_cut": Rule(("RESTART",), 2, 3.0, (), needs_running=False),   # from the restore
    # while the firmware hangs the step generator keeps stepping: the rebooted (or resumed)
    # pump rightly sees motion it did not command
    "watchdog_stall": Rule(("RESTART",), 2, 5.0, ("FAULT", "RUNAWAY", "STALL"), needs_running=False),
    "host_silence": Rule(("COMM_LOSS",), 2, 2.0, ()),                  # from hb_ms after onset
    "hypertension": Rule(("VITALS",), HIGH, 2.0, (), needs_running=False),
    "mains": Rule(("BATT_LOW",), 2, 5.0, ("BATT_DEPLETED",)),
    "battery_soc": Rule((), 2, 0.0, ("BATT_LOW", "BATT_DEPLETED")),
    "battery_mv": Rule((), 2, 0.0, ("BATT_LOW", "BATT_DEPLETED")),
    "height_cm": Rule(),
    "link_drop": Rule((), allow=("COMM_LOSS",)),
    "link_corrupt": Rule((), allow=("COMM_LOSS",)),
    "link_delay": Rule((), allow=("COMM_LOSS",)),
}
#: alarm priorities as docs/protocol.md states them (COMM_LOSS: 2, or 3 with hb_action=pause)
PRIO = {"OCCLUSION": 3, "AIR": 3, "AIR_CUM": 3, "DOOR": 3, "EMPTY": 3, "NEAR_EMPTY": 2,
        "VTBI_NEAR": 1, "VTBI_DONE": 1, "STALL": 3, "RUNAWAY": 3, "BATT_LOW": 2,
        "BATT_DEPLETED": 3, "FAULT": 3, "COMM_LOSS": 2, "CALLBACK": 2, "VITALS": 3,
        "VITALS_STALE": 2, "RESTART": 2}
#: informational alarms any infusion may raise on its own
ALWAYS_ALLOWED = ("VTBI_NEAR", "VTBI_DONE")


@dataclass
class Finding:
    hazard: str
    detail: str


@dataclass
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def hazards(self) -> list[str]:
        return sorted({f.hazard for f in self.findings if f.hazard != "false_alarm"})

    @property
    def false_alarms(self) -> list[str]:
        return [f.detail for f in self.findings if f.hazard == "false_alarm"]

    @property
    def failed(self) -> bool:
        return bool(self.hazards)

    def to_json(self) -> dict[str, Any]:
        return {"hazards": self.hazards, "findings": [[f.hazard, f.detail] for f in self.findings],
                "figures": self.figures}


def _first(alarms: list[dict], names, after: float) -> dict | None:
    for a in alarms:
        if a["name"] in names and a["t_s"] >= after - 1e-9:
            return a
    return None


def _at(rec, t: float) -> int:
    """Index of the first record row at or after t (s)."""
    ts = rec.t_s
    lo, hi = 0, len(ts)
    while lo < hi:
        mid = (lo + hi) // 2
        if ts[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _delivering(rec, t: float) -> bool:
    """The rotor moved forward in the 2 s before t (plant truth)."""
    i = _at(rec, t)
    return any(q > 0 for q in rec.cmd_ml_h[max(0, i - 3):i + 1])


def judge(raw: dict, res) -> Outcome:
    """The verdict of one finished run (`hil_sim.scenario.Result` with its ``sim``)."""
    out = Outcome()
    add = out.findings.append
    fig = out.figures
    facts = raw.get("campaign", {})
    sim = res.sim
    rec = sim.record
    alarms = observed_alarms(res)
    names = [a["name"] for a in alarms]
    m = res.metrics
    t0 = res.t_start_s if res.t_start_s is not None else 1.0
    region = facts.get("region", "inside")
    vol = float(facts.get("programmed_ml", m.get("programmed_ml", 0.0)))
    rate = float(facts.get("programmed_rate_ml_h", m.get("programmed_rate_ml_h", 0.0)))
    # a syringe lot whose bore differs from nominal delivers (bore/nominal)^2 of what the pump
    # planned; the pump cannot know it, so the program's line is scaled by it
    bore_tol = float(raw.get("pump", {}).get("params", {}).get("bore_tol_pct", 0.0))
    lot = (1.0 + bore_tol / 100.0) ** 2
    vol_lot, rate_lot = vol * lot, rate * lot
    # the program's line segment by segment (a loading dose then its maintenance, steps); a
    # single-rate program is one segment
    segs = [(float(r) * lot, float(v) * lot) for r, v in facts.get("segments") or [(rate, vol)]]
    top_rate = max([r for r, _ in segs] + [rate])
    kvo = float(facts.get("kvo_ml_h", 0.0)) * lot    # after the VTBI, until the run's end
    delivered = float(sim.plant.delivered_ml)
    fig["delivered_ml"] = round(delivered, 5)
    events = [e for e in raw.get("events", []) if "fault" in e]
    fault = facts.get("fault", "none")
    fev = [e for e in events if e["fault"] == fault and e.get("note", "fault") == "fault"]
    t_f = float(fev[0]["at_s"]) if fev else None
    fval = fev[0].get("value", True) if fev else None
    cfg = raw.get("config", {})

    # ---- crash / hang: the pump must answer the final STATUS whenever it is powered
    if sim.plant.powered and "status" not in m:
        add(Finding("crash", "no STATUS reply at the end (pump hung or silent)"))
    states = [s["state"] for s in res.states]
    # accepted: the pump said so, or its rotor moved forward (the gravimetric volume alone
    # moves with the patient's venous pressure, so it is no sign)
    rotor_fwd = sum(q for q in rec.cmd_ml_h if q > 0) / 3600.0
    accepted = ("RUNNING" in states or rotor_fwd > 1e-4
                or m.get("status", {}).get("state") not in (None, "IDLE"))

    # ---- program accepted or refused as the library says
    if region == "hard":
        if accepted:
            add(Finding("wrong_program", f"a program beyond a hard limit ({facts.get('limit')}) "
                                         f"was accepted; the rotor pushed {rotor_fwd:.4f} mL"))
    elif not accepted and fault not in ("power_cut",) and (t_f is None or t_f > t0 + 0.5):
        add(Finding("valid_refused", f"a program inside the limits ({region}) was not started"))

    # ---- delivered volume against the program's line and the fault's allowance
    allowance = 0.0
    if fault == "runaway" and fval is not None:
        q = float(fval) if not isinstance(fval, bool) else 100.0
        allowance = q * RULES["runaway"].deadline_s / 3600.0
    if fault == "watchdog_stall":
        allowance = top_rate * (sim.watchdog_ms / 1000.0 + 1.0) / 3600.0
    worst = 0.0
    worst_t = None
    # what the mechanism pushed: the gravimetric volume plus the change of the volume stored
    # in the syringe and line compliance (a siphon or a pressure drop empties that store
    # into the patient without any motion of the pump; that is physics, not over-infusion)
    c_tot = sim.params.total_compliance
    p_first = rec.pressure_mmhg[0] if rec.pressure_mmhg else 0.0
    # the bedside moves up to C x (its pressure swing) between syringe and vein in either
    # direction without any pump action, and the 1-s record does not resolve the transients
    store = c_tot * _bedside_swing_mmhg(raw)
    allowance += store
    # an upstream occlusion (at the syringe tip) cuts the line off the syringe: from then on
    # the syringe pressure fills the syringe's compliance only, and the line only drains into
    # the patient (counted in the gravimetric volume); its store is at most what it held at
    # the onset. Counting the line at the syringe's pressure would charge the pump with a
    # volume it never pushed (campaign default seed 2026 run 276: 15 µL at 151 mmHg)
    c_syr = sim.params.syringe_compliance
    c_line = c_tot - c_syr
    # the scenario's own fault windows (hil_sim.report); one still on at the end stays on
    up = [(a, b if b < res.sim_s else math.inf)
          for f, a, b in fault_windows(res) if f == "occlusion_up"]
    p_on = None
    for t, d0, p in zip(rec.t_s, rec.delivered_ml, rec.pressure_mmhg):
        if any(a <= t < b for a, b in up):
            if p_on is None:
                p_on = p
            d = d0 + c_syr * (p - p_first) + c_line * max(0.0, p_on - p_first)
        else:
            p_on = None
            d = d0 + c_tot * (p - p_first)
        line = 0.0 if region == "hard" else line_ml(segs, t - t0, kvo)
        excess = d - (line * (1 + ACC_FRAC) + ACC_ABS_ML + allowance)
        if excess > worst:
            worst, worst_t = excess, t
    if worst > 0:
        add(Finding("over_infusion", f"{worst * 1000:.1f} µL above the program's line at {worst_t:.0f} s"))
    fig["over_line_ml"] = round(worst, 5)
    env_bad = _envelope_check(raw, res, t0, allowance)
    if env_bad:
        add(Finding("over_infusion", "therapy envelope: " + env_bad))

    # ---- high-priority alarms stop forward motion
    high = [a for a in alarms if a["prio"] >= HIGH]
    if high:
        ta = high[0]["t_s"]
        i = _at(rec, ta + STOP_GRACE_S + 1.0)
        moved = sum(q for q in rec.cmd_ml_h[i:] if q > 0) / 3600.0   # mL over 1-s periods
        if moved > 1e-4:
            add(Finding("not_stopped", f"rotor moved {moved * 1000:.2f} µL forward after "
                                       f"{high[0]['name']} at {ta:.1f} s"))
        if high[0]["name"] == "RUNAWAY":
            en = [e for t, e in sim.enables if t / 1000.0 >= ta - 0.2]
            if not en or en[-1] != 0:
                add(Finding("not_stopped", "RUNAWAY left the motor driver enabled"))

    # ---- the injected fault's alarm, by its deadline
    rule = RULES.get(fault) if fault != "none" else None
    if (rule is not None and fault == "runaway" and fval is not None
            and not isinstance(fval, bool) and float(fval) < rate):
        # a driver stuck stepping *slower* than the line (campaign default run 559: 50.7 mL/h
        # under a 72.5 mL/h program) leaves the plunger behind it, which is a stall by every
        # measurement the pump has: STALL (high, motor off) is the right alarm too
        rule = replace(rule, alarms=("RUNAWAY", "STALL"))
    allowed = set(ALWAYS_ALLOWED)
    causes = []
    for e in events:
        r = RULES.get(e["fault"])
        if r is not None:
            allowed |= set(r.allow) | set(r.alarms)
            causes.append(e["fault"])
    # a syringe emptied by the program itself
    fill = float(raw.get("pump", {}).get("fill_ml", 50.0))
    if vol >= fill - 0.1 * (raw.get("pump", {}).get("syringe_ml", 50) / 50.0) - 0.5 or "syr_nl" in cfg:
        allowed |= {"NEAR_EMPTY", "EMPTY", "STALL", "OCCLUSION"}
    # being left paused / in alarm for long is a reason to call back
    if any(a["prio"] >= 2 for a in alarms) or region != "inside":
        allowed.add("CALLBACK")
    # on battery (drawn low, or mains lost)
    pump = raw.get("pump", {})
    if not pump.get("mains", True) or fault == "mains":
        if float(pump.get("battery_soc", 1.0)) < 0.5:
            allowed |= {"BATT_LOW", "BATT_DEPLETED"}
    # vitals: only a relayed reading outside the drug's limits may raise VITALS
    if _vitals_due(raw, res, infusing_only=False) is not None:
        allowed.add("VITALS")
    # ... and VITALS is *due* only for a reading while an infusion is under way: the
    # interlock pauses an infusion, and an alarm belongs to the infusion that raised it
    # (issue 10); after COMPLETE or STOP there is nothing to pause (seed 123 run 129 of the
    # new forms' probe: DBP 111 at 1770 s, 24 s after COMPLETE)
    vit_due = _vitals_due(raw, res)
    # the interlock without fresh readings (no monitor, or one slower than the pump's limit)
    if "interlock" in cfg:
        allowed.add("VITALS_STALE")
    if rule is not None and t_f is not None:
        due_from, required = _due(fault, fval, t_f, raw, res, rule, vit_due)
        if required and due_from is not None:
            hit = _first(alarms, rule.alarms, min(t_f, due_from))
            deadline = due_from + rule.deadline_s
            if hit is None or hit["t_s"] > deadline + 1e-9:
                when = f"raised at {hit['t_s']:.1f} s" if hit else f"never raised (raised: {names or 'none'})"
                add(Finding("alarm_missed", f"{fault} at {t_f:.1f} s needs {'/'.join(rule.alarms)} "
                                            f"by {deadline:.1f} s: {when}"))
            elif hit["prio"] < rule.prio:
                add(Finding("alarm_missed", f"{hit['name']} raised with priority {hit['prio']}, "
                                            f"needs {rule.prio}"))
            elif rule.prio >= HIGH and not any(p >= HIGH for t, p in sim.alarms
                                               if t / 1000.0 <= deadline + 0.5):
                add(Finding("alarm_missed", f"{hit['name']} frame sent but the board's alarm "
                                            f"output never reached high priority"))

    if rule is not None and t_f is not None and rule.alarms:
        hit = _first(alarms, rule.alarms, t_f)
        if hit is not None:
            fig["time_to_alarm_s"] = round(hit["t_s"] - t_f, 3)
            fig["alarm"] = hit["name"]

    # ---- the released bolus when an occlusion opens
    if "bolus_ml" in m:
        fig["bolus_ml"] = m["bolus_ml"]
        if m["bolus_ml"] > BOLUS_MAX_ML:
            add(Finding("bolus", f"{m['bolus_ml']:.3f} mL released when the occlusion opened"))

    # ---- accuracy when nothing went wrong; silent shortfall otherwise
    nominal = fault == "none" and region != "hard"
    err = (delivered - vol) / vol * 100.0 if vol > 0 else 0.0
    loud = [a for a in alarms if a["prio"] >= 2]
    t_end = rec.t_s[-1] if rec.t_s else 0.0
    expect = line_ml(segs, t_end - t0, kvo)
    # a program cut short by the run's cap is judged against its line at the end, where an
    # unprimed syringe's slack may still be owed
    owed = _startup_ml(raw) if expect < vol_lot else 0.0
    if kvo > 0 and expect > vol_lot:         # the KVO volume is part of what was due
        err = (delivered - expect / lot) / (expect / lot) * 100.0
    if nominal and not loud:
        p_end = rec.pressure_mmhg[-1] if rec.pressure_mmhg else p_first
        pushed = delivered + c_tot * (p_end - p_first)
        if expect >= vol_lot:
            fig["delivery_error_pct"] = round(err, 4)
        if abs(pushed - expect) > expect * ACC_FRAC + ACC_ABS_ML + store + owed:
            add(Finding("inaccurate", f"delivered {delivered:.4f} mL, {expect:.4f} mL due by {t_end:.0f} s "
                                      f"(program {vol:.4f} mL, {err:+.2f} %"
                                      + (f"; the lot's bore gives {vol_lot:.4f} mL" if bore_tol else "") + ")"))
    elif region != "hard" and not loud and rate > 0:
        if delivered < expect * (1 - ACC_FRAC) - ACC_ABS_ML - _startup_ml(raw) - store:
            add(Finding("silent_stop", f"delivered {delivered:.4f} mL, expected {expect:.4f} mL "
                                       f"by {t_end:.0f} s, no alarm of priority >= 2"))

    # ---- alarms without a cause (after a high alarm, its consequences are not 'false')
    for a in alarms:
        if a["name"] == "?" and any(PRIO.get(n) == a["prio"] or (n == "COMM_LOSS" and a["prio"] == 3)
                                    for n in allowed):
            continue       # a frame lost to noise: an allowed alarm of that priority explains it
        if a["name"] not in allowed:
            if a["name"] == "AIR" and fault == "bubble_ul" and fval is not None and float(fval) >= AIR_MAY_UL:
                continue
            add(Finding("false_alarm", f"{a['name']} at {a['t_s']:.1f} s (causes: {causes or 'none'})"))
    fig["alarms"] = names
    return out


def line_ml(segs: list[tuple[float, float]], t_s: float, kvo_ml_h: float = 0.0) -> float:
    """The programmed volume (mL) ``t_s`` seconds after START: each segment (rate mL/h,
    volume mL) in turn at its rate, then the KVO rate (0: nothing after the last)."""
    out, t = 0.0, max(0.0, t_s)
    for r, v in segs:
        if r <= 0:
            continue
        dur = v / r * 3600.0
        if t < dur:
            return out + r * t / 3600.0
        out += v
        t -= dur
    return out + kvo_ml_h * t / 3600.0


def _bedside_swing_mmhg(raw: dict) -> float:
    """Largest venous-pressure swing the drawn bedside and height can cause (mmHg)."""
    b = raw.get("pump", {}).get("bedside", {})
    cm = float(b.get("arm_cm", 0.0)) + max([abs(float(e.get("value", 0))) for e in raw.get("events", [])
                                             if e.get("fault") == "height_cm"] + [0.0])
    return (2 * float(b.get("breath_mmhg", 0.0)) + float(b.get("cough_mmhg", 0.0))
            + float(b.get("strain_mmhg", 0.0)) + 2 * cm * 0.7356)


def observed_alarms(res) -> list[dict]:
    """The alarms a bench sees: the pump's ``EV ALARM`` frames, plus every rise of the
    board's alarm-priority output that no frame explains (a frame lost to link noise),
    named from the final STATUS when its priority matches ("?" otherwise)."""
    frames = list(res.alarms)
    st = res.metrics.get("status", {})
    st_name, st_prio = st.get("alarm", "NONE"), int(st.get("prio", 0) or 0)
    out = list(frames)
    prev = 0
    for t_ms, p in res.sim.alarms:
        t = t_ms / 1000.0
        if p > prev and not any(a["prio"] == p and t - 1.0 <= a["t_s"] <= t + 1.0 for a in frames):
            name = st_name if st_prio == p and st_name not in ("NONE", None) else "?"
            out.append({"t_s": round(t, 3), "name": name, "prio": p, "via": "board"})
        prev = p
    return sorted(out, key=lambda a: a["t_s"])


def _startup_ml(raw: dict) -> float:
    """Volume an unprimed syringe may take up before flow (slack; docs/simulator.md)."""
    if raw.get("pump", {}).get("primed", False):
        return 0.0
    from hil_sim.scenario import plant_params
    p = plant_params(raw.get("pump", {}))
    return p.slack_usteps * p.nl_per_kstep / 1e6 / 1000.0 * 1.5


def _due(fault, fval, t_f, raw, res, rule, vit_due) -> tuple[float | None, bool]:
    """(when the fault's alarm starts to be due, whether it is required at all)."""
    sim = res.sim
    rec = sim.record
    events = [e for e in raw.get("events", []) if e.get("fault") == fault]
    t_end = rec.t_s[-1] if rec.t_s else 0.0
    if not rule.alarms:
        return None, False
    if rule.needs_running and not _delivering(rec, t_f):
        return None, False
    if fault in ("occlusion", "occlusion_up", "resistance"):
        if fval is False or (fault == "resistance" and float(fval) <= 1.0):
            return None, False
        limit = float(raw.get("config", {}).get("occl_mmhg", OCCL_DEFAULT_MMHG))
        clear = [float(e["at_s"]) for e in events if e.get("value") is False
                 or (fault == "resistance" and float(e.get("value", 0)) <= 1.0)]
        t_clear = min(clear) if clear else math.inf
        i = _at(rec, t_f)
        for k in range(i, len(rec.t_s)):
            if rec.t_s[k] >= t_clear:
                break
            if rec.pressure_mmhg[k] >= limit:
                return rec.t_s[k], True
        return None, False
    if fault in ("bubble_ul", "air"):
        # due once the air has reached the sensor and more than every clinical limit of it
        # has passed (a forced sensor: air from onset, so only the volume counts)
        ul = float(fval) if fault == "bubble_ul" else AIR_MUST_UL
        if ul < AIR_MUST_UL or fval is False:
            return None, False
        i = _at(rec, t_f)
        if i >= len(rec.t_s):
            return None, False
        d0 = rec.delivered_ml[i]
        line = float(raw.get("pump", {}).get("params", {}).get("line_volume_to_air_sensor_ml",
                                                               LINE_TO_SENSOR_ML))
        if fault == "air":
            line = 0.0
        for k in range(i, len(rec.t_s)):
            if rec.delivered_ml[k] - d0 >= line + ul / 1000.0:
                return rec.t_s[k], True
        return None, False
    if fault == "power_cut":
        back = [float(e["at_s"]) for e in events if e.get("value") is False]
        interrupted = _delivering(rec, t_f)
        return (back[0], True) if back and interrupted and back[0] + rule.deadline_s <= t_end else (None, False)
    if fault == "watchdog_stall":
        if float(fval) <= sim.watchdog_ms or not _delivering(rec, t_f):
            return None, False
        return t_f + sim.watchdog_ms / 1000.0, True
    if fault == "host_silence":
        hb = int(raw.get("config", {}).get("hb_ms", 0))
        if hb <= 0:
            return None, False
        return t_f + hb / 1000.0, t_f + hb / 1000.0 + rule.deadline_s <= t_end
    if fault == "hypertension":
        if vit_due is None or "interlock" not in raw.get("config", {}):
            return None, False
        return vit_due, vit_due + rule.deadline_s <= t_end
    if fault == "mains":
        soc = float(raw.get("pump", {}).get("battery_soc", 1.0))
        p = sim.params
        hours = soc * p.battery_mah / (p.idle_ma + p.motor_ma)
        if fval is not False or hours > 0.5:       # IEC 60601-2-24: >= 30 min before depletion
            return None, False
        return t_f, True
    if fault == "empty":
        # due once the stopper meets the barrel end (the end-stop switch closes: plant truth).
        # A stopper held by static friction at a low rate meets it only when it next slips
        # (default-campaign probe run 44, 1.8 mL/h: 2.2 s after the onset; 1 mL/h: 5.1 s)
        if fval is False or fval == 0:
            return None, False
        closed = [t / 1000.0 for t, c in getattr(sim, "end_stops", []) if c and t / 1000.0 >= t_f]
        if not closed:
            return None, False              # never observable: a shortfall is silent_stop's
        return closed[0], closed[0] + rule.deadline_s <= t_end
    if fault in ("stall", "encoder_fail", "runaway", "sensor_stuck", "door_open"):
        if fval is False or fval == 0:
            return None, False
        return t_f, t_f + rule.deadline_s <= t_end
    return t_f, True


_INFUSING = ("RUNNING", "KVO", "PAUSED")


def _state_at(res, t: float) -> str:
    """The pump's state at time t from the run's state changes (IDLE before the first)."""
    st = "IDLE"
    for s in res.states:
        if s["t_s"] > t:
            break
        st = s["state"]
    return st


def _vitals_due(raw: dict, res, infusing_only: bool = True) -> float | None:
    """The time of the first VITALS reading the runner relayed that lies outside the drug's
    (or the library's default) limits, from the frame log; None when every reading was inside.
    ``infusing_only``: count only readings that reached the pump while an infusion was under
    way (RUNNING, KVO, PAUSED)."""
    import json

    from hil_sim.campaign.draw import LIB_PATH
    if raw.get("patient") is None:
        return None
    lib = json.loads(LIB_PATH.read_text())
    lim = dict(lib.get("vitals_default", {}))
    # the pump holds the drug's limits only for a program it accepted (controller: the
    # library's default without one); a program beyond a hard limit is refused (seed 99 run
    # 207 of the new forms' probe: remifentanil refused, HR 50 inside the default limits)
    drug = (raw.get("program", {}).get("drug")
            if raw.get("campaign", {}).get("region", "inside") != "hard" else None)
    for d in lib["drugs"]:
        if d["name"] == drug:
            lim.update(d.get("vitals", {}))
    for t, direction, text in res.log:
        if direction != ">" or " VITALS " not in f" {text} ":
            continue
        f = dict(tok.split("=", 1) for tok in text.split("*")[0].split() if "=" in tok)
        try:
            sbp, dbp, hr, spo2 = (int(f[k]) for k in ("sbp", "dbp", "hr", "spo2"))
        except (KeyError, ValueError):
            continue
        if (sbp > lim.get("sbp_max", 999) or dbp > lim.get("dbp_max", 999) or hr > lim.get("hr_max", 999)
                or hr < lim.get("hr_min", 0) or spo2 < lim.get("spo2_min", 0)):
            if infusing_only and _state_at(res, float(t)) not in _INFUSING:
                continue
            return float(t)
    return None


def _envelope_check(raw: dict, res, t0: float, allowance_ml: float) -> str:
    """The therapy envelope of issue 10 on the plant's delivered volume (empty: inside)."""
    if _envelope is None:
        return ""
    from hil_sim.campaign.draw import LIB_PATH
    from hil_sim.scenario import program_frames
    facts = raw.get("campaign", {})
    if facts.get("region") == "hard":
        return ""
    weight = float(raw.get("patient", {}).get("weight_kg", raw.get("program", {}).get("weight_kg", 70.0)))
    try:
        env = _envelope.Envelope(str(LIB_PATH))
        wires, frame = program_frames(raw["program"], weight)
        steps = [(int(w["rate_ul_h"]), int(w["vol_nl"]) if "vol_nl" in w
                  else int(w["rate_ul_h"]) * int(w["dur_ms"]) // 3600) for w in wires] or None
        if env.program(dict(frame), steps) is not None:
            return ""                  # the library refuses it; wrong_program judges acceptance
    except Exception as e:             # an envelope API we do not know: say so, do not guess
        return f"envelope unusable: {e!r}"
    rec = res.sim.record
    for t, d in zip(rec.t_s, rec.delivered_ml):
        ms = int((t - t0) * 1000)
        vmax = env.volume_max(ms) + env.kvo_max(ms)
        if d * 1e6 > vmax * (1 + ACC_FRAC) + (ACC_ABS_ML + allowance_ml) * 1e6:
            return f"{d:.4f} mL at {t:.0f} s above {vmax / 1e6:.4f} mL"
    return ""


def checks(raw: dict, res) -> list[tuple[str, bool, str]]:
    """The oracle as scenario checks (what, ok, detail) — one per hazard found, or one 'ok'."""
    out = judge(raw, res)
    rows = [(f"campaign oracle: {f.hazard}", False, f.detail) for f in out.findings
            if f.hazard != "false_alarm"]
    rows += [(f"campaign oracle: false alarm", True, f.detail) for f in out.findings
             if f.hazard == "false_alarm"]
    if not any(not ok for _, ok, _ in rows):
        rows.append(("campaign oracle", True, "no hazard"))
    return rows
