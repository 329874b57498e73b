"""host.codec: CRC, encode/decode round trips, grammar and length limits, line splitting."""
from __future__ import annotations

import binascii
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host import codec
from host.codec import (MAX_FRAME, Event, FrameError, LineSplitter, Reply, Telemetry, crc16,
                        decode_line, decode_request, encode, encode_error, encode_event,
                        encode_ok, encode_request, encode_telemetry)
from host._firmware import pumpcore

keys = st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True)
values = st.from_regex(r"[\x21-\x29\x2b-\x3c\x3e-\x7e]{1,32}", fullmatch=True)
ints = st.integers(min_value=0, max_value=999_999_999)
words = st.from_regex(r"[A-Z]{1,8}", fullmatch=True)
ids = st.integers(min_value=1, max_value=65535)
field_dicts = st.dictionaries(keys, st.one_of(values, ints), max_size=4)
reasons = st.from_regex(r"[\x21-\x29\x2b-\x7e]([\x20-\x29\x2b-\x7e]{0,40}[\x21-\x29\x2b-\x7e])?",
                        fullmatch=True)


def test_crc_check_value():
    assert crc16(b"123456789") == 0x31C3


def test_max_frame_comes_from_firmware():
    assert MAX_FRAME == pumpcore("protocol").MAX_FRAME


@given(st.binary(max_size=200))
def test_crc_matches_firmware_table_implementation(data):
    proto = pumpcore("protocol")
    assert crc16(data) == proto.crc16(data, 0, len(data)) == binascii.crc_hqx(data, 0)


def test_encode_request_exact_bytes():
    line = encode_request(3, "PROG", {"rate_ul_h": 52500, "vtbi_nl": 35000000})
    body = b"3 PROG rate_ul_h=52500 vtbi_nl=35000000"
    assert line == body + b"*%04X\n" % binascii.crc_hqx(body, 0)
    assert encode_request(2, "STATUS", crc=False) == b"2 STATUS\n"


def test_fields_keep_their_order():
    line = encode_request(9, "PROG", {"b": 1, "a": 2})
    assert line.startswith(b"9 PROG b=1 a=2*")


@pytest.mark.parametrize("args", [
    (0, "HELLO", {}), (65536, "HELLO", {}), (1, "hello", {}), (1, "TOOLONGWORD", {}),
    (1, "PROG", {"Bad": 1}), (1, "PROG", {"k": "a*b"}), (1, "PROG", {"k": "a=b"}),
    (1, "PROG", {"k": ""}), (1, "PROG", {"k": True}), (1, "PROG", {"k": 1.5}),
    (1, "PROG", {"k": "x" * 33}),
])
def test_encode_request_rejects_bad_input(args):
    with pytest.raises(ValueError):
        encode_request(*args)


def test_encode_rejects_overlong_frame():
    fields = {f"k{i}": "v" * 32 for i in range(6)}
    with pytest.raises(ValueError, match="MAX_FRAME"):
        encode_request(1, "PROG", fields)


@given(ids, words, field_dicts)
def test_request_round_trip(rid, word, fields):
    try:
        line = encode_request(rid, word, fields)
    except ValueError:
        return  # too long for one frame
    req = decode_request(line, require_crc=True)
    assert (req.id, req.word, req.has_crc) == (rid, word, True)
    assert req.fields == {k: str(v) for k, v in fields.items()}


@given(st.one_of(st.none(), ids), field_dicts)
def test_ok_reply_round_trip(rid, fields):
    try:
        line = encode_ok(rid, fields)
    except ValueError:
        return
    r = decode_line(line)
    assert r == Reply(rid, True, {k: str(v) for k, v in fields.items()})
    assert encode(r) == line


@given(st.one_of(st.none(), ids), words, reasons)
def test_error_reply_round_trip(rid, code, reason):
    line = encode_error(rid, code, reason)
    r = decode_line(line)
    assert isinstance(r, Reply) and not r.ok
    assert (r.id, r.code, r.reason) == (rid, code, reason)
    assert encode(r) == line


@given(words, field_dicts)
def test_event_and_telemetry_round_trip(name, fields):
    try:
        ev_line, tl_line = encode_event(name, fields), encode_telemetry(fields)
    except ValueError:
        return
    strf = {k: str(v) for k, v in fields.items()}
    assert decode_line(ev_line) == Event(name, strf)
    assert decode_line(tl_line) == Telemetry(strf)


def test_decode_examples():
    assert decode_line(encode_event("STATE", {"state": "RUNNING"})) == \
        Event("STATE", {"state": "RUNNING"})
    r = decode_line(encode_error(4, "STATE", "not allowed in IDLE"))
    assert (r.id, r.ok, r.code, r.reason) == (4, False, "STATE", "not allowed in IDLE")
    r = decode_line(encode_error(None, "CRC", "bad CRC").replace(b"\n", b"\r\n"))
    assert r.id is None and r.code == "CRC"
    assert decode_line(encode_ok(7, {"state": "IDLE"})).get_int  # method exists
    with pytest.raises(FrameError):
        decode_line(encode_ok(7, {"state": "IDLE"})).get_int("state")


