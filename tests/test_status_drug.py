"""Issue 14's "status never shows the drug" and "after stop it reads 'delivered 1.104 mL of
0 mL (-)'", against the firmware under both runtimes over a real pty: STATUS carries the
program's drug (docs/protocol.md, *Session, status and library*), the typed Status has it,
and `infusekit status` prints it; after STOP it says what the last infusion delivered."""
from __future__ import annotations

import json

import pytest

from host import Pump, cli
from served import Served

pytestmark = [pytest.mark.e2e]
RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.micropython)]


def _text(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.req("REQ-COM-09")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_status_shows_the_drug_and_the_volume_after_stop(runtime, capsys):
    with Served(runtime) as s:
        p = ["--port", s.ep.url, "--timeout", "2"]
        out = _text(capsys, *p, "status")
        assert out.startswith("state IDLE  drug -  "), out
        with Pump.open(s.ep.url, timeout=2) as pump:
            pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
            st = pump.status()
            assert st.drug == "ketamine" and st.state == "PROGRAMMED" and st.p_mmhg is None, st
            pump.start()
            # 0.1 mL at 52.5 mL/h is ~7 s of pump time (after the slack is taken up)
            s.until_host(lambda: pump.status().del_nl >= 100_000, 120_000, "0.1 mL delivered",
                         step_ms=1000)
        out = _text(capsys, *p, "status")
        assert "drug ketamine" in out and "state RUNNING" in out and " of 35 mL (" in out, out
        obj = json.loads(_text(capsys, *p, "--json", "status"))
        assert obj["drug"] == "ketamine" and obj["del_nl"] >= 100_000
        _text(capsys, *p, "stop")
        out = _text(capsys, *p, "status")
        assert out.startswith("state IDLE  drug -  "), out
        assert " (no program)" in out and "of 0 mL" not in out, out
        assert "(-)" not in out
        obj = json.loads(_text(capsys, *p, "--json", "status"))
        assert obj["drug"] is None and obj["vtbi_nl"] == 0 and obj["del_nl"] >= 100_000
