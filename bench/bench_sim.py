"""Simulator speed and delivery accuracy: the 40-min ketamine scenario under both runtimes."""
from __future__ import annotations

import sys

from benchlib import ROOT


def _ketamine_run(runtime: str) -> dict:
    """The 40-min ketamine scenario (0.5 mg/kg, 70 kg, 1 mg/mL) with no host in the loop:
    frames go straight onto the simulated wire, time runs as fast as the runtime allows."""
    sys.path.insert(0, str(ROOT))
    from hil_sim.cosim import Simulation
    from host.codec import encode_request

    with Simulation(runtime=runtime, seed=0) as sim:
        sim.host_send(encode_request(1, "PROG", {"drug": "ketamine", "dose_ug_kg": 500, "wt_g": 70000,
                                                  "over_ms": 2400000}))
        sim.host_send(encode_request(2, "START", {}))
        sim.run_for(1000)
        assert b"2 OK state=RUNNING" in sim.host_recv(), "pump did not start"
        t0, w0 = sim.t_ms, sim.wall_s
        done = sim.run_until(lambda s: s.enable == 0, max_ms=2_500_000)
        assert done, "infusion did not complete"
        sim_s = (sim.t_ms - t0) / 1000
        wall = sim.wall_s - w0
        sim.run_for(30_000)                       # let the line pressure relax, then weigh
        delivered = sim.plant.delivered_ml
    return {"sim_s": sim_s, "wall_s": wall, "speed_x": sim_s / wall,
            "error_pct": (delivered - 35.0) / 35.0 * 100}


def bench_sim() -> dict:
    cp = [_ketamine_run("cpython") for _ in range(3)]
    mp = [_ketamine_run("micropython") for _ in range(3)]
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {
        "sim.speed_cpython_x": round(med([r["speed_x"] for r in cp]), 1),
        "sim.speed_micropython_x": round(med([r["speed_x"] for r in mp]), 1),
        "acc.ketamine_error_pct": round(abs(mp[0]["error_pct"]), 4),
        "acc.ketamine_error_pct_signed": round(mp[0]["error_pct"], 4),
    }


BENCHMARKS = {"sim": bench_sim}
