"""Wire codec for protocol v1 (docs/protocol.md): CRC, frame encoding/decoding, line splitting.

Pure functions and small dataclasses, no I/O. The limits (``MAX_FRAME``, ``PROTO_VERSION``)
come from the firmware's ``pumpcore/protocol.py`` so both sides share one number.

``python -m host.codec --examples`` prints example request lines with their real CRCs.
"""
from __future__ import annotations

import binascii
import re
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Union

from host._firmware import pumpcore
from host.errors import FrameError

_proto = pumpcore("protocol")
MAX_FRAME: int = _proto.MAX_FRAME          # bytes per frame including the LF
PROTO_VERSION: int = _proto.PROTO_VERSION
MAX_KEY: int = _proto.MAX_KEY
MAX_VALUE: int = _proto.MAX_VALUE
NUM_MAX: int = _proto.NUM_MAX              # the largest number on the wire (2**30 - 1)
TLM_MIN: int = _proto.TLM_MIN              # TLM period_ms: 0 (off) or TLM_MIN..TLM_MAX ms
TLM_MAX: int = _proto.TLM_MAX

_ID_RE = re.compile(r"[0-9]{1,5}\Z")
_WORD_RE = re.compile(r"[A-Z]{1,8}\Z")
_KEY_RE = re.compile(r"[a-z0-9_]{1,%d}\Z" % MAX_KEY)
# Receivers are lenient on key length (the firmware's CFG reply has ``vitals_age_ms``, 13
# characters); senders keep to MAX_KEY, which is what the firmware's parser accepts.
_KEY_RX_RE = re.compile(r"[a-z0-9_]{1,16}\Z")
_VALUE_RE = re.compile(r"[\x21-\x29\x2b-\x3c\x3e-\x7e]{1,%d}\Z" % MAX_VALUE)  # no '*' '='
_CRC_RE = re.compile(rb"[0-9A-F]{4}\Z")
_REASON_RE = re.compile(r"[\x20-\x29\x2b-\x7e]*\Z")  # printable ASCII without '*'

FieldValue = Union[int, str]


def crc16(body: bytes) -> int:
    """CRC-16/XMODEM of ``body`` (poly 0x1021, init 0; ``crc16(b"123456789") == 0x31C3``)."""
    return binascii.crc_hqx(body, 0)


# --------------------------------------------------------------------------- dataclasses

@dataclass(frozen=True)
class Request:
    """A host request: ``<id> <WORD> key=value…``."""
    id: int
    word: str
    fields: dict[str, str] = field(default_factory=dict)
    has_crc: bool = True


@dataclass(frozen=True)
class Reply:
    """A reply: ``<id> OK key=value…`` or ``<id> ER <CODE> <reason>``.

    ``id`` is None for ``?`` (the pump could not trust the request's id).
    """
    id: int | None
    ok: bool
    fields: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    reason: str | None = None

    def get_int(self, key: str) -> int:
        """Field ``key`` as an integer (FrameError when missing or not a number)."""
        return _int_field(self.fields, key)


@dataclass(frozen=True)
class Event:
    """An unsolicited event: ``! EV <NAME> key=value…`` (STATE, ALARM, CLEAR, …).

    ``fields`` are the wire strings; ``values`` the same typed (ints, ``State``, ``Alarm``,
    ``Priority``); ``state``/``alarm``/``prio`` the usual ones (None when absent)."""
    name: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, object]:
        return typed_fields(self.fields)

    @property
    def state(self):
        from host.enums import as_state
        return as_state(self.fields.get("state"))

    @property
    def alarm(self):
        from host.enums import as_alarm
        return as_alarm(self.fields.get("alarm"))

    @property
    def prio(self):
        from host.enums import as_priority
        return as_priority(self.fields["prio"]) if "prio" in self.fields else None


@dataclass(frozen=True)
class Telemetry:
    """An unsolicited telemetry frame: ``! TL key=value…``; typed views as ``Event``'s plus
    the numbers in their units (``del_nl``, ``rate_ul_h``, ``p_mmhg``, ``el_ms``, ``kvo_nl``, mL)."""
    fields: dict[str, str] = field(default_factory=dict)

    def get_int(self, key: str) -> int:
        """Field ``key`` as an integer (FrameError when missing or not a number)."""
        return _int_field(self.fields, key)

    @property
    def values(self) -> dict[str, object]:
        return typed_fields(self.fields)

    def _opt(self, key: str) -> int | None:
        v = self.fields.get(key)
        return int(v) if v is not None and _INT_RE.match(v) else None

    @property
    def state(self):
        from host.enums import as_state
        return as_state(self.fields.get("state"))

    @property
    def del_nl(self) -> int | None:
        return self._opt("del_nl")

    @property
    def rate_ul_h(self) -> int | None:
        return self._opt("rate_ul_h")

    @property
    def p_mmhg(self) -> int | None:
        return self._opt("p_mmhg")

    @property
    def el_ms(self) -> int | None:
        return self._opt("el_ms")

    @property
    def kvo_nl(self) -> int | None:
        """The KVO part of ``del_nl`` (present once KVO has delivered in this infusion)."""
        return self._opt("kvo_nl")

    @property
    def delivered_ml(self) -> float | None:
        n = self.del_nl
        return None if n is None else n / 1_000_000

    @property
    def rate_ml_h(self) -> float | None:
        n = self.rate_ul_h
        return None if n is None else n / 1000


