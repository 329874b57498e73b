"""Plant physics (hil_sim.plant): one test per physical effect, plus determinism and cost."""
import math

import pytest

from hil_sim.plant import (FLAG_AIR, FLAG_BATTERY, FLAG_DOOR, FLAG_END, MMHG_PER_CM_H2O, SYRINGES,
                           Plant, PlantParams)

TICK = 50
QUIET = dict(pressure_noise_mmhg=0.0, friction_var_pct=0.0)   # no sensor noise, a uniform barrel
# an ideal mechanism: no slack, lead error, periodic error or stiction (isolates one effect)
IDEAL = dict(pressure_noise_mmhg=0.0, friction_var_pct=0.0, slack_usteps=0, pitch_error_pct=0.0, periodic_error_um=0.0,
             stiction_delta_n=0.0, breakaway_n=0.0, backlash_usteps=0)


def steps_for(rate_ml_h: float, ticks: int, params: PlantParams) -> list[int]:
    """Integer µsteps per tick for a rate at the nominal calibration (like an open-loop controller)."""
    per_tick = rate_ml_h / 3600.0 * TICK / 1000.0 / (params.nominal_nl_per_ustep * 1e-6)
    out, acc = [], 0.0
    for _ in range(ticks):
        acc += per_tick
        s = int(acc)
        acc -= s
        out.append(s)
    return out


def run(plant: Plant, rate_ml_h: float, seconds: float) -> None:
    plant.drive(plant.t_ms, TICK, steps_for(rate_ml_h, int(seconds * 1000 / TICK), plant.params), TICK)


def p_nominal_ml(plant: Plant) -> float:
    return plant.params.nominal_nl_per_ustep * 1e-6


def sensed(plant: Plant) -> int:
    return plant.sensors()[0]


# ---------------------------------------------------------------------- geometry, defaults
def test_geometry_matches_firmware_calibration():
    p = PlantParams()
    assert p.usteps_per_rev == 3200
    assert p.nominal_nl_per_ustep == pytest.approx(217.078, abs=2e-3)   # firmware: 217078 nL/kstep
    assert abs(p.nl_per_kstep - 217078) <= 1
    assert PlantParams(pitch_error_pct=1.0).ml_per_ustep == pytest.approx(
        p.nominal_nl_per_ustep * 1e-6 * 1.01)


@pytest.mark.parametrize("size", sorted(SYRINGES))
def test_syringe_sizes(size):
    p = PlantParams.for_syringe(size)
    assert p.syringe_ml == size and p.fill_ml == size
    # stroke of a full syringe: 40..100 mm, like real syringes
    stroke_mm = size * 1000 / p.area_mm2
    assert 40 < stroke_mm < 100
    # compliance scales with the stopper area; 1 mmHg is a smaller force on a smaller bore
    assert p.total_compliance < PlantParams.for_syringe(50).total_compliance or size == 50
    assert p.n_per_mmhg == pytest.approx(p.area_mm2 * 1e-6 * 133.322, rel=1e-4)
    with pytest.raises(ValueError):
        PlantParams.for_syringe(30)


def test_defaults_are_in_the_documented_ranges():
    p = PlantParams()
    kpa = p.syringe_compliance / 0.133322387415
    assert 0.009 <= kpa <= 0.021                         # Snijder 2015, mL/kPa
    q = 52.5 / 3600.0
    assert 15 <= p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml <= 30
    rise_per_min = (1.0 / 3600.0) / p.total_compliance * 60
    assert 6 <= rise_per_min <= 14                       # CONTEXT §3 at 1 mL/h
    assert p.slack_usteps > 0 and p.backlash_usteps > 0 and p.stiction_n > 0
    assert 2.0 <= p.glide_n <= 10.0                       # 50 mL glide force, N
    assert p.sensor_lsb_mmhg < p.noise_mmhg / 2  # ADC step well under the noise σ


