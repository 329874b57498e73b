"""Every alarm condition, its priority, what it does to delivery, and how it clears.

Portable: run under CPython and under the real `micropython` interpreter by
tests/test_fw_checks.py. The rig's plant (tests/fw/fwkit.py) closes the loop: the encoder
follows the motor, pressure is scripted or rises with the volume pushed into a closed line.
"""
import sys

from fwkit import Rig, crc_frame, TICK_MS
from pumpcore import fsm
from pumpcore import alarms as AL
from pumpcore.settings import Settings
from pumpcore.auth import Auth, mac16
from pumpcore.boot import build_controller

_MICROPYTHON = sys.implementation.name == "micropython"


def _running(rate=100000, vtbi=50000000, cfg=None, **kw):
    r = Rig(**kw)
    if cfg:
        assert b" OK" in r.cmd("CFG", cfg)
    assert b" OK" in r.cmd("PROG", "rate_ul_h=%d vtbi_nl=%d" % (rate, vtbi))
    assert r.cmd("START").endswith(b"state=RUNNING")
    return r


def _active(r, a):
    return r.ctl.alarms.is_active(a)


def _ack_ok(r):
    return r.cmd("ACK").endswith(b"OK state=PAUSED") or b" OK state=" in r.cmd("STATUS")


def _stopped(r, ms=1000):
    """Delivery is stopped: no forward steps over ms and the driver is disabled."""
    s = r.steps
    r.run(ms)
    return r.steps <= s and not r.ctl.out.enable


def check_occlusion_by_trend():
    r = _running(rate=25000)
    r.run(15000)                      # past take-up and the 10 s hold-off
    assert r.state() == fsm.RUNNING
    p0 = r.inp.pressure_mmhg
    r.occlude()
    t = 0
    while r.alarm() != AL.A_OCCLUSION and t < 60000:
        r.run(TICK_MS)
        t += TICK_MS
    # 25 mL/h into 2 µL/mmHg: 3.5 mmHg/s; the trend fires long before the 400 mmHg threshold
    assert r.alarm() == AL.A_OCCLUSION and r.ctl.out.alarm_prio == 3, t
    assert r.inp.pressure_mmhg < p0 + 60, r.inp.pressure_mmhg
    assert t < 15000, t               # occ.time_to_alarm_25mlh_s goal: 5 segments of ~2.3 s
    assert r.state() == fsm.ALARM
    r.run(8000)                       # the back-off relieves the ~40 mmHg of rise
    assert _stopped(r, 5000)
    # still occluded: the probe pressure holds, ACK is refused
    assert b"ER STATE alarm condition still present" in r.cmd("ACK")
    r.occluded = False
    r.inp.pressure_mmhg = p0          # the line opens: the probe pressure falls away
    r.run(200)
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
    # nominal running with the line open never alarms
    r2 = _running(rate=25000)
    r2.run(120000)
    assert r2.state() == fsm.RUNNING and r2.alarm() == 0


def check_occlusion_by_threshold_then_back_off():
    r = _running(rate=100000, cfg="occl_mmhg=150")
    r.run(20000)
    p0 = r.inp.pressure_mmhg
    r.inp.pressure_mmhg = 300         # a sudden closure at high pressure ...
    r.occlude()                       # ... and the closed line's pressure follows the plunger
    r.run(100)
    assert r.state() == fsm.RUNNING   # 2 ticks: debounced
    r.run(100)
    assert r.alarm() == AL.A_OCCLUSION and r.state() == fsm.ALARM
    s = r.steps
    r.run(20000)                      # back-off: the plunger retracts until the pressure is relieved
    assert r.steps < s - 1000, (r.steps, s)
    assert r.inp.pressure_mmhg <= p0 + 15, r.inp.pressure_mmhg
    assert r.steps - s >= -10000                # never more than the back-off travel limit
    assert not r.ctl.out.enable
    r3 = Rig()
    assert r3.cmd("CFG", "occl_mmhg=90").startswith(b"1 ER RANGE occl_mmhg must be 103..1034")
    assert r3.cmd("CFG", "occl_mmhg=2000").startswith(b"2 ER RANGE")
    assert r3.cmd("CFG", "occl_level=H").startswith(b"3 OK occl_mmhg=800")


