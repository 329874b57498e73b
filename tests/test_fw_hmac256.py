"""The pump's allocation-free HMAC-SHA256 (firmware/pumpcore/hmac256.py) against CPython's
hmac/hashlib, the independent oracle: every message length around the block boundaries,
keys shorter than, equal to and longer than a block, random bytes (hypothesis)."""
import hashlib
import hmac

import pytest
from hypothesis import given, settings, strategies as st

from pumpcore.hmac256 import Hmac256, _sha256_once


@pytest.mark.req("REQ-SEC-09")
@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=130), st.binary(max_size=300))
def test_hmac256_is_hmac_sha256(key, msg):
    h = Hmac256(key)
    want = hmac.new(key, msg, hashlib.sha256)
    assert h.digest(bytearray(msg), len(msg)) == want.digest()
    mac = want.hexdigest()[:16].upper().encode()
    assert bytes(h.hexdigest16(msg, len(msg), bytearray(16))) == mac
    assert h.verify(msg, len(msg), b"**" + mac, 2)
    for i in range(16):                      # any one digit wrong is refused
        bad = bytearray(mac)
        bad[i] = ord("0") if bad[i] != ord("0") else ord("1")
        assert not h.verify(msg, len(msg), bytes(bad), 0)


@pytest.mark.req("REQ-SEC-09")
def test_every_length_around_the_block_boundaries():
    key = bytes(range(32))
    h = Hmac256(key)
    for n in list(range(0, 140)) + [160, 255, 256, 1000]:
        msg = bytes((7 * i + n) & 0xFF for i in range(n))
        assert h.digest(msg, n) == hmac.new(key, msg, hashlib.sha256).digest(), n
        assert _sha256_once(msg) == hashlib.sha256(msg).digest(), n
    # the verifier reads only buf[:n] (a frame body inside a bigger buffer)
    buf = bytearray(b"7 START boot=1 ctr=5 mac=XXXXXXXXXXXXXXXX*0000")
    assert h.digest(buf, 20) == hmac.new(key, b"7 START boot=1 ctr=5", hashlib.sha256).digest()