# ---------------------------------------------------------------------- fluid path
def test_compliance_sets_the_pressure_rise_rate():
    """An occluded line: the *sensed* pressure rises at dP/dt = Q / C within 5 % (a gliding
    stopper: stick-slip would add its own sawtooth to the two readings)."""
    p = PlantParams(**QUIET, primed=True, stiction_delta_n=0.0)
    plant = Plant(p)
    plant.set_occluded(True)
    run(plant, 5.0, 20)
    p0, t0 = sensed(plant), plant.t_ms
    run(plant, 5.0, 120)
    dpdt = (sensed(plant) - p0) / ((plant.t_ms - t0) / 1000)
    assert dpdt == pytest.approx((5.0 / 3600.0) / p.total_compliance, rel=0.05)
    assert plant.delivered_ml == 0.0                     # nothing gets past an occlusion


def test_upstream_occlusion_fills_only_the_syringe():
    p = PlantParams(**QUIET, primed=True)
    rates = {}
    for where in ("down", "up"):
        plant = Plant(p)
        run(plant, 5.0, 30)
        plant.set_occluded(True, where=where)
        d0 = plant.delivered_ml
        p0 = sensed(plant)
        run(plant, 5.0, 60)
        rates[where] = (sensed(plant) - p0) / 60
        if where == "up":
            # the line downstream still drains what it held, then nothing
            assert plant.delivered_ml - d0 < p.line_compliance_ml_per_mmhg * 20
            assert plant.line_pressure == pytest.approx(p.vein_mmhg, abs=0.1)
    assert rates["up"] > rates["down"] * 1.03
    plant.set_occluded(False, where="up")
    plant.idle(30_000)
    assert plant.pressure == pytest.approx(p.vein_mmhg, abs=0.2)


def test_steady_state_pressure_is_pv_plus_q_r():
    p = PlantParams(**IDEAL)
    plant = Plant(p)
    run(plant, 52.5, 60)                                 # 60 s >> tau = 1.7 s
    q = 52.5 / 3600.0
    assert plant.pressure == pytest.approx(p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml, rel=0.02)


def test_exact_integration_is_stable_for_long_steps():
    p = PlantParams(**IDEAL)
    plant = Plant(p)
    plant.drive(0, 600_000, [100_000], 600_000)          # one 10-minute interval >> tau
    q = 100_000 * p.ml_per_ustep / 600.0
    assert math.isfinite(plant.pressure)
    assert plant.pressure == pytest.approx(p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml, rel=2e-3)


def test_occlusion_release_bolus_is_the_stored_volume():
    p = PlantParams(**QUIET, primed=True)
    plant = Plant(p)
    run(plant, 25.0, 10)
    plant.set_occluded(True)
    run(plant, 25.0, 30)
    plant.drive(plant.t_ms, TICK, [0], TICK)             # motor stopped, line still closed
    stored = (plant.pressure - p.vein_mmhg) * p.total_compliance   # fluid + stopper spring
    before = plant.delivered_ml
    plant.set_occluded(False)
    plant.idle(60_000)
    assert plant.delivered_ml - before == pytest.approx(stored, rel=0.02)
    assert plant.delivered_ml == pytest.approx(plant.displaced_ml, rel=1e-3)


def test_siphon_head_shifts_the_line_and_a_free_plunger_siphons():
    # clamped (engaged) plunger: raising the pump 60 cm drains part of the stored volume only
    p = PlantParams(**QUIET, primed=True)
    plant = Plant(p)
    run(plant, 5.0, 60)
    d0 = plant.delivered_ml
    plant.height_cm = 60
    plant.idle(30_000)
    bolus = plant.delivered_ml - d0
    head = 60 * MMHG_PER_CM_H2O
    assert bolus == pytest.approx(p.total_compliance * head, rel=0.25)   # the stored volume only
    assert plant.pressure == pytest.approx(p.vein_mmhg - 60 * MMHG_PER_CM_H2O, abs=1.0)
    plant.idle(120_000)
    assert plant.delivered_ml - d0 == pytest.approx(bolus, abs=1e-4)   # no free flow
    # an unclamped plunger (slack not taken up) 150 cm up: free flow against the glide force
    q = PlantParams(**QUIET, height_cm=150)
    free = Plant(q)
    free.idle(120_000)
    assert not free.engaged
    assert free.delivered_ml > 0.05
    low = Plant(PlantParams(**QUIET, height_cm=30))      # under the friction: holds
    low.idle(60_000)
    held = low.delivered_ml                              # the compliance drains, no more
    assert held < q.total_compliance * 30 * MMHG_PER_CM_H2O * 1.1
    low.idle(60_000)
    assert low.delivered_ml == pytest.approx(held, abs=1e-6)
    assert free.delivered_ml > 5 * held


