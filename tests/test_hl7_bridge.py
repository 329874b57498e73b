"""The HL7 vitals bridge (host/vitals_bridge.py): every message acknowledged as HL7 expects,
only the pump's patient's fresh, correctly coded readings relayed.

The oracle is independent of the bridge: messages are written here from IHE PCD-01 by hand
(MDC codes from IEEE 11073-10101, 2::n = 131072 + n), ACKs are read back with python-hl7's
own parser, and the transport tests use python-hl7's unmodified `MLLPClient` over real
loopback TCP.
"""
from __future__ import annotations

import datetime as dt
import socket
import threading
import time

import hl7
import pytest
from hl7.client import MLLPClient
from hypothesis import HealthCheck, given, settings, strategies as st

from host.vitals_bridge import Bridge, BridgeServer, parse_listen

T0 = dt.datetime(2026, 12, 1, 12, 0, 0)

# (code, name, unit code, unit name): partition 2 term codes, MDC_DIM_* units
SBP = ("150021", "MDC_PRESS_BLD_NONINV_SYS", "266016", "MDC_DIM_MMHG")
DBP = ("150022", "MDC_PRESS_BLD_NONINV_DIA", "266016", "MDC_DIM_MMHG")
MAP = ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "266016", "MDC_DIM_MMHG")
HR = ("147842", "MDC_ECG_HEART_RATE", "264864", "MDC_DIM_BEAT_PER_MIN")
PR = ("149530", "MDC_PULS_OXIM_PULS_RATE", "264864", "MDC_DIM_BEAT_PER_MIN")
SPO2 = ("150456", "MDC_PULS_OXIM_SAT_O2", "262688", "MDC_DIM_PERCENT")
TEMP = ("150344", "MDC_TEMP", "268192", "MDC_DIM_DEGC")


