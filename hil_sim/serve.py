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
* ``speed="lockstep"``: virtual time does not follow the wall clock at all. It stands still
  until something needs it: host bytes arriving (an *exchange*: the simulation runs one
  control tick at a time until the bytes have crossed the wire, the pump has answered with a
  reply line — not a ``!`` event — and that reply has reached the host, or ``answer_ms`` of
  virtual time have passed since the last host byte, e.g. on a dropped request), or a grant
  on the server's `Clock` (``clock.advance(ms)``, ``clock.run_until(predicate, max_ms)``,
  the control port's ``advance MS``): the simulation then runs as fast as the runtime allows,
  still answering the host between slices, but never faster than the host drains the
  endpoint (a slice waits until the endpoint can take bytes, up to ``DRAIN_S`` — a host that
  reads nothing overruns as a UART does), nor while ``hold()`` says another consumer is behind
  (``sim serve --monitor``: the monitor's message not yet acknowledged by the bridge, which
  may itself be asking the pump something meanwhile — those exchanges are answered). So how much virtual time passes between two host
  requests depends on what was asked, not on how fast or how busy the machine is: tests
  express waits as "until the pump's clock reaches X" or "until event E", and the only wall
  clock left is the caller's hang guard (``Clock.guard_s``).
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hil_sim.cosim import Simulation
from hil_sim.link import Endpoint


POLL_S = 0.02       # wall seconds of simulation at most between two polls of the endpoint
MAX_LAG_S = 0.25    # virtual time may trail the scaled wall clock by this much, then slips
LOCKSTEP = "lockstep"
ANSWER_MS = 1000    # lock-step: an exchange with no reply ends this long after the last byte
DRAIN_S = 0.5       # lock-step grant: wait this long at most for the host to drain the endpoint
IDLE_POLL_S = 0.005  # lock-step, idle: how often the endpoint and the clock are looked at


@dataclass
class Pacing:
    """What the paced server achieved: asked speed, achieved speed, virtual ms dropped."""
    asked: float
    achieved: float = 0.0
    slipped_ms: float = 0.0
    capped: bool = False


class ClockError(RuntimeError):
    """A lock-step grant did not finish: the server stopped, or the hang guard ran out."""


class Clock:
    """The hand on a lock-step server's virtual clock, for the test (or the control port) that
    drives it; thread-safe. Each call blocks until the serving thread has run the grant, at
    most ``guard_s`` wall seconds — a last-resort hang guard, never a measured figure: a
    grant that does not finish by then raises `ClockError` saying how far it got."""

    def __init__(self, guard_s: float = 300.0) -> None:
        self.guard_s = guard_s
        self._grants: queue.SimpleQueue = queue.SimpleQueue()
        self.sim: Simulation | None = None       # set by the server
        self.stopped = False                      # the server has ended: grants fail at once

    def advance(self, ms: float) -> int:
        """Run ``ms`` of virtual time (to the first control tick at or past it); returns the
        simulation's ``t_ms`` afterwards."""
        if not ms >= 0:
            raise ValueError("advance: ms must be >= 0")
        self._grant(ms, None)
        return self.sim.t_ms if self.sim is not None else 0

    def run_until(self, predicate: Callable[[Simulation], bool], max_ms: float) -> bool:
        """Run until ``predicate(sim)`` holds (checked after every slice, in the serving
        thread) or ``max_ms`` of virtual time have passed: True / False."""
        return self._grant(max_ms, predicate)

    def _grant(self, ms: float, pred: Callable[[Simulation], bool] | None) -> bool:
        if self.stopped:
            raise ClockError("lock-step server: not running (stopped)")
        done = threading.Event()
        box: list = []
        self._grants.put((float(ms), pred, done, box))
        if not done.wait(self.guard_s):
            t = self.sim.t_ms if self.sim is not None else "?"
            raise ClockError(f"lock-step server: a grant of {ms:g} virtual ms did not finish "
                             f"within the {self.guard_s:g} s hang guard (virtual t_ms={t}); "
                             "is the server running, or the runtime hung?")
        if box and isinstance(box[0], BaseException):
            raise ClockError(f"lock-step server failed during the grant: {box[0]!r}") from box[0]
        return bool(box and box[0])

    def _take(self):
        try:
            return self._grants.get_nowait()
        except queue.Empty:
            return None


