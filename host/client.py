"""Serial client for an InfuseKit pump: ``Pump.open(url)`` and typed, thread-safe commands.

One background reader thread per connection reads the port (blocking reads, never
busy-polling), splits lines, hands replies to the request waiting for that id, queues events
and telemetry for ``events()`` / ``on_event()`` callbacks, and event-log records for
``read_log()``. Requests are serialised by one lock: exactly one is in flight, each with an
explicit timeout per attempt. A timed-out request is retransmitted with the same bytes and
the same id (the pump answers a repeated id from its cache and never executes it twice), and
so is one the pump answered with ``? ER CRC|LEN``. A call gives up with ``Timeout`` after at
most ``timeout * (retries + 1)`` seconds.

Before a state-changing command the host consults its mirror of the pump's state machine
(host/statemachine.py, built from the firmware's table) and raises ``IllegalCommand``
without sending anything when the table forbids it; an unknown or disagreeing mirror is
refreshed with STATUS first.

After a link failure (port gone, pump unplugged) ``reconnect()`` — or, with
``auto_reconnect=True``, the next call — reopens the port, says HELLO (refusing a different
device), and re-reads the pump's state with STATUS. The command that was in flight when the
link failed is *never* re-sent: its caller got a ``LinkError`` and must look at the status.

With the pump's key (``key=`` or ``key_store=``) every command other than HELLO, STATUS,
LOG, HB and VITALS is signed (host/auth.py).
"""
from __future__ import annotations

import collections
import datetime as _dt
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence, Union

import serial

from host import units
from host.auth import KeyStore, Signer
from host.codec import (PROTO_VERSION, Event, FrameError, LibFrame, LineSplitter, LogRecord, Reply,
                        Telemetry, decode_line, encode_request, encode_signed_request)
from host.druglib import DrugLibrary
from host.enums import as_alarm, as_priority, as_state
from host.errors import (IllegalCommand, KeyStoreError, LinkError, ProtocolError, PumpError,
                         PumpRefused, Timeout, UsageMistake)
from host.statemachine import COMMAND_WORDS, GUARDED_WORDS, StateMirror, word_allowed

log = logging.getLogger("infusekit.client")

READ_POLL_S = 0.2          # serial read timeout of the reader thread (bounds close() latency)
EVENT_BACKLOG = 1000       # frames kept for events() readers; a reader further behind loses
                           # the oldest (LinkStats.dropped_events counts them)
EVENT_QUEUE_MAX = EVENT_BACKLOG      # the old name
RESEND_CODES = ("CRC", "LEN", "SYNTAX")   # "? ER <code>" while a request is pending: resend
LOG_MAX = 32               # records per LOG request (protocol limit)

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
    auth: bool = False          # the pump requires signed therapy commands (CFG auth=1)
    ctr: int | None = None      # last authentication counter the pump accepted
    boot: int | None = None     # this boot's number: guarded requests carry it (protocol v1)
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_reply(cls, r: Reply) -> "Hello":
        if "proto" not in r.fields or "dev" not in r.fields:
            raise ProtocolError(f"not a HELLO reply: {r.fields}")
        ctr = r.fields.get("ctr")
        return cls(dev=r.fields["dev"], fw=r.fields.get("fw", "?"), proto=r.get_int("proto"),
                   lib=r.fields.get("lib", "?"), libh=r.fields.get("libh", "?"),
                   tick_ms=int(r.fields.get("tick_ms", "0")),
                   auth=r.fields.get("auth") == "1",
                   ctr=int(ctr) if ctr is not None and ctr.isdigit() else None,
                   boot=int(r.fields["boot"]) if r.fields.get("boot", "").isdigit() else None,
                   fields=dict(r.fields))

    def to_json(self) -> dict:
        return {"dev": self.dev, "fw": self.fw, "proto": self.proto, "lib": self.lib,
                "libh": self.libh, "tick_ms": self.tick_ms, "auth": self.auth,
                "boot": self.boot}


class _WireVolumes:
    """mL conveniences for results that carry ``rate_ul_h`` and ``vtbi_nl`` in wire units."""
    rate_ul_h: int
    vtbi_nl: int

    @property
    def rate_ml_h(self) -> float:
        return self.rate_ul_h / 1000

    @property
    def vtbi_ml(self) -> float:
        return self.vtbi_nl / 1_000_000


@dataclass(frozen=True)
class Status(_WireVolumes):
    """STATUS reply, in wire units, with mL conveniences; ``state`` is a ``State``, ``alarm``
    an ``Alarm`` and ``prio`` a ``Priority`` (host/enums.py; all compare equal to the wire
    strings/ints). ``drug`` is the program's drug (None: no program, or one without a drug).
    Protocol v1's STATUS carries no line pressure (telemetry does: ``Telemetry.p_mmhg``), so
    ``p_mmhg`` is None unless an older pump sent it."""
    state: str
    rate_ul_h: int
    vtbi_nl: int
    del_nl: int
    el_ms: int
    alarm: str
    prio: int
    drug: str | None = None
    p_mmhg: int | None = None
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_reply(cls, r: Reply) -> "Status":
        if "state" not in r.fields:
            raise ProtocolError(f"not a STATUS reply: {r.fields}")
        drug = r.fields.get("drug")
        return cls(state=as_state(r.fields["state"]), rate_ul_h=r.get_int("rate_ul_h"),
                   vtbi_nl=r.get_int("vtbi_nl"), del_nl=r.get_int("del_nl"),
                   el_ms=r.get_int("el_ms"),
                   p_mmhg=r.get_int("p_mmhg") if "p_mmhg" in r.fields else None,
                   alarm=as_alarm(r.fields.get("alarm", "NONE")),
                   prio=as_priority(r.fields.get("prio", "0")),
                   drug=None if drug in (None, "-") else drug, fields=dict(r.fields))

    @property
    def delivered_ml(self) -> float:
        return self.del_nl / 1_000_000

    @property
    def progress(self) -> float | None:
        """Delivered fraction of the VTBI (0..1), None without a program."""
        return min(1.0, self.del_nl / self.vtbi_nl) if self.vtbi_nl > 0 else None

    @property
    def remaining_ms(self) -> int | None:
        """Time left at the current rate (None when not delivering)."""
        return remaining_ms(self.vtbi_nl, self.del_nl, self.rate_ul_h)

    def to_json(self) -> dict:
        return {"state": self.state, "rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl,
                "del_nl": self.del_nl, "el_ms": self.el_ms, "p_mmhg": self.p_mmhg,
                "alarm": self.alarm, "prio": self.prio, "drug": self.drug,
                "rate_ml_h": self.rate_ml_h, "vtbi_ml": self.vtbi_ml,
                "delivered_ml": self.delivered_ml, "progress": self.progress,
                "remaining_ms": self.remaining_ms}