# ---------------------------------------------------------------------- mechanism
def test_slack_delays_first_flow_and_encoder():
    p = PlantParams(**{**IDEAL, "slack_usteps": 640})
    plant = Plant(p)
    plant.drive(0, TICK, [1] * 600, TICK)
    assert plant.plunger == 0.0 and plant.delivered_ml == 0.0 and plant.sensors()[1] == 0
    plant.drive(plant.t_ms, TICK, [1] * 140, TICK)
    assert plant.engaged
    assert plant.sensors()[1] == 100
    assert plant.delivered_ml > 0.0
    assert Plant(PlantParams(primed=True)).engaged


def test_slack_delays_first_flow_for_the_baseline_at_1_ml_h():
    """Open-loop stepping at 1 mL/h: the default 0.25 mm of slack costs ~8 min of no flow."""
    from hil_sim.analysis import first_flow_s
    p = PlantParams(**QUIET)
    plant = Plant(p)
    run(plant, 1.0, 900)
    slack_min = p.slack_usteps * p.nominal_nl_per_ustep * 1e-6 / (1.0 / 60)
    ff = first_flow_s(plant.record, 0.0)
    assert ff is not None and ff / 60 > slack_min
    primed = Plant(PlantParams(**QUIET, primed=True))
    run(primed, 1.0, 900)
    assert first_flow_s(primed.record, 0.0) < ff / 3


def test_backlash_costs_every_reversal():
    p = PlantParams(**{**IDEAL, "backlash_usteps": 8})
    plant = Plant(p)
    plant.drive(0, TICK, [100], TICK)
    assert plant.plunger == pytest.approx(100.0)
    plant.drive(plant.t_ms, TICK, [-5], TICK)            # inside the nut's play
    assert plant.plunger == pytest.approx(100.0)
    plant.drive(plant.t_ms, TICK, [-10], TICK)           # 7 µsteps past it
    assert plant.plunger == pytest.approx(93.0)
    plant.drive(plant.t_ms, TICK, [20], TICK)            # forward: 8 of play, then 12
    assert plant.plunger == pytest.approx(105.0)


def test_pitch_error_scales_the_volume():
    vols = []
    for pe in (0.0, 1.0):
        plant = Plant(PlantParams(**{**IDEAL, "pitch_error_pct": pe}))
        plant.drive(0, TICK, [3200] * 20, TICK)          # 20 revolutions
        plant.idle(20_000)
        vols.append(plant.delivered_ml)
    assert vols[1] / vols[0] == pytest.approx(1.01, rel=1e-3)


def test_periodic_lead_error_modulates_flow_once_per_revolution():
    amp_um = 2.0
    plant = Plant(PlantParams(**{**IDEAL, "periodic_error_um": amp_um}))
    per_quarter = []
    for _ in range(8):                                   # two revolutions, in quarter turns
        x0 = plant.plunger
        plant.drive(plant.t_ms, TICK, [800], TICK)
        per_quarter.append(plant.plunger - x0)
    amp_u = amp_um / 1000 / PlantParams().mm_per_ustep
    assert max(per_quarter) - min(per_quarter) == pytest.approx(2 * amp_u, rel=0.05)
    assert per_quarter[:4] == pytest.approx(per_quarter[4:], rel=1e-6)   # once per rev
    assert sum(per_quarter[:4]) == pytest.approx(3200, rel=1e-9)          # no net error per rev


def test_stiction_makes_flow_pulse():
    """At 1 mL/h the stopper sticks, then slips: the flow comes in pulses, and the force
    sensor shows the stick phase as a sawtooth; without stiction the stopper creeps."""
    def slips(**kw):
        plant = Plant(PlantParams(**{**QUIET, "primed": True, **kw}))
        run(plant, 1.0, 60)
        moves, reads = 0, []
        last = plant.stopper
        for s in steps_for(1.0, 1200, plant.params):
            plant.drive(plant.t_ms, TICK, [s], TICK)
            if plant.stopper != last:
                moves += 1
                last = plant.stopper
            reads.append(plant.force_n)
        return moves, max(reads) - min(reads)

    moves_stick, band_stick = slips()
    moves_smooth, band_smooth = slips(stiction_delta_n=0.0, breakaway_n=0.0)
    assert moves_smooth > 250                            # a move on (nearly) every step
    assert 5 < moves_stick < moves_smooth / 5            # pulses
    p = PlantParams()
    # the sawtooth: the stick band plus what the short rest adds to the breakaway force
    assert p.stiction_n * 0.8 < band_stick < p.stiction_n + p.breakaway_excess_n * 0.3
    assert band_smooth < band_stick / 3


