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
* A speed beyond what the runtime can do is capped, not a silent pump: the firmware and plant
  run in chunks of at most ``POLL_S`` of wall time between endpoint polls, and when virtual
  time trails the scaled wall clock by more than ``MAX_LAG_S`` the clock is re-anchored (the
  lag is dropped, so virtual time runs as fast as the runtime allows and a request is still
  answered within about ``MAX_LAG_S``). ``on_capped(asked, achieved)`` is called once when
  that first happens (``sim serve`` prints it); ``Pacing`` keeps the figures.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hil_sim.cosim import Simulation
from hil_sim.link import Endpoint


POLL_S = 0.02       # wall seconds of simulation at most between two polls of the endpoint
MAX_LAG_S = 0.25    # virtual time may trail the scaled wall clock by this much, then slips


@dataclass
class Pacing:
    """What the paced server achieved: asked speed, achieved speed, virtual ms dropped."""
    asked: float
    achieved: float = 0.0
    slipped_ms: float = 0.0
    capped: bool = False


def serve(sim: Simulation, endpoint: Endpoint, speed: float | None = None,
          stop: threading.Event | None = None, rt_step_ms: int = 1, idle_ms: int = 10,
          on_capped: Callable[[float, float], None] | None = None,
          pacing: Pacing | None = None,
          after: Callable[[Simulation], None] | None = None) -> None:
    """Run ``sim`` against ``endpoint`` until ``stop`` is set or KeyboardInterrupt;
    ``after(sim)`` (e.g. the simulated monitor) is called whenever virtual time has moved."""
    stop = stop or threading.Event()
    try:
        if speed is None:
            _serve_max(sim, endpoint, stop, after)
        else:
            if not speed > 0 or math.isinf(speed):
                raise ValueError("speed must be a finite number > 0 (or None for as fast as "
                                 "possible)")
            _serve_paced(sim, endpoint, stop, float(speed), rt_step_ms, idle_ms, on_capped,
                         pacing if pacing is not None else Pacing(float(speed)), after)
    except KeyboardInterrupt:
        pass


def _serve_max(sim: Simulation, ep: Endpoint, stop: threading.Event,
               after: Callable[[Simulation], None] | None = None) -> None:
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
            if after is not None:
                after(sim)
            out = recv()
            if out:
                write(out)
    finally:
        sim.wall_s += time.perf_counter() - w


def _serve_paced(sim: Simulation, ep: Endpoint, stop: threading.Event, speed: float,
                 rt_step_ms: int, idle_ms: int, on_capped: Callable[[float, float], None] | None,
                 pacing: Pacing, after: Callable[[Simulation], None] | None = None) -> None:
    step = rt_step_ms if rt_step_ms > 0 and sim.tick_ms % rt_step_ms == 0 else sim.tick_ms
    ms_per_s = 1000.0 * speed
    w0 = time.monotonic()
    v0 = sim.t_ms
    w_start, v_start = w0, float(sim.t_ms)
    chunk = max(step, sim.slice_ms)
    to_pump, to_host = sim.link.to_pump, sim.link.to_host
    wall_start = time.perf_counter()
    try:
        while not stop.is_set():
            data = ep.read()
            now = time.monotonic()
            now_v = v0 + (now - w0) * ms_per_s
            budget = now + POLL_S
            while sim.t_ms <= now_v:
                sim.advance_to(min(now_v, sim.t_ms + chunk - step), step)
                if time.monotonic() >= budget:
                    break
            if after is not None:
                after(sim)
            behind_s = (v0 + (time.monotonic() - w0) * ms_per_s - sim.t_ms) / ms_per_s
            if behind_s > MAX_LAG_S:
                # the runtime cannot keep this speed: drop the lag instead of growing it
                w0, v0 = time.monotonic(), float(sim.t_ms)
                pacing.slipped_ms += behind_s * ms_per_s
                if not pacing.capped:
                    pacing.capped = True
                    pacing.achieved = (sim.t_ms - v_start) / 1000 / max(1e-9, time.monotonic() - w_start)
                    if on_capped is not None:
                        on_capped(speed, pacing.achieved)
            # host bytes are never put on the wire ahead of the simulation (behind the
            # scaled wall clock, "now" is as far as the simulation got)
            now_v = min(now_v, float(sim.t_ms))
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
        elapsed = time.monotonic() - w_start
        if elapsed > 0:
            pacing.achieved = (sim.t_ms - v_start) / 1000 / elapsed
        sim.wall_s += time.perf_counter() - wall_start
