"""Grammar-aware, stateful fuzzing of the command interpreter (issue 10).

Frames that pass the grammar and the CRC - and, in sessions with a key provisioned and
authentication required, correctly signed ones (ctr + mac; now and then a stale counter) -
in random sequences that reach every state (IDLE, PROGRAMMED, RUNNING, PAUSED, KVO,
STANDBY, ALARM, COMPLETE, FAULT), with the plant moving (the encoder follows the motor, the
force sensor breathes, doors open, air passes, lines block, batteries sag). Values are drawn
around every limit of the pump and of the drug library (inside, at, just outside).

Oracle, after every frame:
  * exactly one reply carries the frame's id;
  * a refused frame (ER …) changes nothing: state, program, staged steps, delivery, alarms
    (the heartbeat's COMM_LOSS apart), settings;
  * an accepted PROG is one the drug library allows, an accepted TITRATE one it allows
    (`hil_sim/envelope.py`, written from the library and the accepted frames only);
  * the delivery stays inside the therapy envelope of the accepted program (after every
    frame and every control tick);
  * no exception escapes the controller.

Portable (CPython and `micropython`). usage (cwd = firmware/):
    python ../tests/fw/gfuzz.py FRAMES SEED    ->  one JSON line:
    {"frames", "violations", "accepted", "refused", "states": {name: frames}, "examples": [...]}
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
if "../hil_sim" not in sys.path:
    sys.path.append("../hil_sim")
import random

import envelope as ENV
from fwkit import crc_frame, library, NL_PER_KSTEP
from pumpcore import fsm
from pumpcore import alarms as AL
from pumpcore.auth import Auth, mac16
from pumpcore.controller import Controller, Config, Inputs, TICK_MS

_MASK = 0x3FFFFFFF
KEY = b"gfuzz-device-key-0123"
LIBD = ENV.load_library("druglib.json")
DRUGS = [d for d in LIBD]
_COMM = 1 << AL.A_COMM_LOSS


def _pick(*xs):
    return xs[random.randrange(len(xs))]


def _around(lo, hi):
    """A value inside [lo, hi], at a bound, or just outside."""
    r = random.randrange(10)
    if r == 0:
        return lo
    if r == 1:
        return hi
    if r == 2:
        return max(lo - 1 - random.randrange(1 + lo // 10 + 1), 0)
    if r == 3:
        return hi + 1 + random.randrange(1 + hi // 10 + 1)
    return lo + random.randrange(hi - lo + 1)


def _lim(lim, scale=1):
    return _around(lim.hard_min * scale // scale, lim.hard_max)


def gen_prog():
    d = LIBD[_pick(*DRUGS)] if random.getrandbits(2) else None
    f = []
    form = random.randrange(6)
    if form == 0 or d is None and form >= 2:
        f.append("rate_ul_h=%d" % _pick(_around(100, 1200000), _around(100, 600000), _around(1000, 100000)))
        f.append("vtbi_nl=%d" % _pick(_around(1000, 3000000), _around(1000, 200000), _around(1000, 1000000000)))
    elif form == 1:
        f.append("vtbi_nl=%d" % _around(1000, 2000000))
        f.append("dur_ms=%d" % _around(1000, 600000))
    elif form == 2:
        f += ["dose_ug_kg=%d" % _lim(d.dose), "wt_g=%d" % _lim(d.weight), "over_ms=%d" % _lim(d.over)]
    elif form == 3 or form == 4:
        if d.dose_h is None:
            f.append("dose_ug_kg_h=%d" % random.randrange(1000))
        else:
            f.append("dose_ug_kg_h=%d" % _lim(d.dose_h))
        f.append("wt_g=%d" % _lim(d.weight))
        f.append(_pick("vtbi_nl=%d" % _around(1000, 3000000), "dur_ms=%d" % _around(1000, 600000)))
        if form == 4:
            f += ["load_ug_kg=%d" % _lim(d.dose), "load_ms=%d" % _lim(d.over)]
        if random.getrandbits(2) == 0:
            f.append("conc_ug_ml=%d" % _pick(*(d.concs + [d.conc + 1])))
    else:
        f.append("steps=%d" % random.randint(0, 9))
    if d is not None:
        f.append("drug=%s" % d.name)
    if random.getrandbits(1):
        f.append("confirm=%d" % random.getrandbits(1))
    if random.getrandbits(2) == 0:
        f.append("kvo_ul_h=%d" % _pick(0, 99, 100, 500, 1000, 1001, 5000, 20000, 20001))
    for i in range(len(f) - 1, 0, -1):   # shuffle (MicroPython's random has none)
        j = random.randrange(i + 1)
        f[i], f[j] = f[j], f[i]
    return "PROG " + " ".join(f)


def gen_frame(ctl):
    w = random.randrange(30)
    if w < 6:
        return gen_prog()
    if w < 8:
        r = "STEP i=%d rate_ul_h=%d " % (_around(0, 7), _pick(_around(100, 1200000), _around(1000, 200000)))
        return r + _pick("vol_nl=%d" % _around(1000, 2000000), "dur_ms=%d" % _around(1, 300000))
    if w < 11:
        return _pick("START", "RESUME", "START", "RESUME", "STANDBY")
    if w < 13:
        return _pick("PAUSE", "STOP", "PAUSE")
    if w < 15:
        return "ACK"
    if w < 18:
        r = ctl.rate if ctl.rate > 0 else 10000
        v = _pick("rate_ul_h=%d" % _pick(_around(100, 1200000), r * random.randint(1, 8) // 4 + 1, r + 1, r - 1),
                  "dose_ug_kg_h=%d" % _around(0, 7000))
        return "TITRATE " + v + _pick("", " confirm=1", " confirm=0")
    if w < 21:
        return "BOLUS vol_nl=%d rate_ul_h=%d" % (_around(1000, 6000000), _around(100, 250000))
    if w < 23:
        if random.getrandbits(2):
            return "VITALS sbp=%d dbp=%d hr=%d spo2=%d" % (random.randint(90, 140), random.randint(50, 90),
                                                          random.randint(55, 100), random.randint(93, 100))
        return "VITALS sbp=%d dbp=%d hr=%d spo2=%d" % (_around(1, 350), _around(1, 300), _around(1, 350), _around(1, 100))
    if w < 25:
        keys = [("occl_mmhg", _around(103, 1034)), ("occl_level", _pick("L", "M", "H", "X")),
                ("interlock", _pick(0, 1, 2)), ("vitals_age_ms", _around(10000, 3600000)),
                ("syr_nl", _pick(0, _around(1000000, 100000000))), ("hb_ms", _pick(0, _around(1000, 600000))),
                ("hb_action", _pick("pause", "continue")), ("callback_ms", _around(10000, 3600000)),
                ("auth", _pick(0, 1))]
        n = random.randint(1, 3)
        return "CFG " + " ".join(["%s=%s" % kv for kv in [keys[random.randrange(len(keys))] for _ in range(n)]])
    return _pick("STATUS", "HELLO", "HB", "SILENCE", "SETTINGS", "LOG from=1",
                 "TLM period_ms=%d" % _pick(0, 50, 1000, 9), "LOG from=0 max=%d" % _around(1, 32))


def snap(ctl):
    """Everything a refused frame must leave as it was."""
    n = ctl.nseg
    al = ctl.alarms
    return (ctl.fsm.state, n, tuple([ctl.seg_rate[i] for i in range(n)]), tuple([ctl.seg_vol[i] for i in range(n)]),
            ctl.seg, ctl.rate, ctl.vtbi, ctl.drug, ctl.dose_ug, ctl.wt_g, ctl.conc, ctl.dose_h, ctl.kvo,
            ctl.bolus_on, ctl.bolus_rate, ctl.line.target_nl, ctl.line.limit_nl, ctl.delivered_nl(),
            ctl.st_mask, tuple([ctl.st_rate[i] for i in range(8)]), tuple([ctl.st_vol[i] for i in range(8)]),
            al.act & ~_COMM, al.cond & ~_COMM, ctl.settings.encode(), ctl.syr_nl, ctl.tlm_period,
            ctl.bol_i, ctl.started)


class Session:
    def __init__(self, auth, fault):
        a = None
        if auth:
            a = Auth(KEY, 0, None)
        self.ctl = Controller(Config(NL_PER_KSTEP), library(), fault=fault, auth=a)
        if auth:
            self.ctl.settings.auth = 1
            a.required = True
        self.auth = auth
        self.ctr = 0
        self.inp = Inputs()
        self.inp.pressure_mmhg = 20
        self.t = 0x3FFFFFFF - 30000
        self.vt = 0              # unwrapped virtual time (ms) for the envelope
        self.rid = 0
        self.env = ENV.Envelope(LIBD)
        self.active = False
        self.t_start = -1
        self.staged = {}
        self.boot = None
        self.blocked = 0         # ticks the line stays blocked
        self.last = None
        self.step(b"")
        r = self.send_raw("HELLO")[1]
        q = r.find(" boot=")
        if q >= 0:               # issue 11's reboot guard: guarded requests carry boot=N
            self.boot = int(r[q + 6:].split(" ")[0].split("*")[0])

    def step(self, data):
        out = self.ctl.step(self.t, self.inp, data, len(data))
        self.inp.encoder += out.steps
        return bytes(out.tx.buf[:out.tx.n]).decode()

    def frame_for(self, body):
        word = body.split(" ")[0]
        guarded = word in ("PROG", "STEP", "START", "RESUME", "STANDBY", "TITRATE", "BOLUS", "ACK",
                           "SILENCE", "VITALS", "CFG")
        self.rid = self.rid % 60000 + 1
        line = "%d %s" % (self.rid, body)
        if guarded and self.boot is not None:
            line += " boot=%d" % self.boot
        if guarded and self.auth:
            self.ctr += 1
            c = self.ctr if random.randrange(40) else max(self.ctr - 5, 0)
            line += " ctr=%d" % c
            b = line.encode()
            return b + b" mac=" + mac16(KEY, b)
        return line.encode()

    def send_raw(self, body):
        f = crc_frame(self.frame_for(body))
        return f, self.step(f)

    def tick(self):
        self.t = (self.t + TICK_MS) & _MASK
        self.vt += TICK_MS
        inp = self.inp
        if self.blocked > 0:
            self.blocked -= 1
            inp.pressure_mmhg = 1100
        else:
            inp.pressure_mmhg = 20 + (self.vt // TICK_MS) % 3
        r = random.randrange(4000)
        if r == 0:
            inp.door_open = not inp.door_open
        elif r == 1:
            inp.air = not inp.air
        elif r == 2:
            self.blocked = random.randint(20, 400)
        elif r == 3:
            inp.end_stop = not inp.end_stop
        elif r == 4:
            inp.on_battery = not inp.on_battery
            inp.battery_mv = _pick(4000, 3500, 3300)
        elif r < 40 and (inp.door_open or inp.air or inp.end_stop):
            inp.door_open = inp.air = inp.end_stop = False
        self.step(b"")


def run(frames, seed):
    random.seed(seed)
    res = {"frames": 0, "violations": 0, "accepted": 0, "refused": 0, "examples": []}
    states = {}
    names = fsm.STATE_NAMES

    def bad(s, why, body):
        res["violations"] += 1
        if len(res["examples"]) < 12:
            res["examples"].append("%s [%s] %s" % (why, names[s.ctl.fsm.state].decode(), body))

    s = None
    nses = 0
    while res["frames"] < frames:
        if s is None or random.randrange(600) == 0:
            nses += 1                # every 8th session boots with a faulty library (FAULT)
            s = Session(random.getrandbits(1), b"library test fault" if nses % 8 == 2 else None)
        ctl = s.ctl
        for _ in range(_pick(0, 0, 0, 0, 1, 1, 2, 3, 10, 80)):
            s.tick()
            if s.active and s.t_start >= 0:
                why = s.env.check(s.vt - s.t_start, ctl.delivered_nl(), ctl.kvo_nl(), ctl.current_rate())
                if why:
                    bad(s, "outside the envelope: " + why[0], "(tick)")
                    s.active = False
        retry = s.last is not None and random.randrange(50) == 0
        if retry:
            body, f = s.last
        else:
            f = None
            while f is None or len(f) > 160:      # the grammar's longest frame
                body = gen_frame(ctl)
                f = crc_frame(s.frame_for(body))
        before = snap(ctl)
        e_ms = ctl.el_ms
        basal = ctl.line.target_nl
        try:
            tx = s.step(f)
        except Exception as e:  # noqa: BLE001 - anything escaping the controller is a finding
            bad(s, "exception %r" % (e,), body)
            s = None
            res["frames"] += 1
            continue
        res["frames"] += 1
        st = names[ctl.fsm.state]
        states[st] = states.get(st, 0) + 1
        rid = f.split(b" ", 1)[0].decode()
        mine = [ln for ln in tx.split("\n") if ln.startswith(rid + " ")]
        if len(mine) != 1:
            bad(s, "%d replies: %s to %r" % (len(mine), tx[:300].replace("\n", " | "), f), body)
            continue
        reply = mine[0].split("*")[0]
        if retry:
            if snap(ctl) != before:
                bad(s, "a retried frame changed something", body)
            continue
        s.last = (body, f)
        if reply.split(" ")[1] == "ER":
            res["refused"] += 1
            if snap(ctl) != before:
                bad(s, "refused frame changed something: " + reply, body)
            continue
        res["accepted"] += 1
        word = body.split(" ")[0]
        fields = ENV.parse_fields(body)
        if word == "STEP":
            rf = ENV.parse_fields(reply)
            s.staged[rf["i"]] = (rf["rate_ul_h"], rf["vol_nl"])
        elif word == "PROG":
            steps = None
            if "steps" in fields:
                steps = [s.staged[i] for i in range(fields["steps"])]
                s.staged = {}
            why = s.env.program(fields, steps)
            if why is not None:
                bad(s, "accepted a program the library refuses (%s): %s" % (why, reply), body)
            s.active = why is None
            s.t_start = -1
        elif word in ("START", "RESUME") and s.active and s.t_start < 0:
            s.t_start = s.vt
        elif word == "STOP":
            s.env.stop()
            s.active = False
        elif word == "TITRATE" and s.active and not before[13]:
            rate = ENV.parse_fields(reply)["rate_ul_h"]
            why = s.env.titration_refusal(rate, e_ms, basal, fields.get("confirm") == 1, ctl.wt_g)
            if why is not None:
                bad(s, "accepted a titration the library refuses (%s): %s" % (why, reply), body)
        if s.active and s.t_start >= 0:
            why = s.env.check(s.vt - s.t_start, ctl.delivered_nl(), ctl.kvo_nl(), ctl.current_rate())
            if why:
                bad(s, "outside the envelope: " + why[0], body)
                s.active = False
    res["states"] = dict([(k.decode(), v) for k, v in states.items()])
    return res


def main(argv):
    frames = int(argv[1]) if len(argv) > 1 else 2000
    seed = int(argv[2]) if len(argv) > 2 else 1
    import json
    print(json.dumps(run(frames, seed)))


if __name__ == "__main__":
    main(sys.argv)