def remaining_ms(vtbi_nl: int, del_nl: int, rate_ul_h: int) -> int | None:
    """ms to deliver the rest of the VTBI at ``rate_ul_h`` (None at rate 0)."""
    if rate_ul_h <= 0 or vtbi_nl <= 0:
        return None
    left = max(0, vtbi_nl - del_nl)
    return -(-left * 3600 // rate_ul_h)          # nL / (µL/h) = 3.6 ms


@dataclass(frozen=True)
class ProgramResult(_WireVolumes):
    """PROG reply: what the pump will deliver."""
    rate_ul_h: int
    vtbi_nl: int
    dur_ms: int
    drug: str | None = None
    dose_ug: int | None = None
    soft: bool = False          # a soft limit was overridden (confirm=1)
    confirm: bool = False       # the host sent confirm=1

    @property
    def duration_s(self) -> float:
        return self.dur_ms / 1000

    def to_json(self) -> dict:
        return {"rate_ul_h": self.rate_ul_h, "vtbi_nl": self.vtbi_nl, "dur_ms": self.dur_ms,
                "drug": self.drug, "dose_ug": self.dose_ug, "soft": self.soft,
                "confirm": self.confirm, "rate_ml_h": self.rate_ml_h, "vtbi_ml": self.vtbi_ml,
                "duration_s": self.duration_s}


@dataclass(frozen=True)
class Step:
    """One step of a multi-step program: a rate for a volume or for a duration."""
    rate: Number
    volume: Number | None = None
    over: Number | _dt.timedelta | None = None

    def wire(self, i: int) -> dict[str, int | str]:
        if (self.volume is None) == (self.over is None):
            raise UsageMistake(f"step {i}: give exactly one of volume and over")
        f: dict[str, int | str] = {"i": i, "rate_ul_h": units.rate_ul_h(self.rate)}
        if self.volume is not None:
            f["vol_nl"] = units.volume_nl(self.volume)
        else:
            f["dur_ms"] = units.duration_ms(self.over)  # type: ignore[arg-type]
        return f


@dataclass(frozen=True)
class BolusResult:
    """BOLUS reply: the bolus the pump is delivering on top of the program."""
    vol_nl: int
    rate_ul_h: int

    def to_json(self) -> dict:
        return {"vol_nl": self.vol_nl, "rate_ul_h": self.rate_ul_h,
                "vol_ml": self.vol_nl / 1_000_000, "rate_ml_h": self.rate_ul_h / 1000}


@dataclass(frozen=True)
class TitrateResult:
    """TITRATE reply: the new rate of the running program."""
    rate_ul_h: int
    soft: bool = False
    fields: dict[str, str] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"rate_ul_h": self.rate_ul_h, "rate_ml_h": self.rate_ul_h / 1000,
                "soft": self.soft, **{k: v for k, v in self.fields.items()
                                      if k not in ("rate_ul_h", "soft")}}


@dataclass
class LinkStats:
    """Counters of what the reader and the request loop saw."""
    frames_in: int = 0
    bad_frames: int = 0
    overlong: int = 0
    retransmits: int = 0
    stray_replies: int = 0
    dropped_events: int = 0
    reconnects: int = 0
    reads: int = 0              # port reads that returned data (bytes arrive in chunks)


def _read_available(port: serial.SerialBase) -> bytes:
    """Block (up to the port's read timeout) for the first byte, then take everything already
    there in the same call. A serial port (and rfc2217://) knows ``in_waiting``; pyserial's
    socket:// handler reports at most 1, so it is drained with a zero timeout instead of
    one byte per call."""
    n = port.in_waiting
    if n > 1 or not type(port).__module__.endswith("protocol_socket"):
        return port.read(n or 1)
    data = port.read(1)
    if data:
        saved = port.timeout
        try:
            port.timeout = 0
            data += port.read(65536)
        finally:
            port.timeout = saved
    return data


def _with_unit(parse, value, what: str, unit: str | None, drug: str | None) -> int:
    """Parse a dose or dose rate that must carry its unit: a bare number is refused, because
    the library's drugs are dosed in units 1000x apart (mg/kg vs µg/kg)."""
    from host.errors import UnitError
    if value is not None and not units.has_unit(value):
        example = f"'{value} {unit}'" if unit else ("'0.5 mg/kg/h'" if "rate" in what
                                                    else "'0.5 mg/kg'")
        raise UnitError(f"{what} {value!r} needs a unit" +
                        (f": {drug} is dosed in {unit}" if unit and drug else "") +
                        f", e.g. {example}")
    return parse(value)


def dose_rate_fields(drug: str, dose_rate: Number, weight_kg: Number | None, *,
                     vtbi: Number | None = None, over: object = None, load: Number | None = None,
                     load_over: object = None, conc: Number | None = None, confirm: bool = False,
                     extra: dict[str, int | str] | None = None, dose_unit: str | None = None,
                     rate_unit: str | None = None) -> dict[str, int | str]:
    """The ``PROG`` fields of a dose-rate program (optionally with a loading dose): the one
    home of its unit conversion, used by `Pump.program` and the simulator's scenario runner.
    Doses carry their units ("0.5 mg/kg/h", "0.2 mg/kg"); ``dose_unit``/``rate_unit`` only
    name the library's unit in the error for a bare number. Nothing is sent."""
    if weight_kg is None:
        raise UsageMistake("program by dose rate needs weight_kg")
    if (vtbi is None) == (over is None):
        raise UsageMistake("program by dose rate needs exactly one of vtbi and over")
    if (load is None) != (load_over is None):
        raise UsageMistake("a loading dose needs both load and load_over")
    fields: dict[str, int | str] = {"drug": drug}
    if load is not None:
        fields["load_ug_kg"] = _with_unit(units.dose_ug_kg, load, "loading dose", dose_unit, drug)
        fields["load_ms"] = units.duration_ms(load_over)  # type: ignore[arg-type]
    fields["dose_ug_kg_h"] = _with_unit(units.dose_rate_ug_kg_h, dose_rate, "dose rate",
                                        rate_unit, drug)
    fields["wt_g"] = units.weight_g(weight_kg)
    if vtbi is not None:
        fields["vtbi_nl"] = units.volume_nl(vtbi)
    else:
        fields["dur_ms"] = units.duration_ms(over)  # type: ignore[arg-type]
    if conc is not None:
        fields["conc_ug_ml"] = units.concentration_ug_ml(conc)
    fields.update(extra or {})
    if confirm:
        fields["confirm"] = 1
    return fields