def serve(sim: Simulation, endpoint: Endpoint, speed: float | str | None = None,
          stop: threading.Event | None = None, rt_step_ms: int = 1, idle_ms: int = 10,
          on_capped: Callable[[float, float], None] | None = None,
          pacing: Pacing | None = None,
          after: Callable[[Simulation], None] | None = None,
          clock: Clock | None = None, answer_ms: int = ANSWER_MS,
          wall: Callable[[], float] = time.monotonic,
          hold: Callable[[], bool] | None = None) -> None:
    """Run ``sim`` against ``endpoint`` until ``stop`` is set or KeyboardInterrupt;
    ``after(sim)`` (e.g. the simulated monitor) is called whenever virtual time has moved.
    ``speed``: a factor, None (max) or ``"lockstep"`` (driven by ``clock``; module doc).
    ``wall``: the wall clock a paced server follows (seconds; tests pass a fake one, with an
    endpoint whose ``wait`` moves it). ``hold`` (lock-step): a grant waits while it is True."""
    stop = stop or threading.Event()
    try:
        if speed is None:
            _serve_max(sim, endpoint, stop, after)
        elif speed == LOCKSTEP:
            _serve_lockstep(sim, endpoint, stop, clock or Clock(), answer_ms, after, hold)
        elif isinstance(speed, str):
            raise ValueError(f"speed must be a factor, None (max) or {LOCKSTEP!r}")
        else:
            if not speed > 0 or math.isinf(speed):
                raise ValueError("speed must be a finite number > 0 (or None for as fast as "
                                 "possible)")
            _serve_paced(sim, endpoint, stop, float(speed), rt_step_ms, idle_ms, on_capped,
                         pacing if pacing is not None else Pacing(float(speed)), after, wall)
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
                 pacing: Pacing, after: Callable[[Simulation], None] | None = None,
                 wall: Callable[[], float] = time.monotonic) -> None:
    step = rt_step_ms if rt_step_ms > 0 and sim.tick_ms % rt_step_ms == 0 else sim.tick_ms
    ms_per_s = 1000.0 * speed
    w0 = wall()
    v0 = sim.t_ms
    w_start, v_start = w0, float(sim.t_ms)
    chunk = max(step, sim.slice_ms)
    to_pump, to_host = sim.link.to_pump, sim.link.to_host
    wall_start = time.perf_counter()
    try:
        while not stop.is_set():
            data = ep.read()
            now = wall()
            now_v = v0 + (now - w0) * ms_per_s
            budget = now + POLL_S
            while sim.t_ms <= now_v:
                sim.advance_to(min(now_v, sim.t_ms + chunk - step), step)
                if wall() >= budget:
                    break
            if after is not None:
                after(sim)
            behind_s = (v0 + (wall() - w0) * ms_per_s - sim.t_ms) / ms_per_s
            if behind_s > MAX_LAG_S:
                # the runtime cannot keep this speed: drop the lag instead of growing it
                w0, v0 = wall(), float(sim.t_ms)
                pacing.slipped_ms += behind_s * ms_per_s
                if not pacing.capped:
                    pacing.capped = True
                    pacing.achieved = (sim.t_ms - v_start) / 1000 / max(1e-9, wall() - w_start)
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
            timeout = w0 + (due - v0) / ms_per_s - wall()
            if timeout > 0:
                ep.wait(timeout)
    finally:
        elapsed = wall() - w_start
        if elapsed > 0:
            pacing.achieved = (sim.t_ms - v_start) / 1000 / elapsed
        sim.wall_s += time.perf_counter() - wall_start


def _serve_lockstep(sim: Simulation, ep: Endpoint, stop: threading.Event, clock: Clock,
                    answer_ms: int, after: Callable[[Simulation], None] | None,
                    hold: Callable[[], bool] | None = None) -> None:
    clock.sim, clock.stopped = sim, False
    to_pump, to_host = sim.link.to_pump, sim.link.to_host
    per = sim.slice_ms // sim.tick_ms
    tick = sim.tick_ms
    drained = getattr(ep, "drained", None)
    st = {"first": None,          # first byte of the pump line being delivered (None: at a start)
          "answered": True,       # the last host bytes have had their reply line
          "last_in": -math.inf,   # virtual ms of the last host bytes put on the wire
          "stuck": False}         # the host read nothing for DRAIN_S: do not wait on it again
    wall_start = time.perf_counter()

    def feed() -> None:
        data = ep.read()
        if data:
            sim.host_send(data)
            st["answered"], st["last_in"] = False, float(sim.t_ms)

    def deliver() -> None:
        out = sim.host_recv()
        if not out:
            return
        ep.write(out)
        pos, n = 0, len(out)
        while pos < n:
            if st["first"] is None:
                st["first"] = out[pos]
            nl = out.find(b"\n", pos)
            if nl < 0:
                break
            if st["first"] != 0x21 and not to_pump.pending:     # a reply, not a "! …" frame
                st["answered"] = True
            st["first"] = None
            pos = nl + 1

    def step(n: int) -> None:
        sim.slice(n)
        if after is not None:
            after(sim)
        deliver()

    def exchange_open() -> bool:
        if to_pump.pending or to_host.pending:
            return True
        return not st["answered"] and sim.t_ms < st["last_in"] + answer_ms

    def grant(ms: float, pred: Callable[[Simulation], bool] | None) -> bool:
        target = sim.t_ms + ms
        if pred is not None and pred(sim):
            return True
        while sim.t_ms < target:
            if stop.is_set():
                raise ClockError("the server was stopped")
            feed()
            if drained is not None:     # as fast as the host takes the bytes, no faster
                st["stuck"] = not drained(0.0 if st["stuck"] else DRAIN_S)
            while hold is not None and hold():      # nor faster than another consumer
                if stop.is_set():
                    raise ClockError("the server was stopped")
                feed()
                if exchange_open():
                    step(1)
                else:
                    ep.wait(IDLE_POLL_S)
            step(max(1, min(per, math.ceil((target - sim.t_ms) / tick - 1e-9))))
            if pred is not None and pred(sim):
                return True
        return pred is None

    try:
        while not stop.is_set():
            feed()
            g = clock._take()
            if g is not None:
                ms, pred, done, box = g
                try:
                    box.append(grant(ms, pred))
                except ClockError as e:
                    box.append(e)
                except BaseException as e:       # handed to the caller too, then raised
                    box.append(e)
                    raise
                finally:
                    done.set()
            elif exchange_open():
                step(1)
            else:
                ep.wait(IDLE_POLL_S)
    finally:
        clock.stopped = True
        sim.wall_s += time.perf_counter() - wall_start
        while True:                              # nobody waits for ever on a stopped server
            g = clock._take()
            if g is None:
                break
            g[3].append(ClockError("the server was stopped"))
            g[2].set()
