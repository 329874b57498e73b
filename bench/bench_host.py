"""Host link figures against the micropython firmware over a real pty, simulator in real time
(speed 1), link paced at 115200 baud: STATUS round trip, and sustained telemetry rate."""
from __future__ import annotations

import statistics
import threading
import time

BAUD = 115200


class _Counting:
    """An endpoint wrapper counting the telemetry frames the pump wrote."""

    def __init__(self, ep):
        self.ep, self.url, self.tl_out = ep, ep.url, 0

    def write(self, data):
        self.tl_out += data.count(b"! TL ")
        self.ep.write(data)

    def __getattr__(self, name):
        return getattr(self.ep, name)


def _served():
    from hil_sim.cosim import Simulation
    from hil_sim.link import PtyEndpoint
    from hil_sim.serve import serve
    sim = Simulation(runtime="micropython", seed=0)
    ep = _Counting(PtyEndpoint())
    stop = threading.Event()
    th = threading.Thread(target=serve, args=(sim, ep, 1.0, stop), daemon=True)
    th.start()

    def close():
        stop.set()
        th.join(timeout=10)
        ep.close()
        sim.close()
    return sim, ep, close


def bench_rtt() -> dict:
    """Median STATUS round trip through host.Pump."""
    from host import Pump
    from host.codec import encode_request
    sim, ep, close = _served()
    try:
        with Pump.open(ep.url, timeout=2.0) as pump:
            pump.program(rate=52.5, vtbi=35)
            pump.start()
            time.sleep(0.5)
            rtts = []
            for _ in range(200):
                a = time.perf_counter()
                st = pump.status()
                rtts.append((time.perf_counter() - a) * 1000)
            req = encode_request(1000, "STATUS", {})
            reply = "1000 OK" + "".join(f" {k}={v}" for k, v in st.fields.items()) + "*XXXX\n"
            wire_ms = (len(req) + len(reply)) * 10 / BAUD * 1000
    finally:
        close()
    med = statistics.median(rtts)
    return {"host.rtt_ms": round(med, 3), "host.rtt_wire_ms": round(wire_ms, 3),
            "host.rtt_wire_ratio": round(med / wire_ms, 3),
            "host.rtt_p95_ms": round(sorted(rtts)[int(len(rtts) * 0.95)], 3)}


def bench_telemetry(seconds: float = 3.0) -> dict:
    """Telemetry frames per second the host receives intact while the pump infuses, at the
    shortest period the firmware accepts (tried from 10 ms up); "without loss" = every frame
    the pump wrote arrived and decoded."""
    from host import Pump
    from host.codec import Telemetry
    from host.errors import PumpRefused
    best = {"host.telemetry_hz": 0.0}
    for period in (10, 20, 50):
        sim, ep, close = _served()
        try:
            with Pump.open(ep.url, timeout=2.0) as pump:
                pump.program(rate=52.5, vtbi=35)
                pump.start()
                try:
                    pump.telemetry(period)
                except PumpRefused:
                    continue
                got, t0 = 0, None
                for ev in pump.events(timeout=1.0):
                    if isinstance(ev, Telemetry):
                        if t0 is None:
                            t0, ep.tl_out, got = time.perf_counter(), 0, 0
                            continue
                        got += 1
                        if time.perf_counter() - t0 >= seconds:
                            break
                wall = time.perf_counter() - t0 if t0 else 1.0
                sent = ep.tl_out
                bad = pump.stats.bad_frames
                pump.telemetry(0)
        finally:
            close()
        lost = max(0, sent - got)
        hz = got / wall
        res = {"host.telemetry_hz": round(hz, 1), "host.telemetry_period_ms": period,
               "host.telemetry_lost": lost, "host.telemetry_bad_frames": bad}
        if lost <= 1 and bad == 0:          # the last frame may be on the wire at the cut
            return res
        best = res
    return best


def bench_host() -> dict:
    return {**bench_rtt(), **bench_telemetry()}


BENCHMARKS = {"host": bench_host}
