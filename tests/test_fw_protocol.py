"""The firmware's frame reader and parser: CRC, grammar, split input, garbage."""
import binascii

import pytest

from hypothesis import given, strategies as st

from pumpcore import protocol as P

KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
VALUE = st.text("".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "*="), min_size=1, max_size=32)
WORD = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)


def encode(rid, word, fields, crc=True):
    body = f"{rid} {word}" + "".join(f" {k}={v}" for k, v in fields)
    b = body.encode()
    return b + (b"*%04X" % binascii.crc_hqx(b, 0) if crc else b"") + b"\n"


def feed(data):
    r = P.FrameReader()
    out = []
    for b in data:
        res = r.push(b)
        if res == P.FRAME:
            out.append(bytes(r.buf[:r.length]))
        elif res == P.OVERLONG:
            out.append(None)
    return out


def test_crc_check_value():
    assert P.crc16(b"123456789", 0, 9) == 0x31C3
    assert P.crc16(b"123456789", 0, 9) == binascii.crc_hqx(b"123456789", 0)


@pytest.mark.req("REQ-COM-02")
def test_crc_table_is_the_polynomials():
    # the table is constant bytes in the source (flash on the frozen image): every entry must
    # be the CRC of its byte, or a corrupt frame could pass (the single-bit flip test below)
    for i in range(256):
        assert P.crc16(bytes([i]), 0, 1) == binascii.crc_hqx(bytes([i]), 0), i
    assert len(P._CRC_HI) == len(P._CRC_LO) == 256


@given(st.binary(max_size=200))
def test_crc_matches_cpython(data):
    assert P.crc16(data, 0, len(data)) == binascii.crc_hqx(data, 0)


@given(st.integers(1, 65535), WORD, st.lists(st.tuples(KEY, VALUE), max_size=6))
def test_valid_frames_parse_to_their_parts(rid, word, fields):
    line = encode(rid, word, fields)
    frames = feed(line)
    if len(line) > P.MAX_FRAME:
        assert frames == [None]
        return
    assert len(frames) == 1
    f = P.Frame(bytearray(frames[0]))
    assert f.parse(len(frames[0])) == P.OK
    assert f.id == rid and f.has_crc and f.word_is(word.encode())
    for k, (key, value) in enumerate(fields, start=2):
        assert f._span_eq(f.ts[k], f.eq[k], key.encode())
        assert f.value_is(k, value.encode())


@given(st.integers(1, 65535), WORD, st.lists(st.tuples(KEY, VALUE), max_size=4), st.data())
@pytest.mark.req("REQ-COM-05")
def test_any_single_bit_flip_is_caught(rid, word, fields, data):
    line = bytearray(encode(rid, word, fields)[:-1])
    i = data.draw(st.integers(0, len(line) - 1))
    bit = data.draw(st.integers(0, 6))
    line[i] ^= 1 << bit
    if b"\n" in line or b"\r" in line:
        return
    f = P.Frame(bytearray(line) + bytearray(P.MAX_FRAME))
    r = f.parse(len(line))
    assert r in (P.E_CRC, P.E_SYNTAX) or not f.has_crc


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=10))
def test_split_reads_give_same_frames(chunks):
    data = b"".join(chunks) + b"\n" + encode(3, "STATUS", [])
    whole = feed(data)
    r = P.FrameReader()
    split = []
    for b in data:  # byte by byte is the finest split
        res = r.push(b)
        if res == P.FRAME:
            split.append(bytes(r.buf[:r.length]))
        elif res == P.OVERLONG:
            split.append(None)
    assert split == whole
    assert whole[-1] == encode(3, "STATUS", [])[:-1]


@given(st.binary(max_size=400))
@pytest.mark.req("REQ-COM-01")
def test_garbage_never_raises(data):
    r = P.FrameReader()
    f = P.Frame(r.buf)
    for b in data:
        if r.push(b) == P.FRAME:
            assert f.parse(r.length) in range(len(P.ERR_NAMES))