def test_breakaway_after_rest_needs_more_force():
    p = PlantParams(**QUIET, primed=True)
    plant = Plant(p)
    run(plant, 5.0, 10)
    plant.idle(600_000)                                  # 10 min at rest
    f0 = plant.force_n
    peak = f0
    x0 = plant.stopper
    while plant.stopper == x0:
        plant.drive(plant.t_ms, TICK, [1], TICK)
        peak = max(peak, plant.force_n)
    assert peak - f0 > 0.8 * p.breakaway_excess_n


def test_missed_steps_above_the_motor_force():
    p = PlantParams(**QUIET, primed=True, stall_force_n=30.0)
    plant = Plant(p)
    plant.set_occluded(True)
    run(plant, 100.0, 60)
    assert plant.missed > 0
    assert plant.force_n == pytest.approx(30.0, rel=0.1)
    # the encoder shows it: fewer counts than steps issued
    assert plant.sensors()[1] < plant.commanded - p.slack_usteps - 100
    # pull-out force falls with speed
    fast = Plant(PlantParams(**QUIET, primed=True, stall_force_n=30.0, max_rpm=100.0))
    fast.set_occluded(True)
    fast.drive(0, TICK, [250] * 400, TICK)                # ~94 rpm
    assert fast.force_n < 30.0 * 0.2


def test_end_stop_when_the_syringe_is_empty():
    p = PlantParams.for_syringe(10, fill_ml=0.5, **QUIET, primed=True)
    plant = Plant(p)
    run(plant, 60.0, 45)
    assert plant.at_end and plant.sensors()[2] & FLAG_END
    assert plant.displaced_ml == pytest.approx(0.5, abs=1e-6)
    assert sensed(plant) > 300                           # the motor pushes on the barrel end
    plant2 = Plant(PlantParams(**QUIET, primed=True))
    plant2.set_empty()
    run(plant2, 10.0, 5)
    assert plant2.at_end and plant2.displaced_ml < 1e-6


def test_power_off_stops_the_motor_and_runaway_moves_it():
    plant = Plant(PlantParams(**IDEAL))
    plant.powered = False
    plant.drive(0, TICK, [100] * 10, TICK)
    assert plant.motor == 0 and plant.commanded == 1000
    plant.powered = True
    plant.runaway = True
    plant.runaway_ml_h = 36.0
    plant.enable = 1
    plant.drive(plant.t_ms, TICK, [0] * 200, TICK)        # 10 s, nothing commanded
    assert plant.plunger * p_nominal_ml(plant) == pytest.approx(0.1, rel=0.01)
    plant.enable = 0
    x = plant.motor
    plant.drive(plant.t_ms, TICK, [0] * 20, TICK)
    assert plant.motor == x


# ---------------------------------------------------------------------- sensors
def test_sensor_noise_quantisation_offset_and_clamp():
    p = PlantParams(pressure_noise_mmhg=1.5, primed=True)
    plant = Plant(p, seed=3)
    reads = [sensed(plant) for _ in range(4000)]
    assert all(isinstance(r, int) for r in reads)
    mean = sum(reads) / len(reads)
    sd = (sum((r - mean) ** 2 for r in reads) / len(reads)) ** 0.5
    assert mean == pytest.approx(p.vein_mmhg, abs=0.2)
    assert 1.2 < sd < 1.9
    plant.pressure = -50.0
    plant.stopper = plant.plunger                         # no load at all: the tare shows
    assert sensed(plant) == pytest.approx(-p.glide_n / p.n_per_mmhg, abs=5)   # (bipolar ADC)
    plant.stopper = plant.plunger - 1e6
    assert sensed(plant) == p.pressure_max_mmhg
    # a coarse ADC on a small syringe: readings fall on the ADC's steps
    q = PlantParams.for_syringe(10, pressure_noise_mmhg=3.0, adc_bits=8, primed=True)
    small = Plant(q, seed=1)
    lsb = q.sensor_lsb_mmhg
    vals = {sensed(small) for _ in range(500)}
    assert len(vals) < 12 and all(min(abs(v - k * lsb) for k in range(100)) <= 0.5 for v in vals)
    off = Plant(PlantParams(**QUIET, primed=True, pressure_offset_mmhg=12.0))
    assert sensed(off) == pytest.approx(p.vein_mmhg + 12, abs=1)