def ts(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S") + "+0000"


def pcd01(cid="M1", patient="PAT-1", at=T0, obs=None, msg_type="ORU^R01^ORU_R01",
          version="2.6", extra=""):
    """An IHE PCD-01 ORU^R01 as a monitor writes it; obs = [(term, value, time, status)]."""
    if obs is None:
        obs = [(SBP, 132, at, "R"), (DBP, 81, at, "R"), (HR, 72, at, "R"), (SPO2, 97, at, "R")]
    segs = [f"MSH|^~\\&|MONITOR^0012345678ABCDEF^EUI-64|ICU|||{ts(at)}||{msg_type}|{cid}|P|"
            f"{version}|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            f"PID|||{patient}^^^HOSP^MR||Doe^Jane^^^^^L",
            "PV1||I|ICU^^BED3",
            f"OBR|1|||182777000^monitoring of patient^SCT|||{ts(at)}",
            "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X"]
    for i, (term, value, t, status) in enumerate(obs, 2):
        code, name, ucode, uname = term
        segs.append(f"OBX|{i}|NM|{code}^{name}^MDC|1.0.1.{i}|{value}|{ucode}^{uname}^MDC|||||"
                    f"{status}|||{ts(t) if t else ''}")
    return "\r".join(segs) + "\r" + extra


class Relay:
    def __init__(self, action="none", fail=None):
        self.got, self.action, self.fail = [], action, fail

    def __call__(self, r):
        if self.fail:
            raise self.fail
        self.got.append(r)
        return self.action


def bridge(**kw):
    relay = kw.pop("relay", None) or Relay()
    kw.setdefault("patient", "PAT-1")
    return Bridge(relay, **kw), relay


def ack_of(o):
    """(MSA-1, MSA-2, MSA-3, ERR-3.1) read back with python-hl7's parser."""
    m = hl7.parse(o.ack)
    assert str(m.segment("MSH").extract_field(1, 9, 1, 1)) == "ACK"
    msa = m.segment("MSA")
    err = m.segments("ERR")[0].extract_field(1, 3, 1, 1) if "\rERR|" in o.ack else ""
    return (msa.extract_field(1, 1), msa.extract_field(1, 2),
            msa.extract_field(1, 3) if len(msa) > 3 else "", err)


# ---------------------------------------------------------------------- the core
@pytest.mark.req("REQ-HL7-01", "REQ-HL7-03")
def test_a_complete_reading_is_relayed_and_acknowledged_aa():
    b, relay = bridge()
    o = b.handle(pcd01(obs=[(SBP, 132, T0 - dt.timedelta(seconds=40), "R"),
                            (DBP, 81, T0 - dt.timedelta(seconds=40), "R"),
                            (MAP, 98, T0, "R"), (HR, 72, T0, "R"), (SPO2, 97, T0, "F")]))
    code, cid, text, _ = ack_of(o)
    assert (code, cid) == ("AA", "M1")
    assert len(relay.got) == 1
    r = relay.got[0]
    assert (r.sbp, r.dbp, r.hr, r.spo2) == (132, 81, 72, 97)
    assert r.age_ms == 40_000            # the oldest of the four, from the monitor's own clock
    assert "relayed" in text


@pytest.mark.req("REQ-HL7-02")
def test_another_patient_is_acknowledged_with_an_error_and_never_relayed():
    b, relay = bridge()
    o = b.handle(pcd01(patient="PAT-2"))
    code, cid, text, err = ack_of(o)
    assert (code, cid, err) == ("AE", "M1", "204")
    assert "PAT-2" in text and "PAT-1" in text
    assert relay.got == []
    # and the pump's patient afterwards still is
    assert ack_of(b.handle(pcd01(cid="M2")))[0] == "AA" and len(relay.got) == 1


@pytest.mark.req("REQ-HL7-02")
def test_without_a_patient_the_first_one_seen_is_bound():
    seen = []
    b, relay = bridge(patient=None, on_bind=seen.append)
    assert ack_of(b.handle(pcd01(patient="PAT-9")))[0] == "AA"
    assert seen == ["PAT-9"]
    assert ack_of(b.handle(pcd01(cid="M2", patient="PAT-1", at=T0 + dt.timedelta(seconds=5))))[0] == "AE"
    assert len(relay.got) == 1 and relay.got[0].patient == "PAT-9"


@pytest.mark.req("REQ-HL7-02")
def test_patient_matched_in_any_pid3_repetition_and_missing_pid_refused():
    b, relay = bridge()
    assert ack_of(b.handle(pcd01(patient="X-77^^^OTHER^PI~PAT-1")))[0] == "AA"
    no_pid = "\r".join(s for s in pcd01(cid="M2").split("\r") if not s.startswith("PID"))
    assert ack_of(b.handle(no_pid))[:2] == ("AE", "M2")
    empty = pcd01(cid="M3").replace("PID|||PAT-1^^^HOSP^MR", "PID|||")
    assert ack_of(b.handle(empty))[0] == "AE"
    assert len(relay.got) == 1


@pytest.mark.req("REQ-HL7-03")
@pytest.mark.parametrize("obs, why", [
    ([(TEMP, 37, T0, "R")], "150344)"),
    ([(("150021", "MDC_PRESS_BLD_NONINV_SYS", "268192", "MDC_DIM_DEGC"), 132, T0, "R")], "unit"),
    ([(SBP, "abc", T0, "R")], "not a number"),
    ([(SBP, 420, T0, "R")], "implausible"),
    ([(("150021", "MDC_PULS_OXIM_SAT_O2", "266016", "MDC_DIM_MMHG"), 132, T0, "R")], "contradicts"),
    ([(SBP, 132, T0 + dt.timedelta(minutes=5), "R")], "after the message time"),
    ([(SBP, 132, None, "R")], None),          # no OBX-14: OBR-7 is the observation time
    ([(SPO2, "", T0, "X")], "status X"),
])
def test_unusable_observations_get_ae_and_nothing_is_relayed(obs, why):
    b, relay = bridge()
    o = b.handle(pcd01(obs=obs))
    code, cid, text, err = ack_of(o)
    if why is None:        # OBR-7 fallback: accepted, but one vital is not a complete reading
        assert code == "AA" and "not relayed yet" in o.reason
    else:
        assert (code, cid) == ("AE", "M1"), o.reason
        assert why in o.reason and err
    assert relay.got == []


@pytest.mark.req("REQ-HL7-03")
def test_one_bad_mapped_observation_spoils_the_whole_message():
    b, relay = bridge()
    o = b.handle(pcd01(obs=[(SBP, 132, T0, "R"), (DBP, 81, T0, "R"), (HR, 72, T0, "R"),
                            (SPO2, 97, T0, "R"), (("150456", "MDC_PULS_OXIM_SAT_O2", "266016",
                                                   "MDC_DIM_MMHG"), 97, T0, "R")]))
    assert ack_of(o)[0] == "AE" and relay.got == []
    # and none of it was kept: a later HR-only message does not complete a set from it
    o = b.handle(pcd01(cid="M2", at=T0 + dt.timedelta(seconds=5),
                       obs=[(HR, 75, T0 + dt.timedelta(seconds=5), "R")]))
    assert ack_of(o)[0] == "AA" and relay.got == []


@pytest.mark.req("REQ-HL7-03")
def test_ecg_heart_rate_is_preferred_to_the_oximeter_pulse():
    b, relay = bridge()
    b.handle(pcd01(obs=[(SBP, 132, T0, "R"), (DBP, 81, T0, "R"), (PR, 90, T0, "R"),
                        (HR, 72, T0 - dt.timedelta(seconds=1), "R"), (SPO2, 97, T0, "R")]))
    assert relay.got[0].hr == 72
    b.handle(pcd01(cid="M2", at=T0 + dt.timedelta(seconds=5),
                   obs=[(PR, 88, T0 + dt.timedelta(seconds=5), "R")]))   # no ECG: pulse rate
    assert relay.got[1].hr == 88


@pytest.mark.req("REQ-HL7-04")
def test_old_and_out_of_order_readings_are_not_fresh():
    b, relay = bridge(max_age_s=300)
    old = T0 - dt.timedelta(seconds=301)
    o = b.handle(pcd01(obs=[(SBP, 132, old, "R"), (DBP, 81, old, "R"), (HR, 72, old, "R"),
                            (SPO2, 97, old, "R")]))
    assert ack_of(o)[0] == "AE" and "not fresh" in o.reason and relay.got == []
    assert ack_of(b.handle(pcd01(cid="M2")))[0] == "AA" and len(relay.got) == 1
    # an earlier reading arriving later (out of order), and the same reading again
    early = T0 - dt.timedelta(seconds=30)
    o = b.handle(pcd01(cid="M3", at=T0 + dt.timedelta(seconds=10),
                       obs=[(SBP, 200, early, "R"), (DBP, 120, early, "R")]))
    assert ack_of(o)[0] == "AE" and "out of order" in o.reason
    o = b.handle(pcd01(cid="M4", at=T0 + dt.timedelta(seconds=10),
                       obs=[(SBP, 132, T0, "R"), (DBP, 81, T0, "R"), (HR, 72, T0, "R"),
                            (SPO2, 97, T0, "R")]))
    assert ack_of(o)[0] == "AE" and "not newer" in o.reason
    assert len(relay.got) == 1


@pytest.mark.req("REQ-HL7-04", "REQ-HL7-05")
def test_a_set_is_relayed_only_while_every_vital_is_fresh():
    b, relay = bridge(max_age_s=300)
    b.handle(pcd01())                                       # NIBP at T0
    for k in range(1, 8):                                   # HR/SpO2 every minute, no new NIBP
        t = T0 + dt.timedelta(minutes=k)
        o = b.handle(pcd01(cid=f"H{k}", at=t, obs=[(HR, 70 + k, t, "R"), (SPO2, 97, t, "R")]))
        assert ack_of(o)[0] == "AA"
    ages = [r.age_ms for r in relay.got]
    # relayed with the blood pressure's age while it is at most 5 min old, then no more
    assert ages == [0, 60_000, 120_000, 180_000, 240_000, 300_000]
    assert "no fresh sbp, dbp" in o.reason


@pytest.mark.req("REQ-HL7-04")
def test_message_time_far_from_the_bridge_clock_is_refused_when_checked():
    now = T0.replace(tzinfo=dt.timezone.utc).timestamp()
    b, relay = bridge(max_skew_s=120, clock=lambda: now + 3600)
    o = b.handle(pcd01())
    assert ack_of(o)[0] == "AE" and "clock" in o.reason and relay.got == []
    b2, relay2 = bridge(max_skew_s=120, clock=lambda: now + 30)
    assert ack_of(b2.handle(pcd01()))[0] == "AA" and len(relay2.got) == 1


@pytest.mark.req("REQ-HL7-01")
@pytest.mark.parametrize("text, err", [
    ("garbage|x", "100"),
    ("", "100"),
    ("PID|||PAT-1", "100"),
    (pcd01(msg_type="ADT^A01^ADT_A01"), "200"),
    (pcd01(cid=""), "101"),
    (pcd01(version="3.0"), "203"),
])
def test_what_is_not_an_oru_r01_gets_ar(text, err):
    b, relay = bridge()
    o = b.handle(text)
    code, _, reason, e = ack_of(o)
    assert code == "AR" and e == err and reason
    assert relay.got == []


@pytest.mark.req("REQ-HL7-01")
def test_a_resent_message_gets_the_same_answer_and_is_not_relayed_twice():
    b, relay = bridge()
    m = pcd01()
    assert ack_of(b.handle(m))[0] == "AA"
    o = b.handle(m)
    assert ack_of(o)[:2] == ("AA", "M1") and "duplicate" in o.reason
    assert len(relay.got) == 1
    o = b.handle(pcd01(patient="PAT-2"))            # the same control id on another message
    assert ack_of(o)[0] == "AR" and len(relay.got) == 1


@pytest.mark.req("REQ-HL7-01")
def test_a_pump_that_does_not_take_the_reading_gets_ae():
    from host.errors import LinkError
    b, relay = bridge(relay=Relay(fail=LinkError("pump gone")))
    o = b.handle(pcd01())
    assert ack_of(o)[0] == "AE" and "not relayed" in o.reason and "pump gone" in o.reason


@pytest.mark.req("REQ-HL7-01")
def test_a_truncated_message_before_the_next_one_is_answered_ar():
    b, relay = bridge()
    cut = pcd01(cid="CUT")[:150]
    block = b"\x0b" + cut.encode() + b"\x0b" + pcd01(cid="OK1").encode() + b"\x1c\r"
    outs = b.handle_block(block)
    assert [ack_of(o)[:2] for o in outs] == [("AR", "CUT"), ("AA", "OK1")]
    assert len(relay.got) == 1
    # noise without a start byte
    outs = b.handle_block(b"hello\x1c\r")
    assert [ack_of(o)[0] for o in outs] == ["AR"]


@pytest.mark.req("REQ-HL7-01", "REQ-HL7-07")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_input_crashes_the_bridge_and_every_message_gets_exactly_one_ack(data):
    """Random cuts, byte flips and insertions into a valid message: one ACK per message
    (MSA-1 in AA/AE/AR), and a reading relayed only with AA."""
    b, relay = bridge()
    base = bytearray(pcd01(cid="F1").encode())
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(base) - 1)))
        if op == "flip" and base:
            base[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            base = base[:i]
        elif op == "insert":
            base[i:i] = data.draw(st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\x0b",
                                                   b"\x1c", b"9", b"\xff", b"MSH|"]))
        elif op == "delete" and base:
            del base[i]
    outs = b.handle_block(b"\x0b" + bytes(base) + b"\x1c\r")
    assert outs
    for o in outs:
        code = ack_of(o)[0]
        assert code in ("AA", "AE", "AR")
    assert len(relay.got) <= sum(o.code == "AA" for o in outs)
    for r in relay.got:
        assert 1 <= r.sbp <= 350 and 1 <= r.dbp <= r.sbp and 1 <= r.hr <= 350 and 1 <= r.spo2 <= 100


