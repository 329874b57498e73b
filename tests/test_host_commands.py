"""host.client: the commands added in this protocol version, authentication and the key
store, the event log, heartbeat and reconnect — against the scripted fake pump."""
from __future__ import annotations

import os
import stat
import time

import pytest

from host import codec
from host.auth import KeyStore, Signer, generate_key, mac_hex
from host.client import Pump, Step
from host.errors import IllegalCommand, KeyStoreError, LinkError, PumpRefused
from host_fake import FakePump
from served import wall_until


def running(fake, pump):
    pump.program(rate=10, vtbi=5)
    pump.start()


# ------------------------------------------------------------------------------ new commands

def test_bolus_titrate_silence_vitals_hb_config(fake, pump):
    running(fake, pump)
    b = pump.bolus("0.5 mL", "100 mL/h")
    assert (b.vol_nl, b.rate_ul_h) == (500_000, 100_000)
    assert fake.executed[-1].fields == {"vol_nl": "500000", "rate_ul_h": "100000"}
    t = pump.titrate("12.5 mL/h")
    assert t.rate_ul_h == 12500 and fake.executed[-1].fields == {"rate_ul_h": "12500"}
    pump.titrate(dose_rate="10 mcg/kg/min")
    assert fake.executed[-1].fields == {"dose_ug_kg_h": "600"}
    assert pump.silence() == 120000
    assert pump.vitals(sbp=120, dbp=80, hr=70, spo2=98) == "none"
    assert fake.executed[-1].fields == {"sbp": "120", "dbp": "80", "hr": "70", "spo2": "98"}
    pump.heartbeat()
    assert fake.executed[-1].word == "HB"
    pump.stop()
    now = pump.configure(hb_ms=5000, hb_action="pause")
    assert now["hb_ms"] == "5000" and now["hb_action"] == "pause"


def test_units_checked_before_sending(fake, pump):
    running(fake, pump)
    n = len(fake.received)
    for call in (lambda: pump.bolus("0.5 furlong", 100), lambda: pump.bolus(0, 100),
                 lambda: pump.titrate(), lambda: pump.titrate(1, dose_rate="1 mg/kg/h"),
                 lambda: pump.titrate(dose_rate="5 mg/kg"),        # not a rate
                 lambda: pump.vitals(sbp=80, dbp=120, hr=70, spo2=98),
                 lambda: pump.vitals(sbp=120, dbp=80, hr=70, spo2=101),
                 lambda: pump.vitals(sbp=120.5, dbp=80, hr=70, spo2=99),
                 lambda: pump.program(rate="0.00001 mL/h", vtbi=1)):
        with pytest.raises(ValueError):
            call()
    assert len(fake.received) == n


def test_bolus_and_titrate_refused_locally_when_not_running(fake, pump):
    pump.status()
    with pytest.raises(IllegalCommand):
        pump.bolus(0.5, 100)
    with pytest.raises(IllegalCommand):
        pump.titrate(5)
    assert fake.count("BOLUS") == fake.count("TITRATE") == 0


def test_program_by_dose_rate_with_loading_dose(fake, pump):
    pump.program(drug="ketamine", dose_rate="0.5 mg/kg/h", weight_kg=70, vtbi=20,
                 load="0.1 mg/kg", load_over="5 min", kvo="0.5 mL/h", conc="1 mg/mL")
    assert fake.executed[-1].fields == {
        "drug": "ketamine", "load_ug_kg": "100", "load_ms": "300000", "dose_ug_kg_h": "500",
        "wt_g": "70000", "vtbi_nl": "20000000", "conc_ug_ml": "1000", "kvo_ul_h": "500"}
    # a bare dose rate is refused (it used to take the library's unit per hour)
    with pytest.raises(ValueError, match="dose rate 0.5 needs a unit: ketamine is dosed in "
                                         "mg/kg/h"):
        pump.program(drug="ketamine", dose_rate=0.5, weight_kg=70, over="1 h")
    pump.program(drug="ketamine", dose_rate="0.5 mg/kg/h", weight_kg=70, over="1 h")
    assert fake.executed[-1].fields["dose_ug_kg_h"] == "500"
    assert fake.executed[-1].fields["dur_ms"] == "3600000"
    with pytest.raises(ValueError):
        pump.program(drug="ketamine", dose_rate="0.5 mg/kg/h", weight_kg=70)   # no vtbi/over


