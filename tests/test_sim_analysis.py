"""IEC 60601-2-24 analysis (hil_sim.analysis) on records with known answers."""
import pytest

from hil_sim import analysis
from hil_sim.plant import Record


def record_from_flow(flow_ml_h, seconds, t0=0.0):
    """A 1-s gravimetric record for flow(t) mL/h."""
    rec = Record()
    v = 0.0
    for i in range(1, int(seconds) + 1):
        v += flow_ml_h(t0 + i - 0.5) / 3600
        rec.t_s.append(t0 + i)
        rec.delivered_ml.append(v)
        rec.pressure_mmhg.append(0.0)
        rec.cmd_ml_h.append(0.0)
    return rec


def test_flow_curve_samples_every_30_s():
    rec = record_from_flow(lambda t: 2.0, 7200)
    t, q = analysis.flow_curve(rec, 0.0)
    assert len(q) == 240 and t[0] == 0.5 and t[-1] == 120.0
    assert q == pytest.approx([2.0] * 240)


def test_trumpet_of_a_known_error():
    # +10 % for the first 60 s of every 10 min of the second hour, exact otherwise
    def flow(t):
        return 1.1 if (t >= 3600 and (t - 3600) % 600 < 60) else 1.0
    rec = record_from_flow(flow, 7200)
    _, q = analysis.flow_curve(rec, 0.0)
    tr = analysis.trumpet(q, 1.0)
    assert tr.ep_max[2] == pytest.approx(5.0)            # 2 of the window's 4 samples at +10 %
    assert tr.ep_min[2] == pytest.approx(0.0, abs=1e-6)
    assert tr.ep_max[31] == pytest.approx(100 * 0.1 * 8 / 62)   # 4 bursts of 2 samples
    assert tr.overall_pct == pytest.approx(1.0)
    assert tr.max_abs(2) == pytest.approx(5.0)
    assert set(tr.as_dict()["windows"]) == {"2", "5", "11", "19", "31"}
    with pytest.raises(ValueError):
        analysis.trumpet(q[:200], 1.0)


def test_startup_time_and_first_flow():
    # nothing for 10 min, then half rate for 5 min, then the set rate
    def flow(t):
        return 0.0 if t < 600 else (0.5 if t < 900 else 1.0)
    rec = record_from_flow(flow, 3600)
    _, q = analysis.flow_curve(rec, 0.0)
    st = analysis.startup_time_s(q, 1.0)
    assert 900 <= st <= 930                               # the 30-s samples settle after 15 min
    assert 900 <= analysis.startup_time_s(q, 1.0, window=4) <= 1020   # the 2-min average
    assert analysis.first_flow_s(rec, 0.0) == pytest.approx(600 + 0.001 * 3600 / 0.5, abs=2)
    assert analysis.startup_time_s([0.0] * 100, 1.0) is None
    assert analysis.startup_time_s([1.0] * 100, 1.0) == 30.0   # the first sample's end


def test_bolus_and_detection_limit():
    rec = record_from_flow(lambda t: 36.0 if 100 <= t < 110 else 0.0, 300)
    assert analysis.bolus_ml(rec, 95) == pytest.approx(0.1, abs=1e-9)
    # 3 sigma of 1.5 mmHg at 1 mL/h into 0.0021 mL/mmHg: 34 s
    assert analysis.detection_limit_s(1.0, 0.0021, 1.5) == pytest.approx(4.5 * 0.0021 * 3600)
