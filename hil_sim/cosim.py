"""Co-simulation: the firmware, the plant and the serial link in lock-step virtual time.

This module owns the virtual clock and the order of one slice; physics live in `plant`, bytes
in flight in `link`, the firmware's host in `runtime`, the wall clock in `serve`.

One slice of n calls at t0, t0+step, …:
  1. the plant's sensor reading (held for the slice, per the board contract);
  2. host bytes that have crossed the wire by each call, placed before that call;
     when some are due, the slice ends after the call that receives the last of them, so
     replies go out promptly;
  3. ``runtime.slice`` at absolute time ``start_ms + t0`` (the firmware wraps it at 2**30;
     the default start sits 60 s before a wrap so every run crosses one);
  4. each call's µsteps into the plant, spread over the control tick after the call;
  5. each call's bytes onto the pump→host wire at the call's time;
  6. changes of the alarm priority and motor enable recorded with their time (the firmware
     reports them at slice end, so their resolution is one slice: 200 ms by default; the
     pump's ``! EV ALARM`` frames on the link carry the exact call).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

from hil_sim.link import SerialLink
from hil_sim.plant import Plant, PlantParams, Record
from hil_sim.runtime import Runtime, make_runtime

DEFAULT_START_MS = 2**30 - 60_000
_MASK = (1 << 30) - 1


class Simulation:
    """A simulated pump: ``run_for`` / ``run_until`` advance virtual time; ``host_send`` /
    ``host_recv`` talk to it through the paced link (or use `hil_sim.serve` with an endpoint).
    """

    def __init__(self, runtime: str | Runtime = "cpython", seed: int = 0,
                 params: PlantParams | None = None, tick_ms: int = 50, slice_ms: int = 200,
                 start_ms: int = DEFAULT_START_MS, link: SerialLink | None = None,
                 firmware_dir: str | None = None, compiled: bool = False) -> None:
        if slice_ms < tick_ms or slice_ms % tick_ms:
            raise ValueError("slice_ms must be a multiple of tick_ms")
        self.runtime: Runtime = (make_runtime(runtime, firmware_dir, compiled=compiled)
                                 if isinstance(runtime, str) else runtime)
        self.seed = seed
        self.params = params or PlantParams()
        self.plant = Plant(self.params, seed)
        self.link = link or SerialLink(seed=seed)
        self.tick_ms = tick_ms
        self.slice_ms = slice_ms
        self.start_ms = start_ms
        self.t_ms = 0                  # virtual ms since start
        self.enable = 0
        self.alarm = 0
        self.alarms: list[tuple[int, int]] = []    # (t_ms, priority) at every change
        self.enables: list[tuple[int, int]] = []   # (t_ms, enable) at every change
        self.wall_s = 0.0              # wall time spent inside run_* calls
        self.slices = 0

    # ------------------------------------------------------------------ properties
    @property
    def record(self) -> Record:
        return self.plant.record

    @property
    def fw_version(self) -> str:
        return self.runtime.fw_version

    @property
    def runtime_name(self) -> str:
        return self.runtime.name

    @property
    def speed_x(self) -> float:
        """Virtual seconds per wall second so far (inside run_* calls)."""
        return self.t_ms / 1000.0 / self.wall_s if self.wall_s > 0 else math.inf

    # ------------------------------------------------------------------ the host side
    def host_send(self, data: bytes, at_ms: float | None = None) -> None:
        """Put host bytes on the wire now (virtual time ``t_ms``), or at ``at_ms`` (the paced
        server passes the scaled wall clock, which may trail ``t_ms`` by less than a step)."""
        self.link.to_pump.send(data, self.t_ms if at_ms is None else at_ms)

    def host_recv(self, at_ms: float | None = None) -> bytes:
        """Pump bytes that have reached the host by now (or by ``at_ms``)."""
        return self.link.to_host.recv(self.t_ms if at_ms is None else at_ms)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: str | None = None, /, **kw: object) -> None:
        """Inject or clear faults now: ``inject("occlusion", on=True)`` or
        ``inject(occlusion=True, door_open=False, battery_mv=3300, link_drop=0.01)``.

        Known faults: ``occlusion``, ``door_open``, ``air`` (bool), ``battery_mv`` (int),
        ``link_drop``, ``link_corrupt`` (probability per byte)."""
        faults: dict[str, object] = {}
        if fault is not None:
            faults[fault] = kw.pop("on", True)
        faults.update(kw)
        p = self.plant
        for name, value in faults.items():
            if name == "occlusion":
                p.set_occluded(bool(value))
            elif name == "door_open":
                p.door_open = bool(value)
            elif name == "air":
                p.air = bool(value)
            elif name == "battery_mv":
                p.battery_mv = int(value)  # type: ignore[arg-type]
            elif name == "link_drop":
                self.link.set_noise(drop_p=float(value))  # type: ignore[arg-type]
            elif name == "link_corrupt":
                self.link.set_noise(corrupt_p=float(value))  # type: ignore[arg-type]
            else:
                raise ValueError(f"unknown fault {name!r}")

    # ------------------------------------------------------------------ stepping
    def slice(self, n: int, step_ms: int | None = None) -> int:
        """Run up to n controller calls ``step_ms`` apart (default: the control tick); fewer
        when host bytes are due (see module doc). Returns the number of calls run."""
        step = step_ms or self.tick_ms
        t0 = self.t_ms
        rx = self.link.to_pump.schedule(t0, step, n)
        if rx:
            n = rx[-1][0] + 1
        plant = self.plant
        press, enc, flags, batt = plant.sensors()
        steps, enable, alarm, tx = self.runtime.slice(
            (self.start_ms + t0) & _MASK, step, n, press, enc, flags, batt, rx)
        plant.drive(t0, step, steps, self.tick_ms)
        if tx:
            send = self.link.to_host.send
            for k, data in tx:
                send(data, t0 + k * step)
        self.t_ms = t0 + n * step
        if alarm != self.alarm:
            self.alarm = alarm
            self.alarms.append((self.t_ms, alarm))
        if enable != self.enable:
            self.enable = enable
            self.enables.append((self.t_ms, enable))
        self.slices += 1
        return n

    def advance_to(self, t_ms: float, step_ms: int | None = None,
                   max_calls: int | None = None) -> None:
        """Run every call ``step_ms`` apart whose time is ≤ ``t_ms`` (so afterwards
        ``t_ms < self.t_ms ≤ t_ms + step``); used by the paced server."""
        step = step_ms or self.tick_ms
        per = max_calls or max(1, self.slice_ms // step)
        while self.t_ms <= t_ms:
            self.slice(min(per, int((t_ms - self.t_ms) // step) + 1), step)

    def run_for(self, ms: int) -> None:
        """Advance ``ms`` of virtual time in slices of ``slice_ms`` (rounded up to a tick)."""
        w = time.perf_counter()
        target = self.t_ms + ms
        per = self.slice_ms // self.tick_ms
        tick = self.tick_ms
        while self.t_ms < target:
            self.slice(min(per, -(-(target - self.t_ms) // tick)))
        self.wall_s += time.perf_counter() - w

    def run_until(self, predicate: Callable[[Simulation], bool], max_ms: int) -> bool:
        """Advance slice by slice until ``predicate(self)`` holds (True) or ``max_ms`` of
        virtual time have passed (False)."""
        w = time.perf_counter()
        target = self.t_ms + max_ms
        per = self.slice_ms // self.tick_ms
        tick = self.tick_ms
        try:
            if predicate(self):
                return True
            while self.t_ms < target:
                self.slice(min(per, -(-(target - self.t_ms) // tick)))
                if predicate(self):
                    return True
            return False
        finally:
            self.wall_s += time.perf_counter() - w

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self.runtime.close()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
