"""Fault injection (hil_sim.cosim): at a scheduled time, by command while serving, power cuts and
watchdog resets that reboot the firmware, host silence, and the baseline controller."""
import binascii
import threading
import time

import pytest

from hil_sim.baseline import BaselineRuntime
from hil_sim.control import ControlServer, execute, send_command
from hil_sim.cosim import FAULTS, Simulation
from hil_sim.link import MemoryEndpoint
from hil_sim.patient import PatientParams
from hil_sim.plant import PlantParams
from hil_sim.serve import LOCKSTEP, Clock, serve

GUARD_S = 120.0          # wall seconds: hang guards only


def frame(body: bytes) -> bytes:
    return b"%s*%04X\n" % (body, binascii.crc_hqx(body, 0))


def start(sim, rate_ul_h=25000, vtbi_nl=20_000_000):
    boot = sim.hello_boot()
    b = b" boot=%d" % boot if boot is not None else b""      # the baseline has none
    sim.host_send(frame(b"1 PROG%s rate_ul_h=%d vtbi_nl=%d" % (b, rate_ul_h, vtbi_nl)))
    sim.host_send(frame(b"2 START%s" % b))
    assert sim.run_until(lambda s: s.enable == 1, 3000)
    sim.host_recv()


def test_every_fault_is_injectable():
    with Simulation("cpython", patient=PatientParams()) as sim:
        values = {"bubble_ul": 50, "fill_ml": 10.0, "runaway": 50.0, "sensor_drift": 1.0,
                  "height_cm": 20, "battery_mv": 3500, "battery_soc": 0.5, "watchdog_stall": 10,
                  "link_drop": 0.0, "link_corrupt": 0.0}
        for name in FAULTS:
            sim.inject(name, value=values.get(name, True))
        for name in ("occlusion", "door_open", "stall", "encoder_fail", "runaway", "sensor_stuck",
                     "host_silence", "hypertension", "occlusion_up", "air"):
            sim.inject(name, value=False if name != "air" else None)
        sim.inject("power_cut", value=False)
        assert len(sim.faults) == len(FAULTS) + 11
        with pytest.raises(ValueError):
            sim.inject("meteor")
        with pytest.raises(ValueError):
            sim.schedule(1000, "meteor")


def test_scheduled_fault_lands_on_its_tick():
    with Simulation("cpython", params=PlantParams(primed=True)) as sim:
        start(sim)
        sim.schedule(10_050, "door_open", True)
        sim.run_for(12_000)
        t, name, value = sim.faults[-1]
        assert (t, name, value) == (10_050, "door_open", True)


def test_power_cut_stops_everything_and_restore_reboots_the_firmware():
    seen = []
    with Simulation("cpython", params=PlantParams(primed=True)) as sim:
        sim.on_power_restore.append(lambda s: seen.append(s.t_ms))
        start(sim)
        sim.run_for(10_000)
        harness = sim.runtime.harness
        sim.inject("power_cut", value=True)
        d = sim.plant.delivered_ml
        stored = sim.params.total_compliance * (sim.plant.pressure - sim.params.vein_mmhg)
        motor = sim.plant.motor
        sim.host_send(b"9 STATUS\n")                    # lost: the UART has no power
        sim.run_for(10_000)
        assert sim.plant.motor == motor and sim.enable == 0
        assert sim.plant.delivered_ml - d < stored + 0.005   # only the line relaxing
        assert sim.host_recv() == b""
        sim.inject("power_cut", value=False)
        assert sim.runtime.harness is not harness       # a new board: boot ran again
        assert seen == [sim.t_ms] and sim.restarts == [(sim.t_ms, "power")]
        sim.host_send(b"10 STATUS\n")
        sim.run_for(1000)
        reply = sim.host_recv()
        assert b"10 OK state=" in reply
        assert b"state=RUNNING" not in reply            # never infusing on its own after a reboot
        m = sim.plant.motor
        sim.run_for(10_000)
        assert sim.plant.motor <= m


def test_battery_brownout_is_a_power_cut_and_mains_brings_it_back():
    p = PlantParams(primed=True, mains=False, battery_soc=0.02, battery_mah=20.0)
    with Simulation("cpython", params=p) as sim:
        start(sim)
        assert sim.run_until(lambda s: not s.plant.powered, 20 * 60_000)
        assert sim.enable == 0
        sim.inject("mains", value=True)
        assert sim.plant.powered and sim.restarts[-1][1] == "mains"


def test_watchdog_stall_keeps_the_step_rate_then_resets():
    with Simulation("cpython", params=PlantParams(primed=True), watchdog_ms=2000) as sim:
        start(sim, rate_ul_h=36000)
        sim.run_for(10_000)
        x = sim.plant.motor
        sim.inject("watchdog_stall", value=5000)
        sim.run_for(1000)
        moved = sim.plant.motor - x
        assert moved == pytest.approx(36 / 3600 / (sim.params.nominal_nl_per_ustep * 1e-6), rel=0.15)
        sim.run_for(1200)
        assert sim.restarts and sim.restarts[-1][1] == "watchdog"
        # a short hang under the watchdog time: no reset
        sim2 = Simulation("cpython", watchdog_ms=2000)
        sim2.inject("watchdog_stall", value=500)
        sim2.run_for(3000)
        assert sim2.restarts == []


