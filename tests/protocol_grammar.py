"""The frame grammar of docs/protocol.md (*Frame grammar*), written from the spec's ABNF and
nothing else: no import of host/ or firmware/. Used by tests/test_protocol_spec.py and
tests/test_conformance_v1.py to check every frame the pump sends.

`pump_frame_error(line)` returns None when `line` (bytes, without the LF) is a frame the
pump may send, else what is wrong."""
import binascii
import re

MAX_FRAME = 160
ID = r"[1-9][0-9]{0,4}"
WORD = r"[A-Z]{1,8}"
KEY = r"[a-z0-9_]{1,16}"
TEXT = r"[\x21-\x29\x2B-\x3C\x3E-\x7E]{1,32}"
NUMBER = r"(?:0|[1-9][0-9]{0,9})"
FIELD = rf"{KEY}=(?:{TEXT})"
FIELDS = rf"(?: {FIELD})*"
REASON = r"[\x20-\x29\x2B-\x7E]*"
REPLY = rf"(?:{ID}|\?) (?:OK{FIELDS}|ER {WORD} {REASON})"
UNSOLICITED = rf"! (?:EV {WORD}{FIELDS}|(?:TL|LG|DL){FIELDS})"
FRAME = re.compile(rf"(?P<body>(?:{REPLY}|{UNSOLICITED}))\*(?P<crc>[0-9A-F]{{4}})\r?")
REQUEST = re.compile(rf"(?P<body>{ID} {WORD}{FIELDS})(?:\*(?P<crc>[0-9A-F]{{4}}))?\r?")


def _fields(body):
    return [t for t in body.split(" ") if "=" in t]


def _check_fields(tokens):
    keys = [t.split("=", 1)[0] for t in tokens]
    if len(tokens) > 12:
        return f"{len(tokens)} fields (at most 12)"
    if len(set(keys)) != len(keys):
        return f"a key twice: {keys}"
    for t in tokens:
        v = t.split("=", 1)[1]
        if v.isdigit() and not re.fullmatch(NUMBER, v):
            return f"digits that are not a number: {t}"
        if v.isdigit() and int(v) >= 1 << 30:
            return f"number beyond 2**30 - 1: {t}"
    return None


def pump_frame_error(line: bytes):
    """None when `line` is a frame the pump may send (grammar, CRC, length, fields)."""
    if len(line) + 1 > MAX_FRAME:
        return f"{len(line) + 1} bytes (at most {MAX_FRAME} with the LF)"
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return "not ASCII"
    m = FRAME.fullmatch(text)
    if m is None:
        return "does not match the grammar"
    body = m.group("body")
    if int(m.group("crc"), 16) != binascii.crc_hqx(body.encode(), 0):
        return "bad CRC"
    if body.split(" ", 2)[1] == "ER":
        return None
    return _check_fields(_fields(body))


def request_error(line: bytes):
    """None when `line` is a request the grammar allows (CRC checked when present)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return "not ASCII"
    m = REQUEST.fullmatch(text)
    if m is None:
        return "does not match the grammar"
    if m.group("crc") and int(m.group("crc"), 16) != binascii.crc_hqx(m.group("body").encode(), 0):
        return "bad CRC"
    return _check_fields(_fields(m.group("body")))


# docs/protocol.md, *Session, status and library*: STATUS has exactly these fields, in order;
# `drug` is a library name (1..24 of a-z 0-9 _ -, starting with a letter) or "-"
STATUS_KEYS = ["state", "drug", "rate_ul_h", "vtbi_nl", "del_nl", "el_ms", "alarm", "prio"]
DRUG_NAME = re.compile(r"-|[a-z][a-z0-9_-]{0,23}")


def status_error(line: bytes):
    """None when `line` is a STATUS reply as the spec describes it, else what is wrong."""
    why = pump_frame_error(line)
    if why is not None:
        return why
    body = line.split(b"*")[0].decode()
    toks = body.split(" ")
    if toks[1] != "OK":
        return "not an OK reply"
    kv = [t.split("=", 1) for t in toks[2:]]
    if [k for k, _ in kv] != STATUS_KEYS:
        return f"fields {[k for k, _ in kv]} (the spec: {STATUS_KEYS})"
    f = dict(kv)
    if not DRUG_NAME.fullmatch(f["drug"]):
        return f"drug={f['drug']} is not a library name or -"
    for k in ("rate_ul_h", "vtbi_nl", "del_nl", "el_ms", "prio"):
        if not re.fullmatch(NUMBER, f[k]):
            return f"{k}={f[k]} is not a number"
    return None
