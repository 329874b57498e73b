"""MicroPython-side firmware benchmark: per-tick time, per-tick allocation, heap peak.

Run by bench/run.py under the `micropython` interpreter with cwd = a firmware tree
(mpy-cross compiled, as shipped). Prints one JSON object.
"""
import gc
import json
import sys
import time


sys.path.insert(0, ".")
from pumpcore.controller import Controller, Config, Inputs, TICK_MS  # noqa: E402
from pumpcore.druglib import DrugLibrary  # noqa: E402

_T0 = 0x3FFFFFFF - 60000


def crc_frame(body):
    from pumpcore import protocol as P
    c = P.crc16(body, 0, len(body))
    return body + b"*%04X\n" % c


def advance(t, dt):
    t = t + dt
    if t > 0x3FFFFFFF:
        t = t - 0x20000000 - 0x20000000
    return t


def step(ctl, t, inp, empty):
    """One tick with the plunger following the motor (the closed loop stays in RUN)."""
    out = ctl.step(t, inp, empty, 0)
    inp.encoder = inp.encoder + out.steps
    inp.pressure_mmhg = 41 - inp.pressure_mmhg     # 20/21: a live sensor (a frozen one faults)


def main():
    ctl = Controller(Config(217078), DrugLibrary.load("druglib.json"))
    inp = Inputs()
    inp.pressure_mmhg = 20
    t = _T0
    ctl.step(t, inp, b"", 0)
    for body in (b"1 PROG boot=1 drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000",
                 b"2 TLM period_ms=1000", b"3 START boot=1"):
        f = crc_frame(body)
        ctl.step(t, inp, f, len(f))
    empty = bytearray(1)
    # warm up
    for _ in range(100):
        t = advance(t, TICK_MS)
        step(ctl, t, inp, empty)
    # time: median of batches of 1000 ticks
    per = []
    for _ in range(15):
        a = time.ticks_us()
        for _ in range(1000):
            t = advance(t, TICK_MS)
            step(ctl, t, inp, empty)
        per.append(time.ticks_diff(time.ticks_us(), a) / 1000)
    per.sort()
    # allocation: bytes allocated over 10000 steady-state ticks, gc off
    gc.collect()
    gc.disable()
    m0 = gc.mem_alloc()
    for _ in range(10000):
        t = advance(t, TICK_MS)
        step(ctl, t, inp, empty)
    alloc = (gc.mem_alloc() - m0) / 10000
    gc.enable()
    # run the infusion to its end
    n = 0
    running = ctl.fsm.state == 2          # still RUNNING after the timed ticks (no alarm)
    while ctl.fsm.state == 2 and n < 60000:
        t = advance(t, TICK_MS)
        step(ctl, t, inp, empty)
        n += 1
    print(json.dumps({"tick_us_median": per[len(per) // 2], "tick_us_min": per[0], "tick_us_max": per[-1],
                      "tick_alloc_bytes": alloc, "running_when_timed": running, "delivered_nl": ctl.line.delivered_nl,
                      "state": ctl.fsm.state}))


main()
