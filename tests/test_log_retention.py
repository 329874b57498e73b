"""Log retention a clinic can rely on (issue 10; budget in docs/safety/log-retention.md):
30 days of typical use (8 infusions a day, a reboot a day) on the Pico's littlefs; daily
reboots cost no segment; unauthenticated traffic (refused AUTH attempts, TLM floods) cannot
push records out; a re-flash with a new key keeps the history verifiable; the heartbeat that
replaced the per-10 s DEL record is never used when damaged.

Each test here fails on the code before it: 4 segments of 256 records (about half a clinic
day), a new segment every boot, 40 records a second from any peer, one key for the whole
chain, and a DEL record every 10 s.
"""
import json
import subprocess
import sys

import pytest

from conftest import FIRMWARE, ROOT, micropython_exe
from therapy_kit import frame, with_boot

sys.path.insert(0, str(FIRMWARE))

from boards import sim  # noqa: E402
from pumpcore import fsm  # noqa: E402
from pumpcore.app import NOISE_BURST, NOISE_MS  # noqa: E402
from pumpcore.auth import mac16  # noqa: E402
from pumpcore.eventlog import LOG_BYTES  # noqa: E402
from pumpcore.memstore import MemStore  # noqa: E402

FW = ROOT / "tests" / "fw"
T0 = (1 << 30) - 60000


