"""The steady-state control tick and the frame parser allocate nothing (MicroPython only).

The tick runs under `micropython.heap_lock()` with an integer-only plant in the loop (the
encoder follows the motor), in every delivering regime: basal infusion with telemetry,
a clinician bolus, keep-vein-open, and a paused pump with a medium alarm sounding."""
from fwkit import Rig, crc_frame, TICK_MS
from pumpcore import fsm

try:
    import micropython
except ImportError:
    micropython = None


def _locked(fn):
    micropython.heap_lock()
    try:
        fn()
    finally:
        micropython.heap_unlock()


def _ticks(r, n, live=False):
    """n ticks of the rig's controller, the encoder following the motor; `live`: the
    pressure reading toggles by 1 mmHg a tick (a live sensor, not a frozen one). The closure
    holds at most 5 cells: MicroPython calls one with more through a heap-allocated array."""
    empty = bytearray(1)

    def go():
        ctl = r.ctl
        inp = r.inp
        t = r.t
        for i in range(n):
            t = t + TICK_MS
            if t > 0x3FFFFFFF:
                t = t - 0x20000000 - 0x20000000
            if live:
                inp.pressure_mmhg = 20 + (i & 1)
            out = ctl.step(t, inp, empty, 0)
            inp.encoder = inp.encoder + out.steps
        r.t = t
    return go


def check_running_tick_allocates_nothing():
    if micropython is None:
        return
    r = Rig()
    r.cmd("PROG", "rate_ul_h=52500 vtbi_nl=35000000")
    r.cmd("TLM", "period_ms=100")
    r.cmd("START")
    r.run(1000)
    s0 = r.ctl.line.steps
    _locked(_ticks(r, 400))
    r.plunger = r.motor = r.inp.encoder
    assert r.ctl.line.steps > s0
    assert r.state() == fsm.RUNNING


def check_bolus_and_kvo_ticks_allocate_nothing():
    if micropython is None:
        return
    r = Rig()
    r.cmd("PROG", "vtbi_nl=300000 dur_ms=60000 kvo_ul_h=1000")
    r.cmd("TLM", "period_ms=50")
    r.cmd("START")
    r.run(1000)
    assert r.cmd("BOLUS", "vol_nl=100000 rate_ul_h=600000").startswith(b"4 OK")
    _locked(_ticks(r, 200))          # the bolus, its end, the basal rest
    r.plunger = r.motor = r.inp.encoder
    r.run(70000)
    assert r.ctl.fsm.state == fsm.KVO, r.ctl.fsm.state
    k0 = r.ctl.kline.steps
    _locked(_ticks(r, 400))
    assert r.ctl.kline.steps > k0


def check_paused_with_alarm_allocates_nothing():
    if micropython is None:
        return
    r = Rig()
    r.cmd("CFG", "callback_ms=10000")
    r.cmd("PROG", "rate_ul_h=52500 vtbi_nl=35000000")
    r.cmd("START")
    r.run(1000)
    r.cmd("PAUSE")
    r.run(11000)
    assert r.ctl.alarms.highest() != 0
    _locked(_ticks(r, 400))


def check_telemetry_between_ticks_allocates_nothing():
    """TLM period_ms=10: the pump steps at every wake_at() (the board's loop, pumpcore.app.run),
    four telemetry frames between two control ticks, locked."""
    if micropython is None:
        return
    r = Rig()
    r.cmd("PROG", "rate_ul_h=52500 vtbi_nl=35000000")
    r.cmd("START")
    r.run(1000)
    assert r.cmd("TLM", "period_ms=10") == b"3 OK period_ms=10"
    ctl = r.ctl
    inp = r.inp
    empty = bytearray(1)
    got = bytearray(2)

    def go():
        t = r.t
        for _ in range(500):                # 100 control ticks
            t = ctl.wake_at()
            out = ctl.step(t, inp, empty, 0)
            inp.encoder = inp.encoder + out.steps
            if out.tx.n:
                if got[0] < 255:
                    got[0] += 1
            if out.steps:
                if got[1] < 255:
                    got[1] += 1
        r.t = t
    _locked(go)
    r.plunger = r.motor = r.inp.encoder
    assert got[0] == 255 and 0 < got[1] < 110, (got[0], got[1])   # 500 frames; ~100 ticks stepped
    assert r.state() == fsm.RUNNING


def check_parser_allocates_nothing():
    if micropython is None:
        return
    r = Rig()
    ctl = r.ctl
    inp = r.inp
    frames = [bytearray(crc_frame("5 STATUS")), bytearray(b"6 STATUS\n"), bytearray(crc_frame("7 FLY")),
              bytearray(b"8 PROG rate_ul_h=1*0000\n"), bytearray(b"\xff\x00 junk\n"), bytearray(b"x" * 200 + b"\n"),
              bytearray(crc_frame("9 HB")), bytearray(crc_frame("10 START")), bytearray(crc_frame("11 PAUSE"))]

    def feed():
        for f in frames:
            ctl.step(r.t, inp, f, len(f))

    _locked(feed)
    assert ctl.out.tx.n > 0


def _bd50_detector(rate_ul_h):
    """An occlusion detector planned at this rate for BD50 (2100 nL/mmHg; sensor σ 148 in the
    units of syringes.sigma_cmmhg)."""
    from pumpcore.occlusion import Occlusion, plan_ints
    o = Occlusion(400)
    o.set_syringe(2100, 148)
    L, lo, hi = plan_ints(rate_ul_h, 2100, 148)
    o.set_plan(L, lo, hi)
    return o


