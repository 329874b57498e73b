"""Fuzzing the firmware's frame parser and command interpreter (tests/fw/fuzz.py): malformed
frames in every state must crash nothing, hang nothing, allocate nothing under micropython,
change no therapy and get exactly one reply. `make bench` runs 100,000 frames
(`rel.fuzz_frames`); here a smaller budget under both interpreters."""
import json
import subprocess
import sys

import pytest

from conftest import FIRMWARE, ROOT, micropython_exe

FUZZ = ROOT / "tests" / "fw" / "fuzz.py"


# a step that has not returned in 5 s of wall time is a hang even on a loaded CI machine; the
# 100 ms bound of `make bench` (rel.fuzz_max_step_us) would fail here whenever the scheduler
# parks the process, which says nothing about the firmware
HANG_US = 5000000


def _run(exe, frames, seed):
    p = subprocess.run([exe, str(FUZZ), str(frames), str(seed), str(HANG_US)], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _assert_clean(r, frames):
    assert r["frames"] >= frames - 10, r
    assert r["failures"] == 0, r["examples"]
    # every reachable state was fuzzed, and every kind of malformation was generated
    for st in ("IDLE", "PROGRAMMED", "RUNNING", "PAUSED", "ALARM"):
        assert r["by_state"].get(st, 0) > 0, r["by_state"]
    assert min(r["by_kind"]) > 0, r["by_kind"]


@pytest.mark.micropython
@pytest.mark.req("REQ-COM-01", "REQ-COM-02", "REQ-COM-03", "REQ-SW-02", "REQ-SW-03")
def test_fuzz_micropython():
    r = _run(micropython_exe(), 6000, 1)
    _assert_clean(r, 6000)
    assert r["max_alloc"] == 0


@pytest.mark.req("REQ-COM-01", "REQ-COM-02", "REQ-COM-03")
def test_fuzz_cpython():
    r = _run(sys.executable, 20000, 2)
    _assert_clean(r, 20000)


@pytest.mark.req("REQ-COM-02")
def test_fuzzer_detects_a_controller_that_obeys_garbage(monkeypatch):
    """The fuzzer's oracle can fail: a controller that stops on any corrupt frame is caught."""
    sys.path.insert(0, str(FIRMWARE))
    sys.path.insert(0, str(ROOT / "tests" / "fw"))
    monkeypatch.chdir(FIRMWARE)
    import fuzz
    from pumpcore import fsm

    class Obeys(fuzz.Controller):
        def step(self, now, inp, rx, nrx):
            out = super().step(now, inp, rx, nrx)
            if nrx and b"STOP" in bytes(rx[:nrx]) and self.fsm.state != fsm.IDLE:
                self.fsm.state = fsm.IDLE     # acts on a frame it should have refused
            return out

    monkeypatch.setattr(fuzz, "Controller", Obeys)
    r = fuzz.run(3000, 5)
    assert r["changes"] > 0
