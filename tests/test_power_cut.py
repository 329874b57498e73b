"""Power loss: the event log and therapy record on littlefs survive power cuts at random
points of writes and infusions (tests/fw/pcut.py), and the pump comes up safe. `make bench`
runs 1,000 cuts (`rel.power_cuts`); here a smaller sweep under both interpreters, plus a
restart of the real `micropython` firmware process on a flash image file."""
import json
import os
import subprocess
import sys

import re

import pytest

from conftest import FIRMWARE, ROOT, micropython_exe

PCUT = ROOT / "tests" / "fw" / "pcut.py"


def _sweep(exe, cuts, seed, kind):
    p = subprocess.run([exe, str(PCUT), str(cuts), str(seed), kind], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.micropython
@pytest.mark.req("REQ-PWR-01", "REQ-PWR-02", "REQ-PWR-03", "REQ-PWR-04", "REQ-LOG-02")
def test_power_cuts_on_littlefs_micropython():
    r = _sweep(micropython_exe(), 120, 3, "flash")
    assert r["losses"] == 0, r["failures"]
    assert r["boots"] > r["cuts"]


@pytest.mark.req("REQ-PWR-01", "REQ-PWR-02", "REQ-PWR-03", "REQ-PWR-04")
def test_power_cuts_torn_appends_cpython():
    r = _sweep(sys.executable, 600, 4, "mem")
    assert r["losses"] == 0, r["failures"]


def _frame(body):
    import binascii
    b = body.encode()
    return b + b"*%04X\n" % binascii.crc_hqx(b, 0)


@pytest.mark.micropython
@pytest.mark.req("REQ-PWR-01", "REQ-PWR-03", "REQ-PWR-05")
def test_micropython_process_restart_keeps_flash():
    """Kill the micropython firmware mid-infusion (a power cut), start it again on the same
    flash image: it comes up not infusing, reports the interrupted infusion, and delivers
    only on an explicit command."""
    from hil_sim.runtime import MicroPythonRuntime
    t = (1 << 30) - 60000
    rt = MicroPythonRuntime()      # its flash is an image file that outlives the process
    try:
        _, _, _, tx = rt.slice(t, 50, 1, 20, 0, 0, 4000, [(0, b"1 HELLO\n")])
        boot = re.search(rb" boot=(\d+)", b"".join(c for _, c in tx)).group(1).decode()
        t += 50
        rt.slice(t, 50, 1, 20, 0, 0, 4000,
                 [(0, _frame(f"1 PROG boot={boot} rate_ul_h=120000 vtbi_nl=5000000"))])
        t += 50
        steps, en, _, tx = rt.slice(t, 50, 1, 20, 0, 0, 4000, [(0, _frame(f"2 START boot={boot}"))])
        assert b"OK state=RUNNING" in b"".join(c for _, c in tx)
        t += 50
        enc = 0
        for _ in range(30):                        # 30 s at 120 mL/h ~ 1 mL
            steps, en, _, tx = rt.slice(t, 50, 20, 20, enc, 0, 4000, [])
            enc += sum(steps)
            t += 1000
        assert en == 1
        delivered_nl = enc * 217078 // 1000
        rt.restart("power")                        # killed at once, booted on the same flash
        steps, en, al, tx = rt.slice(t, 50, 10, 20, enc, 0, 4000, [(0, b"3 STATUS\n")])
        out = b"".join(c for _, c in tx).decode()
        assert en == 0 and sum(steps) == 0, out
        status = [ln for ln in out.splitlines() if ln.startswith("3 OK")][0]
        fields = dict(f.split("=", 1) for f in status.split("*")[0].split()[2:])
        assert fields["state"] == "PAUSED", status
        assert int(fields["vtbi_nl"]) == 5000000
        interval_nl = 120000 * 10100 // 3600 + 218
        assert abs(int(fields["del_nl"]) - delivered_nl) <= interval_nl + 220, (fields, delivered_nl)
        assert fields["alarm"] == "RESTART", status
        # nothing moves without an explicit command
        steps, en, _, _ = rt.slice(t + 500, 50, 40, 20, enc, 0, 4000, [])
        assert en == 0 and sum(steps) == 0
    finally:
        rt.close()
