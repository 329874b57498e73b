"""Power-cut sweep: boot the simulated pump, infuse, lose power at a random point, reboot,
check that nothing committed was lost and the pump came up safe. Portable: runs under
CPython (MemStore, torn byte-level appends) and under `micropython` (os.VfsLfs2 on the
simulated NOR flash `boards.sim.Flash`, torn block programs and erases).

usage (cwd = firmware/):  micropython ../tests/fw/pcut.py CUTS SEED [mem|flash]
prints one JSON object: {"cuts", "losses", "boots", "records", "failures": [...]}.

A cut counts as a *loss* when, after the reboot:
  * the pump does not boot, or the log's hash chain does not verify;
  * a record whose append had returned before the cut is missing or different (checked
    through the chain: the hash of the last committed record must be found again);
  * the pump moves its motor, or is RUNNING, before any command;
  * an infusion was under way and the recovered therapy record is missing or wrong: the
    volume actually delivered (between the values before and after the interrupted tick)
    must lie within [d, ub] of the record, and d within one logging interval (+ one tick)
    of it;
  * the controller has a recovery entry point (`recover`) and STATUS does not show the
    recovered program paused with the delivered volume.
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
try:
    import binascii
except ImportError:  # pragma: no cover
    import ubinascii as binascii  # type: ignore
import random

from boards import sim
from pumpcore import fsm
from pumpcore.app import LOG_INTERVAL_MS
from pumpcore.controller import TICK_MS
from pumpcore.eventlog import open_log
from pumpcore.store import PowerCut
from fwkit import crc_frame, new_store, with_boot

T0 = 0x3FFFFFFF - 60000
_MASK = 0x3FFFFFFF
# the most one control tick can deliver (1200 mL/h over the longest tick, 200 ms), nL
TICK_MAX_NL = 1200000 * 200 // 3600


class Rig:
    """The power-cut rig both sweeps share (this one and pcut_programs.py): the store (littlefs
    on simulated flash, or a MemStore), the board clock, the request ids, the cuts and the
    losses found."""

    def __init__(self, kind, seed):
        random.seed(seed)
        self.kind = kind
        self.flash, self.store = new_store(48 if kind == "flash" else 0)
        self.t = T0
        self.rid = 0
        self.h = None
        self.boots = 0
        self.losses = 0
        self.failures = []

    # -- power
    def arm(self, n):
        if self.flash is not None:
            self.flash.cut_after(n, random.getrandbits(12))
        else:
            self.store.cut_after = n

    def power_on(self):
        if self.flash is not None:
            self.flash = self.flash.reboot()
            self.store = sim.mount_flash(self.flash)
        else:
            self.store.power_on()

    def boot(self):
        """Boot until it succeeds (a cut may also hit the boot's own writes)."""
        while True:
            try:
                self.power_on()
                self.h = sim.Harness("druglib.json", self.store)
                self.h.board.now = self.t
                if self.dead():
                    raise PowerCut()
                self.boots += 1
                return self.h
            except PowerCut:
                self.t = (self.t + 1000) & _MASK

    def reboot(self, off_ms):
        """After a cut: the power stays off `off_ms`, then the pump boots; one boot in 8 is
        cut too, at one of its first writes. Returns the harness (a boot that crashes
        raises what it raised)."""
        self.arm(-1)
        self.t = (self.t + off_ms) & _MASK
        if random.getrandbits(3) == 0:
            self.arm(random.randint(0, 3) if self.flash is not None else random.randint(0, 80))
        return self.boot()

    def lose(self, i, err):
        """Count cut `i` as a loss (the first 20 are kept with their reason)."""
        self.losses += 1
        if len(self.failures) < 20:
            self.failures.append("cut %d: %s" % (i, err))

    # -- traffic
    def dead(self):
        return self.flash.dead if self.flash is not None else self.store.dead

    def tick(self, rx=None):
        h = self.h
        r = h.slice(self.t, TICK_MS, 1, 20, 0, 0, 4000, [(0, rx)] if rx else [])
        self.t = (self.t + TICK_MS) & _MASK
        if self.dead():
            # littlefs may turn the device's exception into an OSError it reports to the
            # app; the power is gone all the same: the CPU stopped within this tick
            raise PowerCut()
        return r

    def send(self, body):
        self.rid = self.rid % 65000 + 1
        return self.tick(crc_frame(with_boot("%d %s" % (self.rid, body), self.h.app.ctl.boot)))


_NOT_INFUSING = (b"IDLE", b"PROGRAMMED", b"COMPLETE", b"FAULT")


def _state_name(h):
    return fsm.STATE_NAMES[h.app.ctl.fsm.state]


def trial(rig, cut_in_ticks):
    """One boot → work → cut → boot → check. Returns a failure string or None."""
    h = rig.h
    ctl = h.app.ctl
    rate = random.choice((1000, 5250, 52500, 120000, 600000, 1200000))
    vtbi = rate * random.randint(20000, 90000) // 3600
    vtbi = max(vtbi, 1000)
    script = [("STOP", 0), ("PROG", 0), ("START", 0)]
    if random.getrandbits(2) == 0:
        script.append(("PAUSE", random.randint(1, 400)))
        script.append(("RESUME", random.randint(1, 100)))
    work = random.randint(1, 1500)       # ticks of infusion before/while the cut may come
    # arm the cut: at a random write (bytes or flash operations), else between writes
    between = random.getrandbits(1)
    if not between:
        if rig.flash is not None:
            rig.arm(random.randint(0, 60))
        else:
            rig.arm(random.randint(0, 1200))
    log = h.app.log
    # what was committed before the tick the cut may interrupt: delivered volume, the log's
    # committed head (seq, hash), the state
    last = [0, log._c[0], log._c[1], b"IDLE"]

    def before_tick():
        last[0] = h.app.ctl.delivered_nl()
        last[1], last[2] = log._c[0], log._c[1]
        last[3] = _state_name(h)
    try:
        for cmd, wait in script:
            for _ in range(wait):
                before_tick()
                rig.tick()
            before_tick()
            if cmd == "PROG":
                rig.send("PROG rate_ul_h=%d vtbi_nl=%d" % (rate, vtbi))
            else:
                rig.send(cmd)
        for _ in range(work):
            before_tick()
            rig.tick()
        before_tick()       # no cut yet: the power fails now, between two ticks
    except PowerCut:
        pass
    lo, c_seq, c_hash, was = last
    hi = h.app.ctl.delivered_nl()
    state_after = _state_name(h)
    interval_nl = ctl.rate * (LOG_INTERVAL_MS + 2 * TICK_MS) // 3600
    try:
        h2 = rig.reboot(5000)       # possibly with another cut during the boot
    except Exception as e:  # noqa: BLE001 - a boot that crashes is a loss
        return "boot failed: %r" % (e,)
    app = h2.app
    v = app.log_check
    if v is None or not v.ok:
        return "chain does not verify: %s" % (v.reason if v else "no log")
    # nothing committed is lost: the last committed record is found with the same hash
    if c_seq:
        want = binascii.hexlify(c_hash).upper()
        found = None
        for r in app.log.records(c_seq, 1):
            found = r
        if found is None or found.seq != c_seq or found.h != want:
            return "committed record %d lost" % c_seq
    # safe state: no motion, not running, before any command
    steps, en, _al, _tx = rig.tick()
    if en or steps[0] or app.ctl.fsm.state == fsm.RUNNING:
        return "pump infusing after reboot"
    # the therapy record
    # `was`: the state at the last committed tick; `state_after`: after the tick the power cut
    # interrupted, whose records may have reached the flash in whole or in part. When both
    # are infusing the infusion must be reported; when neither, it must not; when the cut
    # tick changed it, either is right.
    inf_before = was not in _NOT_INFUSING
    inf_after = state_after not in _NOT_INFUSING
    th = app.recovered
    if th is not None:
        if not (inf_before or inf_after):
            return "a finished infusion reported as interrupted (%s)" % was
    if inf_before or inf_after:
        if th is None:
            if not (inf_before and inf_after):
                return None

            return "interrupted infusion not reported (was %s)" % state_after
        # write-ahead: the steps of the tick the cut interrupted were never issued, so the
        # volume delivered is `lo`; the record may already count that tick (`hi`) when its
        # append was committed just before the power failed: d <= hi, never more
        if not (th.delivered <= hi and lo <= th.bound):
            return "delivered %d..%d outside the record [%d, %d]" % (lo, hi, th.delivered, th.bound)
        if lo - th.delivered > interval_nl + TICK_MAX_NL:
            return "record %d older than one interval (delivered %d)" % (th.delivered, lo)
        if hasattr(app.ctl, "recover"):
            c = app.ctl
            if c.fsm.state == fsm.RUNNING or c.vtbi != th.vtbi:
                return "recover() did not restore the program paused"
    return None


def sweep(cuts, seed, kind="mem"):
    rig = Rig(kind, seed)
    rig.boot()
    for i in range(cuts):
        err = trial(rig, 0)
        if err:
            rig.lose(i, err)
    recs = len(rig.h.app.log.records()) if rig.h else 0
    return {"cuts": cuts, "losses": rig.losses, "boots": rig.boots, "records": recs,
            "failures": rig.failures, "kind": kind}


def main(argv, run=None):
    """`CUTS SEED [mem|flash]` -> one JSON line of `run(cuts, seed, kind)` (this sweep's, or
    pcut_programs.py's)."""
    cuts = int(argv[1]) if len(argv) > 1 else 20
    seed = int(argv[2]) if len(argv) > 2 else 1
    kind = argv[3] if len(argv) > 3 else ("flash" if sys.implementation.name == "micropython" else "mem")
    import json
    print(json.dumps((run or sweep)(cuts, seed, kind)))


if __name__ == "__main__":
    main(sys.argv)
