"""The ``infusekit`` command line: talk to a pump, show the drug library, build firmware.

Built on click. The contract every command keeps (exit codes 0/1/2/3/4, ``--json``, one-line
errors, the shared ``--port``/``--timeout``/``--retries``/``--key-store`` options given before
or after the subcommand) lives in ``host.clikit``, with the pattern for adding a command:

    @command(cli, "NAME", pump=True)          # pump=True: the command talks to a pump
    @click.option("--thing", help="…")        # its own options, nothing it does not use
    def cmd_name(args) -> int:                # args.thing, args.json, args.port, …
        \"\"\"One-line help.\"\"\"
        with open_pump(args) as pump:
            …
        emit(args, {"ok": True, …}, "text for people")
        return EXIT_OK

Subgroups: ``drugs``, ``firmware`` (below) and ``sim`` (``hil_sim.cli``); add to one with
``@command(firmware, "image")`` or ``@command(cli.commands["sim"], "campaign")``.
The simulator's ``demo`` and ``sim`` commands are registered by ``hil_sim.cli.register``
when ``hil_sim`` is importable; the host never needs it to drive a real pump.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from host import units
from host.clikit import (DEFAULT_TIMEOUT, ENV_PORT, EXIT_CODES_HELP, EXIT_FAIL, EXIT_LINK,  # noqa: F401
                         EXIT_OK, EXIT_REFUSED, EXIT_USAGE, HINTS as _HINTS, UsageError,
                         command, emit, group, root_group)
from host.clikit import run as _run
from host.errors import LinkError, Refused

cli = root_group("infusekit", help=(
    "InfuseKit: drive an infusion pump over its serial protocol, show the drug library, "
    "build and flash the firmware, run the simulator."))
drugs = group(cli, "drugs", "the drug library: every limit the pump enforces")
firmware = group(cli, "firmware", "build the firmware with mpy-cross or flash a board")

_emit = emit


def open_pump(args: Any):
    """Open the pump ``args.port`` names, with the command's timeout, retries and key store."""
    from host.client import Pump
    port = getattr(args, "port", None)
    if not port:
        raise UsageError(f"no pump port: pass --port URL or set {ENV_PORT} "
                         f"(`infusekit ports` lists serial ports)")
    from host.auth import KeyStore
    store = KeyStore(getattr(args, "key_store", None) or None)
    return Pump.open(port, timeout=args.timeout, retries=args.retries, key_store=store)


_open = open_pump

def _console():
    from rich.console import Console
    return Console()


# ------------------------------------------------------------------------- pump commands

@command(cli, "info", pump=True,
         help="device, firmware, protocol and drug-library versions (HELLO)")
def cmd_info(args: Any) -> int:
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


@command(cli, "status", pump=True,
         help="state, drug, rate, volume delivered, elapsed time and alarm")
def cmd_status(args: Any) -> int:
    with _open(args) as pump:
        st = pump.status()
    from host.monitor import DELIVERING, clock
    now = st.rate_ul_h if st.state in DELIVERING else 0
    rate = units.fmt_rate(now) + (f" (programmed {units.fmt_rate(st.rate_ul_h)})"
                                  if st.vtbi_nl and now != st.rate_ul_h else "")
    # after STOP the program is gone (vtbi 0) and del_nl is what the ended infusion delivered
    delivered = units.fmt_ml(st.del_nl) + (
        f" of {units.fmt_ml(st.vtbi_nl)} ({st.progress * 100:.1f} %)"
        if st.vtbi_nl and st.progress is not None else " (no program)")
    alarm = "none" if st.alarm == "NONE" else f"{st.alarm} (priority {int(st.prio)})"
    text = (f"state {st.state}  drug {st.drug or '-'}  rate {rate}  delivered {delivered}  "
            f"elapsed {clock(st.el_ms)}  "
            + (f"pressure {st.p_mmhg} mmHg  " if st.p_mmhg is not None else "")
            + f"alarm {alarm}")
    _emit(args, st.to_json(), text)
    return EXIT_OK


@command(cli, "program", pump=True,
         help="program by two of rate/volume/duration, or by drug, dose, duration and weight")