def steps_frames(steps: Sequence[Step | tuple], *, drug: str | None = None,
                 kvo: Number | None = None, confirm: bool = False
                 ) -> tuple[list[dict[str, int | str]], dict[str, int | str]]:
    """(the ``STEP`` fields of each step, the ``PROG steps=n`` fields) of a multi-step
    program: the one home of its conversion (`Pump.program_steps`, the scenario runner).
    Each step is a Step or a tuple ``(rate, volume)`` / ``(rate, None, over)``."""
    if not 1 <= len(steps) <= 8:
        raise UsageMistake("a multi-step program has 1..8 steps")
    wires = [(s if isinstance(s, Step) else Step(*s)).wire(i) for i, s in enumerate(steps)]
    fields: dict[str, int | str] = {"steps": len(wires)}
    if drug is not None:
        fields["drug"] = drug
    if kvo is not None:
        fields["kvo_ul_h"] = units.rate_ul_h(kvo)
    if confirm:
        fields["confirm"] = 1
    return wires, fields


NET_SCHEMES = ("socket", "rfc2217")


def open_serial(url: str, *, baudrate: int, timeout: float,
                write_timeout: float) -> serial.SerialBase:
    """Open a pump port URL for `Pump` and the gateway alike. A device path is opened
    exclusively (flock): two programs reading one serial port steal each other's replies, so
    the second is told to share it through the gateway. Failures are ``LinkError``."""
    check_port_url(url)
    local = "://" not in url and os.name == "posix"
    extra = {"exclusive": True} if local else {}
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                     write_timeout=write_timeout, **extra)
    except (serial.SerialException, OSError, ValueError) as e:
        if local and "exclusively lock" in str(e):
            raise LinkError(f"{url} is in use by another program (a monitor or another "
                            f"host); to share one pump, run `infusekit serve --port {url}` "
                            "and point every program at the socket:// URL it prints") from e
        raise LinkError(f"cannot open {url}: {e}") from e


def check_port_url(url: str) -> None:
    """Refuse (``BadPortURL``) a pyserial URL that cannot mean anything: an unknown scheme
    (``foo://bar``), or a network scheme without ``host:port`` (``socket://localhost``).
    Device paths (``/dev/ttyACM0``, ``COM3``) are left to the OS to open."""
    from host.errors import BadPortURL
    if "://" not in url:
        return
    scheme, rest = url.split("://", 1)
    known = sorted(m.name.removeprefix("protocol_") for m in _url_handlers())
    if scheme not in known:
        raise BadPortURL(f"--port {url}: unknown URL scheme {scheme!r} (pyserial knows "
                         f"{', '.join(s + '://' for s in known)}; or a device path such as "
                         f"/dev/ttyACM0)")
    if scheme in NET_SCHEMES:
        hostport = rest.split("/", 1)[0].split("?", 1)[0]
        host, colon, port = hostport.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadPortURL(f"--port {url}: {scheme}:// needs HOST:PORT with a port "
                             f"1..65535, e.g. {scheme}://127.0.0.1:7001")


def _url_handlers():
    import pkgutil
    import serial.urlhandler
    return [m for m in pkgutil.iter_modules(serial.urlhandler.__path__)
            if m.name.startswith("protocol_")]


class _Closed:
    """Sentinel put in the event backlog when the pump is closed or the link fails."""

    def __init__(self, error: LinkError | None, gen: int = 0) -> None:
        self.error = error
        self.gen = gen


class EventStream:
    """One reader's view of the pump's events and telemetry: every frame received after the
    stream's start, in order, each once, however many other streams read the same frames.

    Iterating yields frames until ``timeout`` s pass with none (None: until the pump is
    closed); a link failure raises ``LinkError``. ``get(timeout)`` returns one frame or None.
    A stream that falls more than ``EVENT_BACKLOG`` frames behind loses the oldest
    (``dropped`` counts them). Obtain one with ``Pump.subscribe()`` or ``Pump.events()``.
    """

    def __init__(self, pump: "Pump", start: int, timeout: float | None = None) -> None:
        self._pump = pump
        self.cursor = start
        self.timeout = timeout
        self.dropped = 0

    def get(self, timeout: float | None = None) -> Unsolicited | None:
        return self._pump._next_frame(self, timeout)

    def events(self, timeout: float | None = None) -> Iterator[Unsolicited]:
        """Iterate this stream with its own ``timeout`` (the stream continues afterwards)."""
        while True:
            item = self.get(timeout)
            if item is None:
                return
            yield item

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Unsolicited:
        item = self.get(self.timeout)
        if item is None:
            raise StopIteration
        return item

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# ----------------------------------------------------------------------------- client

