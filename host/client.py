"""Serial client for an InfuseKit pump: ``Pump.open(url)`` and typed, thread-safe commands.

One background reader thread per pump reads the port (blocking reads, never busy-polling),
splits lines, hands replies to the request waiting for that id and queues events and
telemetry for ``events()`` / ``on_event()`` callbacks. Requests are serialised by one lock:
exactly one is in flight, each with an explicit timeout per attempt. A timed-out request is
retransmitted with the same bytes and the same id (the pump answers a repeated id from its
cache and never executes it twice), and so is one the pump answered with ``? ER CRC|LEN``.
A call gives up with ``Timeout`` after at most ``timeout * (retries + 1)`` seconds.

Before a state-changing command the host consults its mirror of the pump's state machine
(host/statemachine.py, built from the firmware's table) and raises ``IllegalCommand``
without sending anything when the table forbids it; an unknown or disagreeing mirror is
refreshed with STATUS first.
"""
from __future__ import annotations

import datetime as _dt
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Union

import serial

from host import units
from host.codec import (PROTO_VERSION, Event, FrameError, LineSplitter, Reply, Telemetry,
                        decode_line, encode_request)
from host.druglib import DrugLibrary
from host.errors import (IllegalCommand, LinkError, ProtocolError, PumpError, PumpRefused,
                         Timeout)
from host.statemachine import COMMAND_WORDS, StateMirror

log = logging.getLogger("infusekit.client")

READ_POLL_S = 0.2          # serial read timeout of the reader thread (bounds close() latency)
EVENT_QUEUE_MAX = 10_000   # oldest events are dropped beyond this (counted in stats)
RESEND_CODES = ("CRC", "LEN", "SYNTAX")   # "? ER <code>" while a request is pending: resend

Number = Union[int, float, str]
Unsolicited = Union[Event, Telemetry]


# ----------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Hello:
    """HELLO reply: who the pump is and which library it enforces."""
    dev: str
    fw: str
    proto: int
    lib: str
    libh: str
    tick_ms: int
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_reply(cls, r: Reply) -> "Hello":
        if "proto" not in r.fields or "dev" not in r.fields:
            raise ProtocolError(f"not a HELLO reply: {r.fields}")
        return cls(dev=r.fields["dev"], fw=r.fields.get("fw", "?"), proto=r.get_int("proto"),
                   lib=r.fields.get("lib", "?"), libh=r.fields.get("libh", "?"),
                   tick_ms=int(r.fields.get("tick_ms", "0")), fields=dict(r.fields))


@dataclass(frozen=True)
class Status:
    """STATUS reply, in wire units, with mL conveniences."""
    state: str
    rate_ul_h: int
    vtbi_nl: int
    del_nl: int
    el_ms: int
    p_mmhg: int
    alarm: str
    prio: int
    drug: str | None = None
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_reply(cls, r: Reply) -> "Status":
        if "state" not in r.fields:
            raise ProtocolError(f"not a STATUS reply: {r.fields}")
        drug = r.fields.get("drug")
        return cls(state=r.fields["state"], rate_ul_h=r.get_int("rate_ul_h"),
                   vtbi_nl=r.get_int("vtbi_nl"), del_nl=r.get_int("del_nl"),
                   el_ms=r.get_int("el_ms"), p_mmhg=r.get_int("p_mmhg"),
                   alarm=r.fields.get("alarm", "NONE"), prio=int(r.fields.get("prio", "0")),
                   drug=None if drug in (None, "-") else drug, fields=dict(r.fields))

    @property
    def rate_ml_h(self) -> float:
        return self.rate_ul_h / 1000

    @property
    def vtbi_ml(self) -> float:
        return self.vtbi_nl / 1_000_000

    @property
    def delivered_ml(self) -> float:
        return self.del_nl / 1_000_000

    @property
    def progress(self) -> float | None:
        """Delivered fraction of the VTBI (0..1), None without a program."""
        return min(1.0, self.del_nl / self.vtbi_nl) if self.vtbi_nl > 0 else None

    def to_json(self) -> dict:
        return {"state": self.state, "rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl,
                "del_nl": self.del_nl, "el_ms": self.el_ms, "p_mmhg": self.p_mmhg,
                "alarm": self.alarm, "prio": self.prio, "drug": self.drug,
                "rate_ml_h": self.rate_ml_h, "vtbi_ml": self.vtbi_ml,
                "delivered_ml": self.delivered_ml, "progress": self.progress}