def check_air_single_bubble():
    r = _running(rate=100000)          # 27.8 µL/s: 50 µL of air take 1.8 s to pass
    r.run(2000)
    r.inp.air = True
    r.run(1000)
    assert r.state() == fsm.RUNNING and not _active(r, AL.A_AIR)
    r.run(1500)
    assert r.alarm() == AL.A_AIR and r.state() == fsm.ALARM
    assert _stopped(r)
    assert b"ER STATE" in r.cmd("ACK")
    r.inp.air = False
    r.run(100)
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")


def _bubbles(r, n, on_ms=1000, off_ms=4000):
    for _ in range(n):
        r.inp.air = True
        r.run(on_ms)
        r.inp.air = False
        r.run(off_ms)


def check_air_cumulative_rolling_15_min():
    r = _running(rate=100000)
    r.run(2000)
    _bubbles(r, 30)                   # 30 × ~27.8 µL = 0.83 mL: below 1 mL
    assert r.state() == fsm.RUNNING and r.alarm() == 0
    _bubbles(r, 8)                    # past 1 mL within 15 min
    assert r.alarm() == AL.A_AIR_CUM and r.state() == fsm.ALARM
    assert not _active(r, AL.A_AIR)   # no single bubble was over 50 µL
    # bubbles spread wider than the rolling window never add up
    r2 = _running(rate=100000)
    r2.run(2000)
    _bubbles(r2, 20)                  # 0.56 mL
    r2.run(16 * 60000)
    _bubbles(r2, 20)                  # another 0.56 mL, 16 min later
    assert r2.state() == fsm.RUNNING and r2.alarm() == 0


def check_door_open():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=60000 vtbi_nl=10000000")
    r.inp.door_open = True
    assert r.cmd("START") == b"2 ER STATE door open"
    r.inp.door_open = False
    r.cmd("START")
    r.run(2000)
    r.inp.door_open = True
    r.run(TICK_MS)
    assert r.alarm() == AL.A_DOOR and r.state() == fsm.ALARM and r.ctl.out.alarm_prio == 3
    assert _stopped(r)
    assert b"ER STATE" in r.cmd("ACK")
    r.inp.door_open = False
    r.run(100)
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")


def check_near_empty_then_empty():
    # 6 mL loaded at 60 mL/h: 5 min before empty is when 1 mL has gone (~60 s)
    r = _running(rate=60000, vtbi=20000000, cfg="syr_nl=6000000")
    r.run(50000)
    assert not _active(r, AL.A_NEAR_EMPTY)
    r.run(15000)
    assert _active(r, AL.A_NEAR_EMPTY) and r.ctl.alarms.prio(AL.A_NEAR_EMPTY) == 2
    assert r.state() == fsm.RUNNING   # a warning: delivery goes on
    r.inp.end_stop = True             # the plunger reaches the end stop
    r.run(TICK_MS)
    assert r.alarm() == AL.A_EMPTY and r.state() == fsm.ALARM
    assert _stopped(r)
    assert b"ER STATE" in r.cmd("ACK")
    r.inp.end_stop = False            # a new syringe
    r.run(100)
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")


def check_vtbi_near_and_done():
    r = _running(rate=60000, vtbi=6000000)    # 6 min; "near" = 5 min (5 mL) before the end
    r.run(55000)
    assert not _active(r, AL.A_VTBI_NEAR)
    r.run(10000)
    assert r.alarm() == AL.A_VTBI_NEAR and r.ctl.out.alarm_prio == 1
    assert r.state() == fsm.RUNNING
    r.run(300000)
    assert r.state() == fsm.COMPLETE
    assert r.alarm() == AL.A_VTBI_DONE and r.ctl.out.alarm_prio == 1
    assert not _active(r, AL.A_VTBI_NEAR)
    assert r.cmd("ACK") == b"3 OK state=COMPLETE"
    assert r.alarm() == 0


def check_stall():
    r = _running(rate=100000)
    r.run(3000)
    r.frozen = True                   # the mechanism jams: the plunger stops
    # seen once 3 µsteps are certainly commanded and the encoder has not moved for 1 s more
    # (at 100 mL/h: ~1.1 s), not after the old 48 µsteps of lag + 2 s (issue 16)
    r.run(1500)
    assert r.alarm() == AL.A_STALL and r.state() == fsm.ALARM
    assert _stopped(r)


