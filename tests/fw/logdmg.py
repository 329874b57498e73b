"""Event-log damage sweep (issue 10): infuse on the simulated board, damage the log's flash
(bit flips anywhere, a bit flip that raises the seq of a record near a segment's end, a
record torn in the middle, a record deleted, a full flash, a re-flash with a new key, a bit
flip in the heartbeat file), reboot,
and check what the log still says. Portable (CPython MemStore; cwd = firmware/).

usage: python ../tests/fw/logdmg.py TRIALS SEED  ->  one JSON line
    {"trials", "unrecovered", "kinds": {...}, "failures": [...]}

A trial is *unrecovered* when, after the damage and a reboot:
  * the pump does not boot, or boots delivering;
  * the damage is not reported (HELLO `logdmg`), or a readable record written
    after the damage is not exported any more (LOG from the damaged seq);
  * a sequence number is used twice (the records after the reboot continue above every seq
    ever written);
  * recovery restores a program from a record older than a damaged one (an infusion that
    was stopped comes back, or a volume older than the damaged record is used).
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
import random

from boards import sim
from fwkit import crc_frame, with_boot
from pumpcore import fsm
from pumpcore.memstore import MemStore

T0 = 0x3FFFFFFF - 60000
DETECTED = [0]
INTERRUPTED = [0]       # trials cut while infusing (recovery judged on them)


class Full(MemStore):
    """A MemStore with a byte budget: appends beyond it fail as a full littlefs does."""

    def __init__(self, budget):
        MemStore.__init__(self)
        self.budget = budget

    def append(self, name, data):
        used = 0
        for f in self.files.values():
            used += len(f)
        if used + len(data) > self.budget:
            raise OSError(28, "no space")
        MemStore.append(self, name, data)


def _drive(h, t, bodies, ticks):
    rid = [0]
    for b in bodies:
        rid[0] += 1
        h.slice(t[0], 50, 1, 20, 0, 0, 4000, [(0, crc_frame(with_boot("%d %s" % (rid[0], b), h.app.ctl.boot)))])
        t[0] = (t[0] + 50) & 0x3FFFFFFF
    enc = 0
    for k in range(ticks):
        steps, _e, _a, _tx = h.slice(t[0], 50, 1, 20 + (k & 1), enc, 0, 4000, [])
        enc += steps[0]
        t[0] = (t[0] + 50) & 0x3FFFFFFF


def _ask(h, t, body):
    steps, en, _a, tx = h.slice(t[0], 50, 1, 20, 0, 0, 4000, [(0, crc_frame("99 " + body))])
    t[0] = (t[0] + 50) & 0x3FFFFFFF
    out = b"".join([c for _, c in tx]).decode()
    for ln in out.split("\n"):
        if ln.startswith("99 "):
            return ln.split("*")[0], steps[0], en
    return "", steps[0], en


def _damaged_seqs(orig, new):
    """The seqs (as first written) of the lines of `orig` that `new` changed or lost: each
    changed line when the line count is the same, else every line between the first and
    the last difference."""
    a = orig.split(b"\n")
    b = new.split(b"\n")
    if len(a) == len(b):
        idx = [i for i in range(len(a)) if a[i] != b[i]]
    else:
        i = 0
        while i < len(a) and i < len(b) and a[i] == b[i]:
            i += 1
        j = 0
        while j < len(a) - i and j < len(b) - i and a[-1 - j] == b[-1 - j]:
            j += 1
        idx = list(range(i, len(a) - j))
    out = set()
    for i in idx:
        sp = a[i].find(b" ")
        if sp > 0:
            out.add(int(a[i][:sp]))
    return out


def _raise_seq(f, rng):
    """Flip one bit of a seq digit of one of the last 8 records of segment file `f` so that
    the digit (and the seq) goes up. Returns the record's seq (-1: no such digit)."""
    starts = [0]
    for i in range(len(f) - 1):
        if f[i] == 10:
            starts.append(i + 1)
    starts = starts[-8:]
    s = starts[rng.randrange(len(starts))]
    e = s
    while e < len(f) and 48 <= f[e] <= 57:
        e += 1
    ups = []
    for p in range(s, e):
        for b in range(4):
            c = f[p] ^ (1 << b)
            if f[p] < c <= 57:
                ups.append((p, c))
    if not ups:
        return -1
    p, c = ups[rng.randrange(len(ups))]
    seq = int(bytes(f[s:e]))
    f[p] = c
    return seq


K1 = b"logdmg-key-one-0123456789abcdef0"
K2 = b"logdmg-key-two-0123456789abcdef0"