@click.option("--rate", metavar="ML_H", help="rate, mL/h or with a unit ('52.5 mL/h')")
@click.option("--vtbi", metavar="ML", help="volume to be infused, mL or with a unit")
@click.option("--over", metavar="DURATION", help="duration with a unit ('40 min', '1 h')")
@click.option("--drug", metavar="NAME", help="drug from the library (`infusekit drugs list`)")
@click.option("--dose", metavar="DOSE", help="dose per kg with its unit ('0.5 mg/kg', '500 mcg/kg')")
@click.option("--weight", metavar="KG", help="patient weight, kg or with a unit")
@click.option("--dose-rate", metavar="RATE",
              help="continuous dose ('0.5 mg/kg/h', '10 mcg/kg/min') with --drug, --weight and "
                   "--vtbi or --over")
@click.option("--load", metavar="DOSE", help="loading dose per kg before --dose-rate")
@click.option("--load-over", metavar="DURATION", help="duration of the loading dose")
@click.option("--kvo", metavar="ML_H", help="keep-vein-open rate after the VTBI")
@click.option("--confirm", is_flag=True, help="override a drug-library soft limit (echoed back)")
def cmd_program(args: Any) -> int:
    if args.dose_rate is not None:
        return _program_dose_rate(args)
    if args.load is not None or args.load_over is not None:
        raise UsageError("--load and --load-over go with --dose-rate")
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
                               weight_kg=args.weight, confirm=args.confirm, kvo=args.kvo)
        else:
            res = pump.program(args.rate, args.vtbi, over=args.over, kvo=args.kvo)
    return _program_done(args, res)


def _program_dose_rate(args: Any) -> int:
    if args.drug is None or args.weight is None or args.dose is not None or args.rate is not None:
        raise UsageError("program by dose rate needs --drug, --dose-rate, --weight and one of "
                         "--vtbi/--over (not --dose or --rate)")
    if (args.vtbi is None) == (args.over is None):
        raise UsageError("program by dose rate needs exactly one of --vtbi and --over")
    if (args.load is None) != (args.load_over is None):
        raise UsageError("a loading dose needs both --load and --load-over")
    with _open(args) as pump:
        res = pump.program(drug=args.drug, dose_rate=args.dose_rate, weight_kg=args.weight,
                           vtbi=args.vtbi, over=args.over, load=args.load,
                           load_over=args.load_over, kvo=args.kvo, confirm=args.confirm)
    return _program_done(args, res)


def _program_done(args: Any, res) -> int:
    head = f"programmed {res.drug}: dose {res.dose_ug / 1000:g} mg, " if res.drug and res.dose_ug is not None \
        else "programmed: "
    text = (head + f"{units.fmt_ml(res.vtbi_nl)} at {units.fmt_rate(res.rate_ul_h)} "
            f"over {units.fmt_duration(res.dur_ms)}")
    if args.confirm:
        text += ("; --confirm given: soft limit overridden" if res.soft
                 else "; --confirm given (no soft limit was exceeded)")
    _emit(args, {"ok": True, **res.to_json()}, text)
    return EXIT_OK


def _state_cmd(method: str) -> Callable[[Any], int]:
    def run(args: Any) -> int:
        with _open(args) as pump:
            try:
                state = getattr(pump, method)()
            except Refused as e:
                # stop on a pump that is already stopped is what a clean-up script wants
                if method != "stop" or e.code != "STATE" or pump.status().state != "IDLE":
                    raise
                _emit(args, {"ok": True, "state": "IDLE", "already": True},
                      "state IDLE (already stopped)")
                return EXIT_OK
        _emit(args, {"ok": True, "state": state}, f"state {state}")
        return EXIT_OK
    run.__name__ = f"cmd_{method}"
    return run


@command(cli, "bolus", pump=True,
         help="clinician bolus on top of the running infusion")