def check_runaway_cuts_the_enable():
    # with the motor disabled (paused) the plunger moves: free flow / runaway
    r = _running(rate=60000)
    r.run(2000)
    r.cmd("PAUSE")
    r.run(500)
    r.drift = 2                       # µsteps per tick with the driver off
    r.run(500)
    assert r.alarm() == AL.A_RUNAWAY and r.ctl.out.alarm_prio == 3
    assert r.state() == fsm.ALARM and not r.ctl.out.enable
    assert b"ER STATE" in r.cmd("ACK")        # still moving
    r.drift = 0
    r.run(1500)                       # 1 s without motion: the condition is gone
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
    # while running, the plunger ahead of every commanded step is a runaway too
    r2 = _running(rate=60000)
    r2.run(3000)
    r2.drift = 20
    r2.run(200)
    assert r2.alarm() == AL.A_RUNAWAY and r2.state() == fsm.ALARM
    for _ in range(10):
        r2.run(TICK_MS)
        assert not r2.ctl.out.enable and r2.ctl.out.steps == 0


def check_battery_low_and_depleted():
    r = _running(rate=60000)
    r.run(1000)
    r.inp.on_battery = True
    r.inp.battery_mv = 3550           # ≤ 3600 mV: about 30 min left
    r.run(800)
    assert not _active(r, AL.A_BATT_LOW)      # 1 s debounce
    r.run(400)
    assert r.alarm() == AL.A_BATT_LOW and r.ctl.out.alarm_prio == 2
    assert r.state() == fsm.RUNNING
    r.inp.battery_mv = 3390           # ≤ 3400 mV: stop while ≥ 3 min remain
    r.run(1200)
    assert r.alarm() == AL.A_BATT_DEPLETED and r.state() == fsm.ALARM
    assert _stopped(r)
    assert b"ER STATE" in r.cmd("ACK")
    r.inp.on_battery = False          # mains back
    r.run(100)
    assert not _active(r, AL.A_BATT_LOW)      # low clears itself
    assert _active(r, AL.A_BATT_DEPLETED)     # depleted stays latched until ACK
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
    # on mains a low reading is no alarm
    r2 = _running(rate=60000)
    r2.inp.battery_mv = 3000
    r2.run(2000)
    assert r2.alarm() == 0


class _Board:
    NL_PER_KSTEP = 217078
    DEVICE_ID = b"CHK-0001"

    def __init__(self, lib, settings=None):
        self.LIB_PATH = lib
        self.raw = settings

    def load_settings(self):
        return self.raw


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _faulted(board):
    r = Rig()
    r.ctl = build_controller(board)
    r.ctl.step(r.t, r.inp, b"", 0)
    return r


