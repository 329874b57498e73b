"""A simulated pump served in lock-step on a real endpoint (a pty by default) from a thread,
for the end-to-end tests: `hil_sim.serve` with ``speed="lockstep"``.

Virtual time moves only to answer what the host sends and when the test advances it
(``advance(ms)``, ``until(predicate, max_ms, what)``), as fast as the runtime allows — so
how much pump time passes between two steps of a test is set by the test, not by how fast
or how loaded the machine is. Waits are in pump time; the only wall clock is the `Clock`'s
hang guard (``GUARD_S``), which fails with a message saying where it stopped.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from hil_sim.cosim import Simulation
from hil_sim.link import PtyEndpoint
from hil_sim.serve import LOCKSTEP, Clock, serve

GUARD_S = 300.0          # wall seconds: a hang guard only (a grant normally takes << 1 s)


class Recorder:
    """Wraps an endpoint and keeps every byte the host sent to the pump."""

    def __init__(self, ep):
        self.ep, self.sent = ep, bytearray()
        self.url = ep.url
        self.drop = False               # TCP: drop the client (from the serving thread)

    def read(self):
        if self.drop:
            self.drop = False
            self.ep._drop_client()
        data = self.ep.read()
        self.sent += data
        return data

    def __getattr__(self, name):
        return getattr(self.ep, name)

    def lines(self):
        return [ln for ln in bytes(self.sent).split(b"\n") if ln]


class Served:
    """A simulated pump served in lock-step from a thread; ``reboot()`` swaps in a fresh
    simulation (a power cycle: the firmware starts over) on the same port."""

    def __init__(self, runtime="cpython", ep=None, seed=1, sim=None, **sim_kw):
        self.runtime, self.seed, self.sim_kw = runtime, seed, sim_kw
        self.ep = Recorder(ep or PtyEndpoint())
        self._start(sim or Simulation(runtime=runtime, seed=seed, **sim_kw))

    def _start(self, sim):
        self.sim = sim
        self.clock = Clock(guard_s=GUARD_S)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(sim, self.ep, LOCKSTEP, self.stop),
                                       kwargs={"clock": self.clock}, daemon=True)
        self.thread.start()

    # -- virtual time
    def advance(self, ms):
        """Run ``ms`` of pump time now; returns the pump's t_ms."""
        return self.clock.advance(ms)

    def until(self, pred, max_ms, what):
        """Run until ``pred(sim)`` holds (checked every slice in the serving thread); fail
        when ``max_ms`` of pump time pass first."""
        if not self.clock.run_until(pred, max_ms):
            raise AssertionError(f"not within {max_ms / 1000:g} s of pump time: {what} "
                                 f"(t_ms={self.sim.t_ms})")

    def until_host(self, cond, max_ms, what, step_ms=200):
        """For a condition only the host side can check (a status reply, an event the
        client has parsed): advance ``step_ms`` at a time until ``cond()`` holds, at most
        ``max_ms`` of pump time."""
        t_end = self.sim.t_ms + max_ms
        while True:
            v = cond()
            if v:
                return v
            if self.sim.t_ms >= t_end:
                raise AssertionError(f"not within {max_ms / 1000:g} s of pump time: {what}")
            self.advance(step_ms)

    @contextmanager
    def running(self, step_ms=200, max_ms=3_600_000):
        """Pump time runs (``step_ms`` at a time, as fast as the host reads) while the body
        waits on a client that keeps its own loop (a third-party ``run()`` that polls until
        the pump stops, a monitor following the stream to the end). At most ``max_ms``."""
        done = threading.Event()
        errors = []

        def drive():
            t_end = self.sim.t_ms + max_ms
            try:
                while not done.is_set() and self.sim.t_ms < t_end:
                    self.advance(step_ms)
            except Exception as e:          # noqa: BLE001 - handed to the test below
                errors.append(e)
        th = threading.Thread(target=drive, daemon=True)
        th.start()
        try:
            yield
        finally:
            done.set()
            th.join(GUARD_S)
        if errors:
            raise errors[0]

    def reboot(self):
        self._end()
        self.sim.close()
        self._start(Simulation(runtime=self.runtime, seed=self.seed + 1, **self.sim_kw))

    def _end(self):
        self.stop.set()
        self.thread.join(GUARD_S)
        assert not self.thread.is_alive(), "the serving thread did not stop"

    def close(self):
        self._end()
        self.ep.close()
        self.sim.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wall_until(cond, what, guard_s=GUARD_S, every=0.02, alive=None):
    """Wait for something on the host side that needs no pump time (a client thread
    noticing a closed socket, a subprocess printing): a hang guard only. ``what`` is the
    failure's text (or a callable making it then); ``alive()``, if given, ends the wait
    early when whatever should make ``cond`` true has stopped (a subprocess that exited)."""
    end = time.monotonic() + guard_s
    while True:
        v = cond()
        if v:
            return v
        if alive is not None and not alive():
            v = cond()                  # what it printed before it stopped
            if v:
                return v
            why = "stopped first"
        elif time.monotonic() > end:
            why = f"hang guard ({guard_s:g} s wall)"
        else:
            time.sleep(every)
            continue
        raise AssertionError(f"{why}: never happened: {what() if callable(what) else what}")
