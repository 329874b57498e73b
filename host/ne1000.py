"""The NE-1000 personality's protocol engine: New Era NE-1000 RS-232 bytes in, bytes out.

Owns the NE-1000 side only: basic and safe framing (CRC-16/XMODEM, 0.5 s inter-byte
discard), addressing, the command set and its replies (status letters, ``A?`` alarms,
``?``/``?NA``/``?OOR``/``?COM`` errors), the NE-1000 settings (kept by the caller across
power cycles through ``save``), the safe-mode communication timer, and the dispensed-volume
bookkeeping. It does no I/O and keeps no clock: the transport (host/ne1000_serve.py) feeds it
bytes with the time, calls ``poll(now)`` between reads, and gives it a ``Backend`` — the
InfuseKit pump behind it — that it drives through plain verbs (``start``, ``pause`` …).

What an NE-1000 may do and a clinical pump must not (withdraw, purge, run with no volume
limit, exceed the pump's or the drug library's limits) is answered the NE-1000 way
(``?NA`` / ``?OOR``) and never done. docs/ne1000.md lists every command and its mapping.
"""
from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from fractions import Fraction
from typing import Callable, Protocol

STX, ETX, CR = 0x02, 0x03, 0x0D
INTER_BYTE_S = 0.5            # a safe-mode packet with a longer gap between bytes is dropped
SAF_MAX_S = 255               # the largest safe-mode time out
MAX_LINE = 64                 # a longer basic-mode line is dropped (the NE-1000 buffer is small)
VERSION = "NE1000V3.928"      # VER: the firmware whose command set this personality speaks
DIA_MIN, DIA_MAX = Decimal("0.1"), Decimal("80.0")   # mm (nesp-lib's and the manual's range)

RATE_UNITS = {"UM": 60, "MM": 60_000, "UH": 1, "MH": 1000}   # NE rate units → µL/h per unit
VOLUME_UNITS = {"UL": 1000, "ML": 1_000_000}                  # NE volume units → nL per unit

# Pump alarms an NE-1000 reports. An NE-1000 knows R reset, S stall, T safe-mode time out,
# E program error, O phase out of range: a blocked line or a motor that cannot move is a
# stall, a lost link is a time out, every other alarm that stops delivery is an error.
ALARM_LETTER = {"OCCLUSION": "S", "STALL": "S", "EMPTY": "S", "COMM_LOSS": "T"}
STOPPING_PRIO = 3

DELIVERING = ("RUNNING", "KVO")
STATUS_LETTER = {"RUNNING": "I", "KVO": "I", "PAUSED": "P"}       # every other state: S

# NE-1000 commands this personality does not offer (pumping programs, I/O, keypad, buzzer,
# address change): known to an NE-1000, so "not applicable" rather than "not recognised".
UNSUPPORTED = ("ADR", "AL", "BP", "BUZ", "DIN", "IN", "KEY", "LN", "LOC", "OUT", "PF", "ROM",
               "TRG", "TIM")
COMMANDS = ("VER", "DIA", "RAT", "VOL", "DIR", "RUN", "PUR", "STP", "DIS", "CLD", "SAF", "PHN",
            "FUN")

_FLOAT = re.compile(r"(\d*)(?:\.(\d*))?")


class NeError(Exception):
    """A command the NE-1000 way refuses: ``code`` is ``NA``, ``OOR`` (or ``""`` for ``?``)."""

    def __init__(self, code: str, why: str = "") -> None:
        self.code = code
        self.why = why
        super().__init__(f"?{code} {why}".strip())


class BackendDown(Exception):
    """The InfuseKit pump behind the personality cannot be reached."""


class BackendReset(Exception):
    """The pump came back after a reboot or a lost link: an NE-1000's reset alarm."""


@dataclass(frozen=True)
class PumpView:
    """What the engine needs to know of the pump: its state, delivered volume, top alarm."""
    state: str
    del_nl: int
    alarm: str = "NONE"
    prio: int = 0


