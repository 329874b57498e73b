"""Host link figures: STATUS round trip over a pty to the micropython firmware in real time."""
from __future__ import annotations

import sys

from benchlib import ROOT


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


BENCHMARKS = {"host": bench_host}