_INT_RE = re.compile(r"-?[0-9]+\Z")


def typed_fields(fields: Mapping[str, str]) -> dict[str, object]:
    """Wire strings -> values: integers as int, ``state``/``alarm`` as enums, ``prio`` as
    ``Priority``; anything else stays a string."""
    from host.enums import as_alarm, as_priority, as_state
    out: dict[str, object] = {}
    for k, v in fields.items():
        if k == "state":
            out[k] = as_state(v)
        elif k == "alarm":
            out[k] = as_alarm(v)
        elif k == "prio":
            out[k] = as_priority(v)
        elif _INT_RE.match(v):
            out[k] = int(v)
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class LibFrame:
    """One drug-library frame sent after a ``LIB`` or ``DRUG`` reply: ``! DL …``."""
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRecord:
    """One event-log record sent after a ``LOG`` reply: ``! LG seq=… t_ms=… ev=… …``."""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return _int_field(self.fields, "seq")

    def get_int(self, key: str) -> int:
        """Field ``key`` as an integer (FrameError when missing or not a number)."""
        return _int_field(self.fields, key)


Frame = Union[Reply, Event, Telemetry, LogRecord]


def _int_field(fields: Mapping[str, str], key: str) -> int:
    try:
        return int(fields[key])
    except KeyError:
        raise FrameError(f"field {key!r} missing") from None
    except ValueError:
        raise FrameError(f"field {key}={fields[key]!r} is not an integer") from None


# --------------------------------------------------------------------------- encoding

def _seal(body: str, crc: bool = True) -> bytes:
    raw = body.encode("ascii")
    if crc:
        raw += b"*%04X" % crc16(raw)
    raw += b"\n"
    if len(raw) > MAX_FRAME:
        raise ValueError(f"frame is {len(raw)} bytes, more than MAX_FRAME={MAX_FRAME}: {body!r}")
    return raw


def _fields_text(fields: Mapping[str, FieldValue] | Iterable[tuple[str, FieldValue]]) -> str:
    items = fields.items() if isinstance(fields, Mapping) else fields
    parts = []
    for key, value in items:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"field {key}: value must be int or str, not {type(value).__name__}")
        text = str(value)
        if not _KEY_RE.match(key):
            raise ValueError(f"bad field key {key!r} (1-{MAX_KEY} of a-z 0-9 _)")
        if not _VALUE_RE.match(text):
            raise ValueError(f"bad value for {key}: {text!r} (1-{MAX_VALUE} printable, no * or =)")
        parts.append(f" {key}={text}")
    return "".join(parts)


def _check_numbers(fields: Mapping[str, FieldValue]) -> None:
    """Numbers in a request are 0..NUM_MAX (docs/protocol.md, *Frame grammar*)."""
    for key, value in fields.items():
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= NUM_MAX:
            raise ValueError(f"field {key}: a number on the wire is 0..{NUM_MAX}, not {value}")


def _check_word(word: str) -> None:
    if not _WORD_RE.match(word):
        raise ValueError(f"bad word {word!r} (1-8 upper-case letters)")


def encode_request(req_id: int, word: str, fields: Mapping[str, FieldValue] | None = None,
                   crc: bool = True) -> bytes:
    """``<id> WORD k=v…*CRC\\n`` with the fields in the given order."""
    if isinstance(req_id, bool) or not isinstance(req_id, int) or not 1 <= req_id <= 65535:
        raise ValueError(f"request id must be 1..65535, not {req_id!r}")
    _check_word(word)
    _check_numbers(fields or {})
    return _seal(f"{req_id} {word}{_fields_text(fields or {})}", crc)


def encode_signed_request(req_id: int, word: str, fields: Mapping[str, FieldValue] | None,
                          ctr: int, mac: Callable[[bytes], str]) -> bytes:
    """A request with ``ctr=<ctr>`` and, last, ``mac=<mac(body before " mac=")>``."""
    if isinstance(req_id, bool) or not isinstance(req_id, int) or not 1 <= req_id <= 65535:
        raise ValueError(f"request id must be 1..65535, not {req_id!r}")
    _check_word(word)
    items = [(k, v) for k, v in (fields or {}).items() if k not in ("ctr", "mac")]
    _check_numbers(dict(items))
    body = f"{req_id} {word}{_fields_text(items)}{_fields_text([('ctr', ctr)])}"
    tag = mac(body.encode("ascii"))
    return _seal(body + _fields_text([("mac", tag)]))


