"""Serving a simulated pump to a real host program: the wall-clock side of the simulator.

This module owns pacing only: when to read host bytes from an endpoint, how far to advance
the `Simulation`, when to write pump bytes back. Physics, wire timing and firmware calls are
the simulation's.

* ``speed=None`` (max): slices of ``slice_ms`` back to back as fast as the runtime allows;
  the endpoint is polled before every slice, so a connected host is still answered.
* ``speed=F`` (1.0 = real time): virtual time follows ``F ×`` the wall clock. The firmware is
  called every ``rt_step_ms`` (1 ms) of virtual time; the loop sleeps on the endpoint until the
  next thing due — the next call after host bytes have crossed the wire, the moment the pump's
  bytes finish arriving at the host, or at most ``idle_ms`` — so a request is answered within
  about one step of its wire time, and the reply reaches the host when its last byte would.
  The simulation never runs more than one step ahead of the scaled wall clock.
"""
from __future__ import annotations

import math
import threading
import time

from hil_sim.cosim import Simulation
from hil_sim.link import Endpoint


def serve(sim: Simulation, endpoint: Endpoint, speed: float | None = None,
          stop: threading.Event | None = None, rt_step_ms: int = 1, idle_ms: int = 10) -> None:
    """Run ``sim`` against ``endpoint`` until ``stop`` is set or KeyboardInterrupt."""
    stop = stop or threading.Event()
    try:
        if speed is None:
            _serve_max(sim, endpoint, stop)
        else:
            if speed <= 0:
                raise ValueError("speed must be > 0 (or None for as fast as possible)")
            _serve_paced(sim, endpoint, stop, float(speed), rt_step_ms, idle_ms)
    except KeyboardInterrupt:
        pass


def _serve_max(sim: Simulation, ep: Endpoint, stop: threading.Event) -> None:
    per = sim.slice_ms // sim.tick_ms
    read, write = ep.read, ep.write
    send, recv, step = sim.host_send, sim.host_recv, sim.slice
    is_set = stop.is_set
    w = time.perf_counter()
    try:
        while not is_set():
            data = read()
            if data:
                send(data)
            step(per)
            out = recv()
            if out:
                write(out)
    finally:
        sim.wall_s += time.perf_counter() - w


def _serve_paced(sim: Simulation, ep: Endpoint, stop: threading.Event, speed: float,
                 rt_step_ms: int, idle_ms: int) -> None:
    step = rt_step_ms if rt_step_ms > 0 and sim.tick_ms % rt_step_ms == 0 else sim.tick_ms
    ms_per_s = 1000.0 * speed
    w0 = time.monotonic()
    v0 = sim.t_ms
    to_pump, to_host = sim.link.to_pump, sim.link.to_host
    wall_start = time.perf_counter()
    try:
        while not stop.is_set():
            data = ep.read()
            now_v = v0 + (time.monotonic() - w0) * ms_per_s
            sim.advance_to(now_v, step)
            if data:
                sim.host_send(data, now_v)
            out = sim.host_recv(now_v)
            if out:
                ep.write(out)
            # the next moment something is due, in virtual ms
            due = float(sim.t_ms - step + idle_ms)
            hd = to_pump.head_done()
            if hd is not None:
                # the first call at or after the last byte of the pending write
                c = sim.t_ms + max(0, math.ceil((hd - sim.t_ms) / step - 1e-9)) * step
                due = min(due, c)
            hd = to_host.head_done()
            if hd is not None:
                due = min(due, hd)
            timeout = w0 + (due - v0) / ms_per_s - time.monotonic()
            if timeout > 0:
                ep.wait(timeout)
    finally:
        sim.wall_s += time.perf_counter() - wall_start