class Backend(Protocol):
    """The pump the engine drives. Refusals raise NeError, a lost pump BackendDown, a pump
    found again after a reboot or a lost link BackendReset (once)."""

    def view(self) -> PumpView: ...
    def start(self, rate_ul_h: int, vtbi_nl: int) -> None: ...   # a new program, started
    def resume(self) -> None: ...
    def pause(self) -> None: ...
    def stop(self) -> None: ...
    def titrate(self, rate_ul_h: int) -> None: ...
    def safe_mode(self, timeout_s: int) -> None: ...   # 0 = off
    def rate_limits(self) -> tuple[int, int]: ...      # µL/h the pump accepts for any program
    def volume_limits(self) -> tuple[int, int]: ...    # nL


def crc(payload: bytes) -> bytes:
    """CRC-16/XMODEM of a safe-mode payload, high byte first."""
    return binascii.crc_hqx(payload, 0).to_bytes(2, "big")


def frame_safe(payload: bytes) -> bytes:
    """``STX len payload CRC ETX`` with len = payload + 4."""
    return bytes((STX, len(payload) + 4)) + payload + crc(payload) + bytes((ETX,))


def frame_basic(payload: bytes) -> bytes:
    return bytes((STX,)) + payload + bytes((ETX,))


def parse_float(text: str) -> Decimal:
    """An NE-1000 number: at most 4 digits and one point, at most 3 digits after it."""
    m = _FLOAT.fullmatch(text)
    if not text or m is None or not (m.group(1) or m.group(2)):
        raise NeError("OOR", f"not a number: {text!r}")
    whole, frac = m.group(1), m.group(2) or ""
    if len(whole) + len(frac) > 4 or len(frac) > 3:
        raise NeError("OOR", f"more than 4 digits (3 after the point): {text!r}")
    try:
        return Decimal(text)
    except InvalidOperation as e:
        raise NeError("OOR", f"not a number: {text!r}") from e


def format_float(value: Fraction | Decimal | int | str) -> str:
    """Four significant digits and always a point (``1.250``, ``26.70``, ``875.0``,
    ``1234.``), rounded down; more digits before the point only when the value needs them."""
    v = Fraction(value)
    for places in (3, 2, 1):
        if v < 10 ** (4 - places):
            break
    else:
        places = 0
    q = Decimal(v.numerator) / Decimal(v.denominator)
    s = str(q.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)) if places else \
        str(int(v)) + "."
    return s


@dataclass
class Settings:
    """The NE-1000 settings an NE-1000 keeps in non-volatile memory."""
    safe_s: int = 0               # SAF: 0 = basic mode
    dia: str = "26.70"            # DIA mm, as set
    rate_ul_h: int = 0            # RAT in force
    rate_units: str = "MH"
    vol_nl: int = 0               # VOL (volume to be dispensed); 0 = none set
    vol_units: str = "ML"

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Settings":
        s = cls()
        for k, v in (d or {}).items():
            if k in s.__dict__ and type(v) is type(getattr(s, k)):
                setattr(s, k, v)
        if not (0 <= s.safe_s <= SAF_MAX_S) or s.rate_units not in RATE_UNITS \
                or s.vol_units not in VOLUME_UNITS:
            return cls()
        return s


