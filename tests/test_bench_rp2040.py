"""The emulated-chip heap bench never crashes: a trial whose emulator hangs or dies is a
failed trial with its reason (bench/bench_rp2040.py). Fakes stand in for the emulator, so
this runs in milliseconds and does not need the image."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_rp2040 as B  # noqa: E402

from hil_sim.runtime import FirmwareError  # noqa: E402


class _FakeWall:
    """The bench's wall clock, moved only by the fake emulator's slices (``cost_s`` per
    emulated ms): the wall bound is reached at the same emulated time on any machine."""

    def __init__(self):
        self.t = 1000.0

    def monotonic(self):
        return self.t


class _FakeSim:
    """A simulation whose emulator answers nothing after ``alive_ms`` of emulated time;
    each emulated ms costs ``hang_wall_s`` on ``wall`` (a _FakeWall)."""

    def __init__(self, alive_ms, hang_wall_s=0.0, wall=None):
        self.t_ms = 0
        self.alive_ms = alive_ms
        self.hang_wall_s = hang_wall_s
        self.wall = wall
        self.closed = False
        self.sent = []
        self.runtime = self

    def run_for(self, ms):
        for _ in range(ms):
            self.slice(1)

    def slice(self, ms):
        if self.t_ms >= self.alive_ms:
            raise FirmwareError("micropython firmware sent no reply within 60.0 s (exit status -9)")
        if self.hang_wall_s:
            self.wall.t += self.hang_wall_s * ms
        self.t_ms += ms

    def host_send(self, data):
        self.sent.append(data)
        if b" PROG " in data:           # the firmware stops answering in the PROG request
            self.alive_ms = self.t_ms

    def host_recv(self):
        if self.sent:                   # answer every request as an IDLE pump
            rid = self.sent.pop(0).split(b" ", 1)[0]
            return rid + b" OK state=IDLE boot=3\n"
        return b""

    def read_file(self, name):
        raise OSError("no such file")

    def close(self):
        self.closed = True


def test_a_hung_emulator_is_a_failed_heap_trial_not_a_crash(monkeypatch):
    sims = []

    def fake(free, image, timeout_s=300.0):
        assert timeout_s == B.TRIAL_REPLY_S     # the short per-answer bound reaches the runtime
        sims.append(_FakeSim(alive_ms=10**9))   # boots, then hangs in the PROG request
        return sims[-1]
    monkeypatch.setattr(B, "_sim", fake)
    ok, why = B.heap_trial(25600, image=None)
    assert not ok
    assert "FirmwareError" in why and "no reply" in why and "booted into IDLE" in why
    assert sims[0].closed


def test_a_trial_past_its_wall_bound_fails_with_that_reason(monkeypatch):
    """1 ms of wall per emulated ms, a 50-ms bound: the boot's first 500-ms run passes it,
    and the next check (the STATUS after it) ends the trial there."""
    wall, sims = _FakeWall(), []
    monkeypatch.setattr(B, "time", wall)              # the bench's clock (not the real one)

    def fake(free, image, timeout_s=300.0):
        sims.append(_FakeSim(10**9, 0.001, wall))
        return sims[-1]
    monkeypatch.setattr(B, "_sim", fake)
    ok, why = B.heap_trial(25600, image=None, wall_s=0.05)
    assert not ok and "wall" in why, why
    assert sims[0].t_ms == 500 and sims[0].closed


def test_the_bisection_goes_on_past_a_hung_trial(monkeypatch):
    # passes at >= 30,720 B; 25,600 hangs (as on 2026-12-02); the rest fail cleanly
    def trial(free, image):
        if free == 25600:
            return False, "booted into IDLE; then FirmwareError: sent no reply"
        return free >= 30720, "COMPLETE" if free >= 30720 else "MemoryError"
    monkeypatch.setattr(B, "heap_trial", trial)
    peak, trials = B.heap_peak(None)
    assert peak == 30720 and 25600 in trials


def test_the_figure_is_the_least_size_from_which_every_larger_one_passes(monkeypatch):
    # as main's image on 2026-12-03: 28,160 and 28,288 pass, 28,416 fails, 28,544 on pass
    def trial(free, image):
        ok = free >= 28160 and free != 28416
        return ok, "COMPLETE" if ok else "MemoryError: memory allocation failed"
    monkeypatch.setattr(B, "heap_trial", trial)
    peak, trials = B.heap_peak(None)
    assert peak == 28544, peak
    assert 28416 in trials and all(f in trials for f in range(28544, 28544 + 1025, 128))


def test_a_lucky_pass_below_the_bisection_is_not_the_figure(monkeypatch):
    # 27,904 passes alone (27,776 and 28,032 fail): the figure is 28,160
    def trial(free, image):
        ok = free >= 28160 or free == 27904
        return ok, "COMPLETE" if ok else "MemoryError"
    monkeypatch.setattr(B, "heap_trial", trial)
    assert B.heap_peak(None)[0] == 28160