def _id_token(req_id: int | None) -> str:
    if req_id is None:
        return "?"
    if not 1 <= req_id <= 65535:
        raise ValueError(f"reply id must be 1..65535 or None, not {req_id!r}")
    return str(req_id)


def encode_ok(req_id: int | None, fields: Mapping[str, FieldValue] | None = None) -> bytes:
    """A success reply ``<id> OK k=v…*CRC\\n`` (used by fakes, simulators and tests)."""
    return _seal(f"{_id_token(req_id)} OK{_fields_text(fields or {})}")


def encode_error(req_id: int | None, code: str, reason: str = "") -> bytes:
    """A refusal ``<id> ER CODE reason*CRC\\n``."""
    _check_word(code)
    if not _REASON_RE.match(reason):
        raise ValueError(f"bad reason {reason!r} (printable ASCII, no *)")
    return _seal(f"{_id_token(req_id)} ER {code}" + (f" {reason}" if reason else ""))


def encode_event(name: str, fields: Mapping[str, FieldValue] | None = None) -> bytes:
    """An unsolicited event ``! EV NAME k=v…*CRC\\n``."""
    _check_word(name)
    return _seal(f"! EV {name}{_fields_text(fields or {})}")


def encode_telemetry(fields: Mapping[str, FieldValue]) -> bytes:
    """A telemetry frame ``! TL k=v…*CRC\\n``."""
    return _seal(f"! TL{_fields_text(fields)}")


def encode_log(fields: Mapping[str, FieldValue]) -> bytes:
    """An event-log record ``! LG k=v…*CRC\n``."""
    return _seal(f"! LG{_fields_text(fields)}")


def encode(frame: Frame) -> bytes:
    """Encode a decoded Reply/Event/Telemetry back to bytes (inverse of decode_line)."""
    if isinstance(frame, Reply):
        if frame.ok:
            return encode_ok(frame.id, frame.fields)
        return encode_error(frame.id, frame.code or "", frame.reason or "")
    if isinstance(frame, Event):
        return encode_event(frame.name, frame.fields)
    if isinstance(frame, Telemetry):
        return encode_telemetry(frame.fields)
    if isinstance(frame, LogRecord):
        return encode_log(frame.fields)
    raise TypeError(f"cannot encode {frame!r}")


# --------------------------------------------------------------------------- decoding

def _unseal(line: bytes, require_crc: bool) -> tuple[str, bool]:
    """Strip LF/CR, check length and CRC; return (body text, had_crc)."""
    if not isinstance(line, (bytes, bytearray, memoryview)):
        raise TypeError("decode expects bytes")
    line = bytes(line)
    length = len(line) + (0 if line.endswith(b"\n") else 1)
    if length > MAX_FRAME:
        raise FrameError(f"frame is {length} bytes, more than MAX_FRAME={MAX_FRAME}")
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    if b"\n" in line:
        raise FrameError("LF inside a frame")
    star = line.find(b"*")
    if star >= 0:
        body, crc_text = line[:star], line[star + 1:]
        if not _CRC_RE.match(crc_text):
            raise FrameError(f"bad CRC field {crc_text!r}")
        if int(crc_text, 16) != crc16(body):
            raise FrameError(f"CRC mismatch: frame says {crc_text.decode()}, "
                             f"body gives {crc16(body):04X}")
        had_crc = True
    else:
        if require_crc:
            raise FrameError("CRC missing")
        body, had_crc = line, False
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("non-ASCII byte in frame") from None
    if any(not (" " <= c <= "~") for c in text):
        raise FrameError("control character in frame")
    return text, had_crc