def test_stuck_and_drifting_sensor_and_encoder():
    plant = Plant(PlantParams(**QUIET, primed=True))
    run(plant, 25.0, 10)
    plant.sensor_stuck = sensed(plant)
    plant.set_occluded(True)
    run(plant, 25.0, 30)
    assert sensed(plant) == plant.sensor_stuck
    plant.sensor_stuck = None
    assert sensed(plant) > 80
    plant2 = Plant(PlantParams(**QUIET, primed=True))
    plant2.sensor_drift_mmhg_min = 6.0
    plant2.idle(300_000)
    assert sensed(plant2) == pytest.approx(plant2.params.vein_mmhg + 30, abs=1)
    plant2.encoder_stuck = plant2.sensors()[1]
    run(plant2, 25.0, 10)
    assert plant2.sensors()[1] == plant2.encoder_stuck


def test_air_bubble_passes_the_sensor():
    p = PlantParams(**QUIET, primed=True)
    plant = Plant(p)
    run(plant, 36.0, 5)
    plant.add_bubble(100)                                 # 0.1 mL: 10 s at 36 mL/h
    seen = []
    for s in steps_for(36.0, 40 * 20, p):
        plant.drive(plant.t_ms, TICK, [s], TICK)
        seen.append(bool(plant.sensors()[2] & FLAG_AIR))
    first = seen.index(True) * TICK / 1000
    dur = sum(seen) * TICK / 1000
    assert first == pytest.approx(p.line_volume_to_air_sensor_ml / (36 / 3600), abs=2.0)
    assert dur == pytest.approx(10.0, abs=1.0)
    plant.add_bubble(2)                                   # under the sensor's limit
    assert plant.air_delivered_ml == pytest.approx(0.102)
    assert len(plant._bubbles) == 1


def test_flags_door_and_forced_values():
    plant = Plant()
    plant.door_open = True
    plant.air = True
    plant.battery_mv = 3300
    _, _, flags, batt = plant.sensors()
    assert flags == FLAG_DOOR | FLAG_AIR and batt == 3300
    plant.air = None
    plant.battery_mv = None
    assert not plant.sensors()[2] & FLAG_AIR and plant.sensors()[3] > 4000


# ---------------------------------------------------------------------- power
def test_battery_discharges_and_browns_out():
    p = PlantParams(**QUIET, mains=False, battery_soc=0.10, battery_mah=100.0)
    plant = Plant(p)
    assert plant.sensors()[2] & FLAG_BATTERY
    plant.enable = 1
    v0 = plant.battery_mv
    plant.idle(10 * 60_000)
    assert plant.battery_mv < v0 and plant.soc < 0.10
    plant.idle(60 * 60_000)
    assert not plant.powered and plant.battery_mv < p.brownout_mv + 100
    # idle draw alone lasts longer than idle + motor
    expected_h = 0.10 * p.battery_mah / (p.idle_ma + p.motor_ma)
    assert expected_h < 70 / 60
    charged = Plant(PlantParams(battery_soc=0.5))
    charged.idle(60 * 60_000)
    assert charged.soc == 1.0 and not charged.sensors()[2] & FLAG_BATTERY


# ---------------------------------------------------------------------- integration details
def test_delivered_volume_matches_displacement_after_relaxation():
    p = PlantParams(**QUIET)
    plant = Plant(p)
    run(plant, 52.5, 120)
    plant.idle(30_000)
    assert plant.delivered_ml == pytest.approx(plant.displaced_ml, rel=1e-6)
    assert plant.pressure == pytest.approx(p.vein_mmhg, abs=1e-3)
    # open loop: the slack and the stopper's spring preload are missing, the lead error adds
    nominal = plant.commanded * p.nominal_nl_per_ustep * 1e-6
    missing = (p.slack_usteps + (p.glide_n + p.n_per_mmhg * 30) / (p.stopper_stiffness_n_mm * p.mm_per_ustep)) \
        * p.nominal_nl_per_ustep * 1e-6
    assert nominal - plant.delivered_ml == pytest.approx(missing - nominal * p.pitch_error_pct / 100, abs=0.01)


