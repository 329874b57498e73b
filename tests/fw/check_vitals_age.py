"""VITALS with `age_ms` (the HL7 bridge's observation age): an old reading is never fresh.

Portable: run under CPython and under the real `micropython` interpreter by
tests/test_fw_checks.py (Rig from tests/fw/fwkit.py).
"""
from fwkit import Rig
from pumpcore import fsm
from pumpcore import alarms as AL

REQS = {
    "check_vitals_age_counts_from_the_observation": ["REQ-HL7-04"],
    "check_vitals_too_old_is_stale_at_once": ["REQ-HL7-04"],
    "check_vitals_age_out_of_range_changes_nothing": ["REQ-HL7-04"],
    "check_vitals_old_bad_reading_still_pauses": ["REQ-HL7-04"],
    "check_vitals_old_good_reading_does_not_end_the_condition": ["REQ-HL7-04"],
}


def _infusing(age_ms=10000):
    r = Rig()
    assert b" OK" in r.cmd("CFG", "interlock=1 vitals_age_ms=%d" % age_ms)
    assert b" OK" in r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    assert r.cmd("START").endswith(b"state=RUNNING")
    return r


def check_vitals_age_counts_from_the_observation():
    r = _infusing()
    assert b"OK action=none" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99 age_ms=6000")
    r.run(3500)                                   # the reading is 9.5 s old: still fresh
    assert not r.ctl.alarms.is_active(AL.A_VITALS_STALE)
    r.run(1000)                                   # 10.5 s since it was made, not since it came
    assert r.ctl.alarms.is_active(AL.A_VITALS_STALE)
    assert r.state() == fsm.RUNNING
    # a fresh one (no age: made now) clears it
    assert b"OK action=none" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99")
    assert not r.ctl.alarms.is_active(AL.A_VITALS_STALE)


def check_vitals_too_old_is_stale_at_once():
    r = _infusing()
    r.run(9000)
    assert b"OK action=none" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99 age_ms=20000")
    r.run(100)                                    # older than vitals_age_ms: stale, not refreshed
    assert r.ctl.alarms.is_active(AL.A_VITALS_STALE)


def check_vitals_age_out_of_range_changes_nothing():
    r = _infusing()
    assert b"OK" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99")
    t = r.ctl.vit_t
    for bad in ("age_ms=3600001", "age_ms=-5", "age_ms=abc", "age_ms=1 age_ms=2"):
        rep = r.cmd("VITALS", "sbp=200 dbp=70 hr=70 spo2=99 " + bad)
        assert b" ER " in rep, rep
        assert r.ctl.vit_t == t and r.ctl.vit_sbp == 120
    assert r.state() == fsm.RUNNING


def check_vitals_old_bad_reading_still_pauses():
    r = _infusing()
    rep = r.cmd("VITALS", "sbp=195 dbp=100 hr=80 spo2=98 age_ms=30000")
    assert b"OK action=paused limit=sbp" in rep, rep
    assert r.alarm() == AL.A_VITALS and r.state() == fsm.ALARM


def check_vitals_old_good_reading_does_not_end_the_condition():
    r = _infusing()
    assert b"action=paused" in r.cmd("VITALS", "sbp=195 dbp=100 hr=80 spo2=98")
    assert b"OK action=none" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99 age_ms=20000")
    assert b"ER STATE" in r.cmd("ACK")             # an old good reading is no reason to resume
    assert b"OK action=none" in r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99")
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
