"""Issue 12 (mechanics and rate control) and issue 16's slow-STALL finding: the rate loop
against the plant with realistic friction and screw error. Each test is a short run in
virtual time; the figures themselves are measured by `make bench` (bench/bench_sim.py)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from hil_sim import analysis  # noqa: E402
from hil_sim.cosim import Simulation  # noqa: E402
from hil_sim.plant import PlantParams  # noqa: E402

NOTICES = ("VTBI_NEAR", "VTBI_DONE")

# docs/simulator.md, "Realistic mechanics": 5 µm periodic screw error, 0.4 N stick-slip,
# 4 N break-loose over glide after a long rest, glide ±15 % along the barrel (BD50)
REAL = dict(periodic_error_um=5.0, stiction_delta_n=0.4, breakaway_n=4.0, friction_var_pct=15.0)


def _pump(params, seed=1):
    from battery import Pump
    return Pump(params, seed, "firmware")


def _bad(pump):
    return [a for a in pump.alarms if a[1] not in NOTICES]


# ---------------------------------------------------------------------- STALL (issue 16)
@pytest.mark.req("REQ-ACC-11")
@pytest.mark.parametrize("rate", [0.1, 0.5, 1.3, 4.5, 25.0, 100.0])
def test_stall_is_seen_within_30_s_at_every_rate(rate):
    """Campaign 2026 run 39: a jam at 1.3 mL/h was reported 34 s later (the old check waited
    until the flange trailed the line by 48 µsteps, then 2 s). Now 3 µsteps of certain motor
    command without an encoder count: ≤ 30 s down to 0.1 mL/h (3 µsteps = 23 s there)."""
    pump = _pump(PlantParams(primed=True, **REAL), seed=7)
    try:
        pump.start(rate, min(40.0, 10.0 * rate))
        # past the start-up: the stopper's loading travel (≤ 48 µsteps, counted as delivered)
        # puts the flange ahead of the line, and the motor waits for it (6.5 min at 0.1 mL/h)
        pump.run(120_000 if rate >= 0.5 else 900_000)
        assert not _bad(pump), pump.alarms
        pump.sim.inject("stall", value=True)
        t0 = pump.sim.t_ms / 1000
        hit = pump.run(30_000, until=lambda p: any(a[1] == "STALL" for a in p.alarms))
        assert hit, f"no STALL within 30 s of the jam at {rate} mL/h: {pump.alarms}"
        t = [a[0] for a in pump.alarms if a[1] == "STALL"][0] - t0
        assert t <= 30.0
        assert pump.sim.enable == 0
    finally:
        pump.close()


@pytest.mark.req("REQ-ACC-11")
@pytest.mark.parametrize("rate,slack_ml", [(0.1, 1.3), (1.0, 1.3), (1.0, 0.5), (5.0, 1.3),
                                           (25.0, 1.3), (100.0, 0.0)])
def test_no_false_stall_with_slack_and_realistic_friction(rate, slack_ml):
    """The fast STALL check must not fire on slack (up to 1.3 mL, CONTEXT §8), stick-slip
    and break-loose friction, the screw's periodic error, or the start-up take-up."""
    kw = dict(REAL, slack_ml=slack_ml) if slack_ml else dict(REAL)
    pump = _pump(PlantParams(**kw), seed=3)
    try:
        pump.start(rate, min(40.0, 10.0 * rate))
        pump.run(600_000 if rate < 50 else 300_000)
        assert not _bad(pump), pump.alarms
        assert pump.sim.plant.delivered_ml > 0
    finally:
        pump.close()


# ---------------------------------------------------------------------- RUNAWAY
@pytest.mark.req("REQ-ACC-12")
@pytest.mark.parametrize("pitch", [0.5, -0.15])
@pytest.mark.parametrize("rate", [1.0, 100.0])
def test_lead_error_of_half_a_percent_is_no_runaway(pitch, rate):
    """Issue 12: a +0.5 % lead error tripped RUNAWAY. The floor of flange − motor creeps by
    1/128 per commanded µstep (0.78 %), so +0.5 % (a screw pushing ahead) is mechanism, not
    runaway, over a whole syringe at 100 mL/h (≈ 150 k µsteps) and an hour at 1 mL/h, with
    realistic friction. A screw short of its lead is made up by the loop up to 0.2 % (the
    bound on more motor than line, 2.5× a rolled screw's ±0.06 %): −0.15 % runs clean."""
    pump = _pump(PlantParams(pitch_error_pct=pitch, **REAL), seed=4)
    try:
        vol = 40.0 if rate > 10 else 1.5
        pump.start(rate, vol)
        pump.run(int(vol / rate * 3600 * 1000) + 30_000)
        assert not _bad(pump), pump.alarms
        assert "VTBI_DONE" in [a[1] for a in pump.alarms]
    finally:
        pump.close()