def trial(kind, rng):
    store = Full(rng.randint(6000, 20000)) if kind == "full" else MemStore()
    t = [T0]
    sim.Board.key = K1 if kind == "rekey" else None
    try:
        h = sim.Harness("druglib.json", store)
    finally:
        sim.Board.key = None
    stopped = rng.getrandbits(1)
    script = ["PROG rate_ul_h=%d vtbi_nl=%d" % (rng.choice([5000, 52500, 120000]), 50000000), "START"]
    _drive(h, t, script, rng.randint(50, 900))
    if stopped:
        _drive(h, t, ["STOP"], 5)
    log = h.app.log
    top = log.seq
    recs = log.records()
    # damage
    segs = [n for n in store.names() if n.startswith("log")]
    name = segs[rng.randrange(len(segs))]
    f = store.files[name]
    orig = bytes(f)
    pos = -1
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(f) - 1)
            f[pos] ^= 1 << rng.randrange(8)
    elif kind == "seqflip":
        pos = _raise_seq(f, rng)
    elif kind == "tear":
        lines = bytes(f).split(b"\n")
        i = rng.randrange(max(len(lines) - 2, 1))
        cut = rng.randrange(1, max(len(lines[i]), 2))
        lines[i] = lines[i][:cut]
        store.files[name] = bytearray(b"\n".join(lines))
        pos = 0
    elif kind == "delete":
        lines = bytes(f).split(b"\n")
        i = rng.randrange(max(len(lines) - 2, 1))
        del lines[i]
        store.files[name] = bytearray(b"\n".join(lines))
        pos = 0
    elif kind == "heartbeat" and "hb" in store.files:
        pos = 1
        hb = store.files["hb"]
        hb[rng.randrange(len(hb) - 1)] ^= 1 << rng.randrange(8)
    was_running = h.app.ctl.fsm.state == fsm.RUNNING
    INTERRUPTED[0] += was_running
    # reboot (rekey: re-flashed with a new key)
    sim.Board.key = K2 if kind == "rekey" else None
    try:
        h2 = sim.Harness("druglib.json", store)
    except Exception as e:  # noqa: BLE001
        return "boot failed: %r" % (e,)
    finally:
        sim.Board.key = None
    hello, s0, en = _ask(h2, t, "HELLO")
    if en or s0:
        return "%s: delivering after reboot" % kind
    st, _, _ = _ask(h2, t, "STATUS")
    v = h2.app.log_check
    c = h2.app.ctl
    if kind != "full" and v.damaged == 0 and v.ok:
        pass  # the flip may have hit a byte that does not matter (never: every byte is hashed)
    if not v.ok or v.damaged:
        DETECTED[0] += 1
    if (not v.ok or v.damaged) and "logdmg=" not in hello:
        return "%s: damage not reported (%s)" % (kind, hello)
    # seq never repeats
    if h2.app.log.seq <= top:
        return "%s: seq %d not above %d" % (kind, h2.app.log.seq, top)
    # records after the damage stay readable
    after = h2.app.log.records()
    got = set([r.seq for r in after])
    if kind in ("flip", "seqflip", "tear", "delete"):
        # the sweep knows the records it damaged: every other one is still exported, but the
        # one after each (it may be verified only against a damaged line) - judged without the
        # pump's own `last_damaged`, which must not excuse records a damaged one hid
        hit = _damaged_seqs(orig, bytes(store.files[name]))
        miss = [r.seq for r in recs if r.seq not in got and r.seq not in hit and r.seq - 1 not in hit]
        if miss:
            return "%s: %d records lost besides %r (first %d)" % (kind, len(miss), sorted(hit), miss[0])
    if kind in ("flip", "tear", "delete") and v.last_damaged:
        later = [r for r in recs if r.seq > v.last_damaged + 1]
        miss = [r.seq for r in later if r.seq not in got]
        if miss:
            return "%s: %d later records lost (first %d)" % (kind, len(miss), miss[0])
    # never a stale recovery
    if stopped and c.fsm.state == fsm.PAUSED:
        return "%s: a stopped infusion came back" % kind
    if h2.app.recovered is not None and v.last_damaged > h2.app.recovered.seq:
        return "%s: recovered from a record older than the damage" % kind
    if kind == "full" and c.fsm.state == fsm.FAULT:
        return "full: the pump stopped working on a full flash"
    if kind == "rekey":
        # a changed key is not damage: everything still verifies, nothing is lost, and an
        # interrupted infusion is recovered as without the re-flash
        if not v.ok or v.damaged or "logdmg=" in hello:
            return "rekey: reported as damage (%s)" % v.reason
        miss = [r.seq for r in recs if r.seq not in got]
        if miss:
            return "rekey: %d records lost (first %d)" % (len(miss), miss[0])
        if was_running and h2.app.recovered is None:
            return "rekey: the interrupted infusion was not recovered"
        if not [r for r in after if r.ev == b"KEY"]:
            return "rekey: no KEY record"
    if kind == "heartbeat" and pos == 1:
        if "logdmg=" not in hello:
            return "heartbeat: damage not reported (%s)" % hello
        if h2.app.recovered is not None:
            return "heartbeat: recovered without its heartbeat"
    return None


def run(trials, seed):
    rng = random.Random(seed) if hasattr(random, "Random") else random
    if rng is random:
        random.seed(seed)
    kinds = {}
    bad = 0
    fails = []
    for i in range(trials):
        kind = ("flip", "flip", "seqflip", "tear", "delete", "full", "rekey", "heartbeat")[rng.randrange(8)]
        kinds[kind] = kinds.get(kind, 0) + 1
        err = trial(kind, rng)
        if err:
            bad += 1
            if len(fails) < 15:
                fails.append("trial %d: %s" % (i, err))
    return {"trials": trials, "unrecovered": bad, "detected": DETECTED[0], "interrupted": INTERRUPTED[0], "kinds": kinds, "failures": fails}


def main(argv):
    import json
    n = int(argv[1]) if len(argv) > 1 else 50
    seed = int(argv[2]) if len(argv) > 2 else 1
    print(json.dumps(run(n, seed)))


if __name__ == "__main__":
    main(sys.argv)
