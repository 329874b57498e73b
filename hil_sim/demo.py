"""`infusekit demo`: the main job, end to end through every real part.

A simulated pump (plant in CPython, firmware under the real `micropython` interpreter or
in-process) serves its UART on a pseudo-terminal; the host library opens that pty with
pyserial, programs ketamine 0.5 mg/kg over 40 min for a 70 kg patient from the drug library,
starts it and follows it to the end. The report compares the programmed volume with the
gravimetric volume the plant measured, lists the alarms the pump raised, and gives the wall
time and the speed-up over real time; a plot goes to out/demo.png.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hil_sim.cosim import Simulation
from hil_sim.link import PtyEndpoint
from hil_sim.serve import serve

SETTLE_MS = 30_000      # after completion, let the line pressure relax before weighing


@dataclass
class DemoResult:
    runtime: str
    drug: str
    dose: str
    weight_kg: float
    over: str
    programmed_ml: float
    delivered_ml: float          # gravimetric: what left the line
    pump_reported_ml: float      # what the pump says it delivered
    error_pct: float
    alarms: list[str] = field(default_factory=list)
    final_state: str = ""
    sim_s: float = 0.0           # virtual time from start to completion
    wall_s: float = 0.0          # wall time from start to completion
    speedup_x: float = 0.0
    url: str = ""
    plot: str | None = None


def run_demo(runtime: str = "micropython", *, weight_kg: float = 70, dose: str = "0.5 mg/kg",
             over: str = "40 min", drug: str = "ketamine", seed: int = 0, speed: float | None = None,
             plot: str | None = "out/demo.png", progress: bool = True) -> DemoResult:
    from host import Pump  # the host library, exactly as a user would use it

    from hil_sim.patient import PatientParams
    lib_drug = _library_drug(drug)
    sim = Simulation(runtime=runtime, seed=seed, patient=PatientParams(weight_kg=weight_kg),
                     conc_mg_ml=lib_drug["conc_ug_ml"] / 1000 if lib_drug else 1.0)
    ep = PtyEndpoint()
    stop = threading.Event()
    server = threading.Thread(target=serve, args=(sim, ep, speed, stop), name="sim-serve", daemon=True)
    server.start()
    alarms: list[str] = []
    marks: list[tuple[int, str]] = []       # (virtual ms, alarm name) as the host saw them
    try:
        # the emulated RP2040 runs near real time and boots in seconds of wall time
        with Pump.open(ep.url, timeout=60.0 if runtime == "rp2040" else 5.0) as pump:
            pump.on_event(lambda ev: _collect_alarm(ev, alarms, marks, sim))
            prog = pump.program(drug=drug, dose=dose, over=over, weight_kg=weight_kg)
            programmed_ml = prog.vtbi_nl / 1e6
            pump.telemetry(TELEMETRY_MS)
            t_wall0 = time.perf_counter()
            pump.start()
            st = _follow(pump, programmed_ml, progress)
            t_wall1 = time.perf_counter()
            # let the line relax, then weigh
            target = sim.t_ms + SETTLE_MS
            while sim.t_ms < target and server.is_alive():
                time.sleep(0.01)
            final = pump.status()
    finally:
        stop.set()
        server.join(timeout=10)
        ep.close()
        runtime_name = sim.runtime_name
        sim.close()
    delivered = sim.plant.delivered_ml
    # virtual time of the infusion: motor enabled → motor disabled, as the simulator saw it
    t_on, t_off = _motor_span(sim)
    sim_s = (t_off - t_on) / 1000
    wall_s = t_wall1 - t_wall0
    res = DemoResult(
        runtime=runtime_name, drug=drug, dose=dose, weight_kg=weight_kg, over=over,
        programmed_ml=round(programmed_ml, 6), delivered_ml=round(delivered, 6),
        pump_reported_ml=final.del_nl / 1e6,
        error_pct=round((delivered - programmed_ml) / programmed_ml * 100, 4),
        alarms=alarms, final_state=st.state, sim_s=round(sim_s, 3), wall_s=round(wall_s, 3),
        speedup_x=round(sim_s / wall_s, 1) if wall_s > 0 else 0.0, url=ep.url)
    if plot:
        res.plot = str(_plot(sim, res, Path(plot), marks))
    return res


def _motor_span(sim: Simulation) -> tuple[int, int]:
    """Virtual ms of the longest span the motor was enabled, as the simulator saw it (0 / now
    when it never was). The longest, not the first: the RP2040 board's enable line can pulse
    for a tick before START (the first span was 0.1 s in the rp2040 demo)."""
    best = (0, sim.t_ms)
    on = None
    spans = []
    for t, e in sim.enables:
        if e and on is None:
            on = t
        elif not e and on is not None:
            spans.append((on, t))
            on = None
    if on is not None:
        spans.append((on, sim.t_ms))
    if spans:
        best = max(spans, key=lambda s: s[1] - s[0])
    return best


def _collect_alarm(ev, alarms: list[str], marks: list | None = None, sim=None) -> None:
    if getattr(ev, "name", "") == "ALARM" and marks is not None and sim is not None:
        marks.append((sim.t_ms, ev.fields.get("alarm", "?")))
    if getattr(ev, "name", "") == "ALARM":
        alarms.append(f"{ev.fields.get('alarm', '?')} (priority {ev.fields.get('prio', '?')})")


TELEMETRY_MS = 20000    # one telemetry frame per 20 s of pump time drives the progress bar
                        # (at ~10,000x real time that is ~500 frames per wall second)
_ENDED = ("COMPLETE", "ALARM", "IDLE")


def _follow(pump, programmed_ml: float, show: bool):
    """Follow the infusion from the pump's telemetry and events (no polling) until it ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from host.codec import Event, Telemetry

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:6.2f}/{task.total:.2f} mL"),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                  disable=not (show and sys.stdout.isatty()), transient=False) as bar:
        task = bar.add_task("ketamine", total=programmed_ml, info="")
        p_mmhg = "?"                   # line pressure: telemetry's (STATUS has none in v1)
        ended = False
        while not ended:
            for ev in pump.events(timeout=30):
                if isinstance(ev, Telemetry):
                    f = ev.fields
                    p_mmhg = f.get("p_mmhg", p_mmhg)
                    bar.update(task, completed=int(f.get("del_nl", 0)) / 1e6,
                               info=f"{f.get('state', '?'):<9} t={int(f.get('el_ms', 0)) / 60000:5.1f} min"
                                    f"  p={f.get('p_mmhg', '?'):>3} mmHg")
                elif isinstance(ev, Event) and ev.name == "STATE" and ev.fields.get("state") in _ENDED:
                    ended = True
                    break
            else:
                # 30 wall s without a frame (a slow runtime: the emulated RP2040 takes ~20 s
                # of wall time per telemetry frame): ask, rather than give up on a running pump
                ended = pump.status().state in _ENDED
        st = pump.status()
        bar.update(task, completed=st.del_nl / 1e6,
                   info=f"{st.state:<9} t={st.el_ms / 60000:5.1f} min  p={p_mmhg:>3} mmHg")
        return st


