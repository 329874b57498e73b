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
    p.set_defaults(func=cmd_sim_serve)
    return p


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
    try:
        with Simulation(args.runtime, seed=args.seed, compiled=args.compiled,
                        link=SerialLink(baud=args.baud, seed=args.seed)) as sim:
            print(endpoint.url, flush=True)
            serve(sim, endpoint, speed=args.speed, stop=stop)
    except FirmwareError as e:
        print(f"infusekit sim serve: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        endpoint.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil_sim.cli")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