@click.option("--volume", required=True, metavar="ML", help="bolus volume, mL or with a unit")
@click.option("--rate", required=True, metavar="ML_H", help="bolus rate, mL/h or with a unit")
def cmd_bolus(args: Any) -> int:
    with _open(args) as pump:
        res = pump.bolus(args.volume, args.rate)
    _emit(args, {"ok": True, **res.to_json()},
          f"bolus {units.fmt_ml(res.vol_nl)} at {units.fmt_rate(res.rate_ul_h)} started")
    return EXIT_OK


@command(cli, "titrate", pump=True,
         help="change the rate of the running infusion")
@click.option("--rate", metavar="ML_H", help="new rate")
@click.option("--dose-rate", metavar="RATE", help="new dose rate ('0.3 mg/kg/h')")
@click.option("--confirm", is_flag=True, help="override a drug-library soft limit (echoed back)")
def cmd_titrate(args: Any) -> int:
    if (args.rate is None) == (args.dose_rate is None):
        raise UsageError("titrate needs exactly one of --rate and --dose-rate")
    with _open(args) as pump:
        res = pump.titrate(args.rate, dose_rate=args.dose_rate, confirm=args.confirm)
    text = f"rate now {units.fmt_rate(res.rate_ul_h)}"
    if args.confirm:
        text += ("; --confirm given: soft limit overridden" if res.soft
                 else "; --confirm given (no soft limit was exceeded)")
    _emit(args, {"ok": True, "confirm": bool(args.confirm), **res.to_json()}, text)
    return EXIT_OK


@command(cli, "silence", pump=True,
         help="pause the alarm sound for 120 s (the alarm stays)")
def cmd_silence(args: Any) -> int:
    with _open(args) as pump:
        until = pump.silence()
    _emit(args, {"ok": True, "until_ms": until},
          "audio paused for 120 s (the alarm stays active until acknowledged)")
    return EXIT_OK


@command(cli, "vitals", pump=True,
         help="relay a patient-monitor reading to the pump")
@click.option("--sbp", type=int, required=True, help="systolic blood pressure, mmHg")
@click.option("--dbp", type=int, required=True, help="diastolic blood pressure, mmHg")
@click.option("--hr", type=int, required=True, help="heart rate, beats/min")
@click.option("--spo2", type=int, required=True, help="oxygen saturation SpO2, %")
def cmd_vitals(args: Any) -> int:
    with _open(args) as pump:
        action = pump.vitals(sbp=args.sbp, dbp=args.dbp, hr=args.hr, spo2=args.spo2)
    _emit(args, {"ok": True, "action": action},
          "reading relayed" + (" — the pump PAUSED the infusion (vitals interlock)"
                               if action == "paused" else ""))
    return EXIT_OK


def _mllp_url(_ctx: Any, _param: Any, text: str) -> str:
    from host.vitals_bridge import parse_listen
    try:
        parse_listen(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return text


@command(cli, "vitals-bridge", pump=True,
         help="relay a patient monitor's HL7 v2 PCD-01 vitals (ORU^R01 over MLLP) to the pump "
              "(docs/hl7.md)")
@click.option("--listen", required=True, callback=_mllp_url, metavar="mllp://HOST:PORT",
              help="where monitors connect (port 0: any free port, printed)")
@click.option("--patient", metavar="ID",
              help="the pump's patient (PID-3); other patients are never relayed (default: the "
                   "first patient seen)")
@click.option("--max-age", type=float, default=300.0, metavar="S",
              help="older readings are not fresh (default 300 s; match the pump's vitals_age_ms)")
@click.option("--max-skew", type=float, default=300.0, metavar="S",
              help="MSH-7 must be within S s of this machine's clock (0: off; default 300)")
def cmd_vitals_bridge(args: Any) -> int:
    from host.vitals_bridge import serve_bridge
    with _open(args) as pump:
        return serve_bridge(pump, args.listen, args.patient, max_age_s=args.max_age,
                            max_skew_s=args.max_skew, out=lambda s: print(s, flush=True))


def _setting(text: str) -> tuple[str, int | str]:
    key, eq, value = text.partition("=")
    if not eq or not key or not value:
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}")
    return key, int(value) if value.isdigit() else value


@command(cli, "config", pump=True,
         help="change pump settings (CFG), e.g. hb_ms=5000 hb_action=pause")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...",
                callback=lambda _c, _p, v: [_setting(t) for t in v])