class Pump:
    """A connection to one pump. Use ``Pump.open(url)``; close it (or use ``with``)."""

    def __init__(self, port: serial.SerialBase, *, timeout: float = 2.0, retries: int = 2,
                 first_id: int | None = None, check_state: bool = True,
                 library: DrugLibrary | None | str = "auto", key: bytes | None = None,
                 key_store: KeyStore | str | bool | None = None, url: str | None = None,
                 baudrate: int = 115200, auto_reconnect: bool = False) -> None:
        """Wrap an already open pyserial port (its read timeout should be short).

        ``first_id`` defaults to a random id, so two sessions never collide in the pump's
        retry cache. ``url``/``baudrate`` let ``reconnect()`` reopen the port.
        """
        if timeout <= 0:
            raise UsageMistake("timeout must be > 0")
        if retries < 0:
            raise UsageMistake("retries must be >= 0")
        if first_id is None:
            first_id = random.randint(1, 65535)
        if not 1 <= first_id <= 65535:
            raise UsageMistake("first_id must be 1..65535")
        self.port = port
        self.url = url
        self.baudrate = baudrate
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.check_state = check_state
        self.auto_reconnect = auto_reconnect
        self.mirror = StateMirror()
        self.stats = LinkStats()
        self.info: Hello | None = None
        self.signer: Signer | None = None
        self._key = key
        if key_store is True:
            key_store = KeyStore()
        elif isinstance(key_store, str):
            key_store = KeyStore(key_store)
        self._key_store: KeyStore | None = key_store or None
        self._library = library
        self._next_id = first_id
        self._req_lock = threading.RLock()     # one request in flight
        self._cond = threading.Condition()     # guards the fields below
        self._pending: int | None = None
        self._reply: Reply | None = None
        self._resend = False
        self._link_error: LinkError | None = None
        self._closed = False
        self._last_tx = time.monotonic()
        self._ring: collections.deque = collections.deque(maxlen=EVENT_BACKLOG)  # (seq, frame)
        self._seq = 0                          # sequence number of the next frame
        self._ring_cond = threading.Condition()
        self._local = threading.local()        # each thread's events() stream
        self._handshaking = False
        self._log: queue.Queue = queue.Queue()
        self._dl: queue.Queue = queue.Queue()   # ! DL frames after LIB / DRUG
        self._callbacks: list[Callable[[Unsolicited], None]] = []
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self._gen = 0                          # connection generation (reconnect bumps it)
        self._start_reader()

    def _start_reader(self) -> None:
        self._splitter = LineSplitter()
        self._reader = threading.Thread(target=self._read_loop, args=(self.port, self._gen),
                                        name="infusekit-reader", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ opening/closing
    @staticmethod
    def _open_port(url: str, baudrate: int, timeout: float) -> serial.SerialBase:
        port = open_serial(url, baudrate=baudrate, timeout=READ_POLL_S,
                           write_timeout=max(timeout, 1.0))
        try:
            port.reset_input_buffer()
        except (serial.SerialException, OSError):
            pass
        return port

    @classmethod
    def open(cls, url: str, *, timeout: float = 2.0, baudrate: int = 115200, retries: int = 2,
             handshake: bool = True, **kwargs) -> "Pump":
        """Open any pyserial URL (``/dev/ttyACM0``, ``/dev/pts/N``, ``socket://h:p``,
        ``rfc2217://h:p``, ``loop://``), then HELLO and check ``proto``.

        ``timeout`` is the per-attempt reply timeout of every call (overridable per call).
        ``key=`` (32 bytes) or ``key_store=`` (a KeyStore, a directory, or True for the
        default store) signs therapy-changing commands. ``auto_reconnect=True`` reopens the
        port on the next call after the link failed.
        """
        port = cls._open_port(url, baudrate, timeout)
        pump = cls(port, timeout=timeout, retries=retries, url=url, baudrate=baudrate, **kwargs)
        if handshake:
            pump._handshaking = True
            try:
                pump.hello()
            except BaseException:
                pump.close()
                raise
            finally:
                pump._handshaking = False
        return pump

    def close(self) -> None:
        """Stop the reader (and heartbeat) and close the port. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._hb_stop.set()
        self._shutdown_port()
        if self._hb_thread is not None and threading.current_thread() is not self._hb_thread:
            self._hb_thread.join(timeout=2 * self.timeout * (self.retries + 1) + 1)
        self._push(_Closed(None, self._gen))

    def _shutdown_port(self) -> None:
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

    def __enter__(self) -> "Pump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def link_ok(self) -> bool:
        """False after the link failed (until ``reconnect()``)."""
        return self._link_error is None and not self._closed

    def reconnect(self, *, attempts: int = 3, delay: float = 0.5,
                  timeout: float | None = None) -> Status:
        """Reopen the port, HELLO (must be the same device), then re-read the state.

        Nothing that was in flight is re-sent. Returns the pump's STATUS. Raises LinkError
        when the port cannot be reopened after ``attempts`` tries ``delay`` s apart, and
        ProtocolError when another device answers.
        """
        if self.url is None:
            raise LinkError("reconnect needs the port's URL (use Pump.open)")
        with self._req_lock:
            if self._closed:
                raise LinkError("pump connection is closed")
            old_dev = self.info.dev if self.info else None
            last: LinkError | None = None
            for i in range(max(1, attempts)):
                if i:
                    time.sleep(delay)
                self._gen += 1                     # the old reader stops, and never reports
                self._shutdown_port()
                try:
                    self.port = self._open_port(self.url, self.baudrate, self.timeout)
                except LinkError as e:
                    last = e
                    continue
                with self._cond:
                    self._link_error = None
                    self._pending, self._reply, self._resend = None, None, False
                self._drain_closed()
                self.mirror.forget()
                self._start_reader()
                try:
                    info = self.hello(timeout=timeout)
                    if old_dev is not None and info.dev != old_dev:
                        raise ProtocolError(f"reconnected to device {info.dev}, expected "
                                            f"{old_dev}; check which pump is on {self.url}")
                    st = self.status(timeout=timeout)
                except Timeout as e:
                    last = e
                    continue
                self.stats.reconnects += 1
                log.info("reconnected to %s: %s", self.url, st.state)
                return st
            raise LinkError(f"cannot reconnect to {self.url}: {last}")

    def _drain_closed(self) -> None:
        """After a reconnect: readers skip the old connection's link-failure sentinels (they
        carry an older generation), so nothing to do but wake them."""
        with self._ring_cond:
            self._ring_cond.notify_all()

    # ------------------------------------------------------------------ reader thread
    def _read_loop(self, port: serial.SerialBase, gen: int) -> None:
        while not self._closed and gen == self._gen:
            try:
                data = _read_available(port)
            except Exception as e:  # SerialException, OSError, TypeError on a closed fd
                if not self._closed and gen == self._gen:
                    self._fail(LinkError(f"serial link failed: {e}"))
                return
            if data and gen == self._gen:
                self.stats.reads += 1
                for line in self._splitter.feed(data):
                    self._on_line(line)
                self.stats.overlong = self._splitter.overlong

    def _fail(self, err: LinkError) -> None:
        log.warning("%s", err)
        with self._cond:
            self._link_error = err
            self._cond.notify_all()
        self.mirror.forget()
        self._push(_Closed(err, self._gen))

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
        if isinstance(frame, LogRecord):
            self._log.put(frame)
            return
        if isinstance(frame, LibFrame):
            self._dl.put(frame)
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
        with self._ring_cond:
            self._ring.append((self._seq, item))
            self._seq += 1
            self._ring_cond.notify_all()

    def _next_frame(self, stream: EventStream, timeout: float | None) -> Unsolicited | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ring_cond:
            while True:
                if self._ring:
                    oldest = self._ring[0][0]
                    if stream.cursor < oldest:              # fell behind the backlog
                        lost = oldest - stream.cursor
                        stream.dropped += lost
                        self.stats.dropped_events += lost
                        stream.cursor = oldest
                    if stream.cursor < self._seq:
                        _, item = self._ring[stream.cursor - oldest]
                        if isinstance(item, _Closed):
                            if item.gen != self._gen:        # an earlier connection's failure
                                stream.cursor += 1
                                continue
                            if item.error is not None:
                                stream.cursor += 1
                                raise item.error
                            return None                      # closed: left for the next read
                        stream.cursor += 1
                        return item
                if self._closed:
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ring_cond.wait(remaining)

    def _thread_stream(self) -> EventStream:
        """This thread's events() stream, begun at its first request (or now)."""
        st = getattr(self._local, "stream", None)
        if st is None:
            with self._ring_cond:
                st = self._local.stream = EventStream(self, self._seq)
        return st

    # ------------------------------------------------------------------ requests
    def _alloc_id(self) -> int:
        rid = self._next_id
        self._next_id = 1 if rid >= 65535 else rid + 1
        return rid

    def request(self, word: str, fields: dict[str, int | str] | None = None, *,
                timeout: float | None = None, sign: bool | None = None) -> Reply:
        """Send one request and return its OK reply (PumpRefused on ER, Timeout, LinkError).

        Low level: no state-mirror check. ``timeout`` is per attempt. ``sign`` defaults to
        "when the host has the pump's key and ``word`` is guarded" (the command table). A
        guarded request carries ``boot`` (from HELLO, asked first if need be). When the pump
        answers ``ER BOOT`` (it rebooted since), the host re-reads its state (HELLO, STATUS)
        and raises PumpRefused("BOOT"): the request is never re-sent blindly.
        """
        if threading.current_thread() is self._reader:
            raise PumpError("pump requests cannot be made from an event callback "
                            "(it runs on the reader thread); hand the work to another thread")
        per_try = self.timeout if timeout is None else float(timeout)
        if per_try <= 0:
            raise UsageMistake("timeout must be > 0")
        if not self._handshaking:
            self._thread_stream()                # this thread's events() begin here
        with self._req_lock:
            if self._closed:
                raise LinkError("pump connection is closed")
            if self._link_error is not None:
                if not (self.auto_reconnect and self.url):
                    raise LinkError(f"{self._link_error}; call reconnect()")
                self.reconnect(timeout=timeout)
            if sign is None:
                sign = self.signer is not None and word in GUARDED_WORDS
            fields = dict(fields or {})
            if word in GUARDED_WORDS and "boot" not in fields:
                if self.info is None:
                    self.hello(timeout=timeout)
                if self.info is not None and self.info.boot is not None:
                    fields["boot"] = self.info.boot
            rid = self._alloc_id()
            if sign:
                if self.signer is None:
                    raise KeyStoreError(f"{word} must be signed but this host has no key for "
                                        f"the pump; pass key= or key_store=")
                frame = encode_signed_request(rid, word, fields or {},
                                              self.signer.next_counter(), self.signer.mac)
            else:
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
            if reply.code == "BOOT" and word != "HELLO":
                self._after_reboot()
            raise PumpRefused(reply.code or "?", reply.reason or "")
        return reply

    def _after_reboot(self) -> None:
        """The pump refused a request meant for an earlier boot: learn the new boot and the
        state (HELLO, STATUS); the caller decides again."""
        self.info = None
        self.mirror.forget()
        try:
            self.hello()
            self.status()
        except PumpError as e:  # the refusal stands; the next guarded request asks HELLO
            log.warning("re-reading the pump after ER BOOT failed: %s", e)

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
                    raise LinkError(f"{word} (id {rid}): {self._link_error}; it may or may not "
                                    f"have been executed — reconnect and check the status")
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
            self._last_tx = time.monotonic()
        except Exception as e:
            err = LinkError(f"cannot write to the pump: {e}")
            with self._cond:
                self._link_error = err
            self.mirror.forget()
            raise err from e

    # ------------------------------------------------------------------ state mirror
    def _ensure_legal(self, word: str, timeout: float | None) -> None:
        if not self.check_state:
            return
        state = self.mirror.state
        if state is not None and word_allowed(word, state) is not False:
            return
        st = self.status(timeout=timeout)     # unknown, or maybe stale: ask the pump
        if word_allowed(word, st.state) is False:
            raise IllegalCommand(word, st.state)

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
            elif word in COMMAND_WORDS:
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
        """HELLO: device, firmware, protocol and library versions. Checks ``proto``;
        sets up signing when the host has this pump's key."""
        info = Hello.from_reply(self.request("HELLO", timeout=timeout))
        if info.proto != PROTO_VERSION:
            raise ProtocolError(f"pump speaks protocol {info.proto}, this host speaks "
                                f"{PROTO_VERSION}; update the host or the firmware")
        self.info = info
        self._setup_signer(info)
        return info

    def _setup_signer(self, info: Hello) -> None:
        if self.signer is None or self.signer.dev != info.dev:
            store = self._key_store
            if self._key is not None:
                self.signer = Signer(self._key, store, info.dev)
            elif store is not None and store.has(info.dev):
                self.signer = Signer(store.load(info.dev), store, info.dev)
            elif info.auth:
                log.warning("pump %s requires signed commands and this host has no key for it",
                            info.dev)
        if self.signer is not None and info.ctr is not None:
            self.signer.sync(info.ctr)

    def status(self, *, timeout: float | None = None) -> Status:
        """STATUS; also refreshes the state mirror."""
        st = Status.from_reply(self.request("STATUS", timeout=timeout))
        self.mirror.set(st.state)
        return st

    def program(self, rate: Number | None = None, vtbi: Number | None = None, *,
                over: Number | _dt.timedelta | None = None, drug: str | None = None,
                dose: Number | None = None, dose_rate: Number | None = None,
                weight_kg: Number | None = None, load: Number | None = None,
                load_over: Number | _dt.timedelta | None = None, conc: Number | None = None,
                kvo: Number | None = None, confirm: bool = False,
                timeout: float | None = None) -> ProgramResult:
        """Program the pump.

        By rate: two of ``rate`` (mL/h or "52.5 mL/h"), ``vtbi`` (mL or "35 mL") and
        ``over`` ("40 min"); the third is computed (rounded down, like the pump).
        By dose: ``drug``, ``dose`` ("0.5 mg/kg"; a bare number is in the library's
        ``dose_unit``), ``over`` and ``weight_kg``.
        By dose rate: ``drug``, ``dose_rate`` ("0.5 mg/kg/h", "10 mcg/kg/min"),
        ``weight_kg`` and one of ``vtbi``/``over``; optionally a loading dose ``load``
        ("0.2 mg/kg") over ``load_over`` and a concentration ``conc`` ("1 mg/mL" = 1000
        µg/mL, or a bare µg/mL number).
        ``kvo`` (mL/h) sets the keep-vein-open rate after the VTBI; ``confirm=True``
        overrides a drug-library soft limit. Hard limits of the local library are checked
        before sending when it is the one the pump reports (HELLO ``libh``).
        """
        extra: dict[str, int | str] = {}
        if kvo is not None:
            extra["kvo_ul_h"] = units.rate_ul_h(kvo)
        if drug is not None and dose_rate is not None:
            return self._program_dose_rate(drug, dose_rate, weight_kg, vtbi, over, load,
                                           load_over, conc, confirm, extra, timeout)
        if drug is not None:
            if rate is not None or vtbi is not None:
                raise UsageMistake("program by dose takes drug, dose, over and weight_kg, "
                                 "not rate/vtbi")
            return self._program_drug(drug, dose, over, weight_kg, confirm, extra, timeout)
        if any(x is not None for x in (dose, weight_kg, dose_rate, load, load_over, conc)):
            raise UsageMistake("dose, dose_rate, weight_kg, load and conc need drug=...")
        given = [x is not None for x in (rate, vtbi, over)]
        if sum(given) != 2:
            raise UsageMistake("program by rate needs exactly two of rate, vtbi, over")
        if rate is not None and vtbi is not None:
            r, v = units.rate_ul_h(rate), units.volume_nl(vtbi)
        elif rate is not None:
            r, ms = units.rate_ul_h(rate), units.duration_ms(over)  # type: ignore[arg-type]
            v = r * ms // 3600                      # µL/h × ms / 3600 = nL
        else:
            v, ms = units.volume_nl(vtbi), units.duration_ms(over)  # type: ignore[arg-type]
            if ms <= 0:
                raise UsageMistake("over must be > 0")
            r = v * 3600 // ms
        if r <= 0 or v <= 0:
            raise UsageMistake("rate and volume must be > 0")
        reply = self._command("PROG", {"rate_ul_h": r, "vtbi_nl": v, **extra}, timeout=timeout)
        return self._program_result(reply, None, confirm)

    @staticmethod
    def _program_result(reply: Reply, drug: str | None, confirm: bool) -> ProgramResult:
        return ProgramResult(rate_ul_h=reply.get_int("rate_ul_h"),
                             vtbi_nl=reply.get_int("vtbi_nl"), dur_ms=reply.get_int("dur_ms"),
                             drug=reply.fields.get("drug", drug),
                             dose_ug=int(reply.fields["dose_ug"]) if "dose_ug" in reply.fields
                             else None,
                             soft=reply.fields.get("soft") == "1", confirm=bool(confirm))

    def _entry(self, drug: str):
        """The local library's entry for ``drug``; when the local library is the pump's
        (same libh), an unknown name is refused here (``UnknownDrug``, code DRUG, with the
        closest names) before anything is sent."""
        lib = self.library
        if lib is None:
            return None
        if drug in lib:
            return lib.get(drug)
        if self.info is not None and self.info.libh == lib.sha16:
            lib.get(drug)                        # raises UnknownDrug with did-you-mean
        return None

    def _program_drug(self, drug: str, dose: Number | None, over: object,
                      weight_kg: Number | None, confirm: bool, extra: dict[str, int | str],
                      timeout: float | None) -> ProgramResult:
        missing = [n for n, v in (("dose", dose), ("over", over), ("weight_kg", weight_kg))
                   if v is None]
        if missing:
            raise UsageMistake(f"program by drug also needs {', '.join(missing)}")
        entry = self._entry(drug)
        lib = self.library
        dose_v = _with_unit(units.dose_ug_kg, dose, "dose", entry.dose_unit if entry else None,
                            drug)
        over_v = units.duration_ms(over)  # type: ignore[arg-type]
        wt = units.weight_g(weight_kg)  # type: ignore[arg-type]
        if entry is not None and self.info is not None and self.info.libh == lib.sha16:  # type: ignore[union-attr]
            lib.precheck(entry.name, dose_v, wt, over_v)  # type: ignore[union-attr]
        fields: dict[str, int | str] = {"drug": drug, "dose_ug_kg": dose_v, "wt_g": wt,
                                        "over_ms": over_v, **extra}
        if confirm:
            fields["confirm"] = 1
        reply = self._command("PROG", fields, timeout=timeout)
        return self._program_result(reply, drug, confirm)

    def _program_dose_rate(self, drug: str, dose_rate: Number, weight_kg: Number | None,
                           vtbi: Number | None, over: object, load: Number | None,
                           load_over: object, conc: Number | None, confirm: bool,
                           extra: dict[str, int | str], timeout: float | None) -> ProgramResult:
        entry = self._entry(drug)
        fields = dose_rate_fields(drug, dose_rate, weight_kg, vtbi=vtbi, over=over, load=load,
                                  load_over=load_over, conc=conc, confirm=confirm, extra=extra,
                                  dose_unit=entry.dose_unit if entry else None,
                                  rate_unit=(entry.dose_rate_unit or f"{entry.dose_unit}/h")
                                  if entry else None)
        reply = self._command("PROG", fields, timeout=timeout)
        return self._program_result(reply, drug, confirm)

    def program_steps(self, steps: Sequence[Step | tuple], *, drug: str | None = None,
                      kvo: Number | None = None, confirm: bool = False,
                      timeout: float | None = None) -> ProgramResult:
        """A multi-step program (ramp / hold / taper): ``STEP i …`` for each step, then
        ``PROG steps=n``. Each step is a Step or a tuple ``(rate, volume)`` /
        ``(rate, None, over)``. Nothing starts until ``start()``."""
        wires, fields = steps_frames(steps, drug=drug, kvo=kvo, confirm=confirm)
        # atomic: the STEP frames and their PROG go out as one unit, so programs from two
        # threads never interleave (the request lock is re-entrant)
        with self._req_lock:
            self._ensure_legal("PROG", timeout)
            for w in wires:
                self.request("STEP", w, timeout=timeout)
            reply = self._command("PROG", fields, timeout=timeout)
        return self._program_result(reply, drug, confirm)

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
        """PAUSE: stop the motor, keep the program."""
        return self._state_command("PAUSE", timeout)

    def resume(self, *, timeout: float | None = None) -> str:
        """RESUME a paused (or standby) infusion."""
        return self._state_command("RESUME", timeout)

    def stop(self, *, timeout: float | None = None) -> str:
        """STOP: end the infusion and clear the program."""
        return self._state_command("STOP", timeout)

    def ack(self, *, timeout: float | None = None) -> str:
        """ACK the alarm (only once its condition is gone); from ALARM moves to PAUSED."""
        return self._state_command("ACK", timeout)

    def standby(self, *, timeout: float | None = None) -> str:
        """STANDBY: keep the program, deliver nothing, suspend the callback alarm."""
        return self._state_command("STANDBY", timeout)

    def titrate(self, rate: Number | None = None, *, dose_rate: Number | None = None,
                confirm: bool = False, timeout: float | None = None) -> TitrateResult:
        """TITRATE the running program to a new ``rate`` (mL/h) or ``dose_rate``
        ("0.3 mg/kg/h"); the delivered volume is kept."""
        if (rate is None) == (dose_rate is None):
            raise UsageMistake("titrate needs exactly one of rate and dose_rate")
        fields: dict[str, int | str] = (
            {"rate_ul_h": units.rate_ul_h(rate)} if rate is not None
            else {"dose_ug_kg_h": _with_unit(units.dose_rate_ug_kg_h, dose_rate, "dose rate",
                                             None, None)})
        if confirm:
            fields["confirm"] = 1
        reply = self._command("TITRATE", fields, timeout=timeout)
        return TitrateResult(rate_ul_h=reply.get_int("rate_ul_h"),
                             soft=reply.fields.get("soft") == "1", fields=dict(reply.fields))

    def bolus(self, volume: Number, rate: Number, *, timeout: float | None = None) -> BolusResult:
        """BOLUS ``volume`` (mL or "0.5 mL") at ``rate`` (mL/h) on top of the running
        program; limited by the drug's ``bolus_max_ul`` and the pump's maximum rate."""
        fields: dict[str, int | str] = {"vol_nl": units.volume_nl(volume),
                                        "rate_ul_h": units.rate_ul_h(rate)}
        if fields["vol_nl"] <= 0 or fields["rate_ul_h"] <= 0:
            raise UsageMistake("bolus volume and rate must be > 0")
        reply = self._command("BOLUS", fields, timeout=timeout)
        return BolusResult(vol_nl=reply.get_int("vol_nl"), rate_ul_h=reply.get_int("rate_ul_h"))

    def silence(self, *, timeout: float | None = None) -> int:
        """SILENCE the audio signal for 120 s (never clears an alarm); returns ``until_ms``
        (pump clock)."""
        reply = self.request("SILENCE", timeout=timeout)
        return int(reply.fields.get("until_ms", "0"))

    def vitals(self, *, sbp: int, dbp: int, hr: int, spo2: int, age_ms: int | None = None,
               timeout: float | None = None) -> str:
        """Relay a patient-monitor reading (mmHg, /min, %), ``age_ms`` old when sent (default:
        just made); returns the pump's ``action`` (``none`` or ``paused`` when the interlock
        stopped the infusion)."""
        fields: dict[str, int | str] = {}
        for name, value, lo, hi in (("sbp", sbp, 0, 400), ("dbp", dbp, 0, 300),
                                    ("hr", hr, 0, 350), ("spo2", spo2, 0, 100)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise UsageMistake(f"{name} must be a whole number {lo}..{hi}, not {value!r}")
            fields[name] = value
        if dbp > sbp:
            raise UsageMistake(f"diastolic {dbp} above systolic {sbp}")
        if age_ms is not None:
            if isinstance(age_ms, bool) or not isinstance(age_ms, int) or not 0 <= age_ms <= 3_600_000:
                raise UsageMistake(f"age_ms must be a whole number 0..3600000, not {age_ms!r}")
            fields["age_ms"] = age_ms
        reply = self.request("VITALS", fields, timeout=timeout)
        return reply.fields.get("action", "none")

    def heartbeat(self, *, timeout: float | None = None) -> None:
        """HB: tell the pump the host is alive (any request also counts)."""
        self.request("HB", timeout=timeout)

    def configure(self, *, timeout: float | None = None, **settings: int | str) -> dict[str, str]:
        """CFG: change settings (``occl_mmhg``, ``occl_level``, ``hb_ms``, ``hb_action``,
        ``interlock``, ``vitals_age_ms``, ``auth``); returns the values now in force."""
        if not settings:
            raise UsageMistake("configure needs at least one setting")
        fields = {k: (int(v) if isinstance(v, bool) else v) for k, v in settings.items()}
        return dict(self.request("CFG", fields, timeout=timeout).fields)

    def telemetry(self, period_ms: int, *, timeout: float | None = None) -> int:
        """Set the telemetry period (0 = off, else ``codec.TLM_MIN``..``codec.TLM_MAX`` ms,
        the firmware's bounds; the pump refuses others with ``ER RANGE``); returns the
        period set."""
        reply = self.request("TLM", {"period_ms": int(period_ms)}, timeout=timeout)
        return int(reply.fields.get("period_ms", period_ms))

    # ------------------------------------------------------------------ drug library
    def _lib_request(self, word: str, fields: dict, timeout: float | None) -> tuple[Reply, list[dict[str, str]]]:
        per_try = self.timeout if timeout is None else float(timeout)
        for _ in range(self.retries + 1):
            with self._req_lock:
                while not self._dl.empty():
                    self._dl.get_nowait()
                reply = self.request(word, fields, timeout=timeout)
                n = reply.get_int("n")
                got: list[dict[str, str]] = []
                deadline = time.monotonic() + per_try
                while len(got) < n:
                    try:
                        got.append(dict(self._dl.get(timeout=max(0.0, deadline - time.monotonic())).fields))
                    except queue.Empty:
                        break
            if len(got) == n:
                return reply, got
        raise Timeout(f"{word}: the library frames did not all arrive; check the link")

    def drugs(self, *, timeout: float | None = None) -> list[str]:
        """LIB: the names of the drugs in the pump's library, in index order."""
        _, frames = self._lib_request("LIB", {}, timeout)
        return [f["drug"] for f in sorted(frames, key=lambda f: int(f["i"]))]

    def drug_limits(self, drug: str, *, timeout: float | None = None) -> dict:
        """DRUG: every limit the pump enforces for ``drug``, in wire units:
        ``{"conc_ug_ml": 1000, "concs": [...], "rate_max_ul_h": …, "bolus_max_nl": …,
        "kvo_ul_h": …, "bolus_lockout_ms": …, "bolus_h_ug": …, "dose_ug_kg": {"hard_min": …, …}, …, "vitals": {"sbp_max": …}}``."""
        _, frames = self._lib_request("DRUG", {"drug": drug}, timeout)
        out: dict = {}
        for f in frames:
            f = {k: v for k, v in f.items() if k != "drug"}
            if "lim" in f:
                name = f.pop("lim")
                out[name] = {k: int(v) for k, v in f.items()}
            elif "conc_ug_ml" in f:
                out["concs"] = [int(c) for c in f.pop("concs", "").split(",") if c]
                out.update({k: int(v) for k, v in f.items()})
            elif "bolus_lockout_ms" in f:
                out.update({k: int(v) for k, v in f.items()})
            else:
                out["vitals"] = {k: int(v) for k, v in f.items()}
        return out

    # ------------------------------------------------------------------ event log
    def read_log(self, start: int = 0, *, limit: int | None = None, batch: int = LOG_MAX,
                 timeout: float | None = None) -> list[LogRecord]:
        """Read the pump's event log from sequence number ``start`` (LOG, read-only).

        Each ``LOG from=… max=…`` reply says how many ``! LG`` records follow; a batch whose
        records do not all arrive within the timeout is asked for again (reading twice is
        harmless). Stops at the end of the log or after ``limit`` records.
        """
        per_try = self.timeout if timeout is None else float(timeout)
        batch = max(1, min(LOG_MAX, batch))
        out: list[LogRecord] = []
        seq = int(start)
        while limit is None or len(out) < limit:
            want = batch if limit is None else min(batch, limit - len(out))
            for attempt in range(self.retries + 1):
                with self._req_lock:
                    self._drain_log()
                    reply = self.request("LOG", {"from": seq, "max": want}, timeout=timeout)
                    n = reply.get_int("n")
                    nxt = reply.get_int("next")
                    got = self._collect_log(n, seq, per_try)
                if len(got) == n:
                    break
                log.debug("LOG from=%d: %d of %d records arrived, asking again", seq, len(got), n)
            else:
                raise Timeout(f"LOG from={seq}: the records did not all arrive after "
                              f"{self.retries + 1} tries; check the link")
            out.extend(got)
            # a short batch is not the end: the pump sends what fits in its transmit
            # buffer; only n == 0 (or no progress) ends the log
            if n == 0 or nxt <= seq:
                break
            seq = nxt
        return out

    def _drain_log(self) -> None:
        while True:
            try:
                self._log.get_nowait()
            except queue.Empty:
                return

    def _collect_log(self, n: int, seq: int, per_try: float) -> list[LogRecord]:
        got: list[LogRecord] = []
        deadline = time.monotonic() + per_try
        while len(got) < n:
            try:
                rec = self._log.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            try:
                if rec.seq >= seq and (not got or rec.seq > got[-1].seq):
                    got.append(rec)
            except FrameError:
                self.stats.bad_frames += 1
        return got

    # ------------------------------------------------------------------ heartbeat
    def start_heartbeat(self, period_s: float) -> None:
        """Send HB whenever the host has been silent for ``period_s`` (a background thread;
        stops on close). Pair it with ``configure(hb_ms=…)`` larger than the period."""
        if period_s <= 0:
            raise UsageMistake("heartbeat period must be > 0")
        if self._hb_thread is not None and self._hb_thread.is_alive():
            raise PumpError("heartbeat already running")
        self._hb_stop.clear()

        def run() -> None:
            while not self._hb_stop.wait(max(0.01, self._last_tx + period_s - time.monotonic())):
                if time.monotonic() - self._last_tx < period_s:
                    continue
                try:
                    self.request("HB")
                except LinkError as e:
                    log.warning("heartbeat: %s", e)
                    if self._closed:
                        return
                    self._last_tx = time.monotonic()
                except PumpError as e:
                    log.warning("heartbeat refused: %s", e)
                    self._last_tx = time.monotonic()

        self._hb_thread = threading.Thread(target=run, name="infusekit-heartbeat", daemon=True)
        self._hb_thread.start()

    def stop_heartbeat(self) -> None:
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2 * self.timeout * (self.retries + 1) + 1)
            self._hb_thread = None

    # ------------------------------------------------------------------ events
    def events(self, timeout: float | None = None) -> Iterator[Unsolicited]:
        """Yield events and telemetry; stop after ``timeout`` s with nothing (None: wait
        until the pump is closed). Raises LinkError if the link fails.

        Delivery (bounded, never a replay of the whole session): each thread reads its own
        stream. It begins when the thread first talks to the pump (its first request after
        ``open()``'s handshake) — so ``pump.start(); for ev in pump.events(…)`` sees the
        RUNNING event — or at its first ``events()`` call; each call continues where the
        thread's previous one stopped (nothing skipped, nothing repeated). Every thread sees
        every frame: two loops in two threads never split them. At most ``EVENT_BACKLOG``
        frames are kept; a reader further behind loses the oldest (``stats.dropped_events``).
        ``subscribe()`` gives a stream object of its own (e.g. to hand to another thread).
        """
        return self._thread_stream().events(timeout)

    def subscribe(self, timeout: float | None = None) -> "EventStream":
        """A new stream of the frames received from now on (see ``events()``)."""
        with self._ring_cond:
            return EventStream(self, self._seq, timeout)

    def on_event(self, callback: Callable[[Unsolicited], None]) -> Callable[[Unsolicited], None]:
        """Call ``callback(frame)`` on the reader thread for every event/telemetry frame.

        The callback must be quick and must not make pump requests. Returns it (decorator).
        """
        self._callbacks.append(callback)
        return callback

    def remove_event_callback(self, callback: Callable[[Unsolicited], None]) -> None:
        self._callbacks.remove(callback)
