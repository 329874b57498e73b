"""The default campaign's run 253 (issue 12): a mains loss is no occlusion."""
import pytest

from hil_sim.campaign import runner
from hil_sim.campaign.spec import CAMPAIGN_DIR, load


@pytest.mark.req("REQ-OCC-10", "REQ-CAMP-05")
def test_campaign_run_253_a_mains_loss_raises_no_false_occlusion():
    """Run 253 (24.6 mL/h on SOFT50, mains lost at 253.9 s) raised OCCLUSION at 454.1 s on the
    campaign's code (93b7b28). Not the mains: the same alarm at the same time with the mains
    event taken out — the battery switch-over changes neither the motor nor the force reading
    (the plant's sensors do not depend on it; the firmware uses it for the battery alarms
    only). It was the arm lowered 29 cm at 443.9 s (+21 mmHg), whose rise the line's R·C and
    the stopper's reload spread evenly over four 2.6-s segments (4.6, 10.2, 4.5, 4.4 mmHg);
    the one-segment confirmation (session 6, ccf0050) rejects it: the doubled segment fell
    (−2.8 mmHg) instead of rising 1.25–2 × the mean. Fails on 58d4a43 (before it)."""
    spec = load(CAMPAIGN_DIR / "default.toml")
    r = runner.run_one(spec, 2026, 253)
    assert r["fault"] == "mains"
    assert r["false_alarms"] == [] and r["hazards"] == [], r