def test_overlapping_windows_match_the_fast_path():
    """Calls every 10 ms with steps spread over the 50 ms tick == one call per tick."""
    p = PlantParams(**QUIET, primed=True)
    steps = steps_for(52.5, 200, p)
    a = Plant(p)
    a.drive(0, TICK, steps, TICK)
    b = Plant(p)
    fine = []
    for s in steps:
        fine += [s, 0, 0, 0, 0]
    b.drive(0, 10, fine, TICK)
    assert b.t_ms == pytest.approx(a.t_ms)
    assert b.delivered_ml == pytest.approx(a.delivered_ml, rel=2e-3)   # a slip's timing apart
    c = Plant(p)
    c.drive(0, 10, [5] * 100, TICK)
    c.idle(100)
    assert c.motor - Plant(p).motor == pytest.approx(500.0)


def test_deterministic_for_a_seed():
    def go(seed):
        plant = Plant(PlantParams(), seed=seed)
        out = []
        for s in steps_for(52.5, 400, plant.params):
            out.append(plant.sensors())
            plant.drive(plant.t_ms, TICK, [s], TICK)
        return out, plant.record.rows()

    assert go(7) == go(7)
    assert go(7)[0] != go(8)[0]


def test_record_is_sampled_every_second():
    p = PlantParams(**IDEAL)
    plant = Plant(p)
    run(plant, 36.0, 10)
    rec = plant.record
    assert rec.t_s == pytest.approx([float(i) for i in range(1, 11)])
    assert rec.cmd_ml_h[-1] == pytest.approx(36.0, rel=0.01)
    assert rec.delivered_ml[-1] == plant.delivered_ml


# ---------------------------------------------------------------------- bedside realism (#12)
def _read_sd(plant: Plant, n: int = 3000, dt_ms: float = 50.0) -> tuple[float, float]:
    xs = []
    for _ in range(n):
        plant.idle(dt_ms)
        xs.append(sensed(plant))
    m = sum(xs) / n
    return m, (sum((x - m) ** 2 for x in xs) / n) ** 0.5


@pytest.mark.req("REQ-SYR-01")
def test_force_noise_is_a_force_so_a_small_syringe_reads_noisier():
    """The same force sensor (white noise in N) on 10 and 50 mL: σ in mmHg goes with 1/area."""
    kw = dict(force_lf_noise_n=0.0, force_drift_n_h=0.0, friction_var_pct=0.0, primed=True)
    _, sd50 = _read_sd(Plant(PlantParams.for_syringe(50, **kw), seed=4))
    _, sd10 = _read_sd(Plant(PlantParams.for_syringe(10, **kw), seed=4))
    ratio = (SYRINGES[50] / SYRINGES[10]) ** 2                  # 3.37
    assert sd10 / sd50 == pytest.approx(ratio, rel=0.1)
    assert sd50 == pytest.approx(PlantParams().force_noise_n / PlantParams().n_per_mmhg, rel=0.1)


@pytest.mark.req("REQ-SYR-01")
def test_low_frequency_noise_and_drift_are_forces_too():
    base = dict(force_noise_n=0.0, friction_var_pct=0.0, primed=True)
    lf = Plant(PlantParams(**base, force_lf_noise_n=0.3, force_drift_n_h=0.0), seed=2)
    m, sd = _read_sd(lf, n=4000, dt_ms=200)            # 800 s: 40 time constants of 20 s
    assert 2.0 < sd < 6.0                              # 0.3 N = 4 mmHg on 50 mL
    # consecutive readings are correlated (low-frequency), unlike white noise
    a = [sensed(lf) for _ in range(1) if lf.idle(200) is None]
    drift = Plant(PlantParams(**base, force_lf_noise_n=0.0, force_drift_n_h=1.35), seed=2)
    r0 = sensed(drift)
    drift.idle(3_600_000)
    assert sensed(drift) - r0 == pytest.approx(1.35 / drift.params.n_per_mmhg, abs=2)   # ~18 mmHg
    assert a is not None