def test_multi_step_program(fake, pump):
    res = pump.program_steps([Step("10 mL/h", volume="1 mL"), (20, 2), Step(5, over="10 min")])
    words = [(r.word, r.fields) for r in fake.executed[-4:]]
    assert words == [("STEP", {"i": "0", "rate_ul_h": "10000", "vol_nl": "1000000"}),
                     ("STEP", {"i": "1", "rate_ul_h": "20000", "vol_nl": "2000000"}),
                     ("STEP", {"i": "2", "rate_ul_h": "5000", "dur_ms": "600000"}),
                     ("PROG", {"steps": "3"})]
    assert res.vtbi_nl == 3_000_000 and pump.state == "PROGRAMMED"
    with pytest.raises(ValueError):
        pump.program_steps([])
    with pytest.raises(ValueError):
        pump.program_steps([Step(1, volume=1, over="1 h")])


# ------------------------------------------------------------------------------ event log

def _log(n):
    return [{"seq": i, "t_ms": 1000 * i, "ev": "STATE", "state": "RUNNING"} for i in range(n)]


def test_read_log_in_batches(fake, pump):
    fake.log = _log(70)
    recs = pump.read_log()
    assert [r.seq for r in recs] == list(range(70))
    assert recs[5].fields == {"seq": "5", "t_ms": "5000", "ev": "STATE", "state": "RUNNING"}
    # a short batch is not the end (the pump sends what fits its buffer): ask until n == 0
    assert [r.fields["from"] for r in fake.executed if r.word == "LOG"] == ["0", "32", "64", "70"]
    assert [r.seq for r in pump.read_log(65, limit=3)] == [65, 66, 67]


def test_read_log_asks_again_when_records_are_lost(fake, pump):
    fake.log = _log(5)
    fake.lose_log = 2
    recs = pump.read_log()
    assert [r.seq for r in recs] == [0, 1, 2, 3, 4]
    assert fake.count("LOG") == 3          # incomplete batch asked again, then n == 0 ends it


# ------------------------------------------------------------------------------ authentication