def test_parse_listen():
    assert parse_listen("mllp://127.0.0.1:2575") == ("127.0.0.1", 2575)
    assert parse_listen("mllp://[::1]:0") == ("::1", 0)
    for bad in ("tcp://x:1", "mllp://x", "mllp://:5", "mllp://h:99999"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# ---------------------------------------------------------------------- over real TCP
@pytest.mark.req("REQ-HL7-01", "REQ-HL7-07")
def test_mllp_server_with_python_hl7s_own_client():
    relay = Relay()
    b = Bridge(relay, patient="PAT-1")
    with BridgeServer(b, "127.0.0.1", 0) as srv:
        with MLLPClient("127.0.0.1", srv.port) as c:
            c.socket.settimeout(30)
            for k in range(3):                  # one persistent connection, several messages
                t = T0 + dt.timedelta(seconds=10 * k)
                reply = c.send_message(pcd01(cid=f"K{k}", at=t,
                                             obs=[(SBP, 130 + k, t, "R"), (DBP, 80, t, "R"),
                                                  (HR, 70, t, "R"), (SPO2, 98, t, "R")]))
                assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\r")
                m = hl7.parse(reply[1:-2].decode())
                assert m.segment("MSA").extract_field(1, 1) == "AA"
                assert m.segment("MSA").extract_field(1, 2) == f"K{k}"
            reply = c.send_message("this is not HL7")
            assert hl7.parse(reply[1:-2].decode()).segment("MSA").extract_field(1, 1) == "AR"
            reply = c.send_message(pcd01(cid="K9", patient="PAT-2"))
            assert hl7.parse(reply[1:-2].decode()).segment("MSA").extract_field(1, 1) == "AE"
        assert [r.sbp for r in relay.got] == [130, 131, 132]
        # a connection that dies mid-message, and raw noise: the listener carries on
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        s.sendall(b"\x0b" + pcd01(cid="DEAD").encode()[:100])
        s.close()
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        s.sendall(bytes(range(256)) * 4 + b"\x1c\r")
        got = _read_block(s)
        assert hl7.parse(got.decode()).segment("MSA").extract_field(1, 1) == "AR"
        s.close()
        with MLLPClient("127.0.0.1", srv.port) as c:
            c.socket.settimeout(30)
            t = T0 + dt.timedelta(seconds=60)
            reply = c.send_message(pcd01(cid="AFTER", at=t, obs=[(SBP, 140, t, "R"), (DBP, 80, t, "R"),
                                                                (HR, 70, t, "R"), (SPO2, 98, t, "R")]))
            assert hl7.parse(reply[1:-2].decode()).segment("MSA").extract_field(1, 1) == "AA"
        assert [r.sbp for r in relay.got] == [130, 131, 132, 140]


def _read_block(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\x1c\r"):
        chunk = s.recv(4096)
        assert chunk, "connection closed without an ACK"
        buf += chunk
    assert buf.startswith(b"\x0b")
    return buf[1:-2]


@pytest.mark.req("REQ-HL7-04")
def test_host_library_sends_the_readings_age_and_checks_it(pump, fake):
    assert pump.vitals(sbp=120, dbp=80, hr=70, spo2=98, age_ms=42_000) == "none"
    assert b"age_ms=42000" in fake.lines_with("VITALS")[-1]
    pump.vitals(sbp=120, dbp=80, hr=70, spo2=98)
    assert b"age_ms" not in fake.lines_with("VITALS")[-1]
    n = len(fake.lines_with("VITALS"))
    for bad in (-1, 3_600_001, 1.5, True, "5"):
        with pytest.raises(ValueError):
            pump.vitals(sbp=120, dbp=80, hr=70, spo2=98, age_ms=bad)
    assert len(fake.lines_with("VITALS")) == n          # nothing sent