@pytest.mark.req("REQ-OCC-10")
@pytest.mark.parametrize("sign", [+1, -1])
def test_height_steps_both_ways_are_seen_unclamped(sign):
    """Lowering the pump below the cannula raises the reading, raising it lowers the reading,
    and the reading goes below zero: nothing clamps at 0 (a step back must be seen)."""
    p = PlantParams(**QUIET, primed=True)
    plant = Plant(p)
    run(plant, 5.0, 30)
    r0 = sensed(plant)
    plant.set_height(sign * 60.0)
    run(plant, 5.0, 30)
    r1 = sensed(plant)
    assert r1 - r0 == pytest.approx(-sign * 60 * MMHG_PER_CM_H2O, abs=3)
    if sign > 0:
        assert r1 < 0
    plant.set_height(0.0, ramp_s=40)                   # back, slowly: a ramp over 40 s
    run(plant, 5.0, 20)
    mid = sensed(plant)
    assert min(r0, r1) < mid < max(r0, r1)           # on its way (friction holds some back)
    run(plant, 5.0, 40)
    assert sensed(plant) == pytest.approx(r0, abs=3)


@pytest.mark.req("REQ-OCC-10")
def test_bedside_breathing_coughs_strain_and_arm_movement():
    from hil_sim.bedside import BedsideParams
    bs = BedsideParams(breath_mmhg=3.0, cough_mmhg=40.0, cough_every_s=60.0, strain_mmhg=30.0,
                       strain_every_s=300.0, arm_cm=30.0)
    p = PlantParams(**QUIET, primed=True, bedside=bs)
    plant = Plant(p, seed=9)
    offs = []
    for _ in range(20 * 60 * 10):                     # 20 min in 100 ms
        plant.idle(100)
        offs.append(plant._v_off)
    assert max(offs) > 25 and min(offs) < -15          # coughs/strain up, the arm down
    # breathing only: a ±3 mmHg sinusoid at 15/min
    q = Plant(PlantParams(**QUIET, primed=True, bedside=BedsideParams(breath_mmhg=3.0)), seed=1)
    vals = []
    for _ in range(400):
        q.idle(50)
        vals.append(q._v_off)
    assert max(vals) == pytest.approx(3.0, abs=0.1) and min(vals) == pytest.approx(-3.0, abs=0.1)
    # reproducible from the seed
    again = Plant(p, seed=9)
    offs2 = []
    for _ in range(20 * 60 * 10):
        again.idle(100)
        offs2.append(again._v_off)
    assert offs2 == offs


@pytest.mark.req("REQ-SYR-02")
def test_glide_friction_varies_along_the_barrel():
    p = PlantParams(pressure_noise_mmhg=0.0, stiction_delta_n=0.0, breakaway_n=0.0, primed=True,
                    friction_var_pct=20.0, friction_period_mm=4.0)
    plant = Plant(p)
    forces = []
    for _ in range(60):                               # 60 × 20 s at 50 mL/h: ~ 17 mL, 31 mm
        run(plant, 50.0, 20)
        forces.append(plant.force_n - p.n_per_mmhg * plant.pressure)
    assert max(forces) - min(forces) == pytest.approx(2 * 0.2 * p.glide_n, rel=0.15)