def check_fault_refuses_to_infuse():
    import pumpcore
    good = pumpcore.__file__.rsplit("/", 2)[0] + "/druglib.json"
    with open(good, "rb") as f:
        raw = f.read()
    bad = "/tmp/infusekit_check_badlib.json"
    cases = []
    _write(bad, raw[:len(raw) // 2])                         # truncated: not JSON
    cases.append((_Board(bad), b"drug library"))
    _write(bad, raw.replace(b'"hard_max": 1000}', b'"hard_max": 10}', 1))   # limits out of order
    cases.append((_Board(bad), b"limits out of order"))
    cases.append((_Board("/tmp/infusekit_no_such_lib.json"), b"missing"))
    s = Settings().encode()
    cases.append((_Board(good, s[:-3] + b"00\n"), b"settings CRC"))             # corrupt settings
    big = "/tmp/infusekit_check_hugelib.json"        # larger than the interpreter's heap:
    with open(big, "wb") as f:                      # MicroPython cannot read it (MemoryError)
        pad = b" " * 65536
        for _ in range(48):
            f.write(pad)
        f.write(b"{}")
    cases.append((_Board(big), b"out of memory reading the drug library" if _MICROPYTHON
                  else b"no version or no drugs"))
    for board, why in cases:
        r = _faulted(board)
        assert r.state() == fsm.FAULT, why
        assert r.alarm() == AL.A_FAULT and r.ctl.out.alarm_prio == 3
        assert why in r.ctl.fault_reason, (why, r.ctl.fault_reason)
        rep = r.cmd("PROG", "rate_ul_h=60000 vtbi_nl=1000000")
        assert rep.startswith(b"1 ER FAULT "), rep
        assert r.cmd("START").startswith(b"2 ER FAULT")
        assert b"fault=1" in r.send("3 HELLO", crc=False)
        r.run(1000)
        assert r.steps == 0 and not r.ctl.out.enable
    # the good library and good settings boot clean
    r = _faulted(_Board(good, s))
    assert r.state() == fsm.IDLE and r.alarm() == 0


def check_comm_loss_continue_and_pause():
    r = _running(rate=60000, cfg="hb_ms=2000 hb_action=continue")
    r.run(1900)
    assert not _active(r, AL.A_COMM_LOSS)
    r.run(300)
    assert r.alarm() == AL.A_COMM_LOSS and r.ctl.out.alarm_prio == 2
    s = r.steps
    r.run(2000)
    assert r.state() == fsm.RUNNING and r.steps > s      # continues
    assert r.cmd("HB") == b"4 OK"
    assert not _active(r, AL.A_COMM_LOSS)
    r2 = _running(rate=60000, cfg="hb_ms=2000 hb_action=pause")
    r2.run(2200)
    assert r2.alarm() == AL.A_COMM_LOSS and r2.ctl.out.alarm_prio == 3
    assert r2.state() == fsm.PAUSED and _stopped(r2)
    assert r2.cmd("HB") == b"4 OK" and not _active(r2, AL.A_COMM_LOSS)
    assert r2.state() == fsm.PAUSED                      # never resumes by itself


def check_callback_programmed_and_paused():
    r = Rig()
    r.cmd("CFG", "callback_ms=10000")
    r.cmd("PROG", "rate_ul_h=60000 vtbi_nl=10000000")
    r.run(9500)
    assert r.alarm() == 0
    r.run(1000)
    assert r.alarm() == AL.A_CALLBACK and r.ctl.out.alarm_prio == 2
    r.cmd("START")
    assert not _active(r, AL.A_CALLBACK)
    r.run(2000)
    r.cmd("PAUSE")
    r.run(10500)
    assert r.alarm() == AL.A_CALLBACK
    assert r.cmd("CFG", "callback_ms=60000").startswith(b"5 ER STATE")     # not mid-infusion
    assert Rig().cmd("CFG", "callback_ms=5000").startswith(b"1 ER RANGE callback_ms")


def check_vitals_interlock_pauses_never_raises():
    r = Rig()
    r.cmd("CFG", "interlock=1")
    r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    r.cmd("START")
    assert r.cmd("VITALS", "sbp=130 dbp=80 hr=75 spo2=98") == b"4 OK action=none"
    r.run(5000)
    rate = r.ctl.rate
    rep = r.cmd("VITALS", "sbp=190 dbp=100 hr=80 spo2=98")
    assert rep == b"5 OK action=paused limit=sbp", rep
    assert r.alarm() == AL.A_VITALS and r.state() == fsm.ALARM
    assert _stopped(r)
    assert b"ER STATE" in r.cmd("ACK")                   # reading still bad
    assert r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99") == b"7 OK action=none"
    r.run(2000)
    assert r.state() == fsm.ALARM and _stopped(r)        # a good reading never restarts
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
    assert r.ctl.rate == rate                            # nothing raised
    assert r.cmd("VITALS", "sbp=400 dbp=80 hr=70 spo2=99").startswith(b"9 ER RANGE")
    # the interlock off: readings are recorded, nothing is paused
    r2 = Rig()
    r2.cmd("PROG", "rate_ul_h=60000 vtbi_nl=10000000")
    r2.cmd("START")
    assert r2.cmd("VITALS", "sbp=200 dbp=120 hr=80 spo2=98") == b"3 OK action=none limit=sbp"
    assert r2.state() == fsm.RUNNING


def check_vitals_stale():
    r = Rig()
    r.cmd("CFG", "interlock=1 vitals_age_ms=10000")
    r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    r.cmd("START")
    r.run(9500)
    assert not _active(r, AL.A_VITALS_STALE)
    r.run(1000)
    assert r.alarm() == AL.A_VITALS_STALE and r.ctl.out.alarm_prio == 2
    assert r.state() == fsm.RUNNING
    r.cmd("VITALS", "sbp=120 dbp=70 hr=70 spo2=99")
    assert not _active(r, AL.A_VITALS_STALE)


def check_restart_recovers_paused():
    r = Rig()
    assert r.ctl.recover("RUNNING", 60000, 1000000, 400000)
    r.run(TICK_MS)
    assert r.state() == fsm.PAUSED
    assert r.alarm() == AL.A_RESTART and r.ctl.out.alarm_prio == 2
    assert r.steps == 0 and not r.ctl.out.enable          # nothing moves by itself
    r.run(5000)
    assert r.steps == 0
    assert r.cmd("RESUME") == b"1 OK state=RUNNING"
    r.run(40000)                      # the remaining 0.6 mL at 60 mL/h take 36 s
    assert r.state() == fsm.COMPLETE
    assert r.steps <= 600000 * 1000 // 217078 + 1, r.steps   # only the remainder
    assert r.steps >= 600000 * 1000 // 217078 - 1, r.steps
    assert r.cmd("ACK").endswith(b"OK state=COMPLETE")
    assert not _active(r, AL.A_RESTART)
    assert not Rig().ctl.recover("COMPLETE", 60000, 1000000, 0)   # nothing to restore


def _kvo_plan(ctl):
    return tuple(ctl.plans[len(ctl.plans) - 3:])      # plan slot -1: the KVO plan


def _fresh_kvo_plan(rate, kvo):
    """The oracle: the KVO plan of the same program accepted afresh by another pump."""
    k = Rig()
    assert b" OK" in k.cmd("PROG", "rate_ul_h=%d vtbi_nl=1000000 kvo_ul_h=%d" % (rate, kvo))
    return _kvo_plan(k.ctl)


def check_restart_single_form_goes_on_to_kvo():
    """An infusion restored from its record alone (no program file: the single form) with
    KVO runs on into KVO, its occlusion detector planned for the KVO rate. (The record path
    set the KVO rate without its plan: at the end of the remainder the detector took slot
    -1's empty plan and the tick raised ZeroDivisionError.)"""
    r = Rig()
    assert r.ctl.recover("RUNNING", 60000, 1000000, 400000, -1, 1000)
    assert _kvo_plan(r.ctl) == _fresh_kvo_plan(60000, 1000)
    r.run(TICK_MS)
    assert r.cmd("RESUME") == b"1 OK state=RUNNING"
    r.run(45000)                      # the remaining 0.6 mL at 60 mL/h take 36 s
    assert r.state() == fsm.KVO, fsm.STATE_NAMES[r.state()]
    assert r.ctl.occl.L > 0


def check_titrate_below_kvo_replans_kvo():
    """TITRATE below the KVO rate brings KVO down to the new rate and plans the occlusion
    detector for it, as a program accepted at that KVO would be."""
    r = Rig()
    assert b" OK" in r.cmd("PROG", "rate_ul_h=5000 vtbi_nl=1000000 kvo_ul_h=1000")
    assert b" OK state=RUNNING" in r.cmd("START")
    r.run(2000)
    assert b" OK" in r.cmd("TITRATE", "rate_ul_h=500")
    assert r.ctl.kvo == 500
    assert _kvo_plan(r.ctl) == _fresh_kvo_plan(500, 500)
    assert _kvo_plan(r.ctl) != _fresh_kvo_plan(5000, 1000)


def check_silence_pauses_audio_never_clears():
    r = _running(rate=60000)
    r.run(2000)
    r.inp.door_open = True
    r.run(TICK_MS)
    assert r.ctl.out.audio and r.ctl.out.alarm_prio == 3
    rep = r.cmd("SILENCE")
    assert rep.startswith(b"3 OK until_ms="), rep
    r.run(TICK_MS)
    assert not r.ctl.out.audio
    assert r.alarm() == AL.A_DOOR and r.ctl.out.alarm_prio == 3     # the alarm stays
    r.inp.door_open = False
    r.run(110000)
    assert not r.ctl.out.audio and r.alarm() == AL.A_DOOR           # still latched, still silent
    r.run(10500)                      # 120 s are over
    assert r.ctl.out.audio and r.alarm() == AL.A_DOOR
    # a new alarm of the same or higher priority ends a silence at once
    r2 = _running(rate=60000)
    r2.run(2000)
    r2.inp.on_battery = True
    r2.inp.battery_mv = 3550
    r2.run(1200)
    assert r2.ctl.out.audio and r2.ctl.out.alarm_prio == 2
    r2.cmd("SILENCE")
    r2.run(TICK_MS)
    assert not r2.ctl.out.audio
    r2.inp.door_open = True
    r2.run(TICK_MS)
    assert r2.ctl.out.audio and r2.ctl.out.alarm_prio == 3


def check_ack_clears_only_when_condition_gone():
    r = _running(rate=60000)
    r.run(2000)
    r.inp.door_open = True
    r.run(TICK_MS)
    r.inp.door_open = False
    r.run(TICK_MS)
    assert r.alarm() == AL.A_DOOR                        # latched: the cause is gone, not the alarm
    r.run(5000)
    assert r.alarm() == AL.A_DOOR and r.state() == fsm.ALARM
    assert r.cmd("ACK").endswith(b"OK state=PAUSED")
    assert r.alarm() == 0


_KEY = b"0123456789abcdef0123456789abcdef"


def _signed(r, body):
    b = body.encode()
    return r.send(b + b" mac=" + mac16(_KEY, b))


def check_auth_refuses_unsigned_wrong_and_replayed():
    s = Settings()
    s.auth = 1
    stored = []
    r = Rig(settings=s, auth=Auth(_KEY, 0, stored.append))
    assert r.ctl.auth.required
    before = (r.state(), r.ctl.rate)
    rep = r.send("1 PROG rate_ul_h=60000 vtbi_nl=1000000")
    assert rep.startswith(b"1 ER AUTH authentication required"), rep
    bad = b"2 PROG rate_ul_h=60000 vtbi_nl=1000000 boot=1 ctr=1"
    rep = r.send(bad + b" mac=" + mac16(b"another key 0123456789abcdefghij", bad))
    assert rep.startswith(b"2 ER AUTH wrong MAC"), rep
    rep = _signed(r, "3 PROG rate_ul_h=60000 vtbi_nl=9000000 boot=1 ctr=1")      # signed with the key
    assert rep.startswith(b"3 OK"), rep
    assert (r.state(), r.ctl.rate) != before and stored == [1]
    rep = _signed(r, "4 PROG rate_ul_h=90000 vtbi_nl=9000000 boot=1 ctr=1")      # counter replayed
    assert rep.startswith(b"4 ER AUTH replayed counter"), rep
    assert r.ctl.rate == 60000
    tampered = b"5 START boot=1 ctr=2"
    rep = r.send(b"5 START boot=1 ctr=3 mac=" + mac16(_KEY, tampered))
    assert rep.startswith(b"5 ER AUTH wrong MAC"), rep
    assert _signed(r, "6 START boot=1 ctr=2").startswith(b"6 OK state=RUNNING")
    r.run(1000)
    # stopping is never blocked: PAUSE, STATUS, STOP stay open without a MAC
    assert r.send("7 PAUSE").startswith(b"7 OK state=PAUSED")
    assert r.send("8 STATUS", crc=False).startswith(b"8 OK state=PAUSED")
    assert r.send("9 STOP").startswith(b"9 OK state=IDLE")
    assert r.ctl.auth_refused == 3            # wrong MAC, replay, tampered counter
    # without a provisioned key auth cannot be turned on
    assert Rig().cmd("CFG", "auth=1").startswith(b"1 ER AUTH")


REQS = {
    "check_occlusion_by_trend": ["REQ-ALM-01", "REQ-ALM-03"],
    "check_occlusion_by_threshold_then_back_off": ["REQ-ALM-01", "REQ-ALM-03", "REQ-BOL-01"],
    "check_air_single_bubble": ["REQ-ALM-01", "REQ-ALM-02"],
    "check_air_cumulative_rolling_15_min": ["REQ-ALM-01"],
    "check_door_open": ["REQ-ALM-01", "REQ-ALM-02"],
    "check_near_empty_then_empty": ["REQ-ALM-01", "REQ-ALM-02"],
    "check_vtbi_near_and_done": ["REQ-VOL-02"],
    "check_stall": ["REQ-ALM-01"],
    "check_runaway_cuts_the_enable": ["REQ-ALM-01", "REQ-MOT-01"],
    "check_battery_low_and_depleted": ["REQ-ALM-01", "REQ-ALM-02"],
    "check_fault_refuses_to_infuse": ["REQ-MOT-01"],
    "check_comm_loss_continue_and_pause": ["REQ-MOT-01"],
    "check_restart_recovers_paused": ["REQ-PWR-01", "REQ-PWR-04"],
    "check_restart_single_form_goes_on_to_kvo": ["REQ-REC-01", "REQ-PWR-04", "REQ-OCC-13"],
    "check_titrate_below_kvo_replans_kvo": ["REQ-THR-03", "REQ-OCC-13"],
    "check_silence_pauses_audio_never_clears": ["REQ-ALM-02"],
    "check_ack_clears_only_when_condition_gone": ["REQ-ALM-02"],
    "check_auth_refuses_unsigned_wrong_and_replayed": ["REQ-SEC-01", "REQ-SEC-02", "REQ-SEC-03"],
}
