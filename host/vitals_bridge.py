"""The HL7 vitals bridge: IHE PCD-01 ``ORU^R01`` messages over MLLP in, ``VITALS`` to the pump out.

This module owns the bridge and nothing else (docs/hl7.md is its page):

* `Bridge` — the functional core, no I/O: one MLLP block in, the HL7 ACK out (AA; AR for what
  is not an ``ORU^R01`` HL7 v2 message; AE with the reason for content it cannot use), and at
  most one `Reading` handed to the ``relay`` callable. Parsing and the ACK are python-hl7's
  (`hl7.parse`, `Message.create_ack`, its escaping); the bridge reads fields, never splits text.
* `serve_bridge` / `BridgeServer` — the imperative shell: python-hl7's asyncio MLLP server
  (`hl7.mllp.start_hl7_server`, persistent connections, one ACK per message) on a thread, the
  relay through `host.Pump.vitals`, pump alarms printed as they come.

What is relayed (CONTEXT §10; codes checked against the IEEE 11073-10101 partition 2 term
codes, 2::n = 131072 + n): SBP from MDC_PRESS_BLD_NONINV_SYS 150021 or MDC_PRESS_BLD_ART_SYS
150033, DBP from _NONINV_DIA 150022 or _ART_DIA 150034 (mmHg, MDC_DIM_MMHG 266016), HR from
MDC_ECG_HEART_RATE 147842, else MDC_PULS_OXIM_PULS_RATE 149530 (MDC_DIM_BEAT_PER_MIN 264864),
SpO2 from MDC_PULS_OXIM_SAT_O2 150456 (MDC_DIM_PERCENT 262688). Other codes are ignored; a
message with none of these gets AE. An observation with another unit, a value that is not a
number, or a code whose name contradicts it makes the whole message AE: nothing of it is used.

Time: an observation's time is OBX-14, else its OBR-7; "now" is the monitor's own clock, MSH-7,
so ages never depend on two clocks agreeing. A reading older than ``max_age_s`` or not newer
than the last one of its kind (out of order, repeated) is not fresh and never used. The pump
gets the four vitals with ``age_ms`` = the age of the oldest of them, so the pump's stale
alarm counts from when the reading was made; when readings stop, nothing is relayed and the
pump raises ``VITALS_STALE`` (the bridge never repeats or fills in a reading). Optionally
(``max_skew_s``) MSH-7 must also agree with the bridge's clock, which catches a monitor
replaying buffered messages.

Patient: PID-3 (any repetition's ID) must be ``patient``; without one the bridge binds to the
first patient it sees and says so. Another patient's message gets AE and is never relayed.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import hl7
import hl7.mllp

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\x0d"
ENCODING = "MSH|^~\\&"                 # the only field separator and encoding characters taken
MAX_MESSAGE = 65536                    # bytes in one MLLP block; longer is refused (AR)

# MDC code -> (vital, MDC reference id, accepted units: MDC codes, MDC names and UCUM)
_MMHG = ("266016", "MDC_DIM_MMHG", "mm[Hg]", "mmHg")
_BPM = ("264864", "MDC_DIM_BEAT_PER_MIN", "/min", "{beat}/min", "{beats}/min", "bpm")
_PCT = ("262688", "MDC_DIM_PERCENT", "%")
MDC: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "150021": ("sbp", "MDC_PRESS_BLD_NONINV_SYS", _MMHG),
    "150033": ("sbp", "MDC_PRESS_BLD_ART_SYS", _MMHG),
    "150022": ("dbp", "MDC_PRESS_BLD_NONINV_DIA", _MMHG),
    "150034": ("dbp", "MDC_PRESS_BLD_ART_DIA", _MMHG),
    "147842": ("hr", "MDC_ECG_HEART_RATE", _BPM),
    "149530": ("hr", "MDC_PULS_OXIM_PULS_RATE", _BPM),
    "150456": ("spo2", "MDC_PULS_OXIM_SAT_O2", _PCT),
}
# a pulse rate from the oximeter stands in for HR only without an ECG heart rate in the message
_HR_RANK = {"147842": 0, "149530": 1}
VITALS = ("sbp", "dbp", "hr", "spo2")
# plausible values (the pump's own VITALS bounds): outside them the message is AE
PLAUSIBLE = {"sbp": (1, 350), "dbp": (1, 300), "hr": (1, 350), "spo2": (1, 100)}
USABLE_STATUS = frozenset({"F", "R", "C"})      # OBX-11: final, not yet verified, corrected
MAX_AGE_MS = 3_600_000                           # the pump's largest age_ms

# HL7 table 0357 (message error condition codes) used in ERR-3
E_SEGMENT = "100^Segment sequence error^HL70357"
E_REQUIRED = "101^Required field missing^HL70357"
E_DATATYPE = "102^Data type error^HL70357"
E_TABLE = "103^Table value not found^HL70357"
E_MSGTYPE = "200^Unsupported message type^HL70357"
E_VERSION = "203^Unsupported version id^HL70357"
E_KEY = "204^Unknown key identifier^HL70357"
E_INTERNAL = "207^Application internal error^HL70357"


@dataclass(frozen=True)
class Reading:
    """What the bridge relays: the four vitals and how old the oldest of them is."""
    sbp: int
    dbp: int
    hr: int
    spo2: int
    age_ms: int
    patient: str
    control_id: str


@dataclass
class Outcome:
    """One message handled: the ACK to send, its code and reason, what was relayed."""
    ack: str
    code: str                      # AA, AE, AR
    reason: str
    control_id: str = ""
    relayed: Reading | None = None
    action: str | None = None      # the pump's answer to the relay (none, paused)


class _Nak(Exception):
    def __init__(self, code: str, err: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.err, self.reason = code, err, reason


@dataclass
class _Obs:
    value: int
    t: _dt.datetime                # observation time, UTC, naive
    code: str


def _utc(value: str, what: str) -> _dt.datetime:
    """An HL7 DTM as naive UTC (a time without an offset is taken as UTC)."""
    try:
        t = hl7.parse_datetime(value)
    except (ValueError, TypeError) as e:
        raise _Nak("AE", E_DATATYPE, f"{what} {value!r} is not an HL7 date/time") from e
    if t is None:
        raise _Nak("AE", E_REQUIRED, f"{what} is empty")
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return t


def _ms(d: _dt.timedelta) -> int:
    return int(d.total_seconds() * 1000)


@dataclass
class Bridge:
    """The bridge's core: ``handle_block(bytes) -> [Outcome]``; thread-safe, no I/O of its own.

    ``relay(reading) -> action`` sends a reading to the pump (``host.Pump.vitals``); if it
    raises, the message gets AE ("not relayed: …"). ``clock`` (UTC seconds) is used only with
    ``max_skew_s``.
    """
    relay: Callable[[Reading], str]
    patient: str | None = None
    max_age_s: float = 300.0
    max_skew_s: float | None = None
    clock: Callable[[], float] = time.time
    application: str = "INFUSEKIT"
    facility: str = "PUMP"
    on_bind: Callable[[str], None] | None = None
    on_refuse: Callable[[Outcome], None] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"AA": 0, "AE": 0, "AR": 0, "relayed": 0})

    def __post_init__(self) -> None:
        if not 0 < self.max_age_s <= MAX_AGE_MS / 1000:
            raise ValueError(f"max_age_s must be in (0, {MAX_AGE_MS // 1000}]")
        self._lock = threading.Lock()
        self._last: dict[str, _Obs] = {}
        self._bound = self.patient
        self._done: dict[str, tuple[int, str, str]] = {}  # recent MSH-10 -> (hash, code, reason)

    # ------------------------------------------------------------------ framing
    def handle_block(self, block: bytes) -> list[Outcome]:
        """One MLLP block as read up to and including ``FS CR``: the message after the last
        ``VT``. Bytes before it (a message whose end never came, or noise) are answered AR."""
        body = block[:-2] if block.endswith(END_BLOCK) else block
        parts = body.split(START_BLOCK)
        out = []
        for junk in parts[:-1]:
            if junk.strip(b"\r\n\x00 "):
                out.append(self._reject_bytes(junk, "truncated: a new message started before this "
                                                    "one ended (no FS CR)"))
        if len(parts) == 1:
            out.append(self._reject_bytes(body, "MLLP framing error: no VT before the message"))
        else:
            out.append(self.handle_bytes(parts[-1]))
        return out

    def handle_bytes(self, data: bytes) -> Outcome:
        if len(data) > MAX_MESSAGE:
            return self._reject_bytes(data[:200], f"message longer than {MAX_MESSAGE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject_bytes(data[:200], "not UTF-8/ASCII text")
        return self.handle(text)

    def _reject_bytes(self, data: bytes, reason: str) -> Outcome:
        text = data.decode("utf-8", "replace")
        try:
            text = text.replace("\n", "\r").strip("\r")
            msg = hl7.parse(text) if text.startswith(ENCODING) else None
            if msg is not None:
                msg.segment("MSH")
        except Exception:
            msg = None
        with self._lock:
            return self._finish(msg, "AR", E_SEGMENT, reason)

    # ------------------------------------------------------------------ one message
    def handle(self, text: str) -> Outcome:
        """One HL7 message (text between the MLLP start and end bytes)."""
        with self._lock:
            msg = None
            try:
                text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
                if not text.startswith("MSH"):
                    raise _Nak("AR", E_SEGMENT, "not an HL7 v2 message: it must begin with MSH")
                if not text.startswith(ENCODING):
                    raise _Nak("AR", E_DATATYPE, "MSH-1/MSH-2 must be |^~\\& (IHE PCD-01)")
                try:
                    msg = hl7.parse(text)
                    msg.segment("MSH")
                except Exception as e:
                    msg = None
                    raise _Nak("AR", E_SEGMENT, f"not an HL7 v2 message: {e}") from e
                return self._message(msg, hash(text))
            except _Nak as n:
                return self._finish(msg, n.code, n.err, n.reason, hash(text))
            except Exception as e:        # never crash on input: say what happened
                log.exception("vitals bridge: unexpected error")
                return self._finish(msg, "AE", E_INTERNAL, f"internal error: {type(e).__name__}: {e}",
                                    hash(text))

    def _message(self, msg: hl7.Message, digest: int) -> Outcome:
        msh = msg.segment("MSH")
        cid = msh.extract_field(1, 10)
        if cid in self._done:
            seen, code, reason = self._done[cid]
            if seen != digest:
                raise _Nak("AR", E_KEY, f"MSH-10 {cid} was already used by another message")
            # a resend after a lost ACK: the same answer, nothing done again
            return self._finish(msg, code, E_INTERNAL if code != "AA" else "",
                                f"duplicate of message {cid}, handled already: {reason}")
        mtype = (msh.extract_field(1, 9, 1, 1), msh.extract_field(1, 9, 1, 2))
        if not msh.extract_field(1, 10):
            raise _Nak("AR", E_REQUIRED, "MSH-10 (message control ID) is empty")
        if mtype != ("ORU", "R01"):
            raise _Nak("AR", E_MSGTYPE, f"message type {mtype[0]}^{mtype[1]} is not ORU^R01 "
                                        "(IHE PCD-01)")
        version = msh.extract_field(1, 12, 1, 1)
        if not version.startswith("2."):
            raise _Nak("AR", E_VERSION, f"HL7 version {version!r} is not 2.x")
        now = _utc(msh.extract_field(1, 7, 1, 1), "MSH-7 (message time)")
        if self.max_skew_s:
            skew = now.replace(tzinfo=_dt.timezone.utc).timestamp() - self.clock()
            if abs(skew) > self.max_skew_s:
                raise _Nak("AE", E_DATATYPE, f"MSH-7 is {skew:+.0f} s from the bridge's clock "
                                             f"(more than {self.max_skew_s:g} s): not relayed")
        patient = self._patient(msg)
        fresh, notes = self._observations(msg, now)
        if not fresh:
            raise _Nak("AE", E_TABLE, "nothing relayed: " + "; ".join(notes))
        # the message is used: keep its fresh observations, then relay a complete fresh set
        self._last.update(fresh)
        if self._bound is None:
            self._bound = patient
            if self.on_bind:
                self.on_bind(patient)
        missing = [v for v in VITALS if v not in self._last
                   or _ms(now - self._last[v].t) > self.max_age_s * 1000]
        if missing:
            return self._finish(msg, "AA", "", "accepted; not relayed yet: no fresh "
                                + ", ".join(missing) + (" (" + "; ".join(notes) + ")" if notes else ""),
                                digest)
        r = {v: self._last[v].value for v in VITALS}
        if r["dbp"] > r["sbp"]:
            raise _Nak("AE", E_DATATYPE, f"nothing relayed: diastolic {r['dbp']} above "
                                         f"systolic {r['sbp']}")
        age = max(0, max(_ms(now - self._last[v].t) for v in VITALS))
        reading = Reading(age_ms=min(age, MAX_AGE_MS), patient=patient,
                          control_id=msh.extract_field(1, 10), **r)
        try:
            action = self.relay(reading)
        except Exception as e:
            raise _Nak("AE", E_INTERNAL, f"not relayed: the pump did not take it "
                                         f"({type(e).__name__}: {e})") from e
        self.counts["relayed"] += 1
        o = self._finish(msg, "AA", "", f"relayed sbp={reading.sbp} dbp={reading.dbp} "
                         f"hr={reading.hr} spo2={reading.spo2} age_ms={reading.age_ms}; "
                         f"pump action={action}" + (" (" + "; ".join(notes) + ")" if notes else ""),
                         digest)
        o.relayed, o.action = reading, action
        return o

    def _patient(self, msg: hl7.Message) -> str:
        pids = msg.segments("PID") if _has(msg, "PID") else []
        if not pids:
            raise _Nak("AE", E_REQUIRED, "no PID segment: whose vitals are these?")
        if len(pids) > 1:
            raise _Nak("AE", E_SEGMENT, "more than one PID: one patient per message")
        pid = pids[0]
        ids = []
        if len(pid) > 3:
            for r in range(1, len(pid(3)) + 1):
                v = pid.extract_field(1, 3, r, 1)
                if v:
                    ids.append(v)
        if not ids:
            raise _Nak("AE", E_REQUIRED, "PID-3 (patient identifier) is empty")
        if self._bound is not None and self._bound not in ids:
            raise _Nak("AE", E_KEY, f"patient {'~'.join(ids)} is not this pump's patient "
                                    f"({self._bound}): never relayed")
        return self._bound if self._bound is not None else ids[0]

    def _observations(self, msg: hl7.Message, now: _dt.datetime) -> tuple[dict[str, _Obs], list[str]]:
        """The fresh observations of the vitals (AE on any mapped OBX that is wrong) and notes."""
        found: dict[str, _Obs] = {}
        notes: list[str] = []
        seen: list[str] = []
        obr_t = ""
        for seg in msg:
            name = str(seg[0])
            if name == "OBR":
                obr_t = seg.extract_field(1, 7, 1, 1) if len(seg) > 7 else ""
                continue
            if name != "OBX":
                continue
            code = seg.extract_field(1, 3, 1, 1) if len(seg) > 3 else ""
            if code not in MDC:
                if code:
                    seen.append(code)
                continue
            vital, ref, units = MDC[code]
            text, system = seg.extract_field(1, 3, 1, 2), seg.extract_field(1, 3, 1, 3)
            if system not in ("MDC", "") or text not in (ref, ""):
                raise _Nak("AE", E_TABLE, f"OBX-3 {code}^{text}^{system}: code {code} is {ref} "
                                          "in MDC; the message contradicts itself")
            status = seg.extract_field(1, 11, 1, 1) if len(seg) > 11 else ""
            if status not in USABLE_STATUS:
                notes.append(f"{ref} status {status or 'empty'} (not a valid measurement) ignored")
                continue
            vtype = seg.extract_field(1, 2, 1, 1)
            raw = seg.extract_field(1, 5, 1, 1) if len(seg) > 5 else ""
            if vtype != "NM":
                raise _Nak("AE", E_DATATYPE, f"{ref}: OBX-2 value type {vtype!r} is not NM")
            try:
                x = float(raw)
                if x != x or x in (float("inf"), float("-inf")):
                    raise ValueError(raw)
            except ValueError as e:
                raise _Nak("AE", E_DATATYPE, f"{ref}: OBX-5 {raw!r} is not a number") from e
            u = [seg.extract_field(1, 6, 1, c) if len(seg) > 6 else "" for c in (1, 2)]
            if not any(x_ in units for x_ in u if x_):
                raise _Nak("AE", E_TABLE, f"{ref}: unit {'^'.join(u).strip('^') or 'missing'} is "
                                          f"not {units[1]}")
            value = int(x + 0.5) if x >= 0 else -1
            lo, hi = PLAUSIBLE[vital]
            if not lo <= value <= hi:
                raise _Nak("AE", E_DATATYPE, f"{ref} {raw} is outside {lo}..{hi}: implausible")
            when = seg.extract_field(1, 14, 1, 1) if len(seg) > 14 else ""
            if not when and not obr_t:
                raise _Nak("AE", E_REQUIRED, f"{ref}: no observation time (OBX-14 or OBR-7)")
            t = _utc(when or obr_t, f"{ref} observation time")
            if _ms(t - now) > 2000:
                raise _Nak("AE", E_DATATYPE, f"{ref}: observation time after the message time "
                                             "(MSH-7)")
            age = _ms(now - t)
            prev = self._last.get(vital)
            if age > self.max_age_s * 1000:
                notes.append(f"{ref} is {age // 1000} s old (more than {self.max_age_s:g} s): not fresh")
                continue
            if prev is not None and t <= prev.t:
                notes.append(f"{ref} at {t:%H:%M:%S} is not newer than the last one "
                             f"({prev.t:%H:%M:%S}): out of order, not fresh")
                continue
            had = found.get(vital)
            # within a message: the preferred source (ECG HR over the oximeter's pulse), then
            # the newest observation
            if had is None or (_HR_RANK.get(code, 0), had.t) < (_HR_RANK.get(had.code, 0), t):
                found[vital] = _Obs(value, t, code)
        if not found and not notes:
            notes.append("no SBP/DBP/HR/SpO2 observation (MDC codes "
                         + (", ".join(seen) if seen else "none") + ")")
        return found, notes

    # ------------------------------------------------------------------ the ACK
    def _finish(self, msg: hl7.Message | None, code: str, err: str, reason: str,
                digest: int = 0) -> Outcome:
        ack = self._ack(msg, code, err, reason)
        self.counts[code] = self.counts.get(code, 0) + 1
        cid = ""
        if msg is not None:
            try:
                cid = msg.segment("MSH").extract_field(1, 10)
            except Exception:
                cid = ""
        if cid and cid not in self._done:
            self._done[cid] = (digest, code, reason)
            while len(self._done) > 256:
                del self._done[next(iter(self._done))]
        (log.info if code == "AA" else log.warning)("%s %s %s", code, cid, reason)
        o = Outcome(ack=ack, code=code, reason=reason, control_id=cid)
        if code != "AA" and self.on_refuse is not None:
            self.on_refuse(o)
        return o

    def _ack(self, msg: hl7.Message | None, code: str, err: str, reason: str) -> str:
        if msg is not None:
            try:
                ack = msg.create_ack(code, application=self.application, facility=self.facility)
            except Exception:
                ack = None
        else:
            ack = None
        if ack is None:     # nothing to answer from: a bare ACK (MSA-2 empty)
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d%H%M%S")
            ack = hl7.parse(f"MSH|^~\\&|{self.application}|{self.facility}|||{stamp}||ACK|"
                            f"{hl7.generate_message_control_id()}|P|2.6\rMSA|{code}|")
        msa = ack.segment("MSA")
        if reason:
            msa.assign_field(ack.escape(reason[:80]), 3)     # MSA-3 text message (80 chars)
        if code != "AA":
            e = ack.create_segment([ack.create_field(["ERR"])])
            c = err.split("^")
            for i, part in enumerate(c, 1):
                e.assign_field(part, 3, 1, i)               # ERR-3 HL7 error code (table 0357)
            e.assign_field("E", 4)                           # ERR-4 severity: error
            e.assign_field(ack.escape(reason), 8)            # ERR-8 user message
            ack.append(e)
        return str(ack)


def _has(msg: hl7.Message, name: str) -> bool:
    return any(str(s[0]) == name for s in msg)


# ---------------------------------------------------------------------- the shell
def parse_listen(url: str) -> tuple[str, int]:
    """``mllp://HOST:PORT`` -> (host, port); ValueError otherwise."""
    if not url.startswith("mllp://"):
        raise ValueError(f"{url!r}: expected mllp://HOST:PORT")
    host, sep, port = url[len("mllp://"):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{url!r}: expected mllp://HOST:PORT with a port 0..65535")
    return host.strip("[]"), int(port)


class BridgeServer:
    """python-hl7's asyncio MLLP server for a `Bridge`, on its own thread.

    ``start()`` returns once it listens (``url`` then names the bound port); ``close()`` stops
    it. Each connection is read block by block; every block gets its ACK(s) before the next is
    read, and the bridge's work (the pump round trip) runs off the event loop.
    """

    def __init__(self, bridge: Bridge, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bridge, self.host, self.port = bridge, host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"mllp://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "BridgeServer":
        self._thread = threading.Thread(target=self._run, name="vitals-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the MLLP listener did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:     # reported to start(); the thread ends
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await hl7.mllp.start_hl7_server(self._client, self.host, self.port,
                                                 limit=MAX_MESSAGE + 16)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stopped.wait()

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        self.connections += 1
        peer = writer.get_extra_info("peername")
        log.info("monitor connected from %s", peer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    block = await reader.readuntil(END_BLOCK)
                except asyncio.IncompleteReadError as e:
                    if e.partial.strip():
                        log.warning("monitor %s closed mid-message (%d bytes, no FS CR): "
                                    "nothing to acknowledge", peer, len(e.partial))
                    break
                except asyncio.LimitOverrunError:
                    # far too long without an end: answer once and drop what is buffered
                    outs = [self.bridge._reject_bytes(b"", f"message longer than {MAX_MESSAGE} bytes")]
                    reader._buffer.clear()          # the stream's own documented recovery
                    reader._maybe_resume_transport()
                else:
                    outs = await loop.run_in_executor(None, self.bridge.handle_block, block)
                for o in outs:
                    writer.writeblock(o.ack.encode("utf-8"))
                await writer.drain()
        except (ConnectionError, OSError) as e:
            log.info("monitor %s: %s", peer, e)
        finally:
            writer.close()

    def close(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "BridgeServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_bridge(pump, listen: str, patient: str | None = None, *,
                 max_age_s: float = 300.0, max_skew_s: float | None = 300.0,
                 out: Callable[[str], None] = print,
                 stop: threading.Event | None = None) -> int:
    """``infusekit vitals-bridge``: relay to ``pump`` (an open `host.Pump`) until ``stop`` or
    Ctrl-C. Prints ``listening on mllp://HOST:PORT`` once monitors can connect, then one line
    per relayed reading, refused message and pump alarm. Returns the CLI exit code (4 when
    the listener cannot open or the pump link is lost)."""
    host, port = parse_listen(listen)
    stop = stop or threading.Event()
    info = pump.hello()

    def on_event(ev) -> None:
        name = getattr(ev, "name", "")
        if name in ("ALARM", "CLEAR", "STATE"):
            out(f"pump {name} " + " ".join(f"{k}={v}" for k, v in ev.fields.items()))

    def relay(r: Reading) -> str:
        action = pump.vitals(sbp=r.sbp, dbp=r.dbp, hr=r.hr, spo2=r.spo2, age_ms=r.age_ms)
        out(f"relayed {r.control_id}: sbp={r.sbp} dbp={r.dbp} hr={r.hr} spo2={r.spo2} "
            f"age_ms={r.age_ms} -> action={action}")
        return action

    pump.on_event(on_event)
    bridge = Bridge(relay, patient=patient, max_age_s=max_age_s, max_skew_s=max_skew_s or None,
                    on_bind=lambda p: out(f"bound to patient {p} (the first one seen; use "
                                          "--patient to name the pump's patient)"),
                    on_refuse=lambda o: out(f"{o.code} {o.control_id or '-'}: {o.reason}"))
    server = BridgeServer(bridge, host, port)
    try:
        server.start()
    except OSError as e:
        out(f"vitals-bridge: cannot listen on {listen}: {e}")
        return 4
    out(f"pump {info.dev} ({info.fw}); patient {patient or '(the first one seen)'}")
    out(f"listening on {server.url}")
    try:
        while not stop.wait(0.5):
            if not pump.link_ok:
                out("vitals-bridge: lost the pump link; nothing is relayed any more "
                    "(the pump's VITALS_STALE alarm follows)")
                return 4
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
