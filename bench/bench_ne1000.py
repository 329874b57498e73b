"""NE-1000 personality figures: the unmodified nesp-lib client through `host.ne1000` to the
micropython firmware (simulator in real time, pump link paced at 115200 baud, the NE-1000
side a pty): command round trip, and how late the safe-mode time out pauses the pump."""
from __future__ import annotations

import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

N = 100
NE_BAUD = 19200           # the NE-1000's factory baud rate (the pty itself is not paced)


@contextlib.contextmanager
def _rig(tmp: Path):
    from benchlib import served_pump
    from host.endpoints import PtyEndpoint
    from host.ne1000_serve import Ne1000Server, StateFile
    with served_pump("micropython", 1.0) as (_sim, pump):
        server = Ne1000Server(pump, PtyEndpoint(), 0, StateFile(tmp / "ne.json")).start()
        try:
            yield pump, server
        finally:
            server.close()


def _median_ms(fn) -> tuple[float, float]:
    ts = []
    for _ in range(N):
        a = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - a) * 1000)
    return round(statistics.median(ts), 3), round(sorted(ts)[int(N * 0.95)], 3)


def bench_ne1000() -> dict:
    import nesp_lib
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        with _rig(Path(d)) as (pump, server):
            port = nesp_lib.Port(server.url)
            p = nesp_lib.Pump(port)
            p.pumping_rate_ml_per_min = 0.875
            p.pumping_volume_ml = 35.0
            p.run(wait_while_running=False)
            out["ne1000.status_rtt_ms"], out["ne1000.status_rtt_p95_ms"] = \
                _median_ms(lambda: p.status)
            out["ne1000.dis_rtt_ms"], _ = _median_ms(lambda: p.volume_infused_ml)
            out["ne1000.pump_status_rtt_ms"], _ = _median_ms(pump.status)
            # NE-1000 wire time of a status exchange at 19200 baud: "0\r" + STX 00I ETX
            out["ne1000.status_wire_ms_19200"] = round((2 + 5) * 10 / NE_BAUD * 1000, 3)
            # safe mode: from the last packet to the pump paused, beyond the n seconds
            p.safe_mode_timeout_s = 2
            hook = threading.excepthook            # nesp-lib's heartbeat thread dies with the
            threading.excepthook = lambda a: None  # port: the client falls silent
            port.close()
            eng = server.engine
            last = eng._last_valid
            paused = None
            pause = server.backend.pause

            def timed_pause():
                nonlocal paused
                pause()
                paused = time.monotonic()
            server.backend.pause = timed_pause     # type: ignore[method-assign]
            end = time.monotonic() + 30
            while paused is None and time.monotonic() < end:
                time.sleep(0.01)
            if paused is not None:
                out["ne1000.saf_pause_late_ms"] = round((paused - last - 2) * 1000, 1)
            out["ne1000.saf_paused"] = pump.status().state == "PAUSED"
            threading.excepthook = hook
    return out


BENCHMARKS = {"ne1000": bench_ne1000}