def cmd_config(args: Any) -> int:
    with _open(args) as pump:
        now = pump.configure(**dict(args.settings))
    _emit(args, {"ok": True, "settings": now},
          "  ".join(f"{k}={v}" for k, v in now.items()))
    return EXIT_OK


LOG_COLUMNS = ("seq", "t_ms", "ev")


@command(cli, "log", pump=True,
         help="export the pump's event log (JSONL or CSV)")
@click.option("--format", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
              help="output format")
@click.option("--from", "start", type=click.IntRange(min=0), default=0, metavar="SEQ",
              help="first sequence number (default 0)")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="at most N records")
@click.option("--out", metavar="FILE", help="write to FILE instead of stdout")
def cmd_log(args: Any) -> int:
    import csv
    import io
    with _open(args) as pump:
        records = pump.read_log(args.start, limit=args.limit)
    rows = [dict(r.fields) for r in records]
    for row in rows:
        for k in ("seq", "t_ms"):
            if k in row and row[k].isdigit():
                row[k] = int(row[k])    # type: ignore[assignment]
    if args.format == "csv":
        cols = list(LOG_COLUMNS) + sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        if args.json:
            print(json.dumps({"ok": True, "records": len(rows), "out": args.out,
                              "format": args.format,
                              "next": (rows[-1]["seq"] + 1) if rows else args.start}))
        else:
            print(f"{len(rows)} records written to {args.out}", file=sys.stderr)
    elif args.json:
        print(json.dumps({"ok": True, "records": rows}))
    else:
        sys.stdout.write(text)
    return EXIT_OK


@command(cli, "monitor", pump=True,
         help="live view until the infusion ends: state, drug, rate, dose rate, percent, "
              "elapsed and remaining time, pressure, alarms by priority, timestamped events; "
              "keys p/r/a/s pause, resume, acknowledge, silence (q quits); a lost link is "
              "reconnected. Off a terminal, or with --json, one JSON object per line "
              "(type status|event|telemetry|link|end). Through `infusekit serve` it can stay "
              "open while other commands run.",
         short_help="live view until the infusion ends (keys: p r a s q)")
@click.option("--period", type=click.IntRange(min=1), default=1000, metavar="MS",
              help="telemetry period in ms (default 1000)")
