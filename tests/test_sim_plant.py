"""Plant physics (hil_sim.plant): geometry, compliance, resistance, slack, determinism."""
import math

import pytest

from hil_sim.plant import Plant, PlantParams

TICK = 50


def steps_for(rate_ml_h: float, ticks: int, params: PlantParams) -> list[int]:
    """Integer µsteps per tick for a rate, with a fractional accumulator (like a controller)."""
    per_tick = rate_ml_h / 3600.0 * TICK / 1000.0 / params.ml_per_ustep
    out, acc = [], 0.0
    for _ in range(ticks):
        acc += per_tick
        s = int(acc)
        acc -= s
        out.append(s)
    return out


def test_geometry_matches_firmware_calibration():
    p = PlantParams()
    assert p.usteps_per_rev == 3200
    assert p.nominal_nl_per_ustep == pytest.approx(217.078, abs=2e-3)   # firmware: 217078 nL/kstep
    assert PlantParams(pitch_error_pct=1.0).ml_per_ustep == pytest.approx(p.ml_per_ustep * 1.01)


def test_defaults_are_in_the_documented_ranges():
    p = PlantParams()
    kpa = p.compliance_ml_per_mmhg / 0.133322387415
    assert 0.009 <= kpa <= 0.021                         # Snijder 2015, mL/kPa
    q = 52.5 / 3600.0
    assert 15 <= p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml <= 30
    rise_per_min = (1.0 / 3600.0) / p.compliance_ml_per_mmhg * 60
    assert 6 <= rise_per_min <= 14                       # CONTEXT §3 at 1 mL/h
    assert p.slack_usteps > 0


def test_occluded_pressure_rises_at_q_over_c():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    plant.set_occluded(True)
    plant.drive(0, TICK, [p.slack_usteps], TICK)         # take up the slack first
    p0 = plant.pressure
    steps = steps_for(5.0, 1200, p)                      # 5 mL/h for 60 s
    plant.drive(plant.t_ms, TICK, steps, TICK)
    dpdt = (plant.pressure - p0) / 60.0
    expected = (5.0 / 3600.0) / p.compliance_ml_per_mmhg
    assert dpdt == pytest.approx(expected, rel=0.05)
    assert plant.delivered_ml == 0.0                     # nothing gets past an occlusion


def test_steady_state_pressure_is_pv_plus_q_r():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    plant.drive(0, TICK, steps_for(52.5, 1200, p), TICK)  # 60 s >> tau = 1.6 s
    q = 52.5 / 3600.0
    assert plant.pressure == pytest.approx(p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml,
                                           rel=0.02)


def test_slack_delays_first_flow_and_encoder():
    p = PlantParams(pressure_noise_mmhg=0.0, slack_usteps=32)
    plant = Plant(p)
    plant.drive(0, TICK, [1] * 32, TICK)
    assert plant.plunger == 0.0 and plant.delivered_ml == 0.0
    assert plant.sensors()[1] == 0
    plant.drive(plant.t_ms, TICK, [1] * 10, TICK)
    assert plant.plunger == pytest.approx(10.0)
    assert plant.sensors()[1] == 10
    assert plant.delivered_ml > 0.0


def test_reversal_costs_the_slack_again():
    p = PlantParams(pressure_noise_mmhg=0.0, slack_usteps=32)
    plant = Plant(p)
    plant.drive(0, TICK, [132], TICK)
    assert plant.plunger == pytest.approx(100.0)
    plant.drive(plant.t_ms, TICK, [-20], TICK)           # back off inside the dead band
    assert plant.plunger == pytest.approx(100.0)
    plant.drive(plant.t_ms, TICK, [-20], TICK)           # 8 µsteps past it
    assert plant.plunger == pytest.approx(92.0)
    plant.drive(plant.t_ms, TICK, [40], TICK)            # forward: 32 of slack, then 8
    assert plant.plunger == pytest.approx(100.0)


def test_delivered_volume_equals_steps_after_relaxation():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    steps = steps_for(52.5, 2400, p)                     # 2 min
    plant.drive(0, TICK, steps, TICK)
    plant.idle(30_000)                                   # ~19 time constants
    expected = (sum(steps) - p.slack_usteps) * p.ml_per_ustep
    assert plant.delivered_ml == pytest.approx(expected, rel=1e-6)
    assert plant.pressure == pytest.approx(p.vein_mmhg, abs=1e-3)