@pytest.mark.req("REQ-SYR-02")
def test_stick_slip_and_break_loose_vary_along_the_barrel():
    """CONTEXT §8: the break-loose force above glide varies along the barrel too. At 1 mL/h
    the stopper sticks and slips; the size of each slip (the static excess over glide ÷ the
    stopper's stiffness) follows the static excess at the stopper's place."""
    def slips(var):
        p = PlantParams(pressure_noise_mmhg=0.0, friction_var_pct=0.0, primed=True,
                        stiction_delta_n=0.4, breakaway_n=0.0, periodic_error_um=0.0,
                        breakloose_var_pct=var, friction_period_mm=0.2)
        plant = Plant(p, seed=3)
        out, last = [], plant.stopper
        for _ in range(4000):                         # 4000 s at 1 mL/h: 10 periods of 0.2 mm
            run(plant, 1.0, 1)
            if plant.stopper - last > 0.5:
                out.append(plant.stopper - last)
            last = plant.stopper
        return out
    flat, varied = slips(0.0), slips(50.0)
    ref = sorted(flat)[len(flat) // 2]
    assert max(flat) - min(flat) < 0.3 * ref
    assert max(varied) > 1.25 * ref and min(varied) < 0.75 * ref


@pytest.mark.req("REQ-SYR-02")
@pytest.mark.parametrize("tol", [-1.0, 1.0])
def test_bore_tolerance_changes_the_delivered_volume_twice_as_much(tol):
    kw = dict(IDEAL, primed=True)
    nominal = Plant(PlantParams(**kw))
    lot = Plant(PlantParams(**kw, bore_tol_pct=tol))
    for pl in (nominal, lot):
        run(pl, 25.0, 600)
        pl.idle(30_000)
    assert lot.delivered_ml / nominal.delivered_ml - 1 == pytest.approx(2 * tol / 100, rel=0.03)
    assert lot.params.nl_per_kstep == nominal.params.nl_per_kstep   # the pump cannot know


@pytest.mark.req("REQ-SYR-02")
def test_syringe_model_table():
    from hil_sim.plant import SYRINGE_MODELS
    for name, m in SYRINGE_MODELS.items():
        p = PlantParams.for_model(name)
        assert p.bore_mm == m.bore_mm and p.syringe_model == name
        assert 0.009 <= p.syringe_compliance / 0.133322387415 * (26.6 / p.bore_mm) ** 2 <= 0.021
    with pytest.raises(ValueError):
        PlantParams.for_model("XX99")


@pytest.mark.req("REQ-SYR-03")
def test_encoder_placement_plunger_motor_none():
    kw = dict(QUIET, slack_usteps=500, backlash_usteps=20)
    pl = {e: Plant(PlantParams(**kw, encoder=e)) for e in ("plunger", "motor", "none")}
    for plant in pl.values():
        plant.drive(0, TICK, [10] * 100, TICK)
    assert pl["motor"].sensors()[1] == 1000           # the shaft: every step it turned
    assert pl["plunger"].sensors()[1] < 1000 - 400    # the flange: the slack was not travel
    assert pl["none"].sensors()[1] == 0
    with pytest.raises(ValueError):
        Plant(PlantParams(encoder="optical"))


@pytest.mark.req("REQ-SYR-03")
def test_slack_up_to_1_3_ml():
    p = PlantParams(**QUIET, slack_ml=1.3)
    assert p.slack_u * p.nominal_nl_per_ustep * 1e-6 == pytest.approx(1.3)
    plant = Plant(p)
    run(plant, 60.0, 60)                                # 1 mL: all of it slack
    assert plant.delivered_ml == pytest.approx(0.0, abs=1e-6) and not plant.engaged
    run(plant, 60.0, 60)
    assert plant.engaged and plant.delivered_ml > 0.3


@pytest.mark.req("REQ-OCC-11")
def test_partial_occlusion_rising_resistance():
    """Resistance rising linearly: the open-line pressure Pv + Q·R climbs slowly."""
    p = PlantParams(**QUIET, primed=True, stiction_delta_n=0.0)
    plant = Plant(p)
    run(plant, 5.0, 30)
    r0 = plant.pressure
    # R × 100 over 10 min at 5 mL/h: Q·R goes from 1.1 to 111 mmHg
    plant.set_resistance(100.0, ramp_s=600)
    run(plant, 5.0, 300)
    mid = plant.pressure
    run(plant, 5.0, 300)
    q = 5.0 / 3600.0
    # half way the compliance still lags the quasi-static Q·R (τ = R·C grows with R)
    assert 0.6 < (mid - r0) / (q * p.line_resistance_mmhg_s_per_ml * 49.5) < 1.0
    run(plant, 5.0, 900)                               # held: 5 τ at R × 100
    end = plant.pressure
    assert end - r0 == pytest.approx(q * p.line_resistance_mmhg_s_per_ml * 99, rel=0.05)
    plant.set_resistance(1.0)
    run(plant, 5.0, 30)
    assert plant.pressure == pytest.approx(r0, abs=1)
