"""Issue 12: the pump knows its syringe, the occlusion detector rides through the bedside,
and the RUNAWAY after COMPLETE. Short representative runs (the battery is in bench/)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "firmware"))

from hil_sim.cosim import Simulation  # noqa: E402
from hil_sim.plant import PlantParams  # noqa: E402


def _alarms(pump):
    return [a for a in pump.bad()]


@pytest.mark.req("REQ-OCC-12")
@pytest.mark.parametrize("offset_ticks", [0, 1, 2, 3])
def test_no_runaway_after_complete_whatever_the_tick_phase(offset_ticks):
    """The RUNAWAY 200 ms after COMPLETE: readings are held over a 200 ms slice (4 ticks), so
    the first fresh encoder reading after the motor stops still shows the last steps; the
    old 3-tick settle took the stale reading as the rest position. Every phase of the
    completion within a slice, at a rate where a tick's steps exceed the 4-count tolerance."""
    import battery as B
    p = PlantParams(primed=True)
    pump = B.Pump(p, seed=5)
    try:
        pump.run(50 * offset_ticks)
        pump.start(120.0, 0.5)
        pump.run(30_000)
        names = [a[1] for a in pump.alarms]
        assert "VTBI_DONE" in names
        assert "RUNAWAY" not in names, pump.alarms
    finally:
        pump.close()
