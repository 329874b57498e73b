"""The command table (pumpcore.states COMMANDS) as the pump keeps it: every command in every
state, with authentication off and on, under both runtimes.

The oracle for *which* commands must always work unsigned is written here, from the
protocol's decisions (docs/protocol.md, *Commands*), not read from the table: stopping the
pump (PAUSE, STOP) and reading it never need a signature; everything that changes therapy,
alarms or settings does. Which state allows which command is read from the table, and the
pump is checked against it by sending each command in each state reached by real commands.
"""
from fwkit import Rig, crc_frame
from pumpcore import fsm
from pumpcore import alarms as AL
from pumpcore.auth import Auth, mac16
from pumpcore.settings import Settings

_KEY = b"0123456789abcdef0123456789abcdef"
# decided in the protocol, independently of the table
NEVER_SIGNED = ("HELLO", "STATUS", "HB", "LOG", "TLM", "SETTINGS", "LIB", "DRUG", "PAUSE", "STOP")
SIGNED = ("PROG", "STEP", "START", "RESUME", "STANDBY", "TITRATE", "BOLUS", "ACK", "SILENCE",
          "VITALS", "CFG")


def _table():
    # pumpcore.fsm forgets pumpcore.states on MicroPython once compiled; import it again
    import sys
    sys.modules.pop("pumpcore.states", None)
    from pumpcore import states
    return states


def _reach(name, auth=None, settings=None):
    """A rig in state `name`, reached by the commands a host would send."""
    r = Rig(settings=settings, auth=auth)
    req = auth is not None and auth.required
    if req:
        auth.required = False          # reach the state unsigned, then require signatures
    if name == "FAULT":
        r.ctl.enter_fault(b"test fault")
    elif name != "IDLE":
        kvo = " kvo_ul_h=1000" if name == "KVO" else ""
        vtbi = 20000 if name in ("COMPLETE", "KVO") else 9000000
        assert r.cmd("PROG", "rate_ul_h=600000 vtbi_nl=%d%s" % (vtbi, kvo)).find(b" OK") > 0
        if name == "STANDBY":
            assert b" OK" in r.cmd("STANDBY")
        elif name != "PROGRAMMED":
            assert b" OK" in r.cmd("START")
            r.run(200)
            if name == "PAUSED":
                assert b" OK" in r.cmd("PAUSE")
            elif name == "ALARM":
                r.inp.door_open = True
                r.run(500)
            elif name in ("COMPLETE", "KVO"):
                r.run_until(lambda x: x.state() != fsm.RUNNING, 60000)
    assert fsm.STATE_NAMES[r.state()] == name.encode(), (name, fsm.STATE_NAMES[r.state()])
    if req:
        auth.required = True
    return r


def _reply(r, word, signed=False, ctr=1):
    r.nid += 1
    body = "%d %s" % (r.nid, word)
    if word in SIGNED:
        body += " boot=%d" % r.ctl.boot
    if signed:
        b = (body + " ctr=%d" % ctr).encode()
        frame = crc_frame(b + b" mac=" + mac16(_KEY, b))
    else:
        frame = crc_frame(body)
    tx = r.send(frame, crc=False)
    for line in tx.split(b"\n"):
        if line.startswith(b"%d " % r.nid):
            return line.split(b"*")[0]
    raise AssertionError("no reply to %s: %r" % (word, tx))


def _not_allowed(rep):
    return b" ER STATE not allowed in " in rep or b" ER FAULT " in rep


def check_signature_policy_is_the_table():
    t = _table()
    guarded = tuple(w for w, _, c, _ in t.COMMANDS if c == t.GUARDED)
    words = tuple(c[0] for c in t.COMMANDS)
    assert sorted(guarded) == sorted(SIGNED), guarded
    assert sorted(words) == sorted(NEVER_SIGNED + SIGNED), words
    # decided mismatches (issue 11): STEP is allowed wherever PROG is (KVO included), and
    # occlusion settings may change in STANDBY (nothing is delivered there)
    assert "KVO" in t.command_states("STEP") and t.command_states("STEP") == t.command_states("PROG")
    assert "STANDBY" in dict(t.CFG_KEYS)["occl_mmhg"]
    assert t.command_states("STOP") == tuple(s for s in t.STATES if s != "IDLE")


