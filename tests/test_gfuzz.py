"""Grammar-aware, stateful fuzzing of the command interpreter with the therapy-envelope oracle
(tests/fw/gfuzz.py): valid, CRC'd and (with auth=1) correctly signed frames in sequences that
reach every state with the plant moving. `make bench` runs 1,000,000 frames
(`rel.gfuzz_frames`, `rel.envelope_violations`); here a shorter run under both interpreters."""
import json
import subprocess
import sys

import pytest

from conftest import FIRMWARE, ROOT, micropython_exe

GFUZZ = ROOT / "tests" / "fw" / "gfuzz.py"
STATES = {"IDLE", "PROGRAMMED", "RUNNING", "PAUSED", "KVO", "STANDBY", "ALARM", "COMPLETE", "FAULT"}


def _run(exe, frames, seed):
    p = subprocess.run([exe, str(GFUZZ), str(frames), str(seed)], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.req("REQ-THR-07", "REQ-COM-02")
def test_grammar_fuzz_cpython_every_state_inside_the_envelope():
    r = _run(sys.executable, 15000, 20261201)
    assert r["violations"] == 0, r["examples"]
    assert set(r["states"]) == STATES, r["states"]
    assert r["accepted"] > 3000 and r["refused"] > 3000, r


@pytest.mark.micropython
@pytest.mark.req("REQ-THR-07", "REQ-SW-03")
def test_grammar_fuzz_micropython():
    r = _run(micropython_exe(), 2500, 20261202)
    assert r["violations"] == 0, r["examples"]
    assert len(r["states"]) >= 7, r["states"]