def _json(cmd, timeout=900):
    p = subprocess.run(cmd, cwd=str(FIRMWARE), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def flood_day(tmp_path_factory):
    """A clinic day with a peer flooding the pump all day (auth=1, refused signed PROGs and
    TLM frames): the worst day the budget has to hold."""
    path = tmp_path_factory.mktemp("clinic") / "day.txt"
    p = subprocess.run([sys.executable, str(FW / "clinic.py"), "dump", str(path), "flood"],
                       cwd=str(FIRMWARE), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return path


@pytest.mark.req("REQ-LOG-10")
def test_a_clinic_day_fits_thirty_times_in_the_budget():
    r = _json([sys.executable, str(FW / "clinic.py"), "1", "mem"])
    assert r["ok"] and r["damaged"] == 0
    per_day = max(r["per_day"])
    day_bytes = per_day * r["bytes_per_record"]
    assert 30 * day_bytes <= LOG_BYTES, (per_day, r["bytes_per_record"])
    assert r["segments"] == 1            # the reboot appended to the open segment


@pytest.mark.micropython
@pytest.mark.req("REQ-LOG-10", "REQ-LOG-11")
def test_thirty_one_days_on_the_picos_littlefs(flood_day):
    """31 flood days replayed onto littlefs the size of the RPI_PICO filesystem, with the
    firmware tree on it: every day is still there, nothing was dropped for lack of space,
    the chain verifies, and every refused AUTH attempt logged on day 1 is still kept."""
    r = _json([micropython_exe(), "-X", "heapsize=32M", str(FW / "retention.py"), str(flood_day), "31", "pico"])
    assert r["ok"], r
    assert r["days_kept"] == 31 and r["first_boot"] == 1, r
    assert r["dropped_full"] == 0 and r["free_blocks"] > 16, r
    assert r["bytes_kept"] <= LOG_BYTES and r["fw_bytes"] > 100000, r


@pytest.mark.req("REQ-LOG-10")
def test_rotation_keeps_thirty_days_and_the_byte_budget(flood_day):
    r = _json([sys.executable, str(FW / "retention.py"), str(flood_day), "45", "mem"])
    assert r["ok"], r
    assert 30 <= r["days_kept"] < 45 and r["first_boot"] > 1, r       # the oldest went
    assert r["bytes_kept"] <= LOG_BYTES and r["dropped_full"] == 0, r


class _Pump:
    def __init__(self, store=None, key=None):
        self.store = store if store is not None else MemStore()
        self.t = T0
        self.rid = 0
        self.k = 0
        self.boot(key)

    def boot(self, key=None):
        sim.Board.key = key
        try:
            self.h = sim.Harness(str(FIRMWARE / "druglib.json"), self.store)
        finally:
            sim.Board.key = None
        return self.h

    def tick(self, rx=(), step=50):
        self.k += 1
        _s, _e, _a, tx = self.h.slice(self.t, step, 1, 20 + (self.k & 1), 0, 0, 4000, list(rx))
        self.t = (self.t + step) & 0x3FFFFFFF
        return b"".join(c for _, c in tx).decode()

    def send(self, body, key=None, ctr=None):
        self.rid += 1
        line = with_boot("%d %s" % (self.rid, body), self.h.app.ctl.boot).encode()
        if key is not None:
            line += b" ctr=%d" % ctr
            line += b" mac=" + mac16(key, line)
        return self.tick([(0, frame(line))])


KEY = b"retention-test-key-0123456789abc"


@pytest.mark.req("REQ-LOG-11")
def test_a_flood_cannot_push_out_a_refused_auth_record():
    """A peer with no key flushed the record of its own refused AUTH attempt in 25 s with
    TLM frames. Now noise is logged from a bucket: 50,000 frames over 2 hours add a bounded
    number of records, counted in DROP records, and the first refusal is still exported."""
    p = _Pump(key=KEY)
    assert "OK" in p.send("CFG auth=1", KEY, 1)
    r = p.send("PROG rate_ul_h=1200000 vtbi_nl=50000000", b"\x00" * 32, 2)
    assert "ER AUTH" in r, r
    first = [x for x in p.h.app.log.records() if x.ev == b"RSP" and b"ER AUTH" in x.data]
    assert len(first) == 1
    seq0 = p.h.app.log.seq
    sent = 0
    for hour in range(2):
        for i in range(1250):
            rx = []
            for j in range(20):
                sent += 1
                p.rid += 1
                if j % 3 == 0:
                    body = "%d TLM period_ms=%d" % (p.rid, 50 + j)
                elif j % 3 == 1:
                    body = "%d PROG boot=%d rate_ul_h=1000 vtbi_nl=1000 ctr=%d mac=0000000000000000" % (
                        p.rid, p.h.app.ctl.boot, 10 + sent)
                else:
                    body = "%d BOLUS vol_nl=1" % p.rid
                rx.append((0, frame(body.encode())))
            p.tick(rx)
        p.t = (p.t + NOISE_MS) & 0x3FFFFFFF
    p.tick()                               # the bucket refilled: the last DROP is written
    assert sent >= 50000
    recs = p.h.app.log.records()
    assert first[0].seq in [x.seq for x in recs]
    added = p.h.app.log.seq - seq0
    # the bucket (2 records per request) plus one request or DROP per refill, TLM/TL aside
    assert added <= 2 * NOISE_BURST + 2 * 3 + 10, added
    drops = [x for x in recs if x.ev == b"DROP"]
    assert drops and sum(x.ifield(b"n") for x in drops) >= sent - 2 * NOISE_BURST - 20
    assert sum(x.ifield(b"auth") for x in drops) >= sent // 3 - 40


@pytest.mark.req("REQ-LOG-09")
def test_reboots_do_not_cost_a_segment():
    p = _Pump()
    for _ in range(20):
        p.tick()
        p.boot()
    segs = p.h.app.log.segments()
    assert segs == [1], segs
    boots = [r.ifield(b"n") for r in p.h.app.log.records() if r.ev == b"BOOT"]
    assert boots == list(range(1, 22)), boots


@pytest.mark.req("REQ-LOG-12")
def test_a_reflash_with_a_new_key_keeps_the_history():
    """Re-flashing wrote a new key, which broke the keyed chain from record 1 for good."""
    p = _Pump(key=KEY)
    assert "OK" in p.send("PROG rate_ul_h=60000 vtbi_nl=1000000")
    assert "OK" in p.send("START")
    for _ in range(100):
        p.tick()
    p.send("STOP")
    before = [(r.seq, r.ev, r.data) for r in p.h.app.log.records()]
    p.boot(b"a-new-key-after-re-flashing-0001")          # re-provisioned
    hello = p.send("HELLO")
    assert "logdmg" not in hello, hello
    v = p.h.app.log_check
    assert v.ok and v.damaged == 0, v.reason
    recs = p.h.app.log.records()
    after = [(r.seq, r.ev, r.data) for r in recs]
    assert after[:len(before)] == before
    keys = [r for r in recs if r.ev == b"KEY"]
    assert len(keys) == 1 and keys[0].field(b"old") != keys[0].field(b"kid")
    # and the next boot with the same new key is an ordinary one
    p.boot()
    assert p.h.app.log_check.ok and p.h.app.log_check.damaged == 0
    assert len([r for r in p.h.app.log.records() if r.ev == b"KEY"]) == 1


@pytest.mark.req("REQ-LOG-05", "REQ-LOG-08")
def test_a_damaged_heartbeat_is_reported_and_never_used():
    p = _Pump()
    assert "OK" in p.send("PROG rate_ul_h=120000 vtbi_nl=50000000")
    assert "OK" in p.send("START")
    for _ in range(500):                   # 25 s: two heartbeats, no DEL record
        p.tick()
    assert not [r for r in p.h.app.log.records() if r.ev == b"DEL"]
    hb = p.store.files["hb"]
    good = bytes(hb)
    hb[good.index(b"d=") + 3] ^= 0x01      # one bit of the delivered volume
    p.boot()
    assert "logdmg=1" in p.send("HELLO")
    c = p.h.app.ctl
    assert p.h.app.recovered is None and c.fsm.state != fsm.PAUSED
    assert c.alarms.highest() != 0          # RESTART: the staff are told
    # an intact heartbeat is used: the volume comes back within one interval
    p2 = _Pump()
    p2.send("PROG rate_ul_h=120000 vtbi_nl=50000000")
    p2.send("START")
    for _ in range(500):
        p2.tick()
    d = p2.h.app.ctl.delivered_nl()
    p2.boot()
    th = p2.h.app.recovered
    assert th is not None and th.delivered <= d <= th.bound, (th.delivered, d, th.bound)
    assert d - th.delivered <= 120000 * 10100 // 3600 + 218


@pytest.mark.req("REQ-LOG-05", "REQ-REC-01")
def test_a_heartbeat_follows_a_segment_header():
    """Found by the program power-cut sweep on littlefs (1 of 1,000): a segment that rolled
    over mid-infusion began with a TH header newer than the record the heartbeats named, so
    every later heartbeat looked superseded and recovery used the header's bound, intervals
    below what had been delivered (RESUME would have repeated that volume)."""
    p = _Pump()
    assert "OK" in p.send("PROG rate_ul_h=120000 vtbi_nl=50000000")
    assert "OK" in p.send("START")
    seg0 = p.h.app.log.seg
    n = 0
    while p.h.app.log.seg == seg0:          # logged requests roll the segment over
        p.send("SILENCE")
        n += 1
        assert n < 400
    for _ in range(500):                   # 25 s: two heartbeats after the header
        p.tick()
    d = p.h.app.ctl.delivered_nl()
    p.boot()                               # power cut
    th = p.h.app.recovered
    assert th is not None and th.delivered <= d <= th.bound, (th.delivered, d, th.bound)
    assert d - th.delivered <= 120000 * 10100 // 3600 + 218, (d, th.delivered)
