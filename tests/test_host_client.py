"""host.client against a scripted fake pump (tests/host_fake.py) on the far end of a real
pseudo-terminal: typed results, retries, timeouts, garbage, the state mirror, threads."""
from __future__ import annotations

import threading
import time

import pytest

from host.errors import UnitError

from host import codec
from host.client import Pump
from host.codec import Event, Telemetry
from host.errors import (IllegalCommand, LimitExceeded, LinkError, ProtocolError, PumpRefused,
                         Timeout)
from host_fake import LIB, FakePump
from served import GUARD_S


# ------------------------------------------------------------------------------ basics

def test_open_says_hello(fake, pump):
    assert pump.info is not None
    assert (pump.info.dev, pump.info.proto, pump.info.lib) == ("FAKE-1", 1, LIB.version)
    assert pump.info.libh == LIB.sha16
    assert fake.received[0].split(b" ")[1].startswith(b"HELLO*")


def test_first_id_is_random_per_session(fake):
    ids = set()
    for _ in range(3):
        with Pump.open(fake.path, timeout=1.0) as p:
            ids.add(p.info and fake.executed[-1].id)
    assert len(ids) == 3


def test_wrong_protocol_version_is_refused():
    fake = FakePump(proto=0)
    try:
        with pytest.raises(ProtocolError, match="protocol 0"):
            Pump.open(fake.path, timeout=1.0)
    finally:
        fake.close()


def test_status_fields_and_conveniences(fake, pump):
    fake.rate_ul_h, fake.vtbi_nl, fake.del_nl = 52500, 35_000_000, 7_000_000
    st = pump.status()
    assert st.state == "IDLE" and st.p_mmhg is None and st.alarm == "NONE" and st.prio == 0
    assert st.drug is None and st.fields["drug"] == "-"
    assert st.rate_ml_h == 52.5 and st.vtbi_ml == 35 and st.delivered_ml == 7
    assert st.progress == pytest.approx(0.2)
    assert pump.state == "IDLE"


def test_full_cycle_sends_exact_frames(fake, pump):
    res = pump.program("52.5 mL/h", 35)
    assert (res.rate_ul_h, res.vtbi_nl, res.dur_ms) == (52500, 35_000_000, 2_400_000)
    assert fake.executed[-1].fields == {"rate_ul_h": "52500", "vtbi_nl": "35000000"}
    assert pump.start() == "RUNNING"
    assert pump.pause() == "PAUSED"
    assert pump.resume() == "RUNNING"
    assert pump.stop() == "IDLE"
    # the mirror starts unknown: one STATUS before the first state-changing command
    assert [r.word for r in fake.executed] == ["HELLO", "STATUS", "PROG", "START", "PAUSE",
                                              "RESUME", "STOP"]


def test_program_by_rate_and_duration_computes_volume(fake, pump):
    res = pump.program(rate=52.5, over="40 min")
    assert res.vtbi_nl == 35_000_000
    res = pump.program(vtbi="35 mL", over="40 min")
    assert res.rate_ul_h == 52500
    with pytest.raises(ValueError):
        pump.program(rate=1, vtbi=2, over="1 h")


def test_program_by_drug(fake, pump):
    res = pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
    assert fake.executed[-1].fields == {"drug": "ketamine", "dose_ug_kg": "500", "wt_g": "70000",
                                        "over_ms": "2400000"}
    assert (res.drug, res.dose_ug, res.vtbi_nl, res.rate_ul_h, res.soft) == \
        ("ketamine", 35000, 35_000_000, 52500, False)
    # a bare dose number is refused: the library's drugs are dosed 1000x apart
    n = len(fake.executed)
    with pytest.raises(UnitError, match="needs a unit: ketamine is dosed in mg/kg"):
        pump.program(drug="ketamine", dose=0.5, over="40 min", weight_kg="70 kg")
    assert len(fake.executed) == n


def test_ids_increment_and_wrap(fake):
    with Pump.open(fake.path, timeout=1.0, first_id=65534) as p:
        p.status()
        p.status()
    assert [r.id for r in fake.executed] == [65534, 65535, 1]


# ------------------------------------------------------------------------------ robustness

@pytest.mark.req("REQ-COM-04", "REQ-HOST-03")
def test_lost_reply_is_retried_with_same_id_and_executed_once(fake, pump):
    pump.program(52.5, 35)
    fake.lose_replies = 2
    assert pump.start() == "RUNNING"                       # the third attempt is answered
    starts = fake.lines_with("START")
    assert len(starts) == 3 and len(set(starts)) == 1      # same bytes, same id
    assert fake.count("START") == 1                        # executed once
    assert pump.stats.retransmits == 2


