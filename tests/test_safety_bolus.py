"""H-BOLUS: after an occlusion alarm the pump backs off to relieve the pressure stored in the
syringe and line, and never moves forward again until the alarm is acknowledged and the
infusion resumed (docs/safety/requirements.md REQ-BOL-01). The plant-level figure (volume
released when the occlusion clears, `occ.bolus_ml`) is measured by the simulator."""
import binascii
import sys

import pytest

from conftest import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from pumpcore.controller import Controller, Config, Inputs, TICK_MS  # noqa: E402
from pumpcore.druglib import DrugLibrary  # noqa: E402
from pumpcore import fsm  # noqa: E402


def _f(body: str) -> bytes:
    b = body.encode()
    return b + b"*%04X\n" % binascii.crc_hqx(b, 0)


@pytest.mark.req("REQ-BOL-01", "REQ-ALM-01")
@pytest.mark.parametrize("rate", [5000, 52500, 600000])
def test_occlusion_backs_off_and_never_pushes_again(rate):
    ctl = Controller(Config(217078), DrugLibrary.load(str(FIRMWARE / "druglib.json")))
    inp = Inputs()
    inp.pressure_mmhg = 20
    t = (1 << 30) - 60000
    ctl.step(t, inp, b"", 0)
    for i, body in enumerate((f"1 PROG boot=1 rate_ul_h={rate} vtbi_nl=20000000", "2 START boot=1")):
        f = _f(body)
        ctl.step(t, inp, f, len(f))
    forward = 0
    for _ in range(400):                       # 20 s of delivery
        t += TICK_MS
        out = ctl.step(t, inp, b"", 0)
        inp.encoder += out.steps
        forward += out.steps
    assert forward > 0
    inp.pressure_mmhg = 1100                   # the line is blocked: far above any limit
    reverse = 0
    alarmed = None
    for k in range(600):                       # 30 s
        t += TICK_MS
        out = ctl.step(t, inp, b"", 0)
        inp.encoder += out.steps
        if alarmed is None and out.alarm_prio == 3:
            alarmed = k
        elif alarmed is not None:
            assert out.steps <= 0, "moved forward after the occlusion alarm"
            reverse += -out.steps
    assert alarmed is not None and ctl.fsm.state == fsm.ALARM
    assert reverse > 0, "no back-off after the occlusion alarm"
