"""The ``infusekit sim …`` command line (wired into host/cli.py through `register`).

This module owns argument parsing and process-level behaviour (printing the URL, exit
codes, Ctrl-C) for the simulator commands; the work is in `cosim` and `serve`.

``register(subparsers)`` adds the ``sim`` parser (``_register_sim``); further top-level
commands (``demo``) get their own ``_register_…`` function called from `register`. Every
parser sets ``func(args) -> int``. ``python -m hil_sim.cli sim serve …`` works on its own.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the simulator's commands to a top-level ``infusekit`` parser."""
    _register_demo(subparsers)
    _register_sim(subparsers)


def _register_demo(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="ketamine 0.5 mg/kg over 40 min for 70 kg on a simulated pump",
        description="The main job: a simulated pump (firmware under the real micropython "
                    "interpreter by default) driven over a pseudo-terminal by the host library, "
                    "in virtual time, with a progress display, a report and a plot.")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    p.add_argument("--weight", type=float, default=70.0, help="patient weight in kg (default 70)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=_speed, default=None, help="factor (1 = real time) or 'max' (default)")
    p.add_argument("--plot", default="out/demo.png", help="where to save the plot")
    p.add_argument("--no-plot", action="store_true")

    def run(args: argparse.Namespace) -> int:
        from hil_sim.demo import cmd_demo
        return cmd_demo(args)

    p.set_defaults(func=run)
    return p


def _register_sim(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    sim = subparsers.add_parser("sim", help="simulated pump (hardware-in-the-loop)",
                                description="Simulated pump: firmware + plant in virtual time.")
    sim.set_defaults(func=lambda args: (sim.print_help(), 2)[1])
    sub = sim.add_subparsers(dest="sim_command", metavar="COMMAND")
    _register_sim_serve(sub)
    _register_sim_run(sub)
    _register_sim_list(sub)
    return sim


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a factor (1 = real time) or 'max'") from None
    if not v > 0:
        raise argparse.ArgumentTypeError("the speed factor must be > 0")
    return v


def _link(text: str) -> tuple[str, int]:
    if text == "pty":
        return ("pty", 0)
    if text.startswith("tcp:"):
        try:
            port = int(text[4:])
        except ValueError:
            raise argparse.ArgumentTypeError("tcp:PORT with a port number") from None
        if not 0 <= port <= 65535:
            raise argparse.ArgumentTypeError("port must be 0..65535")
        return ("tcp", port)
    raise argparse.ArgumentTypeError("pty or tcp:PORT")


def _register_sim_serve(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="start a simulated pump and print its serial URL",
                       description="Start a simulated pump, print the serial URL to connect "
                                   "to (one line), and run until interrupted.")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                   help="where the firmware runs (default: micropython, the shipped code path)")
    p.add_argument("--compiled", action="store_true",
                   help="run the firmware from .mpy files compiled with mpy-cross")
    p.add_argument("--speed", type=_speed, default=1.0, metavar="FACTOR|max",
                   help="virtual seconds per wall second, or 'max' (default: 1 = real time)")
    p.add_argument("--link", type=_link, default=("pty", 0), metavar="pty|tcp:PORT",
                   help="pty (a /dev/pts/N path) or tcp:PORT (socket://127.0.0.1:PORT)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--baud", type=int, default=115200, help="simulated link baud rate")
    p.add_argument("--scenario", default=None,
                   help="a scenario file (or library name): its pump, patient and fault timeline "
                        "(the host's program and commands are left to the connected host)")
    p.add_argument("--control", type=_link, default=None, metavar="tcp:PORT",
                   help="also open a fault-injection control port (one text command per line, "
                        "e.g. 'occlusion on', 'bubble_ul 150'; see docs/simulator.md)")
    p.set_defaults(func=cmd_sim_serve)
    return p


def _register_sim_run(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a scenario to its end in virtual time and check it",
                       description="Run a scenario file (or a library scenario by name) to its end "
                                   "in virtual time, print its figures and check its expectations. "
                                   "Exit status 0 when every expectation holds, 1 otherwise.")
    p.add_argument("scenario", help="a .toml file or the name of a scenario in hil_sim/scenarios")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default=None,
                   help="where the firmware runs (default: the scenario's first runtime)")
    p.add_argument("--controller", choices=("firmware", "baseline"), default=None,
                   help="the pump firmware, or the open-loop baseline (default: the scenario's)")
    p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    p.add_argument("--report", metavar="DIR", default=None, help="write plots, HTML and JSON here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_sim_run)
    return p


def _register_sim_list(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("list", help="list the scenario library",
                       description="List the scenarios in hil_sim/scenarios.")
    p.set_defaults(func=cmd_sim_list)
    return p


def cmd_sim_list(args: argparse.Namespace) -> int:
    from hil_sim.scenario import library
    for s in library():
        flag = f"  [pending: {s.meta.get('pending_reason')}]" if s.status == "pending" else ""
        print(f"{s.name:28} {','.join(s.runtimes):20} {s.meta.get('description', '').split(chr(10))[0][:60]}{flag}")
    return 0


def cmd_sim_run(args: argparse.Namespace) -> int:
    import json

    from hil_sim.runtime import FirmwareError
    from hil_sim.scenario import ScenarioError, load, run_scenario

    try:
        scn = load(args.scenario)
        res = run_scenario(scn, args.runtime, controller=args.controller, seed=args.seed)
    except (FileNotFoundError, ScenarioError) as e:
        print(f"infusekit sim run: {e}", file=sys.stderr)
        return 2
    except FirmwareError as e:
        print(f"infusekit sim run: {e}", file=sys.stderr)
        return 1
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
    return 0 if res.passed else 1


def _print_result(res, files: dict) -> None:
    m = res.metrics
    print(f"scenario {res.scenario}: {res.controller} on {res.runtime} ({res.fw_version}), "
          f"{res.sim_s:.0f} s virtual in {res.wall_s:.2f} s")
    if "programmed_ml" in m:
        print(f"  programmed {m['programmed_ml']:.4f} mL at {m['programmed_rate_ml_h']:g} mL/h, "
              f"delivered {m['delivered_ml']:.4f} mL ({m['error_pct']:+.3f} %)")
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


def cmd_sim_serve(args: argparse.Namespace) -> int:
    from hil_sim.cosim import Simulation
    from hil_sim.link import PtyEndpoint, SerialLink, TcpEndpoint
    from hil_sim.runtime import FirmwareError
    from hil_sim.serve import serve

    kind, port = args.link
    try:
        endpoint = PtyEndpoint() if kind == "pty" else TcpEndpoint(port)
    except OSError as e:
        print(f"infusekit sim serve: cannot open the {kind} link: {e}", file=sys.stderr)
        return 4
    stop = threading.Event()
    # SIGTERM stops as cleanly as Ctrl-C
    prev = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    control = None
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
        with Simulation(args.runtime, seed=args.seed, compiled=args.compiled,
                        link=SerialLink(baud=args.baud, seed=args.seed), **kw) as sim:
            for e in events:
                extra = {k: v for k, v in e.items() if k not in ("at_s", "fault", "value", "note")}
                sim.schedule(e["at_s"] * 1000, e["fault"], e.get("value", True), **extra)
            print(endpoint.url, flush=True)
            if args.control is not None:
                from hil_sim.control import ControlServer
                control = ControlServer(sim, port=args.control[1])
                control.start()
                print(control.url, flush=True)
            serve(sim, endpoint, speed=args.speed, stop=stop)
    except FirmwareError as e:
        print(f"infusekit sim serve: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        endpoint.close()
        if control is not None:
            control.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_sim.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