def _pushed_vs_line(enc_counts_per_rev, rate=25.0, vtbi=10.0):
    """(worst excess of the volume the stopper pushed over the programmed line, in mL, before
    any alarm; the alarms) for a plunger encoder of `enc_counts_per_rev` per 3200 µsteps."""
    pump = _pump(PlantParams(primed=True, encoder_counts_per_rev=enc_counts_per_rev), seed=6)
    worst = -1.0
    try:
        t0 = pump.start(rate, vtbi) - 1.0          # START was sent 1 s before start() returns
        a0 = pump.sim.plant.displaced_ml
        end = pump.sim.t_ms + int(vtbi / rate * 3600 * 1000)
        while pump.sim.t_ms < end and not _bad(pump):
            pump.run(1000)
            line = min(vtbi, rate * (pump.sim.t_ms / 1000 - t0) / 3600)
            worst = max(worst, pump.sim.plant.displaced_ml - a0 - line)
        return worst, _bad(pump), pump.sim.enable
    finally:
        pump.close()


@pytest.mark.req("REQ-ACC-12")
def test_an_encoder_reading_short_cannot_push_more_than_the_line_allows():
    """Safety (nothing delivered that was not programmed; the volume is the line's): the
    rate loop trusts the plunger encoder to make up lost motion, so an encoder reading 0.5 %
    short (3184 counts per 3200 µsteps) asked for 0.5 % more motor travel, and the old bound
    (48 µsteps + 0.78 % of travel) allowed all of it. Now more motor than line is bounded by
    48 µsteps + 0.2 % (the screw's tolerance): the stopper never gets more than that ahead
    of the programmed line (plus the loading the line counts as delivered), and when the
    encoder's story cannot be followed any more the pump stops with STALL (a delivery
    mismatch). With the old bound: +0.05 mL over 10 mL and no alarm."""
    worst, bad, enable = _pushed_vs_line(3184)
    assert worst <= 10.0 * 0.002 + 0.012, worst       # 0.2 % + 48 µsteps (10 µL) + loading
    assert [a[1] for a in bad] == ["STALL"], bad
    assert enable == 0


@pytest.mark.req("REQ-ACC-12")
def test_a_true_encoder_follows_the_line_without_alarm():
    """The same run with an encoder that reads true: no alarm, on the line within 12 µL."""
    worst, bad, _ = _pushed_vs_line(3200)
    assert not bad, bad
    assert worst <= 0.012, worst


@pytest.mark.req("REQ-ACC-12")
def test_a_real_runaway_is_still_caught_with_lead_error():
    """The widened tolerance still sees a driver stepping on its own (100 mL/h while the
    line asks for 1 mL/h)."""
    pump = _pump(PlantParams(pitch_error_pct=0.5, primed=True, **REAL), seed=4)
    try:
        pump.start(1.0, 5.0)
        pump.run(60_000)
        pump.sim.inject("runaway", value=True)
        assert pump.run(10_000, until=lambda p: any(a[1] == "RUNAWAY" for a in p.alarms))
    finally:
        pump.close()


def _served_completion(phase_ms, rate_ul_h=120000, vtbi_nl=500000):
    """A pump served as `sim serve --speed F` serves it on a loaded machine: the firmware is
    called every 1 ms of virtual time in whole 200 ms chunks (the paced server catches up in
    `chunk` steps when the wall clock has run ahead), so each plant reading is held for up to
    200 ms while 4 control ticks run. Returns the alarms raised up to 20 s after COMPLETE."""
    from host.codec import encode_request
    sim = Simulation("cpython", seed=5, params=PlantParams(primed=True))
    out = []
    try:
        boot = sim.hello_boot()
        b = {"boot": boot} if boot is not None else {}

        def adv(ms):
            end = sim.t_ms + ms
            while sim.t_ms < end:
                sim.advance_to(min(end, sim.t_ms + 199), 1)
                out.append(sim.host_recv())
        adv(phase_ms)
        sim.host_send(encode_request(1, "PROG", {**b, "rate_ul_h": rate_ul_h, "vtbi_nl": vtbi_nl}))
        sim.host_send(encode_request(2, "START", b))
        adv(int(vtbi_nl / rate_ul_h * 3600) + 20_000)
    finally:
        sim.close()
    return b"".join(out)