def test_crc_error_reply_triggers_immediate_retransmit(fake, pump):
    fake.crc_errors = 1
    t0 = time.monotonic()
    st = pump.status(timeout=GUARD_S)
    assert time.monotonic() - t0 < GUARD_S                 # did not wait for its timeout
    assert st.state == "IDLE"
    lines = fake.lines_with("STATUS")
    assert len(lines) == 2 and lines[0] == lines[1]


def test_persistent_crc_errors_give_link_error(fake, pump):
    fake.crc_errors = 10
    with pytest.raises(LinkError, match="corrupted"):
        pump.status()
    assert len(fake.lines_with("STATUS")) == 3


def test_timeout_after_its_attempts_never_sooner(fake, pump):
    """A silent pump: Timeout after 1 + retries attempts of the per-attempt timeout each —
    never sooner (a load can only make it later; the attempts are counted, not timed)."""
    fake.silent = True
    t0 = time.monotonic()
    with pytest.raises(Timeout):
        pump.status(timeout=0.1)
    assert time.monotonic() - t0 >= 0.3      # 3 tries of 0.1 s
    lines = fake.lines_with("STATUS")
    assert len(lines) == 3 and len(set(lines)) == 1


def test_timeout_is_a_link_error(fake, pump):
    fake.silent = True
    with pytest.raises(LinkError):
        pump.status(timeout=0.05)


def test_refused_by_pump(fake, pump):
    with pytest.raises(PumpRefused) as e:
        pump.program(drug="ketamine", dose="0.9 mg/kg", over="40 min", weight_kg=70)
    assert e.value.code == "SOFT" and "confirm" in e.value.reason
    res = pump.program(drug="ketamine", dose="0.9 mg/kg", over="40 min", weight_kg=70,
                       confirm=True)
    assert res.soft and res.confirm
    assert fake.executed[-1].fields["confirm"] == "1"


@pytest.mark.req("REQ-HOST-02", "REQ-LIM-01")
def test_hard_limit_prechecked_on_host_without_sending(fake, pump):
    with pytest.raises(LimitExceeded, match="dose"):
        pump.program(drug="ketamine", dose="2 mg/kg", over="40 min", weight_kg=70)
    assert fake.count("PROG") == 0


def test_hard_limit_from_pump_when_library_differs():
    fake = FakePump(libh="0000000000000000")     # pump enforces another library: no precheck
    try:
        with Pump.open(fake.path, timeout=1.0) as p:
            with pytest.raises(PumpRefused) as e:
                p.program(drug="ketamine", dose="2 mg/kg", over="40 min", weight_kg=70)
            assert e.value.code == "LIMIT"
        assert fake.count("PROG") == 1
    finally:
        fake.close()


def test_events_delivered_while_request_pending(fake, pump):
    seen: list = []
    pump.on_event(seen.append)
    fake.before_reply = [codec.encode_event("ALARM", {"alarm": "OCCLUSION", "prio": 3}),
                         codec.encode_telemetry({"state": "RUNNING", "del_nl": 5, "rate_ul_h": 1,
                                                 "p_mmhg": 300, "el_ms": 9})]
    pump.status()
    got = list(pump.events(timeout=0.2))
    assert isinstance(got[0], Event) and got[0].name == "ALARM"
    assert got[0].fields == {"alarm": "OCCLUSION", "prio": "3"}
    assert isinstance(got[1], Telemetry) and got[1].get_int("p_mmhg") == 300
    assert seen == got


def test_state_events_update_the_mirror(fake, pump):
    pump.program(1, 1)
    pump.start()
    fake.write(codec.encode_event("STATE", {"state": "ALARM"}))
    ev = next(pump.events(timeout=GUARD_S))
    while not (isinstance(ev, Event) and ev.fields.get("state") == "ALARM"):
        ev = next(pump.events(timeout=GUARD_S))
    assert pump.state == "ALARM"


def test_garbage_on_the_line_is_ignored(fake, pump):
    good = codec.encode_event("STATE", {"state": "IDLE"})
    bad_crc = good[:-3] + (b"0" if good[-3:-2] != b"0" else b"1") + b"\n"
    fake.before_reply = [b"\x00\xff\xfenoise\r\n", bad_crc, b"x" * 500 + b"\n", b"5 OK a=1\n",
                         b"\n\n"]
    assert pump.status().state == "IDLE"
    assert pump.stats.bad_frames >= 3
    assert pump.stats.overlong == 1