@click.option("--for", "duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="stop after S seconds")
def cmd_monitor(args: Any) -> int:
    from host import monitor
    with _open(args) as pump:
        res = monitor.run(pump, period_ms=args.period, duration_s=args.duration,
                          json_lines=args.json or not sys.stdout.isatty())
    if not args.json and sys.stdout.isatty():    # else the JSON-lines stream ended with "end"
        print(_summary(res))
    return EXIT_OK


def _summary(res: dict[str, Any]) -> str:
    from host.monitor import clock
    pct = f" ({res['percent']:.1f} %)" if res.get("percent") is not None else ""
    return (f"{res['state']}  {units.fmt_rate(res['rate_ul_h'])}  "
            f"{units.fmt_ml(res['del_nl'])} of {units.fmt_ml(res['vtbi_nl'])}{pct}  "
            f"elapsed {clock(res['el_ms'])}  alarms {', '.join(res['alarms']) or 'none'}"
            + ("  (interrupted)" if res.get("interrupted") else ""))


# ------------------------------------------------------------------------- local commands

def _library(args: Any):
    from host.druglib import DrugLibrary
    try:
        return DrugLibrary.load(args.lib)
    except FileNotFoundError as e:
        raise UsageError(f"drug library not found ({e.filename}); pass --lib FILE") from None


@command(drugs, "list",
         help="list the drugs and every limit the pump enforces")
@click.option("--lib", metavar="FILE", help="library file (default: the packaged firmware/druglib.json)")
def cmd_drugs_list(args: Any) -> int:
    from host.druglib import render_list
    lib = _library(args)
    _emit(args, lib.to_json(), lambda: _console().print(render_list(lib)))
    return EXIT_OK


@command(drugs, "show",
         help="every limit of one drug")
@click.argument("name", metavar="NAME")
@click.option("--lib", metavar="FILE", help="library file (default: the packaged firmware/druglib.json)")
def cmd_drugs_show(args: Any) -> int:
    from host.druglib import render_show
    lib = _library(args)
    try:
        drug = lib.get(args.name)
    except KeyError as e:
        raise UsageError(str(e)) from None
    _emit(args, {"version": lib.version, **drug.to_json()},
          lambda: _console().print(render_show(drug)))
    return EXIT_OK


@command(cli, "ports",
         help="serial ports found on this machine")
def cmd_ports(args: Any) -> int:
    from serial.tools import list_ports
    ports = [{"device": p.device, "description": p.description, "hwid": p.hwid}
             for p in sorted(list_ports.comports(), key=lambda p: p.device)]
    text = "\n".join(f"{p['device']}\t{p['description']}\t{p['hwid']}" for p in ports) \
        or "no serial ports found"
    _emit(args, {"ports": ports}, text)
    return EXIT_OK


@command(firmware, "build",
         help="compile the firmware tree to .mpy (or, with --romfs, to a ROMFS image)")
@click.option("--board", default="rp2_pico", show_default=True, help="target board")
@click.option("--romfs", is_flag=True,
              help="write the ROMFS image of the compiled code instead of the tree")
@click.option("--out", metavar="PATH",
              help="output folder, replaced (default build/firmware), or with --romfs the "
                   "image file (default build/firmware.romfs)")
def cmd_firmware_build(args: Any) -> int:
    if args.romfs:
        return _firmware_build_romfs(args)
    from host.firmware_tools import build
    out = args.out or "build/firmware"
    files = build(args.board, out)
    _emit(args, {"ok": True, "board": args.board, "out": str(out),
                 "files": [str(f) for f in files]},
          f"built {len(files)} files for {args.board} into {out}")
    return EXIT_OK


def _firmware_build_romfs(args: Any) -> int:
    from host.firmware_tools import DEFAULT_IMAGE, romfs_image
    image = romfs_image(args.board, args.out or DEFAULT_IMAGE)
    size = image.stat().st_size
    _emit(args, {"ok": True, "board": args.board, "out": str(image), "romfs": True,
                 "bytes": size},
          f"built the ROMFS image for {args.board}: {image}, {size} bytes "
          f"({size / 1024:.1f} KiB; the board's ROMFS partition must be at least that big)")
    return EXIT_OK


@command(firmware, "image",
         help="build the RP2040 firmware image (UF2): MicroPython v1.28.0 with the controller "
              "and board frozen in (cached: a second build with the same inputs is instant)")
@click.option("--board", default="rp2_pico", show_default=True, help="target board")
@click.option("--micropython", metavar="DIR",
              help="a MicroPython v1.28.0 source tree (git clone --recursive -b v1.28.0); "
                   "default: the archives in ../shared/vendor")
@click.option("--out", metavar="DIR", help="also copy firmware.uf2 and firmware.bin here")
def cmd_firmware_image(args: Any) -> int:
    from host.rp2_image import image
    img = image(args.board, args.micropython, args.out,
                progress=None if args.json else (lambda m: print(m, file=sys.stderr)))
    _emit(args, {"ok": True, "board": args.board, **img.to_json()},
          f"{img.uf2}: {img.size} bytes of firmware, MicroPython {img.micropython}, "
          f"InfuseKit firmware {img.fw}" + (" (cached)" if img.cached else ""))
    return EXIT_OK


@command(firmware, "flash", pump=("port", "timeout", "key_store"),
         help="build, deploy to the board with mpremote, reset and check the version")
@click.option("--board", default="rp2_pico", show_default=True, help="target board")
@click.option("--romfs/--files", "romfs", default=None,
              help="--romfs: code as a ROMFS image in the board's ROMFS partition, run in place "
                   "(MicroPython >= 1.25 built with one), main.py and data on the filesystem; "
                   "refused on a board without a partition. --files: copy the whole compiled "
                   "tree to the board's filesystem (any build). Default: ROMFS where the board "
                   "has a partition, else files")
@click.option("--no-key", is_flag=True, help="do not provision an authentication key")
def cmd_firmware_flash(args: Any) -> int:
    from host.firmware_tools import flash
    if not args.port:
        raise UsageError(f"firmware flash needs --port (or {ENV_PORT})")
    from host.auth import KeyStore
    res = flash(args.port, args.board, romfs=args.romfs, timeout=args.timeout,
                key_store=None if args.no_key else KeyStore(args.key_store or None))
    _emit(args, {"ok": True, "port": args.port, "board": args.board, "mode": res.mode,
                 "note": res.note or None, "fw": res.fw, "dev": res.dev,
                 "key_file": str(res.key_file) if res.key_file else None},
          f"flashed {args.board} on {args.port} ({res.mode}): device {res.dev}, "
          f"firmware {res.fw}" + (f"; key stored in {res.key_file}" if res.key_file else "")
          + (f"\nnote: {res.note}" if res.note else ""))
    return EXIT_OK


@command(cli, "serve", pump=("port",),
         help="share one pump with several clients at once: own the pump's serial port and "
              "offer it on socket://127.0.0.1:PORT (printed) to the CLI, monitor and scripts; "
              "what each client sees is what it would see on the port (host/gateway.py)",
         short_help="share one pump's serial port with several clients (a local gateway)")
@click.option("--listen", type=click.IntRange(0, 65535), default=7002, show_default=True,
              metavar="PORT", help="TCP port on 127.0.0.1 (0: any free port, printed)")
def cmd_serve(args: Any) -> int:
    from host.gateway import serve
    if not args.port:
        raise UsageError(f"serve needs the pump's --port (or {ENV_PORT})")
    return serve(args.port, args.listen, out=lambda s: print(s, flush=True))


@command(cli, "ne1000", pump=True,
         help="serve an NE-1000 (New Era) serial endpoint in front of the pump, for lab "
              "software such as nesp-lib (docs/ne1000.md)")
@click.option("--link", default="pty", metavar="pty|tcp:PORT",
              help="pty (prints a /dev/pts/N path) or tcp:PORT (socket://127.0.0.1:PORT)")
@click.option("--address", type=click.IntRange(0, 99), default=0, metavar="N",
              help="NE-1000 address 0..99")
@click.option("--state", metavar="FILE", help="where the NE-1000 settings (safe mode included) "
              "survive restarts (default ~/.local/state/infusekit/)")
@click.option("--drug", metavar="NAME", help="program the pump with this library drug, so its "
              "limits apply to every NE-1000 rate")
def cmd_ne1000(args: Any) -> int:
    from host import ne1000_serve
    try:
        link = ne1000_serve.parse_link(args.link)
    except ValueError as e:
        raise UsageError(str(e)) from None
    with _open(args) as pump:
        return ne1000_serve.run(pump, link, args.address, args.state, args.drug)



for _name, _help in (("start", "start the programmed infusion"),
                     ("pause", "pause the infusion (keeps the program)"),
                     ("resume", "resume a paused infusion"),
                     ("stop", "end the infusion and clear the program (already stopped: ok)"),
                     ("ack", "acknowledge the alarm once its cause is gone"),
                     ("standby", "keep the program, deliver nothing")):
    command(cli, _name, pump=True, help=_help)(_state_cmd(_name))


def _register_sim(cli: click.Group) -> None:
    """Let hil_sim add ``demo`` and ``sim``; hil_sim is optional for the host."""
    try:
        from hil_sim import cli as sim_cli  # type: ignore[import-not-found]
    except ImportError as e:
        if e.name in ("hil_sim", "hil_sim.cli"):
            return
        err = f"the simulator cannot be loaded: {e}"
        for name in ("demo", "sim"):
            def unavailable(args: Any, err: str = err) -> int:
                raise UsageError(err)
            command(cli, name, help="(unavailable) " + err,
                    context_settings={"ignore_unknown_options": True,
                                      "allow_extra_args": True})(unavailable)
        return
    sim_cli.register(cli)


_register_sim(cli)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``infusekit`` console script; returns the exit code."""
    return _run(cli, argv)


if __name__ == "__main__":
    sys.exit(main())
