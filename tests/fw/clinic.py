"""A clinic's typical use, on the simulated board (issue 10, log retention): every day the pump
boots (a daily reboot), a host connects (HELLO, TLM, LIB, SETTINGS, STATUS polls), and 8
infusions run to their end: ketamine 0.5 mg/kg over 40 min (70 kg), one of them paused and
resumed, one stopped early, each ended with ACK and STOP. Portable (CPython MemStore or
`micropython` littlefs on a simulated flash the size of the Pico's); cwd = firmware/.

usage: python ../tests/fw/clinic.py DAYS [mem|pico] [flood]  ->  one JSON line
    {"days", "records", "bytes", "per_day": [records of each day], "first_boot",
     "first_seq", "last_seq", "segments", "bytes_kept", "free_blocks", "days_kept"}

`flood`: on every day a peer without the key sends refused signed PROGs and TLM frames
(500 a day) between the infusions; with auth=1 on. `days_kept` counts the days whose BOOT
record is still in the log at the end.
"""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")
if "../tests/fw" not in sys.path:
    sys.path.append("../tests/fw")

from boards import sim
from fwkit import crc_frame, new_store, with_boot


T0 = 0x3FFFFFFF - 60000
_MASK = 0x3FFFFFFF
STEP = 200                     # ms per control call (the board's longest tick)
PICO_BLOCKS = 1408 * 1024 // 4096    # the RPI_PICO littlefs (MICROPY_HW_FLASH_STORAGE_BYTES)
KEY = b"clinic-retention-test-key-000001"