def test_host_silence_drops_the_hosts_bytes():
    with Simulation("cpython") as sim:
        sim.inject("host_silence", value=True)
        sim.host_send(b"1 HELLO\n")
        sim.run_for(1000)
        assert sim.host_recv() == b""
        sim.inject("host_silence", value=False)
        sim.host_send(b"2 HELLO\n")
        sim.run_for(1000)
        assert sim.host_recv().startswith(b"2 OK")


def test_patient_receives_what_the_plant_delivers():
    with Simulation(BaselineRuntime(), params=PlantParams(primed=True),
                    patient=PatientParams(weight_kg=70), conc_mg_ml=1.0) as sim:
        start(sim, rate_ul_h=52500, vtbi_nl=35_000_000)
        sim.run_for(600_000)
        assert sim.patient.total_mg == pytest.approx(sim.plant.delivered_ml, rel=1e-6)
        assert sim.patient.cp > 50
        sim.inject("hypertension", value=True)
        assert sim.patient.true_vitals()[0] > 140


def test_fault_by_command_while_serving():
    """A host test opens an occlusion on a running pump through the control port, and runs
    the (lock-step) pump's clock there until the alarm: pump time, not wall time."""
    sim = Simulation("cpython", params=PlantParams(primed=True))
    ep = MemoryEndpoint()
    stop = threading.Event()
    clock = Clock(guard_s=GUARD_S)
    th = threading.Thread(target=serve, args=(sim, ep, LOCKSTEP, stop), kwargs={"clock": clock},
                          daemon=True)

    def read_until(marker):
        got, end = b"", time.monotonic() + GUARD_S          # a hang guard: no pump time needed
        while marker not in got:
            assert time.monotonic() < end, got
            got += ep.host_read(timeout=0.2)
        return got
    with ControlServer(sim, clock=clock) as ctl:
        th.start()
        try:
            ep.host_write(frame(b"1 PROG boot=1 rate_ul_h=25000 vtbi_nl=20000000") + frame(b"2 START boot=1"))
            got = read_until(b"2 OK")
            assert b"2 OK state=RUNNING" in got
            assert send_command(ctl.url, "occlusion on", GUARD_S) == "OK"
            assert send_command(ctl.url, "meteor 3", GUARD_S).startswith("ER unknown fault")
            assert send_command(ctl.url, "faults", GUARD_S).startswith("OK occlusion,")
            reply = send_command(ctl.url, "advance 400000 until=high", timeout=GUARD_S)
            assert reply.startswith("OK t_ms=") and reply.endswith("reached=1"), reply
            got += read_until(b"alarm=OCCLUSION")
            assert b"! EV ALARM alarm=OCCLUSION prio=3" in got
            assert "occluded=1" in send_command(ctl.url, "status", GUARD_S)
        finally:
            stop.set()
            th.join(GUARD_S)
            sim.close()
    assert any(f[1] == "occlusion" for f in sim.faults)


def test_control_value_parsing():
    sim = Simulation("cpython")
    assert execute(sim, "bubble_ul 150") == "OK"
    assert execute(sim, "occlusion on where=up") == "OK"
    assert execute(sim, "battery_mv none") == "OK"
    sim.run_for(200)
    assert sim.plant.occluded_up and sim.plant.air_delivered_ml == pytest.approx(0.15)
    assert execute(sim, "") .startswith("ER")


# ---------------------------------------------------------------------- the baseline controller
def test_baseline_speaks_the_protocol_and_steps_open_loop():
    with Simulation(BaselineRuntime(), params=PlantParams(pressure_noise_mmhg=0.0)) as sim:
        sim.host_send(b"1 HELLO\n")
        start(sim, rate_ul_h=1000, vtbi_nl=10_000_000)
        sim.run_for(600_000)
        # exactly the volume line, whatever the plant does
        assert sim.plant.commanded == pytest.approx(600 * 1000 / 3600 * 1000 / 217.078, abs=2)
        # the slack is not taken up: at 1 mL/h nothing flows for the first minutes
        rec = sim.record
        assert rec.delivered_ml[300] < 1e-4
        sim.host_send(frame(b"3 STATUS"))
        sim.run_for(500)
        assert b"3 OK state=RUNNING" in sim.host_recv()


def test_baseline_occlusion_at_a_fixed_threshold_without_back_off():
    with Simulation(BaselineRuntime(), params=PlantParams(primed=True, pressure_noise_mmhg=0.0)) as sim:
        start(sim)
        sim.run_for(10_000)
        sim.inject("occlusion", value=True)
        t0 = sim.t_ms
        assert sim.run_until(lambda s: s.alarm == 3, 300_000)
        rise = (300 - 8 - 25 / 3600 * 800) * sim.params.total_compliance / (25 / 3600)
        assert (sim.t_ms - t0) / 1000 == pytest.approx(rise, rel=0.1)
        m = sim.plant.motor
        sim.run_for(5000)
        assert sim.plant.motor == m                     # no back-off
        d = sim.plant.delivered_ml
        sim.inject("occlusion", value=False)
        sim.run_for(30_000)
        assert sim.plant.delivered_ml - d > 0.5         # the whole stored volume rushes in