def check_every_command_in_every_state_auth_off():
    t = _table()
    for st in t.STATES:
        for word in [c[0] for c in t.COMMANDS]:
            r = _reach(st)
            rep = _reply(r, word)
            allowed = st in t.command_states(word)
            if st == "FAULT" and word == "STOP":
                # allowed by the table; leaves FAULT only once the fault is gone
                assert rep.endswith(b" ER FAULT test fault"), rep
                continue
            assert allowed != _not_allowed(rep), (st, word, rep)
            assert b" ER AUTH" not in rep, (st, word, rep)
            if not allowed:
                assert fsm.STATE_NAMES[r.state()] == st.encode(), (st, word)


def check_every_command_in_every_state_auth_on():
    t = _table()
    s = Settings()
    s.auth = 1
    for st in t.STATES:
        for word in [c[0] for c in t.COMMANDS]:
            a = Auth(_KEY, 0)
            r = _reach(st, auth=a, settings=s)
            assert r.ctl.auth.required
            before = (r.state(), r.ctl.rate, r.ctl.alarms.act, a.counter)
            rep = _reply(r, word)
            allowed = st in t.command_states(word)
            assert allowed != _not_allowed(rep) or (st, word) == ("FAULT", "STOP"), (st, word, rep)
            if word in SIGNED:
                if allowed:
                    assert b" ER AUTH authentication required" in rep, (st, word, rep)
                assert (r.state(), r.ctl.rate, r.ctl.alarms.act, a.counter) == before, (st, word)
            else:
                assert b" ER AUTH" not in rep, (st, word, rep)
                # stopping always works unsigned
                if word in ("PAUSE", "STOP") and allowed and st != "FAULT":
                    assert b" OK state=" in rep, (st, word, rep)


def check_signed_frames_refused_without_a_key():
    t = _table()
    for st in ("IDLE", "PROGRAMMED", "RUNNING"):
        for word in [c[0] for c in t.COMMANDS]:
            r = _reach(st)
            before = (r.state(), r.ctl.rate)
            rep = _reply(r, word, signed=True)
            assert b" ER AUTH pump has no key" in rep, (st, word, rep)
            assert (r.state(), r.ctl.rate) == before
    # a ctr without a mac is a signed frame too
    r = _reach("PROGRAMMED")
    rep = r.cmd("START", "ctr=1")
    assert b" ER AUTH" in rep and r.state() == fsm.PROGRAMMED, rep


def check_unsigned_ack_and_silence_refused_under_auth():
    """Issue 11: an unsigned ACK cleared an occlusion alarm; an unsigned SILENCE kept a
    high-priority alarm silent. Under auth=1 both are refused and change nothing."""
    s = Settings()
    s.auth = 1
    a = Auth(_KEY, 0)
    r = _reach("ALARM", auth=a, settings=s)
    r.inp.door_open = False
    r.run(200)
    active = r.ctl.alarms.act
    assert active
    assert b" ER AUTH" in _reply(r, "ACK")
    assert r.ctl.alarms.act == active and r.state() == fsm.ALARM
    assert b" ER AUTH" in _reply(r, "SILENCE")
    assert r.ctl.alarms.audio(r.t)              # still sounding
    assert b" OK" in _reply(r, "ACK", signed=True, ctr=1)
    assert r.state() == fsm.PAUSED




def _heap_locked_reply(r, frame):
    """The pump's reply to `frame`, handled with the heap locked (MicroPython); on CPython
    the frame is simply sent."""
    try:
        import micropython
    except ImportError:
        return r.send(frame, crc=False)
    n = len(frame)
    r.t = (r.t + 1) & 0x3FFFFFFF
    micropython.heap_lock()
    try:
        out = r.ctl.step(r.t, r.inp, frame, n)
    finally:
        micropython.heap_unlock()
    return bytes(out.tx.buf[:out.tx.n])