def test_occlusion_release_bolus_is_the_stored_volume():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    plant.drive(0, TICK, steps_for(25.0, 200, p), TICK)
    plant.set_occluded(True)
    plant.drive(plant.t_ms, TICK, steps_for(25.0, 600, p), TICK)
    plant.drive(plant.t_ms, TICK, [0], TICK)             # motor stopped, line still closed
    stored = (plant.pressure - p.vein_mmhg) * p.compliance_ml_per_mmhg
    before = plant.delivered_ml
    plant.set_occluded(False)
    plant.idle(60_000)
    assert plant.delivered_ml - before == pytest.approx(stored, rel=1e-6)
    assert plant.delivered_ml == pytest.approx(plant.displaced_ml, rel=1e-6)


def test_exact_integration_is_stable_for_long_steps():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    plant.drive(0, 600_000, [100_000], 600_000)          # one 10-minute interval >> tau
    q = 100_000 * p.ml_per_ustep / 600.0
    assert math.isfinite(plant.pressure)
    assert plant.pressure == pytest.approx(p.vein_mmhg + q * p.line_resistance_mmhg_s_per_ml,
                                           rel=1e-3)


def test_overlapping_windows_match_the_fast_path():
    """Calls every 10 ms with steps spread over the 50 ms tick == one call per tick."""
    p = PlantParams(pressure_noise_mmhg=0.0)
    steps = steps_for(52.5, 200, p)
    a = Plant(p)
    a.drive(0, TICK, steps, TICK)
    b = Plant(p)
    fine = []
    for s in steps:
        fine += [s, 0, 0, 0, 0]
    b.drive(0, 10, fine, TICK)
    assert b.t_ms == pytest.approx(a.t_ms)
    assert b.pressure == pytest.approx(a.pressure, rel=1e-9)
    assert b.delivered_ml == pytest.approx(a.delivered_ml, rel=1e-9)
    # windows that overlap (steps issued every 10 ms, each spread over 50 ms) also conserve
    c = Plant(p)
    c.drive(0, 10, [5] * 100, TICK)
    c.idle(100)
    assert c.motor == pytest.approx(500.0)


def test_sensor_noise_quantisation_and_clamp():
    p = PlantParams(pressure_noise_mmhg=1.5)
    plant = Plant(p, seed=3)
    reads = [plant.sensors()[0] for _ in range(2000)]
    assert all(isinstance(r, int) for r in reads)
    mean = sum(reads) / len(reads)
    sd = (sum((r - mean) ** 2 for r in reads) / len(reads)) ** 0.5
    assert mean == pytest.approx(p.vein_mmhg, abs=0.2)
    assert 1.2 < sd < 1.9
    plant.pressure = -50.0
    assert plant.sensors()[0] == 0
    plant.pressure = 1e6
    assert plant.sensors()[0] == p.pressure_max_mmhg


def test_flags_and_battery():
    plant = Plant()
    plant.door_open = True
    plant.air = True
    plant.battery_mv = 3300
    _, _, flags, batt = plant.sensors()
    assert flags == 3 and batt == 3300


def test_deterministic_for_a_seed():
    def run(seed):
        plant = Plant(PlantParams(), seed=seed)
        out = []
        for s in steps_for(52.5, 400, plant.params):
            out.append(plant.sensors())
            plant.drive(plant.t_ms, TICK, [s], TICK)
        return out, plant.record.rows()

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


def test_record_is_sampled_every_second():
    p = PlantParams(pressure_noise_mmhg=0.0)
    plant = Plant(p)
    plant.drive(0, TICK, steps_for(36.0, 200, p), TICK)   # 10 s
    rec = plant.record
    assert rec.t_s == pytest.approx([float(i) for i in range(1, 11)])
    assert rec.cmd_ml_h[-1] == pytest.approx(36.0, rel=0.01)
    assert rec.delivered_ml[-1] == plant.delivered_ml


def test_per_tick_cost_is_small():
    import time
    p = PlantParams()
    plant = Plant(p)
    steps = steps_for(52.5, 48_000, p)
    t = time.perf_counter()
    for i in range(0, 48_000, 4):
        plant.sensors()
        plant.drive(plant.t_ms, TICK, steps[i:i + 4], TICK)
    assert time.perf_counter() - t < 1.0                  # typically ~0.1 s
