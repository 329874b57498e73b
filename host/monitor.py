"""``infusekit monitor``: a live view of one pump worth keeping open.

What it shows (``View``): state, drug, the rate being delivered now (0 unless RUNNING/KVO —
the same number in the panel and the summary) beside the programmed rate, the mass dose
rate when the drug's concentration is known, volume delivered of the VTBI with percent,
elapsed and remaining time as h:mm:ss, line pressure, active alarms coloured by priority
(high red, medium yellow, low cyan; the bar is green while delivering normally), and every
event with its wall-clock time and the pump's elapsed time.

How: on a terminal a rich panel with keys — ``p`` pause, ``r`` resume, ``a`` acknowledge,
``s`` silence, ``q`` quit — sent on the same connection; off a terminal (or ``--json``) one
JSON object per line (``{"type": "status"|"event"|"telemetry"|"end", …}``), a stream a
program can follow. A lost link is reconnected (``Pump.reconnect``), shown, never fatal.
Use it through ``infusekit serve`` to keep it open while other commands run.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
import threading
import time
from typing import Any, Callable

from host import units
from host.enums import Priority

END_STATES = ("COMPLETE", "IDLE")
DELIVERING = ("RUNNING", "KVO")
PRIO_COLOUR = {Priority.HIGH: "bold red", Priority.MEDIUM: "yellow", Priority.LOW: "cyan"}
STATE_COLOUR = {"RUNNING": "green", "KVO": "green", "ALARM": "bold red", "PAUSED": "yellow",
                "STANDBY": "yellow", "COMPLETE": "cyan", "FAULT": "bold red"}
KEYS = {"p": "pause", "r": "resume", "a": "ack", "s": "silence"}


def clock(ms: int | None) -> str:
    """ms -> 'h:mm:ss' ('-' for None)."""
    if ms is None:
        return "-"
    s = max(0, int(ms)) // 1000
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _mmhg(p: int | None) -> str:
    return "- mmHg" if p is None else f"{p} mmHg"


class View:
    """What the monitor shows, updated from STATUS, telemetry and events."""

    def __init__(self, st, conc_ug_ml: int | None = None) -> None:
        self.drug: str | None = None
        self.p_mmhg: int | None = None
        self.conc_ug_ml = conc_ug_ml
        self.active: dict[str, int] = {}
        self.alarms: list[str] = []          # every alarm raised while monitoring
        self.notes: list[str] = []
        self.link = "ok"
        self.status(st)

    def status(self, st) -> None:
        self.state = str(st.state)
        self.prog_rate_ul_h, self.vtbi_nl = st.rate_ul_h, st.vtbi_nl
        self.del_nl, self.el_ms = st.del_nl, st.el_ms
        p = getattr(st, "p_mmhg", None)
        if p is not None:                      # v1 STATUS has none: telemetry brings it
            self.p_mmhg = p
        if "drug" in getattr(st, "fields", {}) or st.drug:   # STATUS is the truth: STOP clears it
            self.drug = st.drug
        self.active = {} if str(st.alarm) == "NONE" else {str(st.alarm): int(st.prio)}

    @property
    def rate_ul_h(self) -> int:
        """The rate delivered now: the programmed rate only while RUNNING/KVO."""
        return self.prog_rate_ul_h if self.state in DELIVERING else 0

    @property
    def percent(self) -> float | None:
        return 100 * min(self.del_nl, self.vtbi_nl) / self.vtbi_nl if self.vtbi_nl else None

    @property
    def remaining_ms(self) -> int | None:
        from host.client import remaining_ms
        return remaining_ms(self.vtbi_nl, self.del_nl, self.rate_ul_h)

    @property
    def dose_rate(self) -> str | None:
        if self.conc_ug_ml is None or not self.rate_ul_h:
            return None
        ug_h = self.rate_ul_h * self.conc_ug_ml / 1000
        return f"{ug_h / 1000:.4g} mg/h" if ug_h >= 1000 else f"{ug_h:.4g} µg/h"

    @property
    def priority(self) -> int:
        return max(self.active.values(), default=0)

    def frame(self, ev) -> str | None:
        """Apply a frame; return a timestamped line for state changes and alarms."""
        from host.codec import Telemetry
        f = ev.fields
        if isinstance(ev, Telemetry):
            self.state = f.get("state", self.state)
            for attr, key in (("del_nl", "del_nl"), ("prog_rate_ul_h", "rate_ul_h"),
                              ("p_mmhg", "p_mmhg"), ("el_ms", "el_ms")):
                v = getattr(ev, key, None)
                if v is not None:
                    setattr(self, attr, v)
            return None
        if ev.name == "STATE":
            self.state = f.get("state", self.state)
            text = f"state {self.state}"
        elif ev.name == "ALARM":
            name = f.get("alarm", "?")
            self.active[name] = int(ev.prio or 0)
            self.alarms.append(name)
            text = f"ALARM {name} (priority {f.get('prio', '?')})"
        elif ev.name == "CLEAR":
            self.active.pop(f.get("alarm", "?"), None)
            text = f"cleared {f.get('alarm', '?')}"
        else:
            text = f"event {ev.name} " + " ".join(f"{k}={v}" for k, v in f.items())
        return self.stamp(text)

    def stamp(self, text: str) -> str:
        now = _dt.datetime.now().strftime("%H:%M:%S")
        note = f"{now} [{clock(self.el_ms)}] {text}"
        self.notes = (self.notes + [note])[-8:]
        return note

    def line(self) -> str:
        pct = f" ({self.percent:.1f} %)" if self.percent is not None else ""
        of = f" of {units.fmt_ml(self.vtbi_nl)}{pct}" if self.vtbi_nl else " (no program)"
        return (f"{self.state}  {units.fmt_rate(self.rate_ul_h)}  "
                f"{units.fmt_ml(self.del_nl)}{of}  elapsed {clock(self.el_ms)}  "
                f"left {clock(self.remaining_ms)}  {_mmhg(self.p_mmhg)}  "
                f"alarms {', '.join(self.active) or 'none'}"
                + (f"  drug {self.drug}" if self.drug else ""))

    def render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        colour = STATE_COLOUR.get(self.state, "white")
        bar = PRIO_COLOUR.get(self.priority, "green" if self.state in DELIVERING else colour)
        t = Table.grid(padding=(0, 2))
        t.add_column(justify="right", style="dim")
        t.add_column()
        t.add_row("state", f"[{colour}]{self.state}[/]" + ("" if self.link == "ok"
                                                            else f"  [red]{self.link}[/]"))
        t.add_row("drug", self.drug or "-")
        t.add_row("rate", f"{units.fmt_rate(self.rate_ul_h)}"
                  + (f"  (programmed {units.fmt_rate(self.prog_rate_ul_h)})"
                     if self.prog_rate_ul_h != self.rate_ul_h else "")
                  + (f"  = {self.dose_rate}" if self.dose_rate else ""))
        t.add_row("delivered", ProgressBar(total=max(self.vtbi_nl, 1),
                                           completed=min(self.del_nl, max(self.vtbi_nl, 1)),
                                           width=40, complete_style=bar, finished_style=bar))
        pct = f" ({self.percent:.1f} %)" if self.percent is not None else ""
        t.add_row("", f"{units.fmt_ml(self.del_nl)} of {units.fmt_ml(self.vtbi_nl)}{pct}")
        t.add_row("elapsed", clock(self.el_ms))
        t.add_row("time left", clock(self.remaining_ms))
        t.add_row("pressure", _mmhg(self.p_mmhg))
        t.add_row("alarms", ", ".join(
            f"[{PRIO_COLOUR.get(p, 'white')}]{a}[/] ({p})" for a, p in self.active.items())
            or "none")
        t.add_row("keys", "[dim]p pause  r resume  a ack  s silence  q quit[/]")
        return Group(t, *self.notes)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "drug": self.drug, "rate_ul_h": self.rate_ul_h,
                "programmed_rate_ul_h": self.prog_rate_ul_h, "vtbi_nl": self.vtbi_nl,
                "del_nl": self.del_nl, "percent": self.percent, "p_mmhg": self.p_mmhg,
                "el_ms": self.el_ms, "remaining_ms": self.remaining_ms,
                "active_alarms": list(self.active), "alarms": self.alarms}


def _keys(stop: threading.Event, act: Callable[[str], None]) -> threading.Thread | None:
    """Read single keys from a terminal stdin in a thread (None when stdin is no terminal)."""
    if not sys.stdin.isatty():
        return None
    import select
    import termios
    import tty

    def run() -> None:
        fd = sys.stdin.fileno()
        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not stop.is_set():
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    act(sys.stdin.read(1))
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
    t = threading.Thread(target=run, name="infusekit-monitor-keys", daemon=True)
    t.start()
    return t


def run(pump, *, period_ms: int = 1000, duration_s: float | None = None,
        json_lines: bool = False, tty: bool | None = None, out=None) -> dict[str, Any]:
    """Follow ``pump`` until the infusion ends (COMPLETE/IDLE), ``duration_s``, ``q`` or
    Ctrl-C; return the final view as a dict (``interrupted`` too)."""
    from host.errors import LinkError, Refused
    out = out or sys.stdout
    tty = out.isatty() and not json_lines if tty is None else tty
    lib = pump.library
    st = pump.status()
    conc = None
    if st.drug and lib is not None and st.drug in lib:
        conc = lib.get(st.drug).conc_ug_ml
    view = View(st, conc)
    stream = pump.subscribe()
    stop = threading.Event()
    interrupted = False

    def emit(kind: str, **obj: Any) -> None:
        if json_lines:
            out.write(json.dumps({"type": kind, "t": round(time.time(), 3), **obj},
                                 default=str) + "\n")
            out.flush()

    def act(key: str) -> None:
        if key == "q":
            stop.set()
            return
        word = KEYS.get(key)
        if word is None:
            return
        try:
            getattr(pump, word)()
            note = view.stamp(f"{word} sent")
        except (Refused, LinkError) as e:
            note = view.stamp(f"{word}: {e}")
        if live is not None:
            live.console.print(note)

    deadline = time.monotonic() + duration_s if duration_s else None
    pump.telemetry(period_ms)
    live = None
    keys = None
    emit("status", **view.to_json())
    try:
        if tty:
            from rich.live import Live
            live = Live(view.render(), refresh_per_second=4, transient=False)
            live.start()
            keys = _keys(stop, act)
        elif not json_lines:
            print(view.line(), file=out, flush=True)
        last_status = time.monotonic()
        wait = max(0.5, 2 * period_ms / 1000)
        while view.state not in END_STATES and not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                ev = stream.get(timeout=min(wait, 0.5))
                if ev is not None:
                    note = view.frame(ev)
                    emit("telemetry" if note is None else "event",
                         **({"name": ev.name} if note is not None else {}),
                         **ev.values, **({"text": note} if note else {}))
                    if note and live is not None:
                        live.console.print(note)
                    elif note and not json_lines:
                        print(note, file=out, flush=True)
                if ev is None or time.monotonic() - last_status > 5:
                    view.status(pump.status())         # VTBI and alarms from the source
                    last_status = time.monotonic()
                    emit("status", **view.to_json())
                view.link = "ok"
            except LinkError as e:
                view.link = f"link lost: {e}; reconnecting"
                if live is not None:
                    live.update(view.render())
                elif not json_lines:
                    print(view.stamp(view.link), file=out, flush=True)
                emit("link", ok=False, message=str(e))
                try:
                    view.status(pump.reconnect(attempts=1, delay=0.5))
                    pump.telemetry(period_ms)
                    stream = pump.subscribe()
                    view.link = "ok"
                    emit("link", ok=True)
                except LinkError:
                    time.sleep(1.0)
            if live is not None:
                live.update(view.render())
        end = time.monotonic() + 0.3              # events sent with the last state change
        while time.monotonic() < end:
            try:
                ev = stream.get(timeout=0.1)
            except LinkError:
                break
            if ev is None:
                continue
            note = view.frame(ev)
            if note:
                emit("event", name=ev.name, **ev.values, text=note)
                if live is not None:
                    live.console.print(note)
                elif not json_lines:
                    print(note, file=out, flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        if keys is not None:
            keys.join(1)
        if live is not None:
            live.stop()
        try:
            pump.telemetry(0)
            view.status(pump.status())
        except (LinkError, Refused):
            pass
    result = {**view.to_json(), "interrupted": interrupted}
    emit("end", **result)
    return result