def _parse_fields(tokens: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if not eq or not _KEY_RX_RE.match(key) or not _VALUE_RE.match(value):
            raise FrameError(f"bad field {tok!r}")
        if key in fields:
            raise FrameError(f"duplicated field {key!r}")
        fields[key] = value
    return fields


def decode_line(line: bytes, *, require_crc: bool = True) -> Frame:
    """Decode one frame the pump sent (reply, event, telemetry or log record).

    Raises FrameError on a bad CRC (or a missing one, unless ``require_crc=False``), a
    grammar violation or a frame longer than MAX_FRAME.
    """
    text, _ = _unseal(line, require_crc)
    head = text.split(" ", 3)
    if len(head) >= 3 and head[1] == "ER" and head[0] != "!":
        tokens = head[:3]           # the reason after the code is free text
        reason = head[3] if len(head) > 3 else ""
    else:
        tokens = text.split(" ")
        reason = ""
    if "" in tokens:
        raise FrameError("empty token (doubled, leading or trailing space)")
    if len(tokens) < 2:
        raise FrameError("frame needs an id and a word")
    id_tok, word = tokens[0], tokens[1]
    if id_tok == "!":
        if word == "TL":
            return Telemetry(_parse_fields(tokens[2:]))
        if word == "LG":
            return LogRecord(_parse_fields(tokens[2:]))
        if word == "DL":
            return LibFrame(_parse_fields(tokens[2:]))
        if word == "EV":
            if len(tokens) < 3 or not _WORD_RE.match(tokens[2]):
                raise FrameError("event needs a name")
            return Event(tokens[2], _parse_fields(tokens[3:]))
        raise FrameError(f"unknown unsolicited frame {word!r}")
    if id_tok == "?":
        rid = None
    elif _ID_RE.match(id_tok) and 1 <= int(id_tok) <= 65535:
        rid = int(id_tok)
    else:
        raise FrameError(f"bad id {id_tok!r}")
    if word == "OK":
        return Reply(rid, True, _parse_fields(tokens[2:]))
    if word == "ER":
        if len(tokens) < 3 or not _WORD_RE.match(tokens[2]):
            raise FrameError("error reply needs a code")
        return Reply(rid, False, {}, tokens[2], reason)
    raise FrameError(f"unknown reply word {word!r}")


def decode_request(line: bytes, *, require_crc: bool = False) -> Request:
    """Decode a host request (for fakes, simulators and tests). CRC optional by default."""
    text, had_crc = _unseal(line, require_crc)
    tokens = text.split(" ")
    if "" in tokens or len(tokens) < 2:
        raise FrameError("request needs an id and a word, single-space separated")
    if not (_ID_RE.match(tokens[0]) and 1 <= int(tokens[0]) <= 65535):
        raise FrameError(f"bad id {tokens[0]!r}")
    if not _WORD_RE.match(tokens[1]):
        raise FrameError(f"bad word {tokens[1]!r}")
    return Request(int(tokens[0]), tokens[1], _parse_fields(tokens[2:]), had_crc)


# --------------------------------------------------------------------------- line splitting

class LineSplitter:
    """Turn arbitrary byte chunks into complete lines (without CR/LF).

    Frames split across reads are joined, several frames in one read are separated, empty
    lines are skipped, and a line longer than MAX_FRAME is dropped up to its LF (counted in
    ``overlong``), like the firmware's receive buffer does. Garbage is passed through as a
    line; ``decode_line`` rejects it.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False
        self.overlong = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes; return the lines completed by them (possibly none)."""
        lines: list[bytes] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            part = chunk[start:] if nl < 0 else chunk[start:nl]
            if not self._skipping:
                self._buf += part
                if len(self._buf) > self.max_frame - 1:
                    self._buf.clear()
                    self._skipping = True
            if nl < 0:
                return lines
            if self._skipping:
                self._skipping = False
                self.overlong += 1
            else:
                line = bytes(self._buf)
                if line.endswith(b"\r"):
                    line = line[:-1]
                if line:
                    lines.append(line)
            self._buf.clear()
            start = nl + 1

    def __call__(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Generator form: ``for line in splitter(chunks): …``."""
        for chunk in chunks:
            yield from self.feed(chunk)


# --------------------------------------------------------------------------- examples

EXAMPLE_REQUESTS: tuple[tuple[int, str, dict[str, FieldValue], bool], ...] = (
    (1, "HELLO", {}, True),
    (1, "HELLO", {}, False),
    (2, "STATUS", {}, False),
    (3, "PROG", {"boot": 1, "rate_ul_h": 52500, "vtbi_nl": 35000000}, True),
    (4, "PROG", {"boot": 1, "drug": "ketamine", "dose_ug_kg": 500, "wt_g": 70000,
                 "over_ms": 2400000}, True),
    (5, "START", {"boot": 1}, True),
    (6, "STATUS", {}, True),
    (7, "PAUSE", {}, True),
    (8, "RESUME", {"boot": 1}, True),
    (9, "TLM", {"period_ms": 1000}, True),
    (10, "STOP", {}, True),
    (11, "ACK", {"boot": 1}, True),
)


def examples() -> list[str]:
    """Example request lines (without LF), CRCs computed."""
    return [encode_request(i, w, f, crc=c).decode().rstrip("\n") for i, w, f, c in EXAMPLE_REQUESTS]


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m host.codec", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", action="store_true", help="print example request lines")
    parser.add_argument("--crc", metavar="BODY", help="print BODY*CRC for a frame body")
    args = parser.parse_args(argv)
    if args.crc is not None:
        print(f"{args.crc}*{crc16(args.crc.encode('ascii')):04X}")
    elif args.examples:
        print("\n".join(examples()))
    else:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
