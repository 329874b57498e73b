"""Frame fuzzer for the firmware's parser and command interpreter. Portable; the benchmark
and tests run it under the real `micropython` interpreter.

usage (cwd = firmware/):  micropython ../tests/fw/fuzz.py FRAMES SEED
prints one JSON object: {"frames", "failures", "crashes", "hangs", "alloc", "changes",
"replies", "by_kind", "by_state", "max_us", "max_alloc", "examples"}.

Malformed frames, from a seeded generator: random bytes, bit flips of valid frames,
truncations of valid frames, overlong lines, lines of only separators, and frames with a
*valid CRC* but absurd arguments (out of range, negative, huge, non-numeric, duplicated,
unknown keys, too many fields, unknown words). They are sent with the pump in every state it
can reach (IDLE, PROGRAMMED, RUNNING, PAUSED, ALARM, COMPLETE, and any others the table adds
that the driver can reach). After every frame:

* crash — the controller raised;
* hang — one step took longer than HANG_US;
* alloc — under micropython, the step allocated more than ALLOC_BOUND bytes of heap;
* change — the therapy changed: state, program (rate, VTBI, drug), delivered volume or the
  active alarm — a malformed frame must change nothing (docs/protocol.md);
* replies — not exactly one reply line (a line that is not blank gets one answer).
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
import random
import time

from pumpcore.controller import Controller, Config, Inputs, TICK_MS
from pumpcore.druglib import DrugLibrary
from pumpcore import fsm
from pumpcore import protocol as P

try:
    import gc
    _mem = gc.mem_alloc
except (ImportError, AttributeError):  # CPython
    _mem = None
IS_MP = sys.implementation.name == "micropython"
HANG_US = 100000         # default: a step that takes 100 ms (2 ticks; ~1000x a typical one) is a hang
# (argv[3] overrides it: a wall-clock bound only means something on an idle machine, so the
# tests pass a bound far above any scheduling delay and leave true hangs to their timeout)
ALLOC_BOUND = 0          # bytes a step on a malformed frame may allocate (see docs/safety)
T0 = 0x3FFFFFFF - 60000
K = 217078

_WORDS = (b"PROG", b"START", b"PAUSE", b"RESUME", b"STOP", b"ACK", b"TLM", b"STEP", b"TITRATE",
          b"BOLUS", b"STANDBY", b"SILENCE", b"VITALS", b"HB", b"CFG", b"LOG", b"STATUS",
          b"HELLO")
_KEYS = (b"rate_ul_h", b"vtbi_nl", b"dur_ms", b"drug", b"dose_ug_kg", b"wt_g", b"over_ms",
         b"confirm", b"period_ms", b"vol_nl", b"i", b"steps", b"kvo_ul_h", b"dose_ug_kg_h",
         b"load_ug_kg", b"load_ms", b"occl_mmhg", b"hb_ms", b"auth", b"from",
         b"max", b"sbp", b"dbp", b"hr", b"spo2", b"conc_ug_ml", b"interlock", b"syr_nl")
_ABSURD = (b"-1", b"0", b"99999999999999999999", b"1200001", b"2147483648", b"1073741824",
           b"-2147483649", b"+5", b"0x10", b"1e9", b"", b"NaN", b"9" * 32, b"1.5", b"propofol",
           b"ketamine", b"00000000000000000000000000000001", b"\x7f", b"=", b"==", b"1=2")
_VALID = (b"PROG rate_ul_h=52500 vtbi_nl=35000000", b"START", b"PAUSE", b"RESUME", b"STOP",
          b"ACK", b"TLM period_ms=1000", b"STATUS", b"HELLO",
          b"PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")


_GUARDED = (b"PROG", b"STEP", b"START", b"RESUME", b"STANDBY", b"TITRATE", b"BOLUS", b"ACK",
            b"SILENCE", b"VITALS", b"CFG")


def crc_frame(body):
    c = P.crc16(body, 0, len(body))
    return body + b"*%04X\n" % c


class Pump:
    """A controller and a clock; helpers to put it into each state."""

    def __init__(self, lib):
        self.ctl = Controller(Config(K), lib)
        self.inp = Inputs()
        self.inp.pressure_mmhg = 20
        self.t = T0
        self.rid = 60000
        self.ctl.step(self.t, self.inp, b"", 0)

    def tick(self, n=1):
        for _ in range(n):
            self.t = (self.t + TICK_MS) & 0x3FFFFFFF
            out = self.ctl.step(self.t, self.inp, b"", 0)
            self.inp.encoder += out.steps      # an ideal mechanism: the encoder follows

    def cmd(self, body):
        self.rid = self.rid + 1 if self.rid < 65000 else 60000
        w = body.split(b" ", 1)
        if w[0] in _GUARDED:            # guarded commands name this boot (protocol v1)
            body = w[0] + b" boot=%d" % self.ctl.boot + (b" " + w[1] if len(w) > 1 else b"")
        f = crc_frame(b"%d %s" % (self.rid, body))
        out = self.ctl.step(self.t, self.inp, f, len(f))
        self.inp.encoder += out.steps

    def state(self):
        return fsm.STATE_NAMES[self.ctl.fsm.state]

    def goto(self, name):
        """Drive the pump into state `name` with valid commands and sensor events."""
        self.inp.door_open = False
        self.inp.air = False
        self.inp.pressure_mmhg = 20
        for _ in range(3):
            self.cmd(b"ACK")
            self.cmd(b"STOP")
            self.tick(2)
        if name == b"IDLE":
            return self.state() == name
        self.cmd(b"PROG rate_ul_h=600000 vtbi_nl=1000000")
        if name == b"PROGRAMMED":
            return self.state() == name
        self.cmd(b"START")
        self.tick(4)
        if name == b"RUNNING":
            return self.state() == name
        if name == b"PAUSED":
            self.cmd(b"PAUSE")
        elif name == b"STANDBY":
            self.cmd(b"PAUSE")
            self.cmd(b"STANDBY")
        elif name == b"ALARM":
            self.inp.door_open = True
            self.tick(10)
            self.inp.door_open = False
        elif name in (b"COMPLETE", b"KVO"):
            if name == b"COMPLETE":
                self.cmd(b"STOP")
                self.cmd(b"PROG rate_ul_h=600000 vtbi_nl=1000000 kvo_ul_h=0")
                self.cmd(b"START")
            self.tick(200)     # 1 mL at 600 mL/h: 6 s
        return self.state() == name


def _delivered(ctl):
    d = getattr(ctl, "delivered_nl", None)
    return d() if callable(d) else ctl.line.delivered_nl


def snapshot(ctl):
    a = ctl.alarm
    return (ctl.fsm.state, ctl.rate, ctl.vtbi, ctl.drug, _delivered(ctl), a)


def gen(rnd, kind):
    """One malformed line (bytes, ending in LF unless it is overlong)."""
    if kind == 0:                       # random bytes
        n = rnd.randint(1, 150)
        b = bytearray(n)
        for i in range(n):
            c = rnd.getrandbits(8)
            b[i] = 32 if c == 10 else c
        return bytes(b) + b"\n"
    if kind == 1:                       # one or more bit flips of a valid frame
        while True:
            f = bytearray(crc_frame(b"%d %s" % (rnd.randint(1, 65535), rnd.choice(_VALID))))
            for _ in range(rnd.randint(1, 3)):
                i = rnd.randint(0, len(f) - 2)
                f[i] ^= 1 << rnd.getrandbits(3)
                if f[i] == 10:
                    f[i] = 11
            # a flip that undoes another, or flips in body and CRC digits that happen to
            # agree, give a *valid* frame (CRC-16's residual error rate, docs/safety): skip
            if not _crc_ok(f):
                return bytes(f)
    if kind == 2:                       # truncation of a valid frame
        f = crc_frame(b"%d %s" % (rnd.randint(1, 65535), rnd.choice(_VALID)))
        return f[:rnd.randint(1, len(f) - 2)] + b"\n"
    if kind == 3:                       # overlong line
        n = rnd.randint(161, 700)
        return crc_frame(b"1 PROG rate_ul_h=1000 vtbi_nl=" + b"9" * (n - 30))
    if kind == 4:                       # valid CRC, absurd arguments / words / structure
        w = rnd.choice(_WORDS)
        parts = [b"%d" % rnd.randint(1, 65535), w]
        if rnd.getrandbits(1):
            parts.append(b"boot=1")     # the Controller's boot: absurd fields reach the handlers
        for _ in range(rnd.randint(1, 14)):
            k = rnd.choice(_KEYS)
            v = rnd.choice(_ABSURD)
            parts.append(k + b"=" + v)
        if rnd.getrandbits(2) == 0:
            parts[1] = b"X" + w     # unknown word
        body = b" ".join(parts)
        if len(body) > 150:
            body = body[:150]
        return crc_frame(body)
    if kind == 5:                       # valid CRC, malformed id or separators
        ids = (b"0", b"65536", b"-1", b"abc", b"123456", b"!", b"?", b"", b"1.0")
        body = rnd.choice(ids) + b" " + rnd.choice(_WORDS)
        if rnd.getrandbits(1):
            body = body.replace(b" ", b"  ")
        return crc_frame(body)
    # kind 6: a valid therapy command without its CRC, or with a CRC of another frame
    body = b"%d %s" % (rnd.randint(1, 65535), rnd.choice(_VALID[:8]))
    if rnd.getrandbits(1):
        return body + b"\n"
    return body + b"*%04X\n" % ((P.crc16(body, 0, len(body)) + rnd.randint(1, 65535)) & 0xFFFF)


def _crc_ok(f):
    star = f.find(b"*")
    if star < 0 or len(f) - star != 6:
        return False
    try:
        return int(bytes(f[star + 1:star + 5]), 16) == P.crc16(f, 0, star) and \
            bytes(f[star + 1:star + 5]).upper() == bytes(f[star + 1:star + 5])
    except ValueError:
        return False


def run(frames, seed):
    rnd = random
    rnd.seed(seed)
    lib = DrugLibrary.load("druglib.json")
    pump = Pump(lib)
    ctl = pump.ctl
    states = []
    for name in (b"IDLE", b"PROGRAMMED", b"RUNNING", b"PAUSED", b"ALARM", b"COMPLETE",
                 b"STANDBY", b"KVO"):
        if name in fsm.STATE_NAMES and pump.goto(name):
            states.append(name)
    res = {"frames": 0, "crashes": 0, "hangs": 0, "alloc": 0, "changes": 0, "replies": 0,
           "max_us": 0, "max_alloc": 0, "by_kind": [0] * 7, "by_state": {}, "examples": []}
    fi = 0
    for si in range(len(states)):
        name = states[si]
        per_state = (frames - fi) // (len(states) - si)
        pump.goto(name)
        got = 0
        while got < per_state and fi < frames:
            if fi % 500 == 0 and pump.state() != name:
                pump.goto(name)
            kind = rnd.randint(0, 6)
            line = gen(rnd, kind)
            before = snapshot(ctl)
            bad = None
            try:
                m0 = _mem() if _mem else 0
                t0 = time.ticks_us() if IS_MP else time.perf_counter_ns() // 1000
                out = ctl.step(pump.t, pump.inp, line, len(line))
                t1 = time.ticks_us() if IS_MP else time.perf_counter_ns() // 1000
                m1 = _mem() if _mem else 0
                dt = time.ticks_diff(t1, t0) if IS_MP else t1 - t0
                da = m1 - m0
                if dt > res["max_us"]:
                    res["max_us"] = dt
                if da > res["max_alloc"]:
                    res["max_alloc"] = da
                tx = bytes(out.tx.buf[:out.tx.n])
                after = snapshot(ctl)
                nrep = 0
                for ln in tx.split(b"\n"):
                    if ln and ln[0] != 33:   # not "!"
                        nrep += 1
                if dt > HANG_US:
                    res["hangs"] += 1
                    bad = "hang %d us" % dt
                elif IS_MP and da > ALLOC_BOUND:
                    res["alloc"] += 1
                    bad = "allocated %d bytes" % da
                elif after != before:
                    res["changes"] += 1
                    bad = "therapy changed %r -> %r (reply %r)" % (before, after, tx)
                elif nrep != 1 and line.strip(b" \r\n"):
                    res["replies"] += 1
                    bad = "%d replies: %r" % (nrep, tx)
            except Exception as e:  # noqa: BLE001 - a crash is what we count
                res["crashes"] += 1
                bad = "crash %r" % (e,)
                pump = Pump(lib)
                ctl = pump.ctl
                pump.goto(name)
            if bad and len(res["examples"]) < 10:
                res["examples"].append("%s [%s kind %d] %r" % (bad, name.decode(), kind, line[:80]))
            res["by_kind"][kind] += 1
            res["frames"] += 1
            fi += 1
            got += 1
            if got % 50 == 0:
                pump.tick()     # time moves on between bursts (RUNNING keeps delivering)
        res["by_state"][name.decode()] = got
    res["failures"] = res["crashes"] + res["hangs"] + res["alloc"] + res["changes"] + res["replies"]
    return res


def main(argv):
    import json
    frames = int(argv[1]) if len(argv) > 1 else 2000
    seed = int(argv[2]) if len(argv) > 2 else 1
    global HANG_US
    if len(argv) > 3:
        HANG_US = int(argv[3])
    print(json.dumps(run(frames, seed)))


if __name__ == "__main__":
    main(sys.argv)