@dataclass(frozen=True)
class ProgramResult:
    """PROG reply: what the pump will deliver."""
    rate_ul_h: int
    vtbi_nl: int
    dur_ms: int
    drug: str | None = None
    dose_ug: int | None = None
    soft: bool = False          # a soft limit was overridden (confirm=1)
    confirm: bool = False       # the host sent confirm=1

    @property
    def rate_ml_h(self) -> float:
        return self.rate_ul_h / 1000

    @property
    def vtbi_ml(self) -> float:
        return self.vtbi_nl / 1_000_000

    @property
    def duration_s(self) -> float:
        return self.dur_ms / 1000

    def to_json(self) -> dict:
        return {"rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl, "dur_ms": self.dur_ms,
                "drug": self.drug, "dose_ug": self.dose_ug, "soft": self.soft,
                "confirm": self.confirm, "rate_ml_h": self.rate_ml_h, "vtbi_ml": self.vtbi_ml,
                "duration_s": self.duration_s}


@dataclass
class LinkStats:
    """Counters of what the reader and the request loop saw."""
    frames_in: int = 0
    bad_frames: int = 0
    overlong: int = 0
    retransmits: int = 0
    stray_replies: int = 0
    dropped_events: int = 0


class _Closed:
    """Sentinel pushed to the event queue when the pump is closed or the link fails."""

    def __init__(self, error: LinkError | None) -> None:
        self.error = error


# ----------------------------------------------------------------------------- client

