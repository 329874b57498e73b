"""The ``infusekit demo`` and ``infusekit sim …`` commands (wired into host/cli.py through
`register`).

This module owns argument parsing and process-level behaviour (printing the URL, exit
codes, Ctrl-C) for the simulator commands; the work is in `cosim`, `scenario` and `serve`.
Commands are declared with ``host.clikit.command`` (the pattern is in host/clikit.py's
docstring): to add ``sim NAME`` write ``@command(sim, "NAME")`` inside `register` below, or
from your own module ``@command(cli.commands["sim"], "NAME")``.
``python -m hil_sim.cli sim serve …`` works on its own.
"""
from __future__ import annotations

import signal
import sys
import threading

import click

from host.clikit import EXIT_FAIL, EXIT_LINK, EXIT_OK, EXIT_USAGE, command, error, group, root_group

RUNTIMES = ("micropython", "cpython", "rp2040")   # rp2040: the image on an emulated chip (hil_sim/rp2040.py)


class SpeedType(click.ParamType):
    """A speed-up factor (1 = real time), 'max' (as fast as the runtime goes: None) or, where
    ``lockstep`` is set, 'lockstep' (virtual time moves only when the host or the control port
    needs it: hil_sim.serve)."""
    name = "FACTOR|max"

    def __init__(self, lockstep: bool = False) -> None:
        self.lockstep = lockstep
        if lockstep:
            self.name = "FACTOR|max|lockstep"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if value == "max":
            return None
        if value == "lockstep" and self.lockstep:
            return value
        try:
            v = float(value)
        except ValueError:
            self.fail("a factor (1 = real time), 'max'"
                      + (" or 'lockstep'" if self.lockstep else ""), param, ctx)
        if not v > 0 or v != v or v == float("inf"):
            self.fail("the speed factor must be a finite number > 0", param, ctx)
        return v


class LinkType(click.ParamType):
    """``pty`` or ``tcp:PORT`` -> ("pty", 0) / ("tcp", PORT)."""
    name = "pty|tcp:PORT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        if value == "pty":
            return ("pty", 0)
        if value.startswith("tcp:"):
            try:
                port = int(value[4:])
            except ValueError:
                self.fail("tcp:PORT with a port number", param, ctx)
            if not 0 <= port <= 65535:
                self.fail("port must be 0..65535", param, ctx)
            return ("tcp", port)
        self.fail("pty or tcp:PORT", param, ctx)


def register(cli: click.Group) -> None:
    """Add the simulator's commands (``demo``, ``sim serve|run|list``) to the CLI group."""

    @command(cli, "demo", help=(
        "ketamine 0.5 mg/kg over 40 min for 70 kg on a simulated pump: the firmware (under "
        "the real micropython interpreter by default) driven over a pseudo-terminal by the "
        "host library, in virtual time, with a progress display, a report and a plot. "
        "Exit 1 when the delivered volume is off by more than 0.5 % or the pump did not "
        "complete."), short_help="ketamine 0.5 mg/kg over 40 min for 70 kg on a simulated pump")
    @click.option("--runtime", type=click.Choice(RUNTIMES), default="micropython",
                  show_default=True, help="where the firmware runs")
    @click.option("--weight", type=click.FloatRange(min=0, min_open=True), default=70.0,
                  show_default=True, help="patient weight in kg")
    @click.option("--seed", type=int, default=0, show_default=True, help="random seed")
    @click.option("--speed", type=SpeedType(), default=None,
                  help="factor (1 = real time) or 'max' (default)")
    @click.option("--plot", default="out/demo.png", show_default=True,
                  help="where to save the plot")
    @click.option("--no-plot", is_flag=True, help="do not draw the plot")
    def demo(args) -> int:
        from hil_sim.demo import cmd_demo
        return cmd_demo(args)

    sim = group(cli, "sim", "simulated pump (hardware-in-the-loop): firmware + plant in "
                            "virtual time")

    @command(sim, "serve", help=(
        "Start a simulated pump, print the serial URL to connect to (one line), and run "
        "until interrupted."), short_help="start a simulated pump and print its serial URL")
    @click.option("--runtime", type=click.Choice(RUNTIMES), default="micropython",
                  help="where the firmware runs (default: micropython, the shipped code path)")
    @click.option("--compiled", is_flag=True,
                  help="run the firmware from .mpy files compiled with mpy-cross")
    @click.option("--speed", type=SpeedType(lockstep=True), default="1",
                  help="virtual seconds per wall second, 'max', or 'lockstep' (virtual time "
                       "moves only to answer the host and on the control port's 'advance "
                       "MS'; docs/simulator.md) (default: 1 = real time)")
    @click.option("--link", type=LinkType(), default="pty",
                  help="pty (a /dev/pts/N path) or tcp:PORT (socket://127.0.0.1:PORT)")
    @click.option("--seed", type=int, default=0, help="random seed (default 0)")
    @click.option("--baud", type=click.IntRange(min=1), default=115200,
                  help="simulated link baud rate (default 115200)")
    @click.option("--scenario", default=None,
                  help="a scenario file (or library name): its pump, patient and fault "
                       "timeline (the host's program and commands are left to the host)")
    @click.option("--control", type=LinkType(), default=None, metavar="tcp:PORT",
                  help="also open a fault-injection control port (one text command per "
                       "line, e.g. 'occlusion on', 'bubble_ul 150'; see docs/simulator.md)")
    @click.option("--monitor", default=None, metavar="mllp://HOST:PORT",
                  help="the simulated patient's bedside monitor sends IHE PCD-01 ORU^R01 "
                       "there (e.g. to `infusekit vitals-bridge`; docs/hl7.md)")
    @click.option("--monitor-patient", default=None, metavar="ID",
                  help="the patient id (PID-3) the monitor sends (default: the scenario's "
                       "[monitor] patient_id, else PAT-1)")
    @click.option("--nibp-interval", type=click.FloatRange(min=0, min_open=True), default=None,
                  metavar="S", help="NIBP cycle in seconds (default: the scenario's, else 120)")
    def serve_cmd(args) -> int:
        return cmd_sim_serve(args)

    @command(sim, "run", help=(
        "Run a scenario file (or a library scenario by name) to its end in virtual time, "
        "print its figures and check its expectations. Exit 0 when every expectation holds, "
        "1 when one does not, 2 for a broken scenario file."),
        short_help="run a scenario to its end in virtual time and check it")
    @click.argument("scenario")
    @click.option("--runtime", type=click.Choice(RUNTIMES), default=None,
                  help="where the firmware runs (default: the scenario's first runtime)")
    @click.option("--controller", type=click.Choice(["firmware", "baseline"]), default=None,
                  help="the pump firmware, or the open-loop baseline (default: the scenario's)")
    @click.option("--seed", type=int, default=None, help="override the scenario's seed")
    @click.option("--report", metavar="DIR", default=None,
                  help="write plots, HTML and JSON here")
    def run_cmd(args) -> int:
        return cmd_sim_run(args)

    @command(sim, "list", help="List the scenarios in hil_sim/scenarios.",
             short_help="list the scenario library")
    def list_cmd(args) -> int:
        return cmd_sim_list(args)

    from hil_sim.campaign.cli import register as register_campaign
    register_campaign(sim)           # sim campaign (hil_sim/campaign/cli.py)


