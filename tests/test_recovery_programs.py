"""Recovery of every program form after a power cut (issue 10): the pump comes up PAUSED with
the program that was left - its remaining segments, rates (as titrated), VTBI, drug, dose and
delivered volume - not one segment at the rate that happened to be running."""
import sys

import pytest

from conftest import FIRMWARE
from therapy_kit import frame, with_boot

sys.path.insert(0, str(FIRMWARE))

from boards.sim import Harness  # noqa: E402
from pumpcore import fsm  # noqa: E402
from pumpcore.memstore import MemStore  # noqa: E402

LIB = str(FIRMWARE / "druglib.json")


class Board:
    """The simulated board on a MemStore that outlives a reboot (a power cut = a new Harness)."""

    def __init__(self):
        self.store = MemStore()
        self.t = (1 << 30) - 60000
        self.enc = 0
        self.rid = 0
        self.boot()

    def boot(self):
        self.h = Harness(LIB, self.store)
        self.tick()

    def tick(self, rx=None, k=0):
        steps, en, al, tx = self.h.slice(self.t, 50, 1, 20 + (k & 1), self.enc, 0, 4000,
                                         [(0, rx)] if rx else [])
        self.t = (self.t + 50) & 0x3FFFFFFF
        self.enc += steps[0]
        return b"".join(c for _, c in tx).decode()

    def send(self, body):
        self.rid += 1
        tx = self.tick(frame(with_boot("%d %s" % (self.rid, body), self.h.app.ctl.boot)))
        for ln in tx.splitlines():
            if ln.startswith("%d " % self.rid):
                return ln.split("*")[0]
        raise AssertionError(tx)

    def run(self, ms):
        for k in range(ms // 50):
            self.tick(None, k)

    def status(self):
        r = self.send("STATUS")
        return dict(t.split("=", 1) for t in r.split()[2:] if "=" in t)

    def telemetry(self):
        """One `! TL` frame's fields (subscribe, one tick, unsubscribe)."""
        self.send("TLM period_ms=50")
        tx = self.tick()
        self.send("TLM period_ms=0")
        tl = [ln for ln in tx.splitlines() if ln.startswith("! TL ")]
        assert tl, tx
        return dict(t.split("=", 1) for t in tl[0].split("*")[0].split()[2:] if "=" in t)

    def rate_now(self):
        return self.h.app.ctl.current_rate()


@pytest.mark.req("REQ-REC-01")
def test_taper_cut_in_its_fast_step_keeps_the_slow_step():
    """A taper cut during its 100 mL/h step delivered its 5 mL/h step at 100 mL/h."""
    b = Board()
    b.send("STEP i=0 rate_ul_h=100000 vol_nl=1000000")
    b.send("STEP i=1 rate_ul_h=5000 vol_nl=500000")
    assert "OK" in b.send("PROG steps=2 drug=ketamine")
    b.send("START")
    b.run(20000)                               # 20 s of the 36-s fast step
    assert b.rate_now() == 100000
    b.boot()                                   # power cut: a new board on the same flash
    st = b.status()
    assert st["state"] == "PAUSED" and st["vtbi_nl"] == "1500000", st
    assert st["alarm"] == "RESTART"
    d0 = int(st["del_nl"])
    assert 500000 <= d0 <= 1000000
    b.send("ACK")
    assert "OK state=RUNNING" in b.send("RESUME")
    b.run(20000)                               # finishes the fast step, enters the slow one
    assert b.rate_now() == 5000, b.rate_now()
    ctl = b.h.app.ctl
    assert ctl.nseg == 2 and ctl.seg == 1


@pytest.mark.req("REQ-REC-01")
def test_ketamine_load_cut_resumes_maintenance_at_the_maintenance_rate():
    """A loading + maintenance program cut during loading delivered maintenance at the
    loading rate (twice the dose)."""
    b = Board()
    r = b.send("PROG drug=ketamine dose_ug_kg_h=500 wt_g=70000 vtbi_nl=2000000 load_ug_kg=100 load_ms=1800000 confirm=1")
    assert "OK" in r, r
    b.send("START")
    b.run(60000)
    load_rate = b.rate_now()
    assert load_rate == 14000, load_rate       # 7 mL over 30 min
    b.boot()
    st = b.status()
    assert st["state"] == "PAUSED" and st["vtbi_nl"] == "9000000", st
    ctl = b.h.app.ctl
    assert ctl.nseg == 2 and ctl.seg_rate[1] == 35000 and ctl.drug >= 0 and ctl.wt_g == 70000
    assert ctl.dose_h == 500 and ctl.conc == 1000


@pytest.mark.req("REQ-REC-01")
def test_titrated_rate_and_kvo_survive_the_cut():
    b = Board()
    b.send("PROG drug=propofol dose_ug_kg_h=2000 wt_g=70000 vtbi_nl=2000000")
    b.send("START")
    b.run(2000)
    assert "OK" in b.send("TITRATE rate_ul_h=20000")
    b.run(2000)
    b.boot()
    ctl = b.h.app.ctl
    assert ctl.fsm.state == fsm.PAUSED and ctl.rate == 20000 and ctl.dose_h == 2857
    # a cut in KVO comes back to KVO on RESUME with its volume
    b = Board()
    b.send("PROG rate_ul_h=120000 vtbi_nl=1000000 kvo_ul_h=1000")
    b.send("START")
    b.run(60000)
    assert b.h.app.ctl.fsm.state == fsm.KVO
    k = b.h.app.ctl.kvo_nl()
    b.boot()
    st = b.status()
    assert st["state"] == "PAUSED", st
    assert int(b.telemetry()["kvo_nl"]) >= k
    b.send("ACK")
    b.send("RESUME")
    assert b.h.app.ctl.fsm.state == fsm.KVO


@pytest.mark.req("REQ-REC-01")
def test_stopped_infusion_never_comes_back():
    b = Board()
    b.send("PROG rate_ul_h=120000 vtbi_nl=5000000")
    b.send("START")
    b.run(3000)
    b.send("STOP")
    b.boot()
    assert b.status()["state"] == "IDLE"
    b.boot()
    assert b.status()["state"] == "IDLE"
    assert [n for n in b.store.names() if n.startswith("pg")] == []


def _sweep(exe, cuts, seed, kind):
    import json
    import subprocess
    from conftest import ROOT
    p = subprocess.run([exe, str(ROOT / "tests" / "fw" / "pcut_programs.py"), str(cuts), str(seed), kind],
                       cwd=str(FIRMWARE), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.req("REQ-REC-01", "REQ-PWR-01")
def test_power_cuts_through_every_program_form_cpython():
    r = _sweep(sys.executable, 150, 7, "mem")
    assert r["losses"] == 0, r["failures"]
    assert set(r["forms"]) == {"rate", "rate_drug", "vol_time", "dose_time", "dose_rate",
                               "load_maint", "steps", "steps_drug"}, r["forms"]
    assert r["restored"] >= 50 and r["restored_multi"] >= 10, r


@pytest.mark.micropython
@pytest.mark.req("REQ-REC-01", "REQ-PWR-01", "REQ-PWR-02")
def test_power_cuts_through_every_program_form_on_littlefs_micropython():
    """Was xfail: cut 18 of seed 11 (rate_drug) read 341,680 nL against the envelope's
    321,050 nL after ACK+RESUME. The restored del_nl is the record's upper bound (more than
    was delivered, by design: RESUME never repeats volume), so the sweep judged a bound as
    a delivery; and the volume past a program's end was cut off at the VTBI. Both fixed
    (test_volume_past_the_programs_end_stays_counted); 1,000 cuts, 0 losses in the bench."""
    from conftest import micropython_exe
    r = _sweep(micropython_exe(), 25, 11, "flash")
    assert r["losses"] == 0, r["failures"]
    assert r["restored"] >= 10, r


@pytest.mark.req("REQ-COM-08")
def test_no_request_sent_before_a_cut_is_executed_after_it():
    """The host sent a request, lost the reply to a power cut, and retried the same bytes
    after the reboot: it must not be executed again."""
    r = _sweep(sys.executable, 60, 13, "mem")
    assert r["retry_executed"] == 0, r


@pytest.mark.req("REQ-REC-01")
def test_volume_past_the_programs_end_stays_counted():
    """Found by the program power-cut sweep: a cut during a bolus at the end of a program
    came back with del_nl below what had been delivered (the volume past the VTBI, counted as
    basal, was cut off at the VTBI)."""
    from pumpcore.controller import Controller, Config
    from therapy_kit import LIB
    c = Controller(Config(217078), LIB)
    pg = {b"n": 1, b"r": [14000], b"v": [233333], b"do": 0, b"wt": 70000, b"co": 10000, b"dh": 2000, b"kv": 0}
    assert c.recover_program(b"RUNNING", pg, 1, 250000, 180000, 0, 60000)
    assert c.fsm.state == fsm.PAUSED
    assert c.delivered_nl() >= 250000 + 180000 - 2 * 218
    assert c.line.target_nl == 233333