class Pump:
    """A connection to one pump. Use ``Pump.open(url)``; close it (or use ``with``)."""

    def __init__(self, port: serial.SerialBase, *, timeout: float = 2.0, retries: int = 2,
                 first_id: int = 1, check_state: bool = True,
                 library: DrugLibrary | None | str = "auto") -> None:
        """Wrap an already open pyserial port (its read timeout should be short)."""
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if not 1 <= first_id <= 65535:
            raise ValueError("first_id must be 1..65535")
        self.port = port
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.check_state = check_state
        self.mirror = StateMirror()
        self.stats = LinkStats()
        self.info: Hello | None = None
        self._library = library
        self._next_id = first_id
        self._req_lock = threading.Lock()      # one request in flight
        self._cond = threading.Condition()     # guards the fields below
        self._pending: int | None = None
        self._reply: Reply | None = None
        self._resend = False
        self._link_error: LinkError | None = None
        self._closed = False
        self._events: queue.Queue = queue.Queue(maxsize=EVENT_QUEUE_MAX)
        self._callbacks: list[Callable[[Unsolicited], None]] = []
        self._splitter = LineSplitter()
        self._reader = threading.Thread(target=self._read_loop, name="infusekit-reader",
                                        daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ opening/closing
    @classmethod
    def open(cls, url: str, *, timeout: float = 2.0, baudrate: int = 115200, retries: int = 2,
             handshake: bool = True, **kwargs) -> "Pump":
        """Open any pyserial URL (``/dev/ttyACM0``, ``/dev/pts/N``, ``socket://h:p``,
        ``rfc2217://h:p``, ``loop://``), then HELLO and check ``proto``.

        ``timeout`` is the per-attempt reply timeout of every call (overridable per call).
        """
        try:
            port = serial.serial_for_url(url, baudrate=baudrate, timeout=READ_POLL_S,
                                         write_timeout=max(timeout, 1.0))
        except (serial.SerialException, OSError, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from e
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        pump = cls(port, timeout=timeout, retries=retries, **kwargs)
        if handshake:
            try:
                pump.hello()
            except BaseException:
                pump.close()
                raise
        return pump

    def close(self) -> None:
        """Stop the reader and close the port. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        cancel = getattr(self.port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # pragma: no cover - best effort
                pass
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=2 * READ_POLL_S + 1.0)
        try:
            self.port.close()
        except Exception:  # pragma: no cover - best effort
            pass
        self._push(_Closed(None))

    def __enter__(self) -> "Pump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ reader thread
    def _read_loop(self) -> None:
        port = self.port
        while not self._closed:
            try:
                data = port.read(port.in_waiting or 1)
            except Exception as e:  # SerialException, OSError, TypeError on a closed fd
                if not self._closed:
                    self._fail(LinkError(f"serial link failed: {e}"))
                return
            if data:
                for line in self._splitter.feed(data):
                    self._on_line(line)
                self.stats.overlong = self._splitter.overlong

    def _fail(self, err: LinkError) -> None:
        log.warning("%s", err)
        with self._cond:
            self._link_error = err
            self._cond.notify_all()
        self._push(_Closed(err))

    def _on_line(self, line: bytes) -> None:
        try:
            frame = decode_line(line)
        except FrameError as e:
            self.stats.bad_frames += 1
            log.debug("dropped frame %r: %s", line, e)
            return
        self.stats.frames_in += 1
        if isinstance(frame, Reply):
            with self._cond:
                if self._pending is not None and frame.id == self._pending:
                    self._reply = frame
                    self._cond.notify_all()
                    return
                if self._pending is not None and frame.id is None and frame.code in RESEND_CODES:
                    self._resend = True
                    self._cond.notify_all()
                    return
            self.stats.stray_replies += 1
            log.debug("stray reply %r", line)
            return
        state = frame.fields.get("state")
        if state is not None and (isinstance(frame, Telemetry) or frame.name == "STATE"):
            try:
                self.mirror.set(state)
            except ProtocolError as e:
                log.warning("%s", e)
        self._push(frame)
        for cb in list(self._callbacks):
            try:
                cb(frame)
            except Exception:
                log.exception("event callback %r failed", cb)

    def _push(self, item: object) -> None:
        while True:
            try:
                self._events.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._events.get_nowait()
                    self.stats.dropped_events += 1
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------ requests
    def _alloc_id(self) -> int:
        rid = self._next_id
        self._next_id = 1 if rid >= 65535 else rid + 1
        return rid

    def request(self, word: str, fields: dict[str, int | str] | None = None, *,
                timeout: float | None = None) -> Reply:
        """Send one request and return its OK reply (PumpRefused on ER, Timeout, LinkError).

        Low level: no state-mirror check. ``timeout`` is per attempt.
        """
        if threading.current_thread() is self._reader:
            raise PumpError("pump requests cannot be made from an event callback "
                            "(it runs on the reader thread); hand the work to another thread")
        per_try = self.timeout if timeout is None else float(timeout)
        if per_try <= 0:
            raise ValueError("timeout must be > 0")
        with self._req_lock:
            if self._closed:
                raise LinkError("pump connection is closed")
            if self._link_error is not None:
                raise LinkError(str(self._link_error))
            rid = self._alloc_id()
            frame = encode_request(rid, word, fields or {})
            with self._cond:
                self._pending, self._reply, self._resend = rid, None, False
            try:
                reply = self._exchange(word, rid, frame, per_try)
            finally:
                with self._cond:
                    self._pending = None
                    self._reply = None
        if not reply.ok:
            raise PumpRefused(reply.code or "?", reply.reason or "")
        return reply

    def _exchange(self, word: str, rid: int, frame: bytes, per_try: float) -> Reply:
        sends = 0
        while True:
            self._write(frame)
            sends += 1
            deadline = time.monotonic() + per_try
            with self._cond:
                while (self._reply is None and not self._resend and self._link_error is None
                       and not self._closed):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                reply, resend = self._reply, self._resend
                self._resend = False
                if reply is not None:
                    return reply
                if self._link_error is not None:
                    raise LinkError(str(self._link_error))
                if self._closed:
                    raise LinkError("pump connection closed during the request")
            if sends > self.retries:
                if resend:
                    raise LinkError(f"{word} (id {rid}): the pump received the frame corrupted "
                                    f"{sends} times; check the cable, baud rate and noise")
                raise Timeout(f"{word} (id {rid}): no reply after {sends} tries of "
                              f"{per_try:g} s; check the port and that the pump is on")
            self.stats.retransmits += 1
            log.debug("%s id %d: %s, retransmitting", word, rid,
                      "pump saw a corrupt frame" if resend else "timeout")

    def _write(self, frame: bytes) -> None:
        try:
            self.port.write(frame)
            self.port.flush()
        except Exception as e:
            err = LinkError(f"cannot write to the pump: {e}")
            with self._cond:
                self._link_error = err
            raise err from e

    # ------------------------------------------------------------------ state mirror
    def _ensure_legal(self, word: str, timeout: float | None) -> None:
        if not self.check_state:
            return
        trigger = COMMAND_WORDS[word]
        if self.mirror.can(trigger):
            return
        self.status(timeout=timeout)          # unknown, or maybe stale: ask the pump
        self.mirror.check(trigger, word)

    def _command(self, word: str, fields: dict[str, int | str] | None = None, *,
                 timeout: float | None = None) -> Reply:
        self._ensure_legal(word, timeout)
        try:
            reply = self.request(word, fields, timeout=timeout)
        except PumpRefused as e:
            if e.code == "STATE":
                self.mirror.forget()
            raise
        state = reply.fields.get("state")
        try:
            if state is not None:
                self.mirror.set(state)
            else:
                self.mirror.fire(COMMAND_WORDS[word])
        except (IllegalCommand, ProtocolError):
            self.mirror.forget()
        return reply

    @property
    def state(self) -> str | None:
        """The mirrored pump state (None when unknown). ``status()`` asks the pump."""
        return self.mirror.state

    # ------------------------------------------------------------------ commands
    def hello(self, *, timeout: float | None = None) -> Hello:
        """HELLO: device, firmware, protocol and library versions. Checks ``proto``."""
        info = Hello.from_reply(self.request("HELLO", timeout=timeout))
        if info.proto != PROTO_VERSION:
            raise ProtocolError(f"pump speaks protocol {info.proto}, this host speaks "
                                f"{PROTO_VERSION}; update the host or the firmware")
        self.info = info
        return info

    def status(self, *, timeout: float | None = None) -> Status:
        """STATUS; also refreshes the state mirror."""
        st = Status.from_reply(self.request("STATUS", timeout=timeout))
        self.mirror.set(st.state)
        return st

    def program(self, rate: Number | None = None, vtbi: Number | None = None, *,
                over: Number | _dt.timedelta | None = None, drug: str | None = None,
                dose: Number | None = None, weight_kg: Number | None = None,
                confirm: bool = False, timeout: float | None = None) -> ProgramResult:
        """Program the pump.

        By rate: two of ``rate`` (mL/h or "52.5 mL/h"), ``vtbi`` (mL or "35 mL") and
        ``over`` ("40 min"); the third is computed (rounded down, like the pump).
        By drug: ``drug``, ``dose`` ("0.5 mg/kg"; a bare number is in the library's
        ``dose_unit``), ``over`` and ``weight_kg``; ``confirm=True`` overrides soft limits.
        Hard limits of the local library are checked before sending when it is the one
        the pump reports (HELLO ``libh``).
        """
        if drug is not None:
            return self._program_drug(drug, dose, over, weight_kg, confirm, timeout)
        if dose is not None or weight_kg is not None:
            raise ValueError("dose and weight_kg need drug=...")
        given = [x is not None for x in (rate, vtbi, over)]
        if sum(given) != 2:
            raise ValueError("program by rate needs exactly two of rate, vtbi, over")
        if rate is not None and vtbi is not None:
            r, v = units.rate_ul_h(rate), units.volume_nl(vtbi)
        elif rate is not None:
            r, ms = units.rate_ul_h(rate), units.duration_ms(over)  # type: ignore[arg-type]
            v = r * ms // 3600                      # µL/h × ms / 3600 = nL
        else:
            v, ms = units.volume_nl(vtbi), units.duration_ms(over)  # type: ignore[arg-type]
            if ms <= 0:
                raise ValueError("over must be > 0")
            r = v * 3600 // ms
        reply = self._command("PROG", {"rate_ul_h": r, "vtbi_nl": v}, timeout=timeout)
        return ProgramResult(rate_ul_h=reply.get_int("rate_ul_h"),
                             vtbi_nl=reply.get_int("vtbi_nl"), dur_ms=reply.get_int("dur_ms"))

    def _program_drug(self, drug: str, dose: Number | None, over: object,
                      weight_kg: Number | None, confirm: bool,
                      timeout: float | None) -> ProgramResult:
        missing = [n for n, v in (("dose", dose), ("over", over), ("weight_kg", weight_kg))
                   if v is None]
        if missing:
            raise ValueError(f"program by drug also needs {', '.join(missing)}")
        lib = self.library
        entry = lib.get(drug) if lib is not None and drug in lib else None
        dose_v = units.dose_ug_kg(dose, default_unit=entry.dose_unit if entry else None)  # type: ignore[arg-type]
        over_v = units.duration_ms(over)  # type: ignore[arg-type]
        wt = units.weight_g(weight_kg)  # type: ignore[arg-type]
        if entry is not None and self.info is not None and self.info.libh == lib.sha16:  # type: ignore[union-attr]
            lib.precheck(entry.name, dose_v, wt, over_v)  # type: ignore[union-attr]
        fields: dict[str, int | str] = {"drug": drug, "dose_ug_kg": dose_v, "wt_g": wt,
                                        "over_ms": over_v}
        if confirm:
            fields["confirm"] = 1
        reply = self._command("PROG", fields, timeout=timeout)
        return ProgramResult(rate_ul_h=reply.get_int("rate_ul_h"),
                             vtbi_nl=reply.get_int("vtbi_nl"), dur_ms=reply.get_int("dur_ms"),
                             drug=reply.fields.get("drug", drug),
                             dose_ug=int(reply.fields["dose_ug"]) if "dose_ug" in reply.fields else None,
                             soft=reply.fields.get("soft") == "1", confirm=bool(confirm))

    @property
    def library(self) -> DrugLibrary | None:
        """The local drug library (``firmware/druglib.json``) or None when absent."""
        if self._library == "auto":
            try:
                self._library = DrugLibrary.load()
            except (OSError, ValueError, KeyError) as e:
                log.info("no local drug library: %s", e)
                self._library = None
        return self._library  # type: ignore[return-value]

    def _state_command(self, word: str, timeout: float | None) -> str:
        reply = self._command(word, timeout=timeout)
        return reply.fields.get("state") or (self.mirror.state or "?")

    def start(self, *, timeout: float | None = None) -> str:
        """START a programmed infusion; returns the new state."""
        return self._state_command("START", timeout)

    def pause(self, *, timeout: float | None = None) -> str:
        return self._state_command("PAUSE", timeout)

    def resume(self, *, timeout: float | None = None) -> str:
        return self._state_command("RESUME", timeout)

    def stop(self, *, timeout: float | None = None) -> str:
        """STOP: end the infusion and clear the program."""
        return self._state_command("STOP", timeout)

    def ack(self, *, timeout: float | None = None) -> str:
        """ACK the alarm (only once its condition is gone); moves to PAUSED."""
        return self._state_command("ACK", timeout)

    def telemetry(self, period_ms: int, *, timeout: float | None = None) -> int:
        """Set the telemetry period (0 = off, 50..60000 ms); returns the period set."""
        reply = self.request("TLM", {"period_ms": int(period_ms)}, timeout=timeout)
        return int(reply.fields.get("period_ms", period_ms))

    # ------------------------------------------------------------------ events
    def events(self, timeout: float | None = None) -> Iterator[Unsolicited]:
        """Yield events and telemetry as they arrive; stop after ``timeout`` s with nothing
        (None: wait until the pump is closed). Raises LinkError if the link fails."""
        while True:
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                return
            if isinstance(item, _Closed):
                self._push(item)       # let other iterators see it too
                if item.error is not None:
                    raise item.error
                return
            yield item

    def on_event(self, callback: Callable[[Unsolicited], None]) -> Callable[[Unsolicited], None]:
        """Call ``callback(frame)`` on the reader thread for every event/telemetry frame.

        The callback must be quick and must not make pump requests. Returns it (decorator).
        """
        self._callbacks.append(callback)
        return callback

    def remove_event_callback(self, callback: Callable[[Unsolicited], None]) -> None:
        self._callbacks.remove(callback)
