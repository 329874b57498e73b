"""Issue 12: a slowly developing occlusion (a kinking or clotting line, the resistance rising so
that the pressure climbs ~2.3 mmHg/min) alarms before the volume stored in the syringe's
compliance could become a bolus of more than 0.05 mL. The old detector saw it only at the
400 mmHg threshold after ~3.3 h and released 0.21 mL (1 mL/h, 50 mL)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.req("REQ-OCC-16")
@pytest.mark.parametrize("setname,rate,model,k", [("tune", 1.0, "BD50", 101),
                                                  ("tune", 5.0, "BD50", 105),
                                                  ("held", 1.5, "SOFT50", 120)])
def test_slow_occlusion_alarms_before_the_stored_volume_is_a_bolus(setname, rate, model, k):
    import battery as B
    r = B.occlusion_case(setname, rate, model, k, kind="slow")
    assert r["early"] == [], r
    assert r["t_alarm"] is not None and r["t_alarm"] <= 1800, r    # found by the trend of levels
    assert r["bolus"] <= 0.05, r
