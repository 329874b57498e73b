"""Closed-loop co-simulation (hil_sim.cosim): firmware + plant + paced link in virtual time."""
import binascii

import pytest

from hil_sim.cosim import DEFAULT_START_MS, Simulation
from hil_sim.plant import PlantParams


def frame(body: bytes) -> bytes:
    return b"%s*%04X\n" % (body, binascii.crc_hqx(body, 0))


def start_infusion(sim, rate_ul_h=52500, vtbi_nl=35_000_000):
    boot = sim.hello_boot()
    b = b" boot=%d" % boot if boot is not None else b""      # the baseline has none
    sim.host_send(frame(b"1 PROG%s rate_ul_h=%d vtbi_nl=%d" % (b, rate_ul_h, vtbi_nl)))
    sim.host_send(frame(b"2 START%s" % b))
    assert sim.run_until(lambda s: s.enable == 1, 2000)
    replies = sim.host_recv()
    assert b"2 OK state=RUNNING" in replies, replies


def test_request_reply_through_the_paced_link():
    with Simulation("cpython") as sim:
        sim.host_send(b"1 HELLO\n")
        got = bytearray()

        def replied(s):
            got.extend(s.host_recv())
            return b"\n" in got

        assert sim.run_until(replied, 1000)
        assert got.startswith(b"1 OK dev=")
        # the reply cannot beat the wire: request + reply bytes at 115200 baud
        assert sim.t_ms >= (8 + len(got)) * 10 / 115.2


def test_delivery_at_52_5_ml_h():
    with Simulation("cpython", seed=1) as sim:
        start_infusion(sim)
        sim.run_for(120_000)
        rec = sim.record
        assert 15 <= sum(rec.pressure_mmhg[-30:]) / 30 <= 30
        delivered = rec.delivered_ml[-1] - rec.delivered_ml[-61]       # last minute
        assert delivered == pytest.approx(52.5 / 60, rel=0.01)
        assert sim.alarms == []


@pytest.mark.req("REQ-ALM-03")
def test_occlusion_raises_a_high_priority_alarm_and_stops_the_motor():
    with Simulation("cpython", seed=2) as sim:
        start_infusion(sim)
        sim.run_for(10_000)
        sim.inject("occlusion", on=True)
        t_occ = sim.t_ms
        assert sim.run_until(lambda s: s.alarm == 3, 120_000)
        p = sim.params
        rise_s = (400 - 20) * p.total_compliance / (52.5 / 3600)   # fixed threshold (level M)
        t_alarm = (sim.t_ms - t_occ) / 1000
        assert t_alarm < rise_s / 2             # the pressure trend, long before the threshold
        motor = sim.plant.motor
        sim.run_for(20_000)                     # back-off: the motor only reverses, then rests
        assert sim.plant.motor <= motor
        assert sim.enable == 0
        motor = sim.plant.motor
        sim.run_for(5_000)
        assert sim.plant.motor == motor
        assert sim.alarms[-1][1] == 3
        assert b"! EV ALARM alarm=OCCLUSION prio=3" in sim.host_recv()


@pytest.mark.req("REQ-BOL-01")
def test_occlusion_back_off_relieves_the_line_and_no_bolus_follows():
    with Simulation("cpython", seed=2) as sim:
        start_infusion(sim)
        sim.run_for(10_000)
        sim.inject("occlusion", on=True)
        assert sim.run_until(lambda s: s.alarm == 3, 120_000)
        sim.run_for(20_000)
        assert sim.plant.pressure < 40          # the stored volume was taken back
        before = sim.plant.delivered_ml
        sim.inject(occlusion=False)
        sim.run_for(10_000)
        assert sim.plant.pressure < 10
        assert sim.plant.delivered_ml - before < 0.05   # no bolus when the line opens


def test_deterministic_for_a_seed():
    def run(seed):
        with Simulation("cpython", seed=seed) as sim:
            start_infusion(sim)
            sim.host_send(frame(b"3 TLM period_ms=50"))   # sensed pressure every tick
            sim.run_for(30_000)
            return sim.record.rows(), sim.host_recv(), sim.alarms

    assert run(5) == run(5)
    assert run(5)[1] != run(6)[1]                       # sensor noise differs


def test_clock_crosses_the_2_30_wrap():
    with Simulation("cpython", start_ms=2**30 - 5_000) as sim:
        start_infusion(sim)
        sim.run_for(20_000)
        assert sim.start_ms + sim.t_ms > 2**30
        assert sim.record.cmd_ml_h[-1] == pytest.approx(52.5, rel=0.05)
    assert DEFAULT_START_MS < 2**30


def test_fine_steps_deliver_like_tick_slices():
    """Calls every 1 ms (real-time serving) vs every 50 ms: the same delivery."""
    vols = []
    for step in (50, 1):
        with Simulation("cpython", params=PlantParams(pressure_noise_mmhg=0.0)) as sim:
            start_infusion(sim)
            t_end = sim.t_ms + 20_000
            sim.advance_to(t_end - 1, step)
            sim.run_for(10_000)
            vols.append(sim.plant.delivered_ml)
    assert vols[1] == pytest.approx(vols[0], rel=0.01)


def test_inject_faults():
    with Simulation("cpython") as sim:
        sim.inject(door_open=True, air=True, battery_mv=3300, link_drop=0.0, link_corrupt=0.0)
        assert sim.plant.sensors()[2:] == (3, 3300)
        with pytest.raises(ValueError):
            sim.inject("meteor")


@pytest.mark.micropython
def test_runtimes_agree_in_closed_loop():
    def run(kind):
        with Simulation(kind, seed=3) as sim:
            start_infusion(sim)
            sim.run_for(20_000)
            sim.inject(occlusion=True)
            sim.run_until(lambda s: s.alarm == 3, 60_000)
            sim.run_for(1000)
            return sim.record.rows(), sim.alarms, sim.enables, sim.host_recv()

    assert run("cpython") == run("micropython")


def test_restart_after_a_power_cut_is_announced_as_an_alarm_event():
    with Simulation("cpython", seed=4) as sim:
        start_infusion(sim)
        sim.run_for(2_000)
        sim.host_recv()
        sim.inject("power_cut", on=True)
        sim.run_for(1_000)
        sim.inject("power_cut", on=False)
        sim.run_for(1_000)
        assert b"! EV ALARM alarm=RESTART prio=2" in sim.host_recv()


def test_unschedule_drops_only_that_faults_pending_events():
    with Simulation("cpython", seed=3) as sim:
        sim.schedule(sim.t_ms + 5_000, "resistance", 4.0, ramp_s=10.0)
        sim.schedule(sim.t_ms + 6_000, "resistance", 8.0)
        sim.schedule(sim.t_ms + 7_000, "height_cm", 20.0)
        assert sim.unschedule("resistance") == 2
        sim.run_for(8_000)
        assert sim.plant._R == sim.params.line_resistance_mmhg_s_per_ml   # no rise came
        assert sim.unschedule("height_cm") == 0          # it was injected at 7 s
        with pytest.raises(ValueError):
            sim.unschedule("no-such-fault")
