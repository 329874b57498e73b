"""The NE-1000 personality's engine (host/ne1000.py) byte for byte, against a recording
fake pump: the manual's and nesp-lib's exchanges (CONTEXT §10), framing, addressing, the
safe-mode timer, persistence, and every refusal. The unmodified nesp-lib client against the
simulated pump over a real pty is in tests/test_ne1000_e2e.py."""
from __future__ import annotations

import binascii

import pytest

from host.ne1000 import (BackendDown, BackendReset, Ne1000, NeError, PumpView, format_float,
                         parse_float)

STX, ETX = b"\x02", b"\x03"


def basic(payload: bytes) -> bytes:
    return STX + payload + ETX


def safe(payload: bytes) -> bytes:
    """The oracle for safe framing, from the manual: STX len payload CRC-hi CRC-lo ETX."""
    c = binascii.crc_hqx(payload, 0)
    return STX + bytes([len(payload) + 4]) + payload + bytes([c >> 8, c & 0xFF]) + ETX


class FakePump:
    """Records the verbs; moves through the InfuseKit states the way the pump would."""

    def __init__(self):
        self.state, self.del_nl, self.alarm, self.prio = "IDLE", 0, "NONE", 0
        self.calls = []
        self.down = False
        self.reset = False             # the next call finds the pump rebooted (once)
        self.refuse: dict[str, str] = {}

    def _do(self, verb, *args):
        if self.down:
            raise BackendDown("gone")
        self.calls.append((verb, *args))
        if verb in self.refuse:
            raise NeError(self.refuse[verb], "refused by the fake")

    def view(self):
        if self.down:
            raise BackendDown("gone")
        if self.reset:
            self.reset = False
            raise BackendReset("rebooted")
        return PumpView(self.state, self.del_nl, self.alarm, self.prio)

    def start(self, rate, vtbi):
        self._do("start", rate, vtbi)
        self.state, self.del_nl = "RUNNING", 0

    def resume(self):
        self._do("resume")
        self.state = "RUNNING"

    def pause(self):
        self._do("pause")
        self.state = "PAUSED"

    def stop(self):
        self._do("stop")
        self.state, self.del_nl = "IDLE", 0

    def titrate(self, rate):
        self._do("titrate", rate)

    def safe_mode(self, n):
        self._do("safe_mode", n)

    def rate_limits(self):
        return (100, 1_200_000)

    def volume_limits(self):
        return (1000, 1_000_000_000)


@pytest.fixture
def pump():
    return FakePump()


def fresh(pump, **kw):
    """An engine past its power-up reset alarm."""
    saved = []
    ne = Ne1000(pump, save=saved.append, **kw)
    assert ne.feed(b"*\r", 0.0) == basic(b"%02dA?R" % ne.address)
    return ne, saved


# ------------------------------------------------------------------ the documented exchanges
@pytest.mark.req("REQ-NE-01")
def test_nesp_lib_open_is_answered_as_an_ne1000(pump):
    ne = Ne1000(pump)
    # power-up: the first command is answered with the reset alarm (nesp-lib resends)
    assert ne.feed(b"\x02\t0SAF0Y\xad\x03", 0.0) == b"\x0200A?R\x03"
    assert ne.feed(b"\x02\t0SAF0Y\xad\x03", 0.1) == b"\x0200S\x03"
    assert ne.feed(b"0VER\r", 0.2) == b"\x0200SNE1000V3.928\x03"


@pytest.mark.req("REQ-NE-01")
def test_the_manuals_return_to_basic_mode_packet(pump):
    ne, _ = fresh(pump)
    assert ne.feed(b"0SAF5\r", 1.0) == safe(b"00S")
    assert ne.safe
    # manual: "(0x2)(0x8)SAF0(0x55)(0x43)(0x3)" returns the pump to basic mode
    assert ne.feed(b"\x02\x08SAF0\x55\x43\x03", 1.1) == b"\x0200S\x03"
    assert not ne.safe and pump.calls[-1] == ("safe_mode", 0)