# the measured plasma level after 0.5 mg/kg ketamine over 40 min: about 185 ng/mL (Zarate
# 2006), range 100-250 ng/mL (Krystal 1994) — /work/shared/CONTEXT.md, docs/simulator.md
THERAPEUTIC_NG_ML = {"ketamine": (100.0, 250.0, 185.0)}


def _library_drug(name: str) -> dict | None:
    from host.druglib import DrugLibrary
    try:
        lib = DrugLibrary.load()
        return lib.get(name).to_json() if name in lib else None
    except (OSError, ValueError):
        return None


def _plot(sim: Simulation, res: DemoResult, path: Path,
          marks: list[tuple[int, str]] = ()) -> Path:
    """Four panels on one time axis (min from the motor start): plasma level against the
    therapeutic band; SBP/DBP/HR against the drug's interlock limits; the pump's rate and
    the delivered volume; line pressure. Alarms are marked on every panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, pr = sim.record, sim.patient_record
    t0 = _motor_span(sim)[0] / 1000         # time axis starts when the motor starts
    tm = [(t - t0) / 60 for t in rec.t_s]
    tp = [(t - t0) / 60 for t in pr.t_s]
    drug = _library_drug(res.drug) or {}
    lim = drug.get("vitals") or {}
    fig, (ax_cp, ax_v, ax_r, ax_p) = plt.subplots(4, 1, figsize=(9, 10), sharex=True,
                                                  gridspec_kw={"height_ratios": [3, 3, 2, 2]})
    ax_cp.plot(tp, pr.cp_ng_ml, color="tab:purple", label="plasma level (model)")
    band = THERAPEUTIC_NG_ML.get(res.drug)
    if band:
        ax_cp.axhspan(band[0], band[1], color="tab:green", alpha=0.12,
                      label=f"measured range {band[0]:g}-{band[1]:g} ng/mL")
        ax_cp.axhline(band[2], color="tab:green", ls="--", lw=0.8,
                      label=f"measured mean {band[2]:g} ng/mL")
    ax_cp.set_ylabel("plasma (ng/mL)")
    ax_cp.legend(loc="lower right", fontsize=8)
    ax_cp.set_title(f"{res.drug} {res.dose} over {res.over}, {res.weight_kg:g} kg — firmware on "
                    f"{res.runtime}: delivered {res.delivered_ml:.3f} of {res.programmed_ml:.3f} mL "
                    f"({res.error_pct:+.2f} %)", fontsize=10)
    for series, colour, name, key in ((pr.sbp, "tab:red", "SBP", "sbp_max"),
                                      (pr.dbp, "tab:blue", "DBP", "dbp_max"),
                                      (pr.hr, "tab:gray", "HR", "hr_max")):
        ax_v.plot(tp, series, color=colour, label=name)
        if key in lim:
            ax_v.axhline(lim[key], color=colour, ls=":", lw=1,
                         label=f"interlock {name} > {lim[key]}")
    if "hr_min" in lim:
        ax_v.axhline(lim["hr_min"], color="tab:gray", ls="-.", lw=0.8,
                     label=f"interlock HR < {lim['hr_min']}")
    ax_v.set_ylabel("mmHg, /min")
    ax_v.legend(loc="upper right", fontsize=7, ncol=2)
    ax_r.step(tm, rec.cmd_ml_h, where="post", color="tab:blue", lw=0.8, label="motor rate")
    ax_r.set_ylabel("rate (mL/h)")
    ax_vol = ax_r.twinx()
    ax_vol.plot(tm, rec.delivered_ml, color="black", lw=0.8, label="delivered (gravimetric)")
    ax_vol.set_ylabel("volume (mL)")
    ax_r.legend(loc="upper left", fontsize=8)
    ax_vol.legend(loc="lower right", fontsize=8)
    ax_p.plot(tm, rec.pressure_mmhg, color="tab:red", lw=0.6, label="line pressure (plant)")
    ax_p.set_ylabel("pressure (mmHg)")
    ax_p.set_xlabel("virtual time since start (min)")
    ax_p.legend(loc="upper right", fontsize=8)
    for t_ms, name in marks:
        x = (t_ms / 1000 - t0) / 60
        for ax in (ax_cp, ax_v, ax_r, ax_p):
            ax.axvline(x, color="tab:orange", lw=0.8, ls="--")
        ax_cp.annotate(name, (x, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                       fontsize=7, va="top", ha="right", color="tab:orange")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def print_report(res: DemoResult) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="InfuseKit demo report", show_header=False)
    t.add_row("program", f"{res.drug} {res.dose} over {res.over}, {res.weight_kg:g} kg")
    t.add_row("firmware runtime", res.runtime)
    t.add_row("programmed", f"{res.programmed_ml:.3f} mL")
    t.add_row("delivered (gravimetric)", f"{res.delivered_ml:.3f} mL")
    t.add_row("delivered (pump record)", f"{res.pump_reported_ml:.3f} mL")
    t.add_row("error", f"{res.error_pct:+.3f} %")
    t.add_row("alarms", ", ".join(res.alarms) or "none")
    t.add_row("final state", res.final_state)
    t.add_row("virtual time", f"{res.sim_s:.1f} s ({res.sim_s / 60:.1f} min)")
    t.add_row("wall time", f"{res.wall_s:.2f} s")
    t.add_row("speed-up", f"{res.speedup_x:.0f}x real time")
    t.add_row("plot", res.plot or "-")
    Console().print(t)


def cmd_demo(args) -> int:
    try:
        res = run_demo(args.runtime, weight_kg=args.weight, seed=args.seed, speed=args.speed,
                       plot=None if args.no_plot else args.plot, progress=not args.json)
    except Exception as e:  # one line that says what went wrong
        print(f"demo failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(res)))
    else:
        print_report(res)
    ok = abs(res.error_pct) <= 0.5 and res.final_state == "COMPLETE"
    return 0 if ok else 1
