"""Controller behaviour through frames: programs, states, limits, alarms, retries."""
from fwkit import Rig, crc_frame, TICK_MS
from pumpcore import fsm
from pumpcore.controller import ticks_diff, ticks_add


def snapshot(r):
    c = r.ctl
    return (c.fsm.state, c.rate, c.vtbi, c.drug, c.line.steps, c.alarm, c.tlm_period, c.nseg,
            c.kvo, c.alarms.act, c.settings.values())


def check_rate_program_delivers_exactly():
    r = Rig()
    assert r.cmd("PROG", "rate_ul_h=60000 vtbi_nl=1000000").startswith(b"1 OK rate_ul_h=60000 vtbi_nl=1000000 dur_ms=60000")
    assert r.cmd("START") == b"2 OK state=RUNNING"
    r.run(61000)
    assert r.state() == fsm.COMPLETE
    assert r.steps == 1000000 * 1000 // 217078, r.steps      # no slack in this rig
    assert r.ctl.line.delivered_nl <= 1000000
    assert 1000000 - r.ctl.line.delivered_nl < 218


def check_ketamine_dose_program():
    r = Rig()
    rep = r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    assert rep == b"1 OK drug=ketamine dose_ug=35000 rate_ul_h=52500 vtbi_nl=35000000 dur_ms=2400000 soft=0", rep


def check_hard_limit_refused_and_named():
    r = Rig()
    before = snapshot(r)
    rep = r.cmd("PROG", "drug=ketamine dose_ug_kg=5000 wt_g=70000 over_ms=2400000")
    assert rep.startswith(b"1 ER LIMIT dose_ug_kg above hard max 1000"), rep
    assert snapshot(r) == before


def check_soft_limit_needs_confirm():
    r = Rig()
    rep = r.cmd("PROG", "drug=ketamine dose_ug_kg=800 wt_g=70000 over_ms=2400000")
    assert rep.startswith(b"1 ER SOFT"), rep
    assert r.state() == fsm.IDLE
    rep = r.cmd("PROG", "drug=ketamine dose_ug_kg=800 wt_g=70000 over_ms=2400000 confirm=1")
    assert rep.startswith(b"2 OK") and rep.endswith(b"soft=1"), rep
    assert r.state() == fsm.PROGRAMMED


def check_unknown_drug():
    r = Rig()
    assert r.cmd("PROG", "drug=fentanyl dose_ug_kg=500 wt_g=70000 over_ms=2400000").startswith(b"1 ER DRUG")


def check_out_of_state_commands_change_nothing():
    r = Rig()
    for w in ("START", "PAUSE", "RESUME"):
        before = snapshot(r)
        rep = r.cmd(w)
        assert b" ER STATE " in rep, rep
        assert snapshot(r) == before


def check_pause_resume_stop():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=100000 vtbi_nl=10000000")
    r.cmd("START")
    r.run(1000)
    s1 = r.steps
    assert r.cmd("PAUSE") == b"3 OK state=PAUSED"
    r.run(5000)
    assert r.steps == s1
    assert r.cmd("RESUME") == b"4 OK state=RUNNING"
    r.run(1000)
    assert r.steps > s1
    assert r.cmd("STOP") == b"5 OK state=IDLE"
    assert r.ctl.rate == 0


def check_range_errors():
    r = Rig()
    assert r.cmd("PROG", "rate_ul_h=5 vtbi_nl=1000000").startswith(b"1 ER RANGE")
    assert r.cmd("PROG", "rate_ul_h=5000000 vtbi_nl=1000000").startswith(b"2 ER RANGE")
    assert r.cmd("PROG", "rate_ul_h=1000 vtbi_nl=9999999999").startswith(b"3 ER ARG")   # not a number: >= 2**30
    assert r.cmd("PROG", "rate_ul_h=100 vtbi_nl=1000000000").startswith(b"4 ER RANGE")  # > 96 h
    assert r.cmd("PROG", "rate_ul_h=1000").startswith(b"5 ER ARG")
    assert r.cmd("PROG", "rate_ul_h=1000 vtbi_nl=1000 x=1").startswith(b"6 ER ARG")
    assert r.cmd("PROG", "rate_ul_h=1000 rate_ul_h=1000 vtbi_nl=1000").startswith(b"7 ER ARG")
    assert r.state() == fsm.IDLE