@pytest.mark.req("REQ-NE-01")
def test_context_examples_byte_for_byte(pump):
    ne, _ = fresh(pump)
    t = iter(range(1, 100))
    x = lambda b: ne.feed(b, float(next(t)))  # noqa: E731
    assert x(b"0DIA26.7\r") == b"\x0200S\x03"
    assert x(b"0DIA\r") == b"\x0200S26.70\x03"
    assert x(b"0RAT875UM\r") == b"\x0200S\x03"
    assert x(b"0RAT\r") == b"\x0200S875.0UM\x03"
    assert x(b"0VOLML\r") == b"\x0200S\x03"
    assert x(b"0VOL35\r") == b"\x0200S\x03"
    assert x(b"0VOL\r") == b"\x0200S35.00ML\x03"
    assert x(b"0DIRINF\r") == b"\x0200S\x03"
    assert x(b"0DIR\r") == b"\x0200SINF\x03"
    assert x(b"0CLDINF\r") == b"\x0200S\x03"
    assert x(b"0DIS\r") == b"\x0200SI0.000W0.000ML\x03"
    assert x(b"0RUN\r") == b"\x0200I\x03"
    assert pump.calls[-1] == ("start", 875 * 60, 35_000_000)
    pump.del_nl = 1_250_000
    assert x(b"0DIS\r") == b"\x0200II1.250W0.000ML\x03"
    assert x(b"0PUR\r") == b"\x0200I?NA\x03"
    assert x(b"0STP\r") == b"\x0200P\x03"
    assert x(b"0STP\r") == b"\x0200S\x03"
    assert [c[0] for c in pump.calls[-2:]] == ["pause", "stop"]
    assert x(b"0DIS\r") == b"\x0200SI1.250W0.000ML\x03"      # kept after the program ends
    assert x(b"0CLDINF\r") == b"\x0200S\x03"
    assert x(b"0DIS\r") == b"\x0200SI0.000W0.000ML\x03"


@pytest.mark.req("REQ-NE-01")
def test_rate_units_and_status_letters(pump):
    ne, _ = fresh(pump)
    for cmd, ul_h, query in ((b"RAT52.5MH", 52500, b"52.50MH"), (b"RAT1.5MM", 90000, b"1.500MM"),
                             (b"RAT500UH", 500, b"500.0UH"), (b"RAT12.34UM", 740, b"12.33UM")):
        assert ne.feed(b"0" + cmd + b"\r", 1.0) == basic(b"00S")
        assert ne.settings.rate_ul_h == ul_h          # whole µL/h, rounded down, never up
        assert ne.feed(b"0RAT\r", 1.0) == basic(b"00S" + query)
    assert ne.feed(b"0RAT7\r", 1.0) == basic(b"00S")      # no units: the current ones
    assert ne.settings.rate_ul_h == 7 * 60
    ne.feed(b"0VOL0.5\r", 1.0)                        # 0.5 mL
    assert ne.feed(b"0VOLUL\r", 1.0) == basic(b"00S")
    assert ne.feed(b"0VOL\r", 1.0) == basic(b"00S500.0UL")  # the volume kept, shown in µL
    assert ne.settings.vol_nl == 500_000
    assert ne.feed(b"0RUN\r", 1.0) == basic(b"00I")
    pump.state = "KVO"
    assert ne.feed(b"0\r", 1.0) == basic(b"00I")
    pump.state = "COMPLETE"
    assert ne.feed(b"0\r", 1.0) == basic(b"00S")


@pytest.mark.req("REQ-NE-01")
def test_basic_mode_strips_spaces_and_upper_cases(pump):
    ne, _ = fresh(pump)
    assert ne.feed(b" 0 dia 1 2 . 4\r", 1.0) == basic(b"00S")
    assert ne.feed(b"0dia\r", 1.0) == basic(b"00S12.40")
    # a line in pieces, then garbage and CR LF
    assert ne.feed(b"0V", 1.0) == b"" and ne.feed(b"ER\r\n", 1.1) == basic(b"00SNE1000V3.928")


