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


def _run(ctl, inp, t, ticks):
    for _ in range(ticks):
        t += TICK_MS
        inp.pressure_mmhg = 20 + (t // TICK_MS) % 3     # a live force sensor (not frozen)
        out = ctl.step(t, inp, b"", 0)
        inp.encoder += out.steps
    return t


@pytest.mark.req("REQ-THR-08", "REQ-THR-01")
def test_a_bolus_in_the_end_of_line_settle_is_delivered_before_complete_and_never_inherited():
    """The 1,000,000-frame grammar fuzz's finding (seed 20261203): a program whose line has
    ended is settling (RUNNING, the loop making up its last steps) when a BOLUS is accepted.
    The infusion used to complete under the running bolus and leave it on, and the next
    program — another drug — started with the old bolus's rate and delivered volume."""
    ctl = Controller(Config(217078), DrugLibrary.load(str(FIRMWARE / "druglib.json")))
    inp = Inputs()
    inp.pressure_mmhg = 20
    t = (1 << 30) - 60000
    ctl.step(t, inp, b"", 0)

    def send(body):
        f = _f(body)
        return bytes(ctl.step(t, inp, f, len(f)).tx.buf[:ctl.out.tx.n])

    assert b"OK" in send("1 PROG boot=1 rate_ul_h=26509 vtbi_nl=1000")
    assert b"OK" in send("2 START boot=1")
    for _ in range(2000):                      # until the line is done and settling
        t = _run(ctl, inp, t, 1)
        if ctl.line.done():
            break
    assert ctl.line.done() and ctl.fsm.state == fsm.RUNNING
    bolus = 600000                             # 0.6 mL at 23.6 mL/h: 92 s, longer than the settle
    assert b"OK" in send(f"3 BOLUS boot=1 vol_nl={bolus} rate_ul_h=23589")
    done_at = None
    for k in range(3000):                      # 150 s
        t = _run(ctl, inp, t, 1)
        if ctl.fsm.state == fsm.COMPLETE:
            done_at = k
            break
    assert done_at is not None, "never completed"
    assert not ctl.bolus_on, "a bolus still running after COMPLETE"
    # the whole accepted bolus, and no more, is in this infusion's volume (to one step)
    step_nl = ctl.nl_per_kstep // 1000 + 1
    assert abs(ctl.bolus_total_nl() - bolus) <= step_nl
    assert abs(ctl.therapy_nl() - (1000 + bolus)) <= 2 * step_nl
    # a new program (another line, another rate) inherits nothing
    assert b"OK" in send("4 PROG boot=1 rate_ul_h=5000 vtbi_nl=2000000")
    assert ctl.delivered_nl() == 0 and ctl.bolus_total_nl() == 0
    assert b"OK" in send("5 START boot=1")
    t = _run(ctl, inp, t, 20)
    assert ctl.current_rate() == 5000, "the new program runs another rate"
    assert ctl.bolus_total_nl() == 0