@given(st.one_of(st.none(), ids), field_dicts, st.data())
def test_any_single_byte_corruption_is_rejected(rid, fields, data):
    try:
        line = encode_ok(rid, fields)
    except ValueError:
        return
    i = data.draw(st.integers(min_value=0, max_value=len(line) - 2))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != line[i]))
    bad = line[:i] + bytes([new]) + line[i + 1:]
    try:
        frame = decode_line(bad)
    except FrameError:
        return
    # the only way through is a change that keeps the frame identical in meaning
    raise AssertionError(f"corrupted frame accepted: {bad!r} -> {frame!r}")


@pytest.mark.parametrize("line", [
    b"1 OK state=IDLE",                         # CRC missing
    b"1 OK state=IDLE*0000",                    # wrong CRC
    b"1 OK state=IDLE*abcd",                    # lower-case hex
    b"1 OK state=IDLE*12",                      # short CRC
])
def test_crc_problems(line):
    with pytest.raises(FrameError):
        decode_line(line)


def _sealed(body: bytes) -> bytes:
    return body + b"*%04X\n" % crc16(body)


@pytest.mark.parametrize("body", [
    b"0 OK", b"65536 OK", b"123456 OK", b"x OK", b"1 ok", b"1 YES", b"! XX a=1", b"! EV",
    b"! EV state", b"1 OK state", b"1 OK =x", b"1 OK A=1", b"1 OK a==1", b"1 OK a=1 a=2",
    b"1  OK", b" 1 OK", b"1 OK ", b"1 ER", b"1 ER lower reason", b"1", b"1 OK a=\x01",
    b"1 OK k=" + b"v" * 33, b"1 OK " + b"k" * 17 + b"=1",
])
def test_grammar_violations(body):
    with pytest.raises(FrameError):
        decode_line(_sealed(body))


def test_missing_crc_allowed_when_asked():
    assert decode_line(b"1 OK a=1\n", require_crc=False) == Reply(1, True, {"a": "1"})
    assert decode_request(b"2 STATUS\r\n").has_crc is False


def test_length_limit():
    body = b"1 OK " + b" ".join(b"k%02d=%s" % (i, b"v" * 20) for i in range(20))
    body = body[:MAX_FRAME - 6]
    body = body.rstrip(b" ")
    while not re.fullmatch(rb"1 OK( k\d\d=v+)+", body):
        body = body[:-1]
    line = _sealed(body)
    assert len(line) <= MAX_FRAME
    decode_line(line)
    longer = _sealed(body + b"v" * (MAX_FRAME - len(line) + 1))
    assert len(longer) == MAX_FRAME + 1
    with pytest.raises(FrameError, match="MAX_FRAME"):
        decode_line(longer)


# ------------------------------------------------------------------------------ LineSplitter

FRAMES = [encode_ok(1, {"state": "IDLE"}), encode_event("STATE", {"state": "RUNNING"}),
          encode_telemetry({"del_nl": 5}), encode_error(None, "CRC", "bad CRC")]


def test_splitter_whole_stream_at_once():
    s = LineSplitter()
    assert s.feed(b"".join(FRAMES)) == [f[:-1] for f in FRAMES]


def test_splitter_byte_by_byte():
    s = LineSplitter()
    out = []
    for b in b"".join(FRAMES):
        out += s.feed(bytes([b]))
    assert out == [f[:-1] for f in FRAMES]


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=20))
def test_splitter_any_chunking(cuts):
    stream = b"".join(f.replace(b"\n", b"\r\n") for f in FRAMES)
    cuts = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    lines = list(LineSplitter()(chunks))
    assert [decode_line(x) for x in lines] == [decode_line(f) for f in FRAMES]


def test_splitter_garbage_and_overlong():
    s = LineSplitter()
    stream = (b"\x00\xffjunk\n" + FRAMES[0] + b"y" * 1000 + b"\n" + b"\n\r\n" + FRAMES[1]
              + b"z" * MAX_FRAME + b"\n" + b"w" * (MAX_FRAME - 1) + b"\n" + b"partial")
    lines = s.feed(stream)
    assert lines[0] == b"\x00\xffjunk"
    assert lines[1] == FRAMES[0][:-1]
    assert lines[2] == FRAMES[1][:-1]
    assert lines[3] == b"w" * (MAX_FRAME - 1)       # MAX_FRAME - 1 bytes + LF fits
    assert len(lines) == 4
    assert s.overlong == 2
    assert s.feed(b"\n") == [b"partial"]
    with pytest.raises(FrameError):
        decode_line(lines[0])


def test_splitter_overlong_split_across_chunks():
    s = LineSplitter()
    assert s.feed(b"a" * 100) == []
    assert s.feed(b"a" * 100) == []
    assert s.feed(b"a\n" + FRAMES[0]) == [FRAMES[0][:-1]]
    assert s.overlong == 1


# ------------------------------------------------------------------------------ examples CLI

def test_examples_command_prints_valid_frames():
    p = subprocess.run([sys.executable, "-m", "host.codec", "--examples"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines == codec.examples()
    assert "3 PROG boot=1 rate_ul_h=52500 vtbi_nl=35000000*5F8E" in lines
    for line in lines:
        req = decode_request(line.encode())
        assert req.has_crc == ("*" in line)