@pytest.mark.req("REQ-NE-02")
def test_addressing(pump):
    ne, _ = fresh(pump, address=7)
    assert ne.feed(b"0VER\r", 1.0) == b""              # another pump's command: silence
    assert ne.feed(b"17VER\r", 1.0) == b""
    assert ne.feed(b"7VER\r", 1.0) == basic(b"07SNE1000V3.928")
    assert ne.feed(b"07VER\r", 1.0) == basic(b"07SNE1000V3.928")
    assert ne.feed(b"*VER\r", 1.0) == basic(b"07SNE1000V3.928")
    assert ne.feed(b"VER\r", 1.0) == basic(b"07SNE1000V3.928")
    with pytest.raises(ValueError):
        Ne1000(pump, address=100)


@pytest.mark.req("REQ-NE-02")
def test_errors_are_answered_with_the_ne1000_codes(pump):
    ne, _ = fresh(pump)
    assert ne.feed(b"0XYZ\r", 1.0) == basic(b"00S?")
    assert ne.feed(b"0PHN2\r", 1.0) == basic(b"00S?NA")     # multi-phase programs: not offered
    assert ne.feed(b"0PHN1\r", 1.0) == basic(b"00S")        # the one phase there is
    assert ne.feed(b"0PHN\r", 1.0) == basic(b"00S01")
    assert ne.feed(b"0FUNRAT\r", 1.0) == basic(b"00S")
    assert ne.feed(b"0FUN\r", 1.0) == basic(b"00SRAT")
    assert ne.feed(b"0FUNINC\r", 1.0) == basic(b"00S?NA")
    assert ne.feed(b"0BUZ1\r", 1.0) == basic(b"00S?NA")     # an NE-1000 command not offered
    assert ne.feed(b"0DIA99\r", 1.0) == basic(b"00S?OOR")
    assert ne.feed(b"0DIA12.3456\r", 1.0) == basic(b"00S?OOR")  # more than 4 digits
    assert ne.feed(b"0RAT1XX\r", 1.0) == basic(b"00S?OOR")
    assert ne.feed(b"0SAF256\r", 1.0) == basic(b"00S?OOR")
    assert ne.feed(b"0CLDXX\r", 1.0) == basic(b"00S?OOR")
    assert ne.feed(b"0VOL0.0001\r", 1.0) == basic(b"00S?OOR")
    # safe mode: a packet with a wrong CRC is ?COM and changes nothing
    ne.feed(b"0SAF9\r", 1.0)
    bad = bytearray(safe(b"0DIA10"))
    bad[-2] ^= 0xFF
    assert ne.feed(bytes(bad), 1.1) == safe(b"00S?COM")
    assert ne.settings.dia == "26.70"
    assert ne.feed(b"\x02\x02", 1.2) == safe(b"00S?COM")   # a length below the minimum
    # basic-mode text in safe mode is not a packet: ignored
    assert ne.feed(b"0VER\r", 1.3) == b""


@pytest.mark.req("REQ-NE-03")
def test_what_a_clinical_pump_must_not_do_is_refused(pump):
    ne, _ = fresh(pump)
    assert ne.feed(b"0DIRWDR\r", 1.0) == basic(b"00S?NA")
    assert ne.feed(b"0DIRREV\r", 1.0) == basic(b"00S?NA")
    assert ne.feed(b"0DIR\r", 1.0) == basic(b"00SINF")
    assert ne.feed(b"0PUR\r", 1.0) == basic(b"00S?NA")
    ne.feed(b"0RAT5MM\r", 1.0)
    assert ne.feed(b"0RUN\r", 1.0) == basic(b"00S?NA")      # no volume: no unlimited run
    assert ne.feed(b"0RAT21MM\r", 1.0) == basic(b"00S?OOR")  # 1260 mL/h > the pump's 1200
    assert ne.feed(b"0RAT1UM\r", 1.0) == basic(b"00S?OOR")   # 60 µL/h < the pump's 100
    assert ne.settings.rate_ul_h == 300_000                  # unchanged by the refusals
    ne.feed(b"0VOL2000ML\r", 1.0)
    assert ne.feed(b"0VOL\r", 1.0) == basic(b"00S0.000ML")   # 2 L refused: unchanged
    ne.feed(b"0VOL10\r", 1.0)
    pump.refuse["start"] = "OOR"                             # e.g. a drug-library limit
    assert ne.feed(b"0RUN\r", 1.0) == basic(b"00S?OOR")
    del pump.refuse["start"]
    assert ne.feed(b"0RUN\r", 1.0) == basic(b"00I")
    assert ne.feed(b"0RUN\r", 1.0) == basic(b"00I?NA")       # already running
    assert ne.feed(b"0VOL5\r", 1.0) == basic(b"00I?NA")      # not during the program
    assert ne.feed(b"0DIA10\r", 1.0) == basic(b"00I?NA")
    pump.refuse["titrate"] = "OOR"
    assert ne.feed(b"0RAT4MM\r", 1.0) == basic(b"00I?OOR")
    assert ne.settings.rate_ul_h == 300_000
    del pump.refuse["titrate"]
    assert ne.feed(b"0RAT4MM\r", 1.0) == basic(b"00I")       # a rate change is a titration
    assert pump.calls[-1] == ("titrate", 240_000)


