"""HL7 vitals figures (PRODUCT.md `vitals.hl7_to_pause_ms`), in real time: a monitor's PCD-01
message with SBP over ketamine's limit, sent with python-hl7's `MLLPClient` over loopback TCP
to the vitals bridge (host.vitals_bridge, wall-clock skew check on), relayed through host.Pump
over a pty (link paced at 115200 baud) to the firmware under `micropython` (simulator at 1x),
until the pump's motor driver is disabled (read off the simulated plant, so the pump's own
report back over the link is not counted). N trials, each from a running infusion."""
from __future__ import annotations

import datetime as dt
import statistics
import threading
import time

N = 30


def _msg(cid: str, sbp: int, dbp: int) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    t = now.strftime("%Y%m%d%H%M%S.") + f"{now.microsecond // 1000:03d}+0000"
    obs = [("150021^MDC_PRESS_BLD_NONINV_SYS^MDC", sbp, "266016^MDC_DIM_MMHG^MDC"),
           ("150022^MDC_PRESS_BLD_NONINV_DIA^MDC", dbp, "266016^MDC_DIM_MMHG^MDC"),
           ("147842^MDC_ECG_HEART_RATE^MDC", 80, "264864^MDC_DIM_BEAT_PER_MIN^MDC"),
           ("150456^MDC_PULS_OXIM_SAT_O2^MDC", 97, "262688^MDC_DIM_PERCENT^MDC")]
    segs = [f"MSH|^~\\&|BENCH_MONITOR|ICU|||{t}||ORU^R01^ORU_R01|{cid}|P|2.6",
            "PID|||PAT-1^^^H^MR", f"OBR|1|||182777000^monitoring of patient^SCT|||{t}"]
    segs += [f"OBX|{i}|NM|{c}|1.0.1.{i}|{v}|{u}|||||R|||{t}" for i, (c, v, u) in enumerate(obs, 1)]
    return "\r".join(segs) + "\r"


def bench_hl7() -> dict:
    from benchlib import served_pump
    with served_pump("micropython", 1.0) as (sim, pump):
        return _trials(sim, pump)


def _trials(sim, pump) -> dict:
    from hl7.client import MLLPClient

    from host.vitals_bridge import Bridge, BridgeServer

    pump.hello()
    bridge = Bridge(lambda r: pump.vitals(sbp=r.sbp, dbp=r.dbp, hr=r.hr, spo2=r.spo2,
                                          age_ms=r.age_ms), patient="PAT-1", max_skew_s=300)
    server = BridgeServer(bridge).start()
    off: list[float] = []
    watching = threading.Event()
    done = threading.Event()

    def watch():                    # the moment the plant sees the driver disabled
        last = sim.enable
        while not done.is_set():
            e = sim.enable
            if watching.is_set() and last and not e:
                off.append(time.perf_counter())
                watching.clear()
            last = e
            time.sleep(0.0005)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    pause_ms, ack_ms, codes = [], [], []
    try:
        pump.configure(interlock=1)
        pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
        mon = MLLPClient("127.0.0.1", server.port)
        mon.socket.settimeout(10)
        k = 0

        def send(sbp, dbp):
            nonlocal k
            k += 1
            time.sleep(0.002)                  # a later MSH-7/OBX-14 than the last message
            return mon.send_message(_msg(f"B{k}", sbp, dbp))

        send(120, 75)
        pump.start()
        for i in range(N):
            deadline = time.monotonic() + 10
            while not sim.enable and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.3)                    # steady delivery
            n = len(off)
            watching.set()
            t0 = time.perf_counter()
            reply = send(200, 100)
            t_ack = time.perf_counter()
            deadline = time.monotonic() + 10
            while len(off) == n and time.monotonic() < deadline:
                time.sleep(0.001)
            codes.append(b"MSA|AA|" in reply)
            if len(off) > n:
                pause_ms.append((off[-1] - t0) * 1000)
            ack_ms.append((t_ack - t0) * 1000)
            send(120, 75)                      # a fresh good reading, then the nurse resumes
            pump.ack()
            pump.resume()
        mon.close()
    finally:
        done.set()
        server.close()
    out = {"vitals.hl7_trials": N, "vitals.hl7_paused_trials": len(pause_ms),
           "vitals.hl7_acks_aa": sum(codes)}
    if pause_ms:
        s = sorted(pause_ms)
        out["vitals.hl7_to_pause_ms"] = round(statistics.median(s), 1)
        out["vitals.hl7_to_pause_p95_ms"] = round(s[min(len(s) - 1, int(len(s) * 0.95))], 1)
        out["vitals.hl7_to_pause_max_ms"] = round(s[-1], 1)
    a = sorted(ack_ms)
    out["vitals.hl7_ack_ms"] = round(statistics.median(a), 1)
    return out


BENCHMARKS = {"hl7": bench_hl7}
