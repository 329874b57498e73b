"""Issue 12, session 12: bedside height ramps on the confirmed plans where a ramp can fill the
band (_C_SLIDE2: the sliding window, the doubled segment, then one segment at half the rate;
docs/firmware.md, "Occlusion", 3c). A closed line keeps what the doubling pushed; an open
line's Q·R step ebbs through its R·C as the rate falls, so a ramp from outside rises no more
than its own pace. Virtual time only: the detector fed tick by tick, or the simulator's clock."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(ROOT / "tests"))

from test_occ12_fast import _returns  # noqa: E402


@pytest.mark.req("REQ-OCC-23", "REQ-OCC-10")
@pytest.mark.parametrize("seed", [40001, 40003, 40004])
def test_a_pump_brought_down_59_cm_over_20_s_at_15_mlh_on_bd20_is_no_occlusion(seed):
    """The tuning battery's fastest return (60 cm over 20 s, 2.2 mmHg/s: the reading rises
    just above the band's floor, lo / T = 1.84 mmHg/s) at 15 mL/h on BD20, six returns on a
    fresh plant (tuning ranges): main 883703f raised OCCLUSION on 16–17 of 30 seeds (these
    three among them) — four even differences of the ramp and the open line's Q·R answer to
    the doubling. The segment at half the rate after the doubling tells the ramp: no alarm."""
    assert _returns(seed, 15.0, "BD20", 59.0, 20.0) == []


@pytest.mark.req("REQ-OCC-23", "REQ-OCC-10")
@pytest.mark.parametrize("b,seed", [(2, 40005), (2, 40008), (3, 40001), (3, 40002), (4, 40009)])
def test_excursions_ramped_at_25_mlh_on_bd50_are_no_occlusion(b, seed):
    """Cells of the ramp map (bench/ramps.py, tuning ranges: four excursions of 20–60 cm out and
    back, the slopes from bin b: 1.5–2.2, 2.2–3.5, 3.5–8.8 mmHg/s) that main 883703f
    false-alarmed at 25 mL/h on BD50 (11 of its 14 runs of 600 at 15–100 mL/h)."""
    import ramps
    r = ramps.run_one("tune", 25.0, "BD50", b, seed)
    assert r["alarms"] == [], r["alarms"]


def _ramp_run(seed, rate, model, cm, ramp_s, n=4):
    """The pump lowered `cm` over `ramp_s` and brought back, n times, on a tuning-range plant,
    watched tick by tick: the rotor's µsteps (the plant's), the program's line in µsteps (the
    program's rate × the time since the first tick of RUN, at the pump's calibration), and
    which segment the detector is in. Returns (samples, Q·T in µsteps, L, alarms)."""
    import battery as B
    from host._firmware import pumpcore
    O = pumpcore("occlusion")
    SYR = pumpcore("syringes")
    i = SYR.find(model.encode())
    ul_per_ustep = SYR.nl_per_kstep(i, SYR.LEAD_NM_PER_KSTEP) / 1e6
    L, lo, hi, probe = O.plan(rate * 1000, SYR.C_NL_MMHG[i],
                              SYR.sigma_cmmhg(i, SYR.SIGMA_MN) / 100.0)
    qt = rate / 3.6 * L * O.TICK_S / ul_per_ustep          # µL/s × s ÷ µL per µstep
    pump = B.Pump(B.draw_params("tune", seed, model), seed)
    rows = []
    orig = O.Occlusion.update

    def update(self, p, dt):
        rows.append((pump.sim.t_ms, pump.sim.plant.motor, self.confirm, self.mode, self.pn,
                     self.probing))
        return orig(self, p, dt)
    O.Occlusion.update = update
    try:
        pump.start(rate, B._SIZE[model] * 0.9, model)
        t = pump.sim.t_ms + 60_000
        for j in range(n):
            pump.sim.schedule(t, "height_cm", -cm, ramp_s=ramp_s)
            pump.sim.schedule(t + 40_000, "height_cm", 0.0, ramp_s=ramp_s)
            t += 100_000
        pump.run(int(t - pump.sim.t_ms))
        alarms = pump.bad()
    finally:
        O.Occlusion.update = orig
        pump.close()
    t0 = rows[0][0]
    out = [(tm, m - rate / 3.6 * (tm - t0) / 1000.0 / ul_per_ustep, c, mo, pn, pr)
           for tm, m, c, mo, pn, pr in rows]
    return out, qt, L, alarms


@pytest.mark.req("REQ-OCC-23", "REQ-OCC-15")
def test_the_half_rate_segment_never_puts_the_motor_further_ahead_of_the_program():
    """The oracle is the program's line (rate × time since RUN, at the pump's calibration)
    against the plant's rotor, not the controller's bookkeeping. Bedside ramps at 25 mL/h on
    BD50 whose candidates reach the segment at half the rate: the motor's lead over the line
    (from its level while nothing is probed) never exceeds the one doubled segment's Q·T that
    main's confirmation already takes (plus a few µsteps of the loop's regulation), it falls
    all through the half-rate segment (that segment pays back half the doubling's extra, it
    never adds any), and the rest is paid back after: the lead ends where it began. (Session
    11's second doubled segment ran 2·Q·T ahead: 13–19 µL over the campaign oracle's line.)"""
    rows, qt, L, alarms = _ramp_run(40002, 25.0, "BD50", 45.0, 18.0)
    assert alarms == [], alarms
    quiet = [x for tm, x, c, mo, pn, pr in rows[len(rows) // 20:] if mo == 0 and pr == 0]
    quiet.sort()
    base = quiet[len(quiet) // 2]                # the loop's level on the line
    lead = [x - base for tm, x, c, mo, pn, pr in rows]
    assert max(lead) <= qt + 6, (max(lead), qt)
    # the half-rate segments (mode _PROBE, pn 1, probing _P_LOW on the confirmed plan)
    halves = []
    k = 0
    while k < len(rows):
        if rows[k][3] == 1 and rows[k][4] == 1 and rows[k][5] == 2:
            j = k
            while j < len(rows) and rows[j][3] == 1 and rows[j][5] == 2:
                j += 1
            halves.append((k, j))
            k = j
        k += 1
    assert halves, "no candidate reached the segment at half the rate"
    for k, j in halves:
        start = lead[k]
        assert start >= 0.7 * qt, (start, qt)    # the doubling's lead, as main's
        for x in lead[k:j]:
            assert x <= start + 3, (x, start)   # never further ahead
        assert lead[j - 1] <= start - 0.35 * qt, (lead[j - 1], start, qt)   # half paid back
        # ... and the rest within two segments after it
        after = lead[j:j + 2 * L]
        assert not after or min(after) <= 6, (min(after), qt)