@pytest.mark.req("REQ-OCC-12")
@pytest.mark.parametrize("phase_ms", [0, 5, 10, 45, 50, 100])
def test_no_runaway_after_complete_when_served_in_200ms_chunks(phase_ms):
    """The RUNAWAY 200 ms after COMPLETE (issue 12, `--speed 20` on a loaded machine). Its
    cause, confirmed: the motor-off motion check took its rest reference 3 ticks (150 ms)
    after the enable dropped, from a reading still 200 ms old; the next fresh reading showed
    the last steps as motion with the motor off. With the session-3 firmware (settle 3 ticks)
    this run raises RUNAWAY at 10 of 20 phases of the completion within a chunk (every phase
    listed here); with the settle longer than a reading may trail (7 ticks) at none. The
    battery's 50 ms calls (tests/test_occ12.py) did not reproduce it: there the reading is
    renewed at a slice start the settle always reaches."""
    out = _served_completion(phase_ms)
    assert b"alarm=VTBI_DONE" in out
    assert b"RUNAWAY" not in out


# ---------------------------------------------------------------------- volume accuracy
@pytest.mark.req("REQ-ACC-13")
def test_plunger_encoder_closes_the_loop_on_screw_error():
    """A 5 µm periodic screw error made the 5 mL/h trumpet 2.5 % (the loop only ever raised
    its lost-motion estimate, so it ran open loop on a screw that pushes ahead). The plunger
    encoder sees the screw: the 2-min trumpet at 5 mL/h (the standard's intermediate rate)
    is within 2 % with realistic friction, and the whole hour within 0.5 %."""
    pump = _pump(PlantParams(**REAL), seed=1)
    try:
        t0 = pump.start(5.0, 50.0)
        pump.run(7200 * 1000)
        _, flows = analysis.flow_curve(pump.sim.record, t0 - 1.0)
        tr = analysis.trumpet(flows, 5.0)
        assert tr.max_abs(2) <= 2.0, tr.as_dict()
        assert abs(tr.overall_pct) <= 0.5
        assert not _bad(pump)
    finally:
        pump.close()


# ---------------------------------------------------------------------- start-up (LOAD)
def _startup_10min(seed, **kw):
    pump = _pump(PlantParams(periodic_error_um=5.0, stiction_delta_n=0.15, breakaway_n=0.0,
                             friction_var_pct=15.0, breakloose_var_pct=15.0, **kw), seed=seed)
    try:
        t0 = pump.start(1.0, 10.0) - 1.0
        pump.run(600_000)
        _, flows = analysis.flow_curve(pump.sim.record, t0, duration_s=600)
        ahead = pump.sim.plant.displaced_ml - 600 / 3600.0       # vs the line at 1 mL/h
        return analysis.startup_time_s(flows, 1.0), flows, ahead, _bad(pump)
    finally:
        pump.close()


@pytest.mark.req("REQ-ACC-13")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_start_up_where_the_glide_is_above_the_tare(seed):
    """Glide varies ±15 % along the barrel: at seed 1's start it is 12.5 % above the nominal
    glide the force sensor is tared by. LOAD judged "gliding" by the reading's rise since the
    anchor (< ¼ mmHg per count), which a stopper gliding 0.5 N above the tare passes only
    48 counts on: the stopper had slid 34 counts (7 µL) ahead of the line and the loop waited
    ~30 s (the second 30-s sample 0.68 of the rate, start-up 90 s). The glide test is now the
    reading's slope over the last 8 counts, and the anchor is moved by the spring's measured
    compression (conservatively: the volume is never counted before it moved): start-up
    within 60 s (PRODUCT.md) where the friction allows it (0.15 N of stick), and the stopper
    never more than 12 µL ahead of the line."""
    st, flows, ahead, bad = _startup_10min(seed)
    assert not bad, bad
    assert st is not None and st <= 60.0, (st, [round(f, 3) for f in flows[:6]])
    assert ahead <= 0.012, ahead