@pytest.mark.req("REQ-NE-04")
def test_pump_alarms_are_reported_once_then_the_status(pump):
    ne, _ = fresh(pump)
    ne.feed(b"0RAT5MM\r", 1.0)
    ne.feed(b"0VOL10\r", 1.0)
    ne.feed(b"0RUN\r", 1.0)
    pump.state, pump.alarm, pump.prio = "ALARM", "OCCLUSION", 3
    assert ne.feed(b"0RAT6MM\r", 2.0) == basic(b"00A?S")     # stall; the command not done
    assert ne.settings.rate_ul_h == 300_000
    assert ne.feed(b"0\r", 2.1) == basic(b"00S")
    assert ne.feed(b"0RUN\r", 2.2) == basic(b"00S?NA")       # cleared at the pump, not here
    pump.alarm = "AIR"
    assert ne.feed(b"0\r", 2.3) == basic(b"00A?E")           # another stopping alarm
    pump.alarm, pump.prio = "NEAR_EMPTY", 2
    assert ne.feed(b"0\r", 2.4) == basic(b"00S")             # not an NE-1000 alarm
    pump.down = True
    assert ne.feed(b"0\r", 2.5) == basic(b"00A?E")           # the pump cannot be reached
    assert ne.feed(b"0RUN\r", 2.6) == basic(b"00A?E")
    pump.down, pump.reset, pump.state, pump.alarm, pump.prio = False, True, "PAUSED", "NONE", 0
    n = len(pump.calls)
    assert ne.feed(b"0RUN\r", 2.7) == basic(b"00A?R")        # found again after a reboot
    assert len(pump.calls) == n                              # and the RUN was not executed
    assert ne.feed(b"0\r", 2.8) == basic(b"00P")


@pytest.mark.req("REQ-NE-05")
def test_safe_mode_timeout_pauses_and_reports_a_t(pump):
    ne, saved = fresh(pump)
    assert ne.feed(b"0SAF2\r", 10.0) == safe(b"00S")
    assert pump.calls[-1] == ("safe_mode", 2) and saved[-1]["safe_s"] == 2
    for cmd in (b"0RAT5MM", b"0VOL10", b"0RUN"):
        ne.feed(safe(cmd), 10.5)
    assert pump.state == "RUNNING"
    ne.poll(12.4)
    assert pump.state == "RUNNING"                           # 1.9 s of silence: fine
    ne.feed(safe(b"0"), 12.4)
    ne.poll(14.3)
    assert pump.state == "RUNNING"
    assert ne.feed(safe(b"5VER"), 14.0) == b""                # another pump's packet: no
    ne.poll(14.5)                                            # 2.1 s of silence
    assert pump.state == "PAUSED" and pump.calls[-1] == ("pause",)
    assert ne.feed(safe(b"0"), 20.0) == safe(b"00A?T")
    assert ne.feed(safe(b"0"), 20.1) == safe(b"00P")
    ne.poll(100.0)                                           # paused: nothing more to do
    assert ne.feed(safe(b"0RUN"), 100.1) == safe(b"00A?T")   # the timer fired again
    assert ne.feed(safe(b"0RUN"), 100.2) == safe(b"00I")     # resumed by the host


