"""The ``infusekit`` command line: talk to a pump, show the drug library, build firmware.

Every subcommand sets ``func(args) -> int``. Exit codes: 0 ok, 1 other failure,
2 usage error, 3 refused by the pump (or by the host's own pre-checks), 4 link error or
timeout. ``--json`` prints exactly one JSON object on stdout (errors too: ``{"ok": false …}``);
human messages and errors go to stderr as one line saying what to do.

The simulator's ``demo`` and ``sim`` commands are registered by ``hil_sim.cli.register``
when ``hil_sim`` is importable; the host never needs it to drive a real pump.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from host import units
from host.errors import LinkError, ProtocolError, Refused

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_REFUSED, EXIT_LINK = 0, 1, 2, 3, 4
ENV_PORT = "INFUSEKIT_PORT"
DEFAULT_TIMEOUT = 2.0

_HINTS = {
    "SOFT": "re-run with --confirm to override the soft limit",
    "LIMIT": "the program exceeds a hard limit of the drug library; it cannot be overridden",
    "STATE": "check the pump's state with `infusekit status`",
    "DRUG": "see `infusekit drugs list`",
    "RANGE": "the value is outside what the pump can do",
}


class UsageError(Exception):
    """Bad or missing arguments detected after parsing (exit 2)."""


# ------------------------------------------------------------------------- output helpers

def _emit(args: argparse.Namespace, obj: dict[str, Any], text: str | Callable[[], None]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, sort_keys=False))
    elif callable(text):
        text()
    else:
        print(text)


def _console():
    from rich.console import Console
    return Console()


def _open(args: argparse.Namespace):
    from host.client import Pump
    port = getattr(args, "port", None)
    if not port:
        raise UsageError(f"no pump port: pass --port URL or set {ENV_PORT} "
                         f"(`infusekit ports` lists serial ports)")
    return Pump.open(port, timeout=args.timeout, retries=args.retries)


# ------------------------------------------------------------------------- pump commands

def cmd_info(args: argparse.Namespace) -> int:
    with _open(args) as pump:
        info = pump.info or pump.hello()
        lib = pump.library
    match = lib is not None and lib.sha16 == info.libh
    obj = {"port": args.port, "dev": info.dev, "fw": info.fw, "proto": info.proto,
           "lib": info.lib, "libh": info.libh, "tick_ms": info.tick_ms,
           "local_lib": lib.version if lib else None, "lib_matches_local": match}
    lines = [f"device     {info.dev}", f"firmware   {info.fw}", f"protocol   {info.proto}",
             f"drug lib   {info.lib} ({info.libh})", f"tick       {info.tick_ms} ms",
             "local lib  " + (f"{lib.version} ({lib.sha16}) — "
                              + ("same as the pump" if match else "DIFFERENT from the pump")
                              if lib else "none")]
    _emit(args, obj, "\n".join(lines))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as pump:
        st = pump.status()
    prog = f"{st.progress * 100:.1f} %" if st.progress is not None else "-"
    text = (f"state {st.state}  rate {units.fmt_rate(st.rate_ul_h)}  "
            f"delivered {units.fmt_ml(st.del_nl)} of {units.fmt_ml(st.vtbi_nl)} ({prog})  "
            f"time {units.fmt_duration(st.el_ms)}  pressure {st.p_mmhg} mmHg  "
            f"alarm {st.alarm}" + (f"  drug {st.drug}" if st.drug else ""))
    _emit(args, st.to_json(), text)
    return EXIT_OK


def cmd_program(args: argparse.Namespace) -> int:
    by_drug = args.drug is not None
    if by_drug:
        missing = [o for o, v in (("--dose", args.dose), ("--over", args.over),
                                  ("--weight", args.weight)) if v is None]
        if missing or args.rate is not None or args.vtbi is not None:
            raise UsageError("program by drug needs --drug, --dose, --over and --weight "
                             "(and no --rate/--vtbi)" + (f"; missing {' '.join(missing)}"
                                                         if missing else ""))
    elif sum(x is not None for x in (args.rate, args.vtbi, args.over)) != 2:
        raise UsageError("program needs two of --rate, --vtbi, --over, or --drug with "
                         "--dose --over --weight")
    with _open(args) as pump:
        if by_drug:
            res = pump.program(drug=args.drug, dose=args.dose, over=args.over,
                               weight_kg=args.weight, confirm=args.confirm)
        else:
            res = pump.program(args.rate, args.vtbi, over=args.over)
    head = f"programmed {res.drug}: dose {res.dose_ug / 1000:g} mg, " if res.drug and res.dose_ug is not None \
        else "programmed: "
    text = (head + f"{units.fmt_ml(res.vtbi_nl)} at {units.fmt_rate(res.rate_ul_h)} "
            f"over {units.fmt_duration(res.dur_ms)}")
    if args.confirm:
        text += ("; --confirm given: soft limit overridden" if res.soft
                 else "; --confirm given (no soft limit was exceeded)")
    _emit(args, {"ok": True, **res.to_json()}, text)
    return EXIT_OK


def _state_cmd(method: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with _open(args) as pump:
            state = getattr(pump, method)()
        _emit(args, {"ok": True, "state": state}, f"state {state}")
        return EXIT_OK
    run.__name__ = f"cmd_{method}"
    return run


def cmd_monitor(args: argparse.Namespace) -> int:
    """Live progress until the infusion ends (COMPLETE or IDLE), Ctrl-C to leave."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from host.codec import Event, Telemetry
    with _open(args) as pump:
        st = pump.status()
        alarms: list[str] = []
        pump.telemetry(args.period)
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          TextColumn("{task.percentage:>5.1f}%"), TimeElapsedColumn(),
                          disable=args.json) as bar:
                task = bar.add_task(st.state, total=max(st.vtbi_nl, 1), completed=st.del_nl)
                state = st.state
                while state not in ("COMPLETE", "IDLE"):
                    got = False
                    for ev in pump.events(timeout=max(2.0, 3 * args.period / 1000)):
                        got = True
                        if isinstance(ev, Telemetry):
                            state = ev.fields.get("state", state)
                            bar.update(task, completed=int(ev.fields.get("del_nl", "0")),
                                       description=f"{state} {units.fmt_ml(int(ev.fields.get('del_nl', '0')))}")
                        elif isinstance(ev, Event):
                            if ev.name == "ALARM":
                                alarms.append(ev.fields.get("alarm", "?"))
                                bar.console.print(f"ALARM {ev.fields.get('alarm')} prio {ev.fields.get('prio')}")
                            state = ev.fields.get("state", state) if ev.name == "STATE" else state
                        if state in ("COMPLETE", "IDLE"):
                            break
                    if not got:
                        state = pump.status().state
        except KeyboardInterrupt:
            pass
        finally:
            try:
                pump.telemetry(0)
            except (LinkError, Refused):
                pass
        st = pump.status()
    _emit(args, {**st.to_json(), "alarms": alarms},
          f"state {st.state}, delivered {units.fmt_ml(st.del_nl)} of {units.fmt_ml(st.vtbi_nl)}")
    return EXIT_OK


