"""Host signing against the real firmware: a provisioned pump with `auth` on accepts the host
library's HMAC-signed therapy commands, refuses an unsigned client, and keeps status open."""
import os

import pytest

from host import Pump
from host.errors import PumpRefused
from served import Served

pytestmark = [pytest.mark.e2e, pytest.mark.req("REQ-SEC-01", "REQ-SEC-02", "REQ-SEC-03")]


@pytest.fixture
def keyed_pump(monkeypatch):
    from host._firmware import firmware_module
    simboard = firmware_module("boards.sim")     # the module the cpython runtime runs
    key = os.urandom(32)
    monkeypatch.setattr(simboard.Board, "key", key, raising=False)
    monkeypatch.setattr(simboard.Board, "counter", 0, raising=False)
    with Served("cpython", seed=3) as s:          # lock-step (tests/served.py)
        yield s, key


def test_signed_commands_accepted_unsigned_refused(keyed_pump):
    s, key = keyed_pump
    url = s.ep.url
    with Pump.open(url, timeout=3, key=key) as pump:
        pump.configure(auth=1)
        assert pump.hello().auth
        pump.program(rate=10, vtbi=1)
        assert pump.start() == "RUNNING"
    with Pump.open(url, timeout=3) as anonymous:               # no key
        assert anonymous.status().state == "RUNNING"            # status stays open
        with pytest.raises(PumpRefused) as e:
            anonymous.titrate("50 mL/h")
        assert e.value.code == "AUTH"
        assert anonymous.pause() == "PAUSED"                    # stopping is never blocked
    with Pump.open(url, timeout=3, key=os.urandom(32)) as wrong:   # a different key
        with pytest.raises(PumpRefused) as e:
            wrong.resume()
        assert e.value.code == "AUTH"
    with Pump.open(url, timeout=3, key=key) as pump:           # the counter survives sessions
        assert pump.resume() == "RUNNING"
        s.advance(200)
        assert pump.stop() == "IDLE"