def test_telemetry_stream(fake, pump):
    assert pump.telemetry(50) == 50
    frames = []
    for ev in pump.events(timeout=GUARD_S):                 # a hang guard: ends on the count
        frames.append(ev)
        if len(frames) == 3:
            break
    assert all(isinstance(f, Telemetry) for f in frames)
    assert pump.telemetry(0) == 0
    # the bounds are the firmware's (pumpcore.protocol, through host.codec): 10..60000
    assert (codec.TLM_MIN, codec.TLM_MAX) == (10, 60000)
    assert pump.telemetry(codec.TLM_MIN) == 10 and pump.telemetry(codec.TLM_MAX) == 60000
    for bad in (codec.TLM_MIN - 1, codec.TLM_MAX + 1):
        with pytest.raises(PumpRefused) as e:
            pump.telemetry(bad)
        assert e.value.code == "RANGE"
    assert pump.telemetry(0) == 0


def test_events_iterator_ends_on_timeout_and_on_close(fake, pump):
    t0 = time.monotonic()
    assert list(pump.events(timeout=0.1)) == []            # ends: after its timeout
    assert time.monotonic() - t0 >= 0.1
    threading.Timer(0.1, pump.close).start()
    assert list(pump.events()) == []


# ------------------------------------------------------------------------------ state mirror

@pytest.mark.req("REQ-HOST-01")
def test_illegal_command_refused_locally(fake, pump):
    pump.status()
    with pytest.raises(IllegalCommand) as e:
        pump.start()
    assert e.value.code == "STATE" and e.value.state == "IDLE"
    assert fake.count("START") == 0


def test_unknown_or_stale_mirror_is_refreshed_with_status(fake, pump):
    assert pump.state is None                 # HELLO says nothing about the state
    fake.state = "PROGRAMMED"                 # pump changed without us seeing an event
    assert pump.start() == "RUNNING"
    assert [r.word for r in fake.executed[-2:]] == ["STATUS", "START"]
    fake.state = "PAUSED"                     # mirror says RUNNING: stale
    assert pump.resume() == "RUNNING"
    assert [r.word for r in fake.executed[-2:]] == ["STATUS", "RESUME"]


def test_pump_state_refusal_forgets_mirror(fake):
    with Pump.open(fake.path, timeout=1.0, check_state=False) as p:
        with pytest.raises(PumpRefused) as e:
            p.start()
        assert e.value.code == "STATE"
        assert p.state is None


# ------------------------------------------------------------------------------ threads, link

def test_concurrent_requests_are_serialised(fake, pump):
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                assert pump.status().state == "IDLE"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    ids = [r.id for r in fake.executed]
    assert len(ids) == len(set(ids)) == 51


def test_request_from_callback_is_refused(fake, pump):
    outcome: list = []

    @pump.on_event
    def cb(ev):
        try:
            pump.status()
        except Exception as e:
            outcome.append(e)

    fake.write(codec.encode_event("STATE", {"state": "IDLE"}))
    pump.status()                        # its reply follows the event: the callback has run
    list(pump.events(timeout=0))
    assert outcome and "callback" in str(outcome[0])


def test_device_gone_gives_link_error():
    fake = FakePump()
    p = Pump.open(fake.path, timeout=1.0)
    try:
        fake.hang_up()
        with pytest.raises(LinkError):
            for _ in range(3):
                p.status()
    finally:
        p.close()


def test_open_nonexistent_port():
    with pytest.raises(LinkError, match="cannot open"):
        Pump.open("/dev/nonexistent-infusekit", timeout=0.1)


def test_closed_pump_refuses_requests(fake, pump):
    pump.close()
    pump.close()  # idempotent
    with pytest.raises(LinkError):
        pump.status()


@pytest.mark.req("REQ-HOST-14")
def test_a_second_program_on_the_same_serial_port_is_told_to_share_it(fake):
    """Two programs reading one serial device steal each other's replies: the port is opened
    exclusively, and the second opener gets a LinkError that names the gateway."""
    with Pump.open(fake.path, timeout=0.5) as first:
        with pytest.raises(LinkError, match=r"in use by another program.*infusekit serve"):
            Pump.open(fake.path, timeout=0.5)
        assert first.status().state == "IDLE"          # the first is undisturbed
    with Pump.open(fake.path, timeout=0.5) as again:   # free once the first closed it
        assert again.status().state == "IDLE"