# ------------------------------------------------------------------------- local commands

def _library(args: argparse.Namespace):
    from host.druglib import DrugLibrary
    try:
        return DrugLibrary.load(args.lib)
    except FileNotFoundError as e:
        raise UsageError(f"drug library not found ({e.filename}); pass --lib FILE") from None


def cmd_drugs_list(args: argparse.Namespace) -> int:
    from host.druglib import render_list
    lib = _library(args)
    _emit(args, lib.to_json(), lambda: _console().print(render_list(lib)))
    return EXIT_OK


def cmd_drugs_show(args: argparse.Namespace) -> int:
    from host.druglib import render_show
    lib = _library(args)
    try:
        drug = lib.get(args.name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    _emit(args, {"version": lib.version, **drug.to_json()},
          lambda: _console().print(render_show(drug)))
    return EXIT_OK


def cmd_ports(args: argparse.Namespace) -> int:
    from serial.tools import list_ports
    ports = [{"device": p.device, "description": p.description, "hwid": p.hwid}
             for p in sorted(list_ports.comports(), key=lambda p: p.device)]
    text = "\n".join(f"{p['device']}\t{p['description']}\t{p['hwid']}" for p in ports) \
        or "no serial ports found"
    _emit(args, {"ports": ports}, text)
    return EXIT_OK


def cmd_firmware_build(args: argparse.Namespace) -> int:
    from host.firmware_tools import build
    files = build(args.board, args.out)
    _emit(args, {"ok": True, "board": args.board, "out": str(args.out),
                 "files": [str(f) for f in files]},
          f"built {len(files)} files for {args.board} into {args.out}")
    return EXIT_OK


def cmd_firmware_flash(args: argparse.Namespace) -> int:
    from host.firmware_tools import flash
    if not args.port:
        raise UsageError(f"firmware flash needs --port (or {ENV_PORT})")
    fw = flash(args.port, args.board, timeout=args.timeout)
    _emit(args, {"ok": True, "port": args.port, "board": args.board, "fw": fw},
          f"flashed {args.board} on {args.port}: firmware {fw}")
    return EXIT_OK


# ------------------------------------------------------------------------- parser

def _common(suppress: bool) -> argparse.ArgumentParser:
    """--port/--timeout/--retries/--json, accepted before and after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value
    p.add_argument("--port", metavar="URL", default=d(os.environ.get(ENV_PORT)),
                   help=f"pyserial URL of the pump: /dev/ttyACM0, /dev/pts/N, socket://host:port, "
                        f"rfc2217://… (default ${ENV_PORT})")
    p.add_argument("--timeout", type=float, metavar="S", default=d(DEFAULT_TIMEOUT),
                   help="seconds to wait for each reply attempt (default %(default)s)"
                   if not suppress else "seconds to wait for each reply attempt")
    p.add_argument("--retries", type=int, metavar="N", default=d(2),
                   help="retransmissions of a request before giving up")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="print one JSON object instead of text")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infusekit", parents=[_common(False)],
        description="InfuseKit: drive an infusion pump over its serial protocol, show the drug "
                    "library, build and flash the firmware.",
        epilog="Exit codes: 0 ok, 2 usage error, 3 refused by the pump, 4 link error or timeout.")
    common = _common(True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str,
            parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    add("info", cmd_info, "device, firmware, protocol and drug-library versions (HELLO)")
    add("status", cmd_status, "state, rate, volume delivered, pressure and alarm")
    p = add("program", cmd_program,
            "program by two of rate/volume/duration, or by drug, dose, duration and weight")
    p.add_argument("--rate", metavar="ML_H", help="rate, mL/h or with a unit ('52.5 mL/h')")
    p.add_argument("--vtbi", metavar="ML", help="volume to be infused, mL or with a unit")
    p.add_argument("--over", metavar="DURATION", help="duration with a unit ('40 min', '1 h')")
    p.add_argument("--drug", metavar="NAME", help="drug from the library (`infusekit drugs list`)")
    p.add_argument("--dose", metavar="DOSE", help="dose per kg ('0.5 mg/kg', '500 mcg/kg')")
    p.add_argument("--weight", metavar="KG", help="patient weight, kg or with a unit")
    p.add_argument("--confirm", action="store_true",
                   help="override a drug-library soft limit (echoed back)")
    add("start", _state_cmd("start"), "start the programmed infusion")
    add("pause", _state_cmd("pause"), "pause the infusion (keeps the program)")
    add("resume", _state_cmd("resume"), "resume a paused infusion")
    add("stop", _state_cmd("stop"), "end the infusion and clear the program")
    add("ack", _state_cmd("ack"), "acknowledge the alarm once its cause is gone")
    p = add("monitor", cmd_monitor, "live progress until the infusion ends")
    p.add_argument("--period", type=int, default=1000, metavar="MS",
                   help="telemetry period in ms (default %(default)s)")

    p = sub.add_parser("drugs", help="the drug library, with soft and hard limits",
                       description="the drug library, with soft and hard limits")
    dsub = p.add_subparsers(dest="drugs_command", metavar="list|show")
    dsub.required = True
    p = add("list", cmd_drugs_list, "list the drugs and their limits", dsub)
    p.add_argument("--lib", metavar="FILE", help="library file (default firmware/druglib.json)")
    p = add("show", cmd_drugs_show, "every limit of one drug", dsub)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--lib", metavar="FILE", help="library file (default firmware/druglib.json)")

    add("ports", cmd_ports, "serial ports found on this machine")

    p = sub.add_parser("firmware", help="build the firmware with mpy-cross or flash a board",
                       description="build the firmware with mpy-cross or flash a board")
    fsub = p.add_subparsers(dest="firmware_command", metavar="build|flash")
    fsub.required = True
    p = add("build", cmd_firmware_build, "compile the firmware tree to .mpy", fsub)
    p.add_argument("--board", default="rp2_pico", help="target board (default %(default)s)")
    p.add_argument("--out", default="build/firmware", metavar="DIR",
                   help="output folder, replaced (default %(default)s)")
    p = add("flash", cmd_firmware_flash,
            "build, copy to the board with mpremote, reset and check the version", fsub)
    p.add_argument("--board", default="rp2_pico", help="target board (default %(default)s)")

    _register_sim(sub)
    return parser


def _register_sim(sub: Any) -> None:
    """Let hil_sim add ``demo`` and ``sim``; hil_sim is optional for the host."""
    try:
        from hil_sim import cli as sim_cli  # type: ignore[import-not-found]
    except ImportError as e:
        if e.name in ("hil_sim", "hil_sim.cli"):
            return
        err = f"the simulator cannot be loaded: {e}"
        for name in ("demo", "sim"):
            p = sub.add_parser(name, help="(unavailable) " + err)
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(func=lambda args, err=err: _fail_line(err))
        return
    sim_cli.register(sub)


def _fail_line(msg: str) -> int:
    print(f"infusekit: {msg}", file=sys.stderr)
    return EXIT_FAIL


# ------------------------------------------------------------------------- main

def _error(args: argparse.Namespace, exit_code: int, kind: str, msg: str, **extra: Any) -> int:
    print(f"infusekit: {msg}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": kind, "message": msg, **extra}))
    return exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infusekit`` console script; returns the exit code."""
    from host.firmware_tools import FirmwareToolError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        return _error(args, EXIT_USAGE, "usage", str(e))
    except Refused as e:
        hint = _HINTS.get(e.code, "")
        return _error(args, EXIT_REFUSED, "refused",
                      f"refused: {e.code} {e.reason}" + (f" — {hint}" if hint else ""),
                      code=e.code, reason=e.reason)
    except (LinkError, ProtocolError) as e:
        return _error(args, EXIT_LINK, "link",
                      f"link error: {e}" if "check" in str(e)
                      else f"link error: {e} — check --port and that the pump is on")
    except ValueError as e:        # unit parsing and argument values
        return _error(args, EXIT_USAGE, "usage", str(e))
    except FirmwareToolError as e:
        return _error(args, EXIT_FAIL, "firmware", str(e))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