def cmd_sim_list(args) -> int:
    from hil_sim.scenario import library
    for s in library():
        flag = f"  [pending: {s.meta.get('pending_reason')}]" if s.status == "pending" else ""
        print(f"{s.name:28} {','.join(s.runtimes):20} {s.meta.get('description', '').split(chr(10))[0][:60]}{flag}")
    return 0


def cmd_sim_run(args) -> int:
    import json

    from hil_sim.runtime import FirmwareError
    from hil_sim.scenario import ScenarioError, load, run_scenario

    try:
        scn = load(args.scenario)
        res = run_scenario(scn, args.runtime, controller=args.controller, seed=args.seed)
    except (FileNotFoundError, ScenarioError) as e:
        return error(args.json, EXIT_USAGE, "scenario", f"sim run: {e}")
    except FirmwareError as e:
        return error(args.json, EXIT_FAIL, "firmware", f"sim run: {e}")
    files = {}
    if args.report:
        from hil_sim.report import write_report
        files = write_report(res, args.report)
    if args.json:
        d = res.to_json()
        d["report"] = files
        print(json.dumps(d, default=str))
    else:
        _print_result(res, files)
    return EXIT_OK if res.passed else EXIT_FAIL


def _print_result(res, files: dict) -> None:
    m = res.metrics
    print(f"scenario {res.scenario}: {res.controller} on {res.runtime} ({res.fw_version}), "
          f"{res.sim_s:.0f} s virtual in {res.wall_s:.2f} s")
    if "programmed_ml" in m:
        print(f"  programmed {m['programmed_ml']:.4f} mL at {m['programmed_rate_ml_h']:g} mL/h, "
              f"delivered {m['delivered_ml']:.4f} mL"
              + (f" ({m['error_pct']:+.3f} %)" if m.get("error_pct") is not None
                 else " (nothing programmed: the library refuses the program)"))
    for key in ("first_flow_s", "startup_s", "bolus_ml", "detection_limit_s"):
        if m.get(key) is not None:
            print(f"  {key}: {m[key]}")
    for o in m.get("occlusion", []):
        print(f"  occlusion at {o['t_s']:.0f} s: alarm after {o['time_to_alarm_s']} s "
              f"(line pressure {o['pressure_at_alarm_mmhg']} mmHg)")
    if "trumpet" in m:
        tr = m["trumpet"]
        print(f"  trumpet (2nd hour): A = {tr['overall_pct']:+.2f} %; " + ", ".join(
            f"{p} min {w['ep_min_pct']:+.2f}/{w['ep_max_pct']:+.2f} %" for p, w in tr["windows"].items()))
    if "patient" in m:
        pt = m["patient"]
        print(f"  patient: Cp {pt['cp_ng_ml']} ng/mL, vitals {pt['vitals_true']}")
    print("  alarms: " + (", ".join(f"{a['name']}@{a['t_s']:.1f}s" for a in res.alarms) or "none"))
    for c in res.checks:
        print(f"  [{'ok' if c.ok else 'FAIL'}] {c.what}: {c.detail}")
    for k, v in files.items():
        print(f"  {k}: {v}")
    print("PASS" if res.passed else "FAIL")