class Clinic:
    def __init__(self, kind="mem", auth=False):
        self.kind = kind
        self.auth = auth
        self.flash, self.store = new_store(PICO_BLOCKS if kind == "pico" else 0)
        self.t = T0
        self.rid = 0
        self.enc = 0
        self.k = 0
        self.ctr = 0
        self.h = None
        if auth:
            sim.Board.key = KEY
        self.boot()
        sim.Board.key = None
        if auth:
            self.send("CFG auth=1", signed=True)

    def boot(self):
        if self.flash is not None:
            self.flash = self.flash.reboot()
            self.store = sim.mount_flash(self.flash)
        self.h = sim.Harness("druglib.json", self.store)
        self.h.board.now = self.t
        return self.h

    def tick(self, rx=None, step=STEP):
        self.k += 1            # a live pressure sensor: it never reads the same for long
        s, _e, _a, tx = self.h.slice(self.t, step, 1, 20 + (self.k & 1), self.enc, 0, 4000,
                                     [(0, rx)] if rx else [])
        self.enc += s[0]
        self.t = (self.t + step) & _MASK
        return b"".join([c for _, c in tx])

    def send(self, body, signed=False):
        self.rid = self.rid % 60000 + 1
        line = with_boot("%d %s" % (self.rid, body), self.h.app.ctl.boot)
        if signed:
            from pumpcore.auth import mac16
            self.ctr += 1
            line = line + " ctr=%d" % self.ctr
            line = line + " mac=" + mac16(KEY, line.encode()).decode()
        return self.tick(crc_frame(line), 50)

    def idle(self, ms):
        """Nothing infusing: the pump ticks in long slices."""
        n = ms // 1000
        while n > 0:
            k = n if n < 200 else 200
            self.h.slice(self.t, 1000, k, 20, self.enc, 0, 4000, [])
            self.t = (self.t + 1000 * k) & _MASK
            n -= k

    def run(self, ms):
        for _ in range(ms // STEP):
            self.tick()

    def state(self):
        from pumpcore import fsm
        return fsm.STATE_NAMES[self.h.app.ctl.fsm.state]

    def infusion(self, i, flood=0):
        sg = self.auth
        self.send("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000", sg)
        self.send("START", sg)
        if i == 3:
            self.run(600000)
            self.send("PAUSE")
            self.run(120000)
            self.send("RESUME", sg)
        if i == 5:
            self.run(1200000)
            self.send("STOP")
            return
        for _ in range(2400000 // 10000 + 12):
            self.run(10000)
            if self.state() != b"RUNNING":
                break
        self.send("ACK", sg)
        self.send("STOP")

    def flood(self, n):
        for k in range(n):
            if k % 2:
                self.send("TLM period_ms=1000")
            else:
                # a peer without the key: a signed PROG under a wrong key (refused ER AUTH)
                self.rid = self.rid % 60000 + 1
                line = with_boot("%d PROG rate_ul_h=1200000 vtbi_nl=50000000" % self.rid, self.h.app.ctl.boot)
                line += " ctr=%d mac=0000000000000000" % (self.ctr + 1000 + k)
                self.tick(crc_frame(line), 50)

    def day(self, flood=0):
        self.send("HELLO")
        self.send("TLM period_ms=1000")
        self.send("LIB")
        self.send("SETTINGS")
        for i in range(8):
            self.send("STATUS")
            self.infusion(i)
            if flood:
                self.flood(flood // 8)
            self.idle(1800000)
        self.idle(4 * 3600000)
        # the daily reboot (power off over night)
        self.t = (self.t + 8 * 3600000) & _MASK
        self.boot()


def run(days, kind="mem", flood=False):
    c = Clinic(kind, auth=flood)
    per_day = []
    n0 = c.h.app.log.seq
    for d in range(days):
        c.day(500 if flood else 0)
        per_day.append(c.h.app.log.seq - n0)
        n0 = c.h.app.log.seq
    log = c.h.app.log
    recs = log.records()
    boots = [r for r in recs if r.ev == b"BOOT"]
    segs = log.segments()
    kept = 0
    for n in segs:
        kept += log.sizes.get(n, 0)
    free = -1
    if c.flash is not None:
        import os
        st = os.statvfs(sim.MOUNT)
        free = st[3]
    auth_refused = 0
    for r in recs:
        if r.ev == b"RSP" and b" ER AUTH" in r.data:
            auth_refused += 1
    total = 0
    for x in per_day:
        total += x
    return {"days": days, "records": total, "kept_records": len(recs),
            "bytes_per_record": kept // (len(recs) or 1), "per_day": per_day,
            "first_boot": boots[0].ifield(b"n") if boots else 0, "last_boot": boots[-1].ifield(b"n") if boots else 0,
            "first_seq": recs[0].seq if recs else 0, "last_seq": recs[-1].seq if recs else 0,
            "segments": len(segs), "bytes_kept": kept, "free_blocks": free,
            "auth_refused_logged": auth_refused, "ok": c.h.app.log_check.ok,
            "damaged": c.h.app.log_check.damaged, "kind": kind}


def day_records(flood=False):
    """One clinic day as the log holds it: (t_ms from the day's BOOT, EV, data) of every
    record from a BOOT to the next, segment headers left out (the log writes its own)."""
    c = Clinic("mem", auth=flood)
    c.day(500 if flood else 0)
    out = []
    t0 = None
    seen = False
    for r in c.h.app.log.records():
        if r.ev == b"BOOT":
            if seen:
                break
            seen = True
        if not seen or (r.ev == b"TH" and r.field(b"ph") is not None):
            continue
        if t0 is None and r.t != 0:
            t0 = r.t              # the boot's own records carry the board's clock at 0
        out.append(((r.t - t0) & _MASK if t0 is not None else 0, r.ev, r.data))
    return out


def dump(path, flood=False):
    with open(path, "wb") as f:
        for t, ev, data in day_records(flood):
            f.write(b"%d %s %s\n" % (t, ev, data))


def main(argv):
    import json
    if len(argv) > 2 and argv[1] == "dump":
        dump(argv[2], len(argv) > 3 and argv[3] == "flood")
        return
    days = int(argv[1]) if len(argv) > 1 else 1
    kind = argv[2] if len(argv) > 2 else "mem"
    flood = len(argv) > 3 and argv[3] == "flood"
    print(json.dumps(run(days, kind, flood)))


if __name__ == "__main__":
    main(sys.argv)