def check_signed_refusals_allocate_nothing_before_the_mac():
    """REQ-COM-03: a signed frame refused for its counter (replayed, beyond the window), its
    boot, the state, or by a pump without a key is refused without computing a MAC, with
    the heap locked."""
    s = Settings()
    s.auth = 1
    a = Auth(_KEY, 5)
    r = _reach("PROGRAMMED", auth=a, settings=s)
    b = r.ctl.boot
    frames = (
        ("5 START boot=%d ctr=5" % b, b"ER AUTH replayed"),
        ("6 START boot=%d ctr=2000000" % b, b"ER AUTH ctr too far"),
        ("7 START boot=%d ctr=6" % (b + 1), b"ER BOOT"),
        ("8 TITRATE boot=%d rate_ul_h=1000 ctr=6" % b, b"ER STATE"),
        ("9 START boot=%d ctr=0" % b, b"ER AUTH"),
    )
    for body, want in frames:
        bb = body.encode()
        frame = crc_frame(bb + b" mac=" + mac16(_KEY, bb))
        rep = _heap_locked_reply(r, frame)
        assert want in rep, (body, rep)
    assert r.state() == fsm.PROGRAMMED and a.counter == 5
    k = Rig()                              # no key
    rep = _heap_locked_reply(k, crc_frame("1 STOP ctr=1 mac=0123456789ABCDEF"))
    assert b"1 ER AUTH pump has no key" in rep, rep


def check_mac_verification_allocates_nothing():
    """REQ-COM-03 / REQ-SEC-09 (issue 11: verifying a MAC on a refused frame allocated
    1,344 B, then 608 B): signed frames that reach the MAC check and are refused — a wrong
    MAC, a MAC over other bytes, a good MAC on a command refused after it (a rate out of
    range) — are handled with the heap locked and change nothing; a good frame is accepted
    with the heap unlocked and the MAC agrees with hashlib's (mac16, the oracle)."""
    s = Settings()
    s.auth = 1
    a = Auth(_KEY, 5)
    r = _reach("PROGRAMMED", auth=a, settings=s)
    b = r.ctl.boot
    body = ("5 START boot=%d ctr=6" % b).encode()
    good = mac16(_KEY, body)
    wrong = bytearray(good)
    wrong[15] = 48 if wrong[15] != 48 else 49
    long_body = ("6 PROG boot=%d rate_ul_h=1200001 vtbi_nl=1000000000 kvo_ul_h=0 ctr=7" % b).encode()
    cases = (
        (body + b" mac=" + bytes(wrong), b"5 ER AUTH wrong MAC"),
        (body + b" mac=" + mac16(_KEY, body + b" "), b"5 ER AUTH wrong MAC"),
        (body + b" mac=" + mac16(b"another key 0123456789abcdefghij", body), b"5 ER AUTH wrong MAC"),
        (long_body + b" mac=" + mac16(_KEY, long_body), b"6 ER RANGE"),   # MAC good, then refused
    )
    for frame, want in cases:
        rep = _heap_locked_reply(r, crc_frame(frame))
        assert want in rep, (frame, rep)
        assert r.state() == fsm.PROGRAMMED and a.counter == 5, rep
    rep = r.send(crc_frame(body + b" mac=" + good), crc=False)
    assert b"5 OK state=RUNNING" in rep and a.counter == 6, rep


def check_counter_file_semantics():
    """docs/protocol.md *Counter file*: missing 0, unreadable refuses every signed frame."""
    from pumpcore.auth import parse_counter, CTR_MAX
    assert parse_counter(None) == 0 and parse_counter(b"") == 0
    assert parse_counter(b"41") == 41
    for raw in (b"garbage", b"-3", b"99999999999", b"\xff\xff"):
        assert parse_counter(raw) == CTR_MAX, raw
    r = _reach("IDLE", auth=Auth(_KEY, CTR_MAX))
    assert b" ER AUTH" in _reply(r, "CFG", signed=True, ctr=CTR_MAX)
    assert b" ER AUTH" in _reply(r, "CFG", signed=True, ctr=1)


REQS = {
    "check_signature_policy_is_the_table": ["REQ-COM-06", "REQ-SEC-06"],
    "check_every_command_in_every_state_auth_off": ["REQ-COM-06"],
    "check_every_command_in_every_state_auth_on": ["REQ-COM-06", "REQ-SEC-06"],
    "check_signed_frames_refused_without_a_key": ["REQ-SEC-07"],
    "check_unsigned_ack_and_silence_refused_under_auth": ["REQ-SEC-06"],
    "check_signed_refusals_allocate_nothing_before_the_mac": ["REQ-COM-03", "REQ-SEC-08"],
    "check_counter_file_semantics": ["REQ-SEC-08"],
    "check_mac_verification_allocates_nothing": ["REQ-COM-03", "REQ-SEC-09"],
}