def test_key_store_files_are_private(tmp_path):
    store = KeyStore(tmp_path / "keys")
    key = generate_key()
    path = store.save("SIM-0001", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.load("SIM-0001") == key
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.load("SIM-0001")
    with pytest.raises(KeyStoreError, match="no key"):
        store.load("OTHER")
    with pytest.raises(KeyStoreError):
        store.save("../evil", key)
    assert key.hex() not in repr(Signer(key, store, "SIM-0001"))


def test_key_store_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INFUSEKIT_KEYS", str(tmp_path / "k"))
    assert KeyStore().dir == tmp_path / "k"


def test_signed_commands_accepted_and_counter_persisted(tmp_path):
    key = generate_key()
    store = KeyStore(tmp_path)
    store.save("FAKE-1", key)
    fake = FakePump(key=key, auth=True)
    try:
        with Pump.open(fake.path, timeout=1.0, key_store=store) as p:
            p.program(rate=10, vtbi=5)
            p.start()
            p.status()
        prog = fake.lines_with("PROG")[0]
        body = prog.partition(b"*")[0]
        head, _, mac = body.rpartition(b" mac=")
        assert mac.decode() == mac_hex(key, head) and b" ctr=" in head
        assert b"mac=" not in fake.lines_with("STATUS")[0]          # open commands unsigned
        assert fake.ctr == 2 and store.counter("FAKE-1") == 2
        # a new session starts above the stored counter, even if the pump says less
        fake.ctr = 0
        with Pump.open(fake.path, timeout=1.0, key_store=store) as p:
            p.stop()                    # stopping is never signed (the command table)
            assert fake.ctr == 0
            p.silence()
        assert fake.ctr == 3
    finally:
        fake.close()


def test_counter_syncs_above_the_pumps(tmp_path):
    key = generate_key()
    fake = FakePump(key=key, auth=True, ctr=500)
    try:
        with Pump.open(fake.path, timeout=1.0, key=key) as p:
            p.program(rate=10, vtbi=5)
        assert fake.ctr == 501
    finally:
        fake.close()


def test_without_key_the_pump_refuses_with_auth(fake):
    fake.key, fake.auth = generate_key(), True
    with Pump.open(fake.path, timeout=1.0) as p:
        with pytest.raises(PumpRefused) as e:
            p.program(rate=10, vtbi=5)
    assert e.value.code == "AUTH" and fake.count("PROG") == 0


def test_wrong_key_and_replay_are_refused(fake):
    fake.key, fake.auth = generate_key(), True
    with Pump.open(fake.path, timeout=1.0, key=generate_key()) as p:
        with pytest.raises(PumpRefused, match="AUTH"):
            p.program(rate=10, vtbi=5)
    with Pump.open(fake.path, timeout=1.0, key=fake.key) as p:
        p.program(rate=10, vtbi=5)
    replay = fake.lines_with("PROG")[-1].split(b" ", 1)[1]
    fake.write(b"")                                  # a captured frame under a new id
    with Pump.open(fake.path, timeout=1.0, check_state=False) as p:
        raw = f"{40000} ".encode() + replay.partition(b"*")[0]
        frame = raw + b"*%04X\n" % codec.crc16(raw)
        p.port.write(frame)
        p.status()                      # answered after the replayed frame was handled
    assert fake.count("PROG") == 1                    # neither the wrong MAC nor the replay ran


def test_retry_of_a_signed_command_keeps_its_bytes(fake):
    fake.key, fake.auth = generate_key(), True
    with Pump.open(fake.path, timeout=1.0, key=fake.key) as p:
        p.program(rate=10, vtbi=5)
        fake.lose_replies = 1
        assert p.start() == "RUNNING"
    starts = fake.lines_with("START")
    assert len(starts) == 2 and starts[0] == starts[1] and fake.count("START") == 1


# ------------------------------------------------------------------------------ heartbeat

def test_heartbeat_only_when_silent(fake, pump):
    """HB every 0.1 s of the client's own (wall) clock while it sends nothing else: at least
    three arrive (waited for, not timed), never more than one per period (a load can only
    make them fewer), and none after stop_heartbeat."""
    t0 = time.monotonic()
    pump.start_heartbeat(0.1)
    wall_until(lambda: fake.count("HB") >= 3, "three heartbeats")
    pump.stop_heartbeat()
    n = fake.count("HB")
    assert n <= (time.monotonic() - t0) / 0.1 + 1
    pump.status()                      # anything still in flight is in before its reply
    time.sleep(0.25)                   # a negative check: nothing more comes
    assert fake.count("HB") == n


# ------------------------------------------------------------------------------ reconnect

def test_reconnect_rereads_state_and_resends_nothing(fake, pump):
    running(fake, pump)
    pump.port.close()                 # the link drops under the client (USB unplugged)
    wall_until(lambda: not pump.link_ok, "the client notices")
    with pytest.raises(LinkError, match="reconnect"):
        pump.pause()
    assert not pump.link_ok and pump.state is None
    fake.state = "PAUSED"             # changed at the pump's keypad meanwhile
    n = len(fake.received)
    st = pump.reconnect()
    assert st.state == "PAUSED" and pump.state == "PAUSED"
    assert [ln.split(b" ")[1].split(b"*")[0] for ln in fake.received[n:]] == [b"HELLO", b"STATUS"]
    assert fake.count("PAUSE") == 0 and pump.stats.reconnects == 1
    assert pump.resume() == "RUNNING"


def test_auto_reconnect_on_next_call(fake):
    with Pump.open(fake.path, timeout=1.0, auto_reconnect=True) as p:
        p.program(rate=10, vtbi=5)
        p.port.close()
        wall_until(lambda: not p.link_ok, "the client notices")
        assert p.status().state == "PROGRAMMED"
        words = [r.word for r in fake.executed[-3:]]
        assert words == ["HELLO", "STATUS", "STATUS"]


def test_reconnect_refuses_another_device(fake, pump):
    pump.port.close()
    wall_until(lambda: not pump.link_ok, "the client notices")
    fake.dev = "OTHER-2"
    with pytest.raises(Exception, match="OTHER-2"):
        pump.reconnect()


def test_pump_reboot_mid_session_is_reported_not_papered_over(fake, pump):
    running(fake, pump)
    fake.reboot()                     # lost program and state; host still thinks RUNNING
    with pytest.raises(PumpRefused) as e:
        pump.pause()
    assert e.value.code == "STATE" and pump.state is None
    assert pump.status().state == "IDLE"
    assert fake.count("START") == 1 and fake.count("PROG") == 1   # nothing re-sent