def cmd_sim_serve(args) -> int:
    from hil_sim.cosim import Simulation
    from hil_sim.link import PtyEndpoint, SerialLink, TcpEndpoint
    from hil_sim.runtime import FirmwareError
    from hil_sim.scenario import ScenarioError
    from hil_sim.serve import serve

    kind, port = args.link
    try:
        endpoint = PtyEndpoint() if kind == "pty" else TcpEndpoint(port)
    except OSError as e:
        return error(args.json, EXIT_LINK, "link", f"sim serve: cannot open the {kind} link: {e}")
    stop = threading.Event()
    # SIGTERM stops as cleanly as Ctrl-C
    prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    control = None
    sender = None
    try:
        kw: dict = {}
        events: list = []
        if args.scenario:
            from hil_sim.scenario import load, plant_params
            from hil_sim.patient import PatientParams
            scn = load(args.scenario)
            kw["params"] = plant_params(scn.raw.get("pump", {}))
            pat = scn.raw.get("patient")
            if pat is not None:
                kw["patient"] = PatientParams(weight_kg=float(pat.get("weight_kg", 70)),
                                              model=pat.get("model", "clements"),
                                              hypertensive=bool(pat.get("hypertensive", False)))
            events = [e for e in scn.raw.get("events", []) if "fault" in e]
        monitor = _sim_monitor(args, scn.raw if args.scenario else {})
        if monitor is not None and "patient" not in kw:
            from hil_sim.patient import PatientParams
            kw["patient"] = PatientParams()
        with Simulation(args.runtime, seed=args.seed, compiled=args.compiled,
                        link=SerialLink(baud=args.baud, seed=args.seed), **kw) as sim:
            for e in events:
                extra = {k: v for k, v in e.items() if k not in ("at_s", "fault", "value", "note")}
                sim.schedule(e["at_s"] * 1000, e["fault"], e.get("value", True), **extra)
            print(endpoint.url, flush=True)
            from hil_sim.serve import LOCKSTEP, Clock
            clock = Clock() if args.speed == LOCKSTEP else None
            if args.control is not None:
                from hil_sim.control import ControlServer
                control = ControlServer(sim, port=args.control[1], clock=clock)
                control.start()
                print(control.url, flush=True)
            after = None
            if monitor is not None:
                from hil_sim.monitor import Monitor, MonitorSender
                mon = Monitor(sim.patient, monitor, seed=args.seed)
                sender = MonitorSender(args.monitor).start()

                def after(sim, mon=mon, put=sender.put):
                    for m in mon.poll(sim.t_ms):
                        put(m)
                print(f"monitor: PCD-01 for patient {monitor.patient_id} to {args.monitor}",
                      flush=True)

            def capped(asked: float, achieved: float) -> None:
                print(f"infusekit sim serve: --speed {asked:g} is beyond what the "
                      f"{sim.runtime_name} runtime can do (about {achieved:.0f}x here); "
                      f"running as fast as it can, virtual time no longer follows the wall "
                      f"clock at {asked:g}x", file=sys.stderr, flush=True)
            serve(sim, endpoint, speed=args.speed, stop=stop, on_capped=capped, after=after,
                  clock=clock, hold=sender.busy if sender is not None else None)
    except (FileNotFoundError, ScenarioError) as e:
        return error(args.json, EXIT_USAGE, "scenario", f"sim serve: {e}")
    except FirmwareError as e:
        return error(args.json, EXIT_FAIL, "firmware", f"sim serve: {e}")
    except ValueError as e:          # --monitor URL or the scenario's [monitor] table
        return error(args.json, EXIT_USAGE, "monitor", f"sim serve: {e}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        if sender is not None:
            sender.close()
        endpoint.close()
        if control is not None:
            control.close()
    return EXIT_OK


def _sim_monitor(args, raw: dict):
    """The monitor's parameters for ``sim serve --monitor`` (None without it)."""
    if not getattr(args, "monitor", None):
        return None
    from dataclasses import replace
    from hil_sim.monitor import MonitorParams, parse_mllp_url
    parse_mllp_url(args.monitor)
    p = MonitorParams.from_toml(raw.get("monitor", {}))
    if args.monitor_patient:
        p = replace(p, patient_id=args.monitor_patient)
    if args.nibp_interval:
        p = replace(p, nibp_interval_s=args.nibp_interval)
    return p


def main(argv: list[str] | None = None) -> int:
    from host.clikit import run
    cli = root_group("python -m hil_sim.cli", help="the simulator's commands alone")
    register(cli)
    return run(cli, argv, prog="python -m hil_sim.cli")


if __name__ == "__main__":
    sys.exit(main())