def check_occlusion_tests_allocate_nothing():
    """The detector's tick through the hold-off, its segments and the stored-volume test to
    its alarm (a slow rise of 0.05 mmHg/s on BD50 at 1 mL/h: below the trend band), locked."""
    o = _bd50_detector(1000)
    got = bytearray(2)

    def go():
        p = 10
        for i in range(40000):              # 33 min of ticks
            if i > 4000 and i % 400 == 0:
                p += 1                      # 1 mmHg per 20 s
            r = o.update(p, 50)
            if r:
                got[0] = r
                got[1] = p - 10
                return
    if micropython is None:
        go()
    else:
        _locked(go)
    assert got[0] == 3, got[0]              # the stored-volume test (occlusion._VOLUME) ...
    assert 12 <= got[1] <= 20, got[1]       # ... at 30 µL / 2100 nL/mmHg ≈ 14 mmHg of rise


def _closed_line_to_alarm(o, n, rise):
    """Feed detector o n ticks of a line that closes at 20 s and then rises rise(o) per tick
    (1/1000 mmHg), under heap_lock on micropython; (result, seconds after the line closed)."""
    got = bytearray(2)

    def go():
        pm = 10000                          # pressure in 1/1000 mmHg
        for i in range(n):
            if i > 400:
                pm += rise(o)
            r = o.update(pm // 1000, 50)
            if r:
                got[0] = r
                got[1] = (i - 400) // 20
                return
    if micropython is None:
        go()
    else:
        _locked(go)
    return got[0], got[1]


def check_occlusion_confirmation_allocates_nothing():
    """The trend test and its confirmation at twice the rate (100 mL/h on BD50: unprobed,
    T < 6 s, the sliding window and the doubled segment; 25 mL/h: the same window, the doubled
    segment and one at half the rate, _C_SLIDE2) to the alarm, locked: a closed line whose
    rise follows the rate."""
    o = _bd50_detector(100000)
    # 100 s of ticks, closed from 20 s on: 13.2 mmHg/s, 0.66 per tick (twice that doubled)
    r, t = _closed_line_to_alarm(o, 2000, lambda d: 1322 if d.probing else 661)
    assert o.confirm == 2                   # occlusion._C_SLIDE: the sliding window
    assert r == 1, r                        # the trend test (occlusion._TREND), confirmed
    assert t <= 8, t
    # ... and with the segment at half the rate (25 mL/h on BD50: _C_SLIDE2), 3.3 mmHg/s
    # from 20 s on (probing 1: twice the rate, 2: half)
    o = _bd50_detector(25000)
    r, t = _closed_line_to_alarm(o, 4000,
                                 lambda d: 330 if d.probing == 1 else (82 if d.probing else 165))
    assert o.confirm == 3
    assert r == 1, r
    assert t <= 20, t


def check_occlusion_probe_allocates_nothing():
    """The probe (5 mL/h on BD50: probed) to the alarm, locked: a closed line whose rise
    follows the probe's rate (half, then 1.5 ×); and the controller's tick through a probe's
    half rate, its 1.5 × and the pay-back of the deficit (the detector set to probe)."""
    o = _bd50_detector(5000)
    # 300 s of ticks, closed from 20 s on: 0.66 mmHg/s, 33 per tick (half, 1.5 x probing)
    r, t = _closed_line_to_alarm(
        o, 6000, lambda d: 16 if d.probing == 2 else (49 if d.probing == 3 else 33))
    assert o.probe
    assert r == 1, r                        # the trend test (occlusion._TREND), probed
    assert t <= 90, t
    def ticks(r, n):
        go = _ticks(r, n, live=True)
        return go if micropython is None else (lambda: _locked(go))
    r = Rig()
    r.cmd("PROG", "rate_ul_h=5000 vtbi_nl=35000000")
    r.cmd("START")
    r.run(15000)
    oc = r.ctl.occl
    assert oc.probe and r.state() == fsm.RUNNING
    oc.mode = 1                             # a candidate: the probe's half rate from here
    oc.probing = 2
    oc.pn = 0
    oc.run_d = 1 << 20
    ticks(r, 3 * oc.L + 20)()
    r.plunger = r.motor = r.inp.encoder
    assert r.ctl.probe_ahead < 0
    ticks(r, 5 * oc.L)()
    r.plunger = r.motor = r.inp.encoder
    assert r.ctl.probe_ahead >= -2 and oc.mode == 0


# requirements these checks verify (docs/safety/requirements.md; read by tests/test_fw_checks.py)
REQS = {
    "check_running_tick_allocates_nothing": ["REQ-SW-04"],
    "check_telemetry_between_ticks_allocates_nothing": ["REQ-SW-04", "REQ-COM-07"],
    "check_parser_allocates_nothing": ["REQ-SW-04", "REQ-COM-03"],
    "check_occlusion_tests_allocate_nothing": ["REQ-SW-04", "REQ-OCC-16"],
    "check_occlusion_confirmation_allocates_nothing": ["REQ-SW-04", "REQ-OCC-13"],
    "check_occlusion_probe_allocates_nothing": ["REQ-SW-04", "REQ-OCC-18"],
}
