"""The simulated board keeps settings, the auth counter and the key on its simulated flash
(issue 10), so a power cut covers authentication; the `micropython` runtime can be given a
key in tests."""
import sys

import pytest

from conftest import FIRMWARE
from therapy_kit import frame, with_boot

sys.path.insert(0, str(FIRMWARE))

from boards import sim  # noqa: E402
from pumpcore.auth import mac16  # noqa: E402
from pumpcore.memstore import MemStore  # noqa: E402

KEY = b"sim-nv-test-key-0123456789"


def _send(h, t, body, sign=None):
    line = with_boot(body, h.app.ctl.boot).encode()
    if sign is not None:
        line += b" ctr=%d" % sign
        line += b" mac=" + mac16(KEY, line)
    _s, _e, _a, tx = h.slice(t, 50, 1, 20, 0, 0, 4000, [(0, frame(line))])
    return b"".join(c for _, c in tx).decode()


@pytest.mark.req("REQ-REC-03")
def test_counter_settings_and_key_survive_a_power_cut():
    store = MemStore()
    sim.Board.key = KEY
    try:
        h = sim.Harness(str(FIRMWARE / "druglib.json"), store)
    finally:
        sim.Board.key = None                  # from now on only the flash knows the key
    t = 1000
    assert "OK" in _send(h, t, "1 CFG auth=1 occl_mmhg=500", sign=1)
    assert "OK" in _send(h, t + 50, "2 PROG rate_ul_h=1000 vtbi_nl=100000", sign=7)
    h2 = sim.Harness(str(FIRMWARE / "druglib.json"), store)      # power cut, reboot
    hello = _send(h2, t + 100, "3 HELLO")
    assert "auth=1" in hello and "ctr=7" in hello, hello
    assert h2.app.ctl.settings.occl_mmhg == 500
    r = _send(h2, t + 150, "4 STOP")
    r = _send(h2, t + 200, "5 PROG rate_ul_h=1000 vtbi_nl=100000", sign=7)    # replayed counter
    assert "5 ER AUTH" in r, r
    assert "6 OK" in _send(h2, t + 250, "6 PROG rate_ul_h=1000 vtbi_nl=100000", sign=8)


@pytest.mark.micropython
@pytest.mark.req("REQ-REC-03")
def test_micropython_runtime_takes_a_key():
    from hil_sim.runtime import MicroPythonRuntime
    rt = MicroPythonRuntime(key=KEY)
    try:
        _s, _e, _a, tx = rt.slice(1000, 50, 1, 20, 0, 0, 4000, [(0, frame(b"1 HELLO"))])
        hello = b"".join(c for _, c in tx).decode()
        assert "auth=0" in hello and "ctr=0" in hello, hello
    finally:
        rt.close()