def check_corrupt_overlong_unknown_frames():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=100000 vtbi_nl=10000000")
    before = snapshot(r)
    good = crc_frame("9 START")
    bad = bytearray(good)
    bad[2] = ord("X")
    tx = r.send(bytes(bad)[:-1], crc=False)
    assert tx.startswith(b"? ER CRC"), tx
    tx = r.send(b"9 " + b"A" * 300, crc=False)
    assert tx.startswith(b"? ER LEN"), tx
    tx = r.send("10 FLY")
    assert tx.startswith(b"10 ER UNKNOWN"), tx
    tx = r.send("11 START", crc=False)
    assert tx.startswith(b"11 ER CRC"), tx
    tx = r.send(b"\x00\xff\x01 garbage", crc=False)
    assert b"ER SYNTAX" in tx, tx
    assert snapshot(r) == before


def check_retry_is_answered_not_executed():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=100000 vtbi_nl=10000000")
    a = r.send("7 START")
    r.run(1000)
    steps = r.ctl.line.steps
    b = r.send("7 START")
    assert a.split(b"\n")[0] == b.split(b"\n")[0]
    assert r.state() == fsm.RUNNING and r.ctl.line.steps == steps
    c = r.send("7 PAUSE")          # same id, different request: executed
    assert c.startswith(b"7 OK state=PAUSED"), c


def check_occlusion_alarm_stops_motor():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=100000 vtbi_nl=10000000")
    r.cmd("START")
    r.run(1000)
    r.inp.pressure_mmhg = 400          # at the limit (level M): fixed-threshold backstop
    r.run(200)
    assert r.state() == fsm.ALARM
    assert r.ctl.out.alarm_prio == 3
    s = r.steps
    r.run(25000)                       # back-off runs (reverse only), then the motor rests
    assert r.steps <= s
    assert not r.ctl.out.enable
    assert b"ER STATE alarm condition still present" in r.cmd("ACK")
    r.inp.pressure_mmhg = 290      # below the limit but not clear of it: still refused
    assert b"ER STATE alarm condition still present" in r.cmd("ACK")
    assert r.state() == fsm.ALARM
    r.inp.pressure_mmhg = 30
    assert r.cmd("ACK").endswith(b"state=PAUSED")
    assert r.ctl.out.alarm_prio == 0 or r.run(50).ctl.out.alarm_prio == 0


def check_occlusion_debounce_ignores_spike():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=100000 vtbi_nl=10000000")
    r.cmd("START")
    r.inp.pressure_mmhg = 500
    r.run(100)                      # two ticks: below the 3-tick debounce
    r.inp.pressure_mmhg = 20
    r.run(1000)
    assert r.state() == fsm.RUNNING


def check_status_and_hello():
    r = Rig()
    rep = r.send("1 HELLO", crc=False)
    assert rep.startswith(b"1 OK dev=") and b"proto=1" in rep and b" boot=" in rep and b"libh=" in rep
    rep = r.send("2 STATUS", crc=False)
    assert rep.startswith(b"2 OK state=IDLE drug=- rate_ul_h=0"), rep


def check_telemetry_period():
    r = Rig()
    assert r.cmd("TLM", "period_ms=9").startswith(b"1 ER RANGE period_ms must be 0 or 10..60000")
    assert r.cmd("TLM", "period_ms=60001").startswith(b"2 ER RANGE")
    assert r.cmd("TLM", "period_ms=10") == b"3 OK period_ms=10"
    assert r.cmd("TLM", "period_ms=60000") == b"4 OK period_ms=60000"
    assert r.cmd("TLM", "period_ms=1000") == b"5 OK period_ms=1000"
    n = 0
    for _ in range(100):
        r.t = (r.t + TICK_MS) & 0x3FFFFFFF
        out = r.ctl.step(r.t, r.inp, b"", 0)
        if out.tx.n and bytes(out.tx.buf[:out.tx.n]).startswith(b"! TL "):
            n += 1
    assert n == 5, n


def _tl(out):
    """The fields of the `! TL` frame in this step's output (None without one)."""
    for line in bytes(out.tx.buf[:out.tx.n]).split(b"\n"):
        if line.startswith(b"! TL "):
            return dict(t.split(b"=") for t in line.split(b"*")[0].split(b" ")[2:])
    return None