@pytest.mark.req("REQ-NE-05")
def test_safe_mode_partial_packet_is_dropped_after_half_a_second(pump):
    ne, _ = fresh(pump)
    ne.feed(b"0SAF9\r", 1.0)
    pkt = safe(b"0VER")
    assert ne.feed(pkt[:4], 2.0) == b""
    assert ne.feed(pkt[4:], 2.6) == b""                      # gap > 0.5 s: dropped
    assert ne.feed(pkt[:4], 3.0) == b"" and ne.feed(pkt[4:], 3.4) == safe(b"00SNE1000V3.928")


@pytest.mark.req("REQ-NE-06")
def test_safe_mode_survives_a_power_cycle(pump):
    ne, saved = fresh(pump)
    ne.feed(b"0SAF3\r", 1.0)
    ne.feed(safe(b"0DIA14.5"), 1.1)
    again = Ne1000(pump, settings=saved[-1])
    assert again.safe and again.settings.dia == "14.5"
    again.poll(1000.0)                          # the timer waits for the first valid packet
    assert pump.calls[-1] == ("safe_mode", 3)   # no pause was asked for
    assert again.feed(b"0VER\r", 1000.0) == b""            # basic text: not in safe mode
    assert again.feed(safe(b"0VER"), 1000.1) == safe(b"00A?R")   # power-up alarm, safe framed
    assert again.feed(safe(b"0DIA"), 1000.2) == safe(b"00S14.50")


def test_settings_file_content_is_checked(pump):
    assert not Ne1000(pump, settings={"safe_s": 999}).safe
    assert Ne1000(pump, settings={"safe_s": "3"}).settings.safe_s == 0
    assert Ne1000(pump, settings={"rate_units": "XX"}).settings.rate_units == "MH"


def test_numbers():
    assert [format_float(v) for v in (0, "1.25", "26.7", 875, 1234, 35000)] == \
        ["0.000", "1.250", "26.70", "875.0", "1234.", "35000."]
    assert format_float(parse_float("9.9999"[:5])) == "9.999"
    for bad in ("", ".", "1.2.3", "12345", "1.2345", "-1", "1e3"):
        with pytest.raises(NeError):
            parse_float(bad)


# ------------------------------------------------------------------ any bytes
from hypothesis import given, settings, strategies as st  # noqa: E402

_WORDS = [b"0", b"*", b"7", b"RUN", b"RAT", b"VOL", b"DIA", b"SAF", b"STP", b"DIS", b"CLD",
          b"PUR", b"DIR", b"WDR", b"INF", b"UM", b"MH", b"ML", b"UL", b"5", b"12.5", b"\r",
          b"\x02", b"\x03", b"\x08", b"\x09", b" ", b"\xff", b"?"]


@pytest.mark.req("REQ-NE-02", "REQ-NE-03")
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_WORDS), st.binary(max_size=6)), max_size=40),
       st.lists(st.floats(0, 1.0), min_size=1, max_size=40), st.booleans())
def test_any_bytes_never_crash_and_never_withdraw(chunks, gaps, safe_mode):
    pump = FakePump()
    ne = Ne1000(pump, settings={"safe_s": 9 if safe_mode else 0})
    t = 0.0
    for i, c in enumerate(chunks):
        t += gaps[i % len(gaps)]
        out = ne.feed(c, t)
        ne.poll(t)
        assert out == b"" or out.startswith(b"\x02") and out.endswith(b"\x03")
    # nothing but the NE-1000 verbs ever reached the pump, and never a withdrawal or purge
    assert {c[0] for c in pump.calls} <= {"start", "resume", "pause", "stop", "titrate",
                                          "safe_mode"}
    for c in pump.calls:
        if c[0] == "start":
            assert 100 <= c[1] <= 1_200_000 and 1000 <= c[2] <= 1_000_000_000
    seen = bytes(b for b in b"".join(chunks) if 0x20 < b < 0x7F).upper()   # as the engine reads
    if b"RUN" not in seen:
        assert not any(c[0] in ("start", "resume") for c in pump.calls)