class Ne1000:
    """One NE-1000 at ``address`` (0..99) in front of ``backend``."""

    def __init__(self, backend: Backend, address: int = 0, settings: dict | None = None,
                 save: Callable[[dict], None] | None = None) -> None:
        if not 0 <= address <= 99:
            raise ValueError("an NE-1000 address is 0..99")
        self.backend = backend
        self.address = address
        self.settings = Settings.from_dict(settings)
        self._save = save
        self.pending: str | None = "R"     # power was applied: the reset alarm
        self._reported: str | None = None  # the pump alarm already reported
        self._timer_armed = False          # safe mode: armed by the first valid packet
        self._last_valid = 0.0
        self._pkt: bytearray | None = None  # a safe packet being received
        self._pkt_t = 0.0
        self._line = bytearray()           # a basic line being received
        self._overlong = False
        self._base_nl = 0                  # dispensed by earlier programs since CLD
        self._cur_nl = 0                   # dispensed by the current program
        self._active = False               # the pump runs a program this personality started
        self.timeouts = 0                  # safe-mode time outs fired

    # ------------------------------------------------------------------ framing
    @property
    def safe(self) -> bool:
        return self.settings.safe_s > 0

    def feed(self, data: bytes, now: float) -> bytes:
        """Bytes from the NE-1000 host at time ``now`` (s); returns the bytes to send back."""
        out = bytearray()
        for b in data:
            if self._pkt is not None:
                if now - self._pkt_t > INTER_BYTE_S:
                    self._pkt = None            # a stale partial packet is discarded
                else:
                    self._pkt.append(b)
                    self._pkt_t = now
                    if len(self._pkt) >= 2 and len(self._pkt) >= 1 + self._pkt[1]:
                        pkt, self._pkt = bytes(self._pkt), None
                        out += self._safe_packet(pkt, now)
                    elif len(self._pkt) == 2 and self._pkt[1] < 4:
                        self._pkt = None
                        out += self._reply(self._letter_or_s(), "?COM")
                    continue
            if b == STX:
                self._pkt = bytearray((STX,))
                self._pkt_t = now
                self._line.clear()
                self._overlong = False
            elif self.safe:
                continue                        # safe mode: only packets count
            elif b == CR:
                line, over = bytes(self._line), self._overlong
                self._line.clear()
                self._overlong = False
                if not over:
                    out += self._command(line, now)
            elif len(self._line) < MAX_LINE:
                self._line.append(b)
            else:
                self._overlong = True
        return bytes(out)

    def poll(self, now: float) -> bytes:
        """Time passes: drop a stale partial packet, fire the safe-mode time out."""
        if self._pkt is not None and now - self._pkt_t > INTER_BYTE_S:
            self._pkt = None
        if self.safe and self._timer_armed and now - self._last_valid > self.settings.safe_s:
            self._timer_armed = False           # restarts with the next valid packet
            self.timeouts += 1
            self.pending = "T"
            try:
                if self._view().state in DELIVERING:
                    self.backend.pause()
            except (NeError, BackendDown, BackendReset):
                try:                            # refused (the state moved on): still moving?
                    if self._view().state in DELIVERING:
                        self.backend.stop()
                except (NeError, BackendDown, BackendReset):
                    pass                        # unreachable: the pump's own heartbeat pauses it
        return b""

    def _safe_packet(self, pkt: bytes, now: float) -> bytes:
        payload = pkt[2:-3]
        if pkt[-1] != ETX or crc(payload) != pkt[-3:-1]:
            return self._reply(self._letter_or_s(), "?COM")
        return self._command(payload, now)

    def _reply(self, status: str, data: str = "") -> bytes:
        payload = f"{self.address:02d}{status}{data}".encode("ascii")
        return frame_safe(payload) if self.safe else frame_basic(payload)

    # ------------------------------------------------------------------ commands
    def _command(self, raw: bytes, now: float) -> bytes:
        text = "".join(ch for ch in raw.decode("latin-1") if " " < ch <= "~").upper()
        m = re.match(r"(\*|\d{1,2})?", text)
        addr = m.group(1) if m else None
        if addr not in (None, "*") and int(addr) != self.address:
            return b""                          # for another pump on the network
        body = text[m.end():] if m else text
        self._last_valid = now
        if self.safe:
            self._timer_armed = True
        word = next((w for w in (body[:3], body[:2]) if w in COMMANDS or w in UNSUPPORTED),
                    body[:3])
        arg = body[len(word):]
        try:
            view = self._view()
        except BackendDown:
            return self._reply("A?E")
        except BackendReset:
            self.pending = None
            return self._reply("A?R")           # nothing was executed
        self._note_pump_alarm(view)
        if self.pending is not None:
            letter, self.pending = self.pending, None
            if word == "SAF" and arg:
                try:
                    self._set_saf(arg)          # the link mode changes even under an alarm
                except (NeError, BackendDown, BackendReset):
                    pass
            return self._reply("A?" + letter)
        if not body:
            return self._reply(self._letter(view))
        try:
            if word in UNSUPPORTED:
                raise NeError("NA", f"{word} is not offered by this personality")
            handler = getattr(self, "_cmd_" + word.lower(), None) if word in COMMANDS else None
            if handler is None:
                raise NeError("", "not recognised")
            data, changed = handler(arg, view)
        except NeError as e:
            return self._reply(self._letter(view), "?" + e.code)
        except BackendDown:
            return self._reply("A?E")
        except BackendReset:
            return self._reply("A?R")
        if changed:
            try:
                view = self._view()
            except BackendDown:
                return self._reply("A?E")
            except BackendReset:
                return self._reply("A?R")
        return self._reply(self._letter(view), data)

    def _view(self) -> PumpView:
        v = self.backend.view()
        if self._active:
            if v.state == "IDLE":               # the program ended (stopped at the pump)
                self._close_program()
            else:
                self._cur_nl = v.del_nl
        return v

    def _close_program(self) -> None:
        self._base_nl += self._cur_nl
        self._cur_nl = 0
        self._active = False

    def _note_pump_alarm(self, v: PumpView) -> None:
        letter = ALARM_LETTER.get(v.alarm) or ("E" if v.prio >= STOPPING_PRIO else None)
        if letter is None:
            self._reported = None
        elif v.alarm != self._reported:
            self._reported = v.alarm
            self.pending = letter

    @staticmethod
    def _letter(v: PumpView) -> str:
        return STATUS_LETTER.get(v.state, "S")

    def _letter_or_s(self) -> str:
        try:
            return self._letter(self.backend.view())
        except (BackendDown, BackendReset):
            return "S"

    def _store(self) -> None:
        if self._save is not None:
            self._save(self.settings.to_dict())

    # each handler: (arg, view) -> (reply data, whether the pump's state may have changed)
    def _cmd_ver(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if arg:
            raise NeError("OOR", "VER takes no data")
        return VERSION, False

    def _cmd_dia(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if not arg:
            return format_float(Decimal(self.settings.dia)), False
        d = parse_float(arg)
        if not DIA_MIN <= d <= DIA_MAX:
            raise NeError("OOR", "diameter 0.1..80.0 mm")
        if v.state in DELIVERING or (self._active and v.state == "PAUSED"):
            raise NeError("NA", "the syringe cannot change during a program")
        self.settings.dia = str(d)
        self._store()
        return "", False

    def _cmd_rat(self, arg: str, v: PumpView) -> tuple[str, bool]:
        s = self.settings
        if not arg:
            return format_float(Fraction(s.rate_ul_h, RATE_UNITS[s.rate_units])) + s.rate_units, False
        m = re.fullmatch(r"([0-9.]+)([A-Z]{2})?", arg)
        if m is None or (m.group(2) and m.group(2) not in RATE_UNITS):
            raise NeError("OOR", f"RAT <number>[UM|MM|UH|MH], not {arg!r}")
        units = m.group(2) or s.rate_units
        r = int(Fraction(parse_float(m.group(1))) * RATE_UNITS[units])   # floor: never more
        lo, hi = self.backend.rate_limits()
        if not lo <= r <= hi:
            raise NeError("OOR", f"rate {r} µL/h outside the pump's {lo}..{hi}")
        changed = False
        if self._active and (v.state in DELIVERING or v.state == "PAUSED"):
            self.backend.titrate(r)             # the pump's and the library's limits apply
            changed = True
        s.rate_ul_h, s.rate_units = r, units
        self._store()
        return "", changed

    def _cmd_vol(self, arg: str, v: PumpView) -> tuple[str, bool]:
        s = self.settings
        if not arg:
            return format_float(Fraction(s.vol_nl, VOLUME_UNITS[s.vol_units])) + s.vol_units, False
        if arg in VOLUME_UNITS:
            s.vol_units = arg                   # the volume itself is kept
            self._store()
            return "", False
        n = Fraction(parse_float(arg)) * VOLUME_UNITS[s.vol_units]
        lo, hi = self.backend.volume_limits()
        if n.denominator != 1 or not (n == 0 or lo <= n <= hi):
            raise NeError("OOR", f"volume outside the pump's {lo}..{hi} nL")
        if self._active and (v.state in DELIVERING or v.state == "PAUSED"):
            raise NeError("NA", "the volume cannot change during a program")
        s.vol_nl = int(n)
        self._store()
        return "", False

    def _cmd_dir(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if not arg:
            return "INF", False
        if arg == "INF":
            return "", False
        if arg in ("WDR", "REV"):
            raise NeError("NA", "an infusion pump never withdraws from a patient line")
        raise NeError("OOR", "DIR INF|WDR|REV")

    def _cmd_run(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if arg not in ("", "1"):
            raise NeError("NA", "only the single-phase program (phase 1)")
        if v.state in DELIVERING:
            raise NeError("NA", "already running")
        if v.state == "PAUSED" and self._active:
            self.backend.resume()
            return "", True
        if v.state in ("ALARM", "FAULT", "PAUSED"):
            raise NeError("NA", f"the pump is {v.state}: clear it at the pump")
        s = self.settings
        if s.vol_nl == 0:
            raise NeError("NA", "no volume to be dispensed: an infusion needs a limit")
        if s.rate_ul_h == 0:
            raise NeError("NA", "no rate set")
        if self._active:
            self._close_program()
        self.backend.start(s.rate_ul_h, s.vol_nl)
        self._active = True
        self._cur_nl = 0
        return "", True

    def _cmd_pur(self, arg: str, v: PumpView) -> tuple[str, bool]:
        raise NeError("NA", "purge (an unmetered bolus at the maximum rate) is refused")

    def _cmd_stp(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if arg:
            raise NeError("OOR", "STP takes no data")
        if v.state in DELIVERING:
            self.backend.pause()                # first STP pauses (NE-1000: P)
            return "", True
        if v.state != "IDLE":
            self.backend.stop()                 # the next one ends the program (S)
            if self._active:
                self._close_program()
            return "", True
        return "", False

    def _cmd_dis(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if arg:
            raise NeError("OOR", "DIS takes no data")
        u = self.settings.vol_units
        infused = Fraction(self._base_nl + self._cur_nl, VOLUME_UNITS[u])
        return f"I{format_float(infused)}W{format_float(0)}{u}", False

    def _cmd_cld(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if arg == "INF":
            self._base_nl = -self._cur_nl
        elif arg != "WDR":                      # nothing is ever withdrawn
            raise NeError("OOR", "CLD INF|WDR")
        return "", False

    # the one program an infusion pump runs: phase 1, a rate phase (PHN/FUN accepted as such)
    def _cmd_phn(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if not arg:
            return "01", False
        if arg.isdigit() and int(arg) == 1:
            return "", False
        raise NeError("NA", "only phase 1 (multi-phase programs are not offered)")

    def _cmd_fun(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if not arg:
            return "RAT", False
        if arg == "RAT":
            return "", False
        raise NeError("NA", "only the rate function (FUN RAT)")

    def _cmd_saf(self, arg: str, v: PumpView) -> tuple[str, bool]:
        if not arg:
            return str(self.settings.safe_s), False
        self._set_saf(arg)
        return "", False

    def _set_saf(self, arg: str) -> None:
        if not arg.isdigit() or int(arg) > SAF_MAX_S:
            raise NeError("OOR", f"SAF 0..{SAF_MAX_S}")
        n = int(arg)
        self.backend.safe_mode(n)
        self.settings.safe_s = n
        self._timer_armed = n > 0
        self._store()