def check_telemetry_between_control_ticks():
    """TLM period_ms=10 with the board stepping at wake_at(): a frame every 10 ms of the
    pump clock (t_ms), most of them between control ticks, each repeating the figures of the
    latest tick, which ran age_ms before it."""
    r = Rig()
    r.cmd("PROG", "rate_ul_h=600000 vtbi_nl=90000000")
    r.cmd("START")
    r.run(500)
    t_tick = r.t                             # control ticks run at t_tick + k * TICK_MS
    assert r.cmd("TLM", "period_ms=10") == b"3 OK period_ms=10"
    ctl = r.ctl
    frames = []
    while ticks_diff(r.t, t_tick) < 1000:
        w = ctl.wake_at()
        assert 0 < ticks_diff(w, r.t) <= 12, ticks_diff(w, r.t)    # never later than a frame
        r.t = w
        out = ctl.step(r.t, r.inp, b"", 0)
        r._plant(out)
        f = _tl(out)
        if f is not None:
            assert int(f[b"t_ms"]) == r.t, f
            assert int(f[b"age_ms"]) == ticks_diff(r.t, t_tick) % TICK_MS, f
            frames.append(f)
        else:
            assert ticks_diff(r.t, t_tick) % TICK_MS == 0      # a control tick, no frame due
    assert len(frames) >= 98, len(frames)
    ts = [int(f[b"t_ms"]) for f in frames]
    # the first frame waited for the wire time of the OK and itself (11 ms); then every 10 ms
    assert all(b - a == 10 for a, b in zip(ts, ts[1:])), ts
    assert len(set(int(f[b"age_ms"]) for f in frames)) == 5
    for a, b in zip(frames, frames[1:]):
        if int(b[b"age_ms"]) > int(a[b"age_ms"]):   # the same tick: its figures, again
            assert all(a[k] == b[k] for k in a if k not in (b"t_ms", b"age_ms")), (a, b)
        else:                                # a new tick: RUNNING time moved on by one tick
            assert int(b[b"el_ms"]) == int(a[b"el_ms"]) + TICK_MS, (a, b)
    # telemetry off: the board wakes for control ticks only
    assert r.cmd("TLM", "period_ms=0") == b"4 OK period_ms=0"
    assert ticks_diff(ctl.wake_at(), t_tick) % TICK_MS == 0


def check_clock_wrap_helpers():
    assert ticks_diff(5, 0x3FFFFFFF) == 6
    assert ticks_diff(0x3FFFFFFF, 5) == -6
    assert ticks_add(0x3FFFFFFF, 1) == 0
    assert ticks_add(100, 50) == 150


# requirements these checks verify (docs/safety/requirements.md; read by tests/test_fw_checks.py)
REQS = {
    "check_telemetry_between_control_ticks": ["REQ-COM-07"],
    "check_untrusted_id_on_malformed_frame_without_crc": ["REQ-COM-02"],
    "check_rate_program_delivers_exactly": ["REQ-VOL-02"],
    "check_hard_limit_refused_and_named": ["REQ-LIM-01", "REQ-LIM-03"],
    "check_soft_limit_needs_confirm": ["REQ-LIM-02"],
    "check_unknown_drug": ["REQ-DRG-01"],
    "check_out_of_state_commands_change_nothing": ["REQ-COM-02"],
    "check_corrupt_overlong_unknown_frames": ["REQ-COM-01", "REQ-COM-02"],
    "check_retry_is_answered_not_executed": ["REQ-COM-04"],
    "check_occlusion_alarm_stops_motor": ["REQ-ALM-01", "REQ-ALM-03"],
    "check_clock_wrap_helpers": ["REQ-SW-05"],
}


def check_untrusted_id_on_malformed_frame_without_crc():
    # line noise turned the '*' of "12 STATUS*8B5B" into a letter: the frame looks typed
    # without a CRC and is malformed; its id cannot be trusted, so the reply says "?"
    r = Rig()
    tx = r.send(b"12 STATUSX8B5B", crc=False)
    assert tx.startswith(b"? ER SYNTAX"), tx
    tx = r.send(b"13 STATUS 8B5B", crc=False)
    assert tx.startswith(b"? ER SYNTAX"), tx
    # with a valid CRC the id is trusted: a genuine grammar error names the request
    tx = r.send("14 STATUS bogus")
    assert tx.startswith(b"14 ER SYNTAX"), tx
