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
     pump's ``! EV ALARM`` frames on the link carry the exact call);
  7. the patient (when there is one) receives the drug the plant delivered in the slice.

Faults (`inject`, `schedule`, and the thread-safe `post` used while serving) change the plant,
the link, the patient or the firmware's power: a power cut stops calling the firmware (the
motor stops, bytes to the UART are lost) and restoring power *reboots* it (`Runtime.restart`:
a new harness in-process, a new `micropython` process, on the same flash), then calls every
``on_power_restore`` hook. A watchdog stall stops calling the firmware while the step
generator keeps its last rate; past ``watchdog_ms`` the board resets (a reboot as above).
Slices are cut at scheduled fault times, so a fault lands on its tick.
"""
from __future__ import annotations

import heapq
import math
import queue
import time
from collections.abc import Callable

from hil_sim.link import SerialLink
from hil_sim.patient import Patient, PatientParams
from hil_sim.plant import Plant, PlantParams, Record
from hil_sim.runtime import Runtime, make_runtime

#: every fault `Simulation.inject` knows, with the meaning of its value (docs/simulator.md)
PATIENT_RECORD_S = 10.0      # one patient sample per 10 s of virtual time (plots, reports)


class PatientRecord:
    """The patient's plasma level (ng/mL) and true vitals over virtual time, as columns."""

    def __init__(self) -> None:
        self.t_s: list[float] = []
        self.cp_ng_ml: list[float] = []
        self.sbp: list[float] = []
        self.dbp: list[float] = []
        self.hr: list[float] = []

    def add(self, t_s: float, cp: float, vitals: tuple[float, float, float, float]) -> None:
        self.t_s.append(t_s)
        self.cp_ng_ml.append(cp)
        self.sbp.append(vitals[0])
        self.dbp.append(vitals[1])
        self.hr.append(vitals[2])

    def __len__(self) -> int:
        return len(self.t_s)


FAULTS = {
    "occlusion": "bool: downstream occlusion (where='up': at the syringe tip)",
    "occlusion_up": "bool: upstream occlusion (at the syringe tip, before the line)",
    "air": "bool|None: force the air sensor (None: back to the bubbles)",
    "bubble_ul": "float: an air bubble of N µL leaves the syringe now",
    "door_open": "bool: door/latch open",
    "empty": "bool: the syringe is empty from now (the stopper meets the barrel end)",
    "fill_ml": "float: volume left in the syringe",
    "stall": "bool: the mechanism jams; every step is missed",
    "encoder_fail": "bool: the encoder stops counting",
    "runaway": "bool|float: the driver steps on its own while enabled (float: mL/h, default 100)",
    "sensor_stuck": "bool: the pressure reading freezes at its current value",
    "sensor_drift": "float: the pressure reading drifts by N mmHg/min",
    "height_cm": "float: pump height above the cannula, negative below (ramp_s=N: over N s)",
    "resistance": "float: partial occlusion, line resistance x nominal (ramp_s=N: rising over N s)",
    "mains": "bool: mains power present (False: on battery)",
    "battery_mv": "int|None: force the battery reading (None: discharge model)",
    "battery_soc": "float: battery state of charge 0..1",
    "power_cut": "bool: all power lost (True) / restored (False, the firmware reboots)",
    "watchdog_stall": "int: the firmware hangs for N ms (past watchdog_ms the board resets)",
    "link_drop": "float: probability per byte of a dropped byte",
    "link_corrupt": "float: probability per byte of a flipped bit",
    "link_delay": "float: extra latency of every byte in ms, both directions (order kept)",
    "host_silence": "bool: nothing the host sends reaches the pump",
    "hypertension": "bool: the patient becomes a hypertensive responder",
}

DEFAULT_START_MS = 2**30 - 60_000
_MASK = (1 << 30) - 1


class Simulation:
    """A simulated pump: ``run_for`` / ``run_until`` advance virtual time; ``host_send`` /
    ``host_recv`` talk to it through the paced link (or use `hil_sim.serve` with an endpoint).
    """

    def __init__(self, runtime: str | Runtime = "cpython", seed: int = 0,
                 params: PlantParams | None = None, tick_ms: int = 50, slice_ms: int = 200,
                 start_ms: int = DEFAULT_START_MS, link: SerialLink | None = None,
                 firmware_dir: str | None = None, compiled: bool = False,
                 patient: PatientParams | Patient | None = None, conc_mg_ml: float = 1.0,
                 watchdog_ms: int = 2000) -> None:
        if slice_ms < tick_ms or slice_ms % tick_ms:
            raise ValueError("slice_ms must be a multiple of tick_ms")
        self.params = params or PlantParams()
        cal = self.params.nl_per_kstep
        cal = None if cal == PlantParams().nl_per_kstep else cal
        self.runtime: Runtime = (make_runtime(runtime, firmware_dir, compiled=compiled,
                                              nl_per_kstep=cal)
                                 if isinstance(runtime, str) else runtime)
        self.seed = seed
        self.plant = Plant(self.params, seed)
        self.patient_record = PatientRecord()   # plasma level and true vitals over time
        self.patient: Patient | None = (Patient(patient, seed) if isinstance(patient, PatientParams)
                                        else patient)
        self.conc_mg_ml = conc_mg_ml
        self._pt_ml = 0.0
        self.watchdog_ms = watchdog_ms
        self._hang_until: float | None = None   # watchdog stall: firmware hangs until then
        self._hang_start = 0.0
        self._hang_steps = 0
        self._last_steps = 0
        self.host_silent = False
        self.on_power_restore: list[Callable[[Simulation], None]] = []
        self.restarts: list[tuple[int, str]] = []   # (t_ms, cause) of every firmware reboot
        self.faults: list[tuple[int, str, object]] = []   # (t_ms, fault, value) as applied
        self._sched: list[tuple[float, int, str, dict]] = []
        self._sched_n = 0
        self._posted: queue.SimpleQueue = queue.SimpleQueue()
        self.link = link or SerialLink(seed=seed)
        self.tick_ms = tick_ms
        # a runtime may ask for shorter slices: the RP2040's encoder is read continuously, so
        # its plant reading is renewed every control tick (hil_sim/rp2040.py)
        self.slice_ms = min(slice_ms, getattr(self.runtime, "max_slice_ms", slice_ms))
        self.start_ms = start_ms
        self.t_ms = 0                  # virtual ms since start
        self.enable = 0
        self.alarm = 0
        self.alarms: list[tuple[int, int]] = []    # (t_ms, priority) at every change
        self.enables: list[tuple[int, int]] = []   # (t_ms, enable) at every change
        # (t_ms, closed) at every change of the plant's end-stop switch (slice resolution):
        # when an empty syringe becomes observable (the stopper meets the barrel end)
        self.end_stops: list[tuple[int, bool]] = []
        self._end_stop = False
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
        server passes the scaled wall clock, which may trail ``t_ms`` by less than a step).
        Nothing reaches the pump while the ``host_silence`` fault is on."""
        if self.host_silent:
            return
        self.link.to_pump.send(data, self.t_ms if at_ms is None else at_ms)

    def hello_boot(self, max_ms: int = 2000) -> int | None:
        """Ask the pump HELLO over the link and return its boot number (protocol v1: guarded
        requests carry it), None for a pump that reports none (the baseline). Consumes what
        the pump sent meanwhile."""
        import re
        self.host_send(b"65535 HELLO\n")
        got = bytearray()

        def replied(s: "Simulation") -> bool:
            got.extend(s.host_recv())
            return re.search(rb"65535 OK [^\n]*\n", got) is not None
        if not self.run_until(replied, max_ms):
            raise RuntimeError(f"no HELLO reply: {bytes(got)!r}")
        m = re.search(rb"65535 OK [^\n]* boot=(\d+)", got)
        return int(m.group(1)) if m else None

    def host_recv(self, at_ms: float | None = None) -> bytes:
        """Pump bytes that have reached the host by now (or by ``at_ms``)."""
        return self.link.to_host.recv(self.t_ms if at_ms is None else at_ms)

    # ------------------------------------------------------------------ faults
    def inject(self, fault: str | None = None, /, **kw: object) -> None:
        """Inject or clear faults now: ``inject("occlusion", on=True)``,
        ``inject("bubble_ul", 150)`` or ``inject(occlusion=True, battery_mv=3300)``.
        ``FAULTS`` lists every name; an unknown one raises ValueError."""
        faults: dict[str, object] = {}
        where = kw.pop("where", "down")
        ramp_s = float(kw.pop("ramp_s", 0.0))  # type: ignore[arg-type]
        if fault is not None:
            if "on" in kw:
                faults[fault] = kw.pop("on")
            elif "value" in kw:
                faults[fault] = kw.pop("value")
            else:
                faults[fault] = True
        faults.update(kw)
        for name in faults:
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
        p = self.plant
        for name, value in faults.items():
            self.faults.append((self.t_ms, name, value))
            if name == "occlusion":
                p.set_occluded(bool(value), where=str(where))
            elif name == "occlusion_up":
                p.set_occluded(bool(value), where="up")
            elif name == "door_open":
                p.door_open = bool(value)
            elif name == "air":
                p.air = None if value is None else bool(value)
            elif name == "bubble_ul":
                p.add_bubble(float(value))  # type: ignore[arg-type]
            elif name == "empty":
                if value:
                    p.set_empty()
            elif name == "fill_ml":
                p.set_fill(float(value))  # type: ignore[arg-type]
            elif name == "stall":
                p.stall = bool(value)
            elif name == "encoder_fail":
                p.encoder_stuck = p.sensors()[1] if value else None
            elif name == "runaway":
                p.runaway = bool(value)
                if not isinstance(value, bool):
                    p.runaway_ml_h = float(value)  # type: ignore[arg-type]
            elif name == "sensor_stuck":
                p.sensor_stuck = p.sensors()[0] if value else None
            elif name == "sensor_drift":
                p.sensor_drift_mmhg_min = float(value)  # type: ignore[arg-type]
            elif name == "height_cm":
                p.set_height(float(value), ramp_s)  # type: ignore[arg-type]
            elif name == "resistance":
                p.set_resistance(float(value), ramp_s)  # type: ignore[arg-type]
            elif name == "mains":
                p.mains = bool(value)
                if value and not p.powered:
                    self._power_on("mains")
            elif name == "battery_mv":
                p.battery_mv = None if value is None else int(value)  # type: ignore[arg-type]
            elif name == "battery_soc":
                p.soc = float(value)  # type: ignore[arg-type]
            elif name == "power_cut":
                if value:
                    p.powered = False
                elif not p.powered:
                    self._power_on("power")
            elif name == "watchdog_stall":
                ms = float(value)  # type: ignore[arg-type]
                self._hang_start = self.t_ms
                self._hang_until = self.t_ms + ms
                self._hang_steps = self._last_steps
            elif name == "link_drop":
                self.link.set_noise(drop_p=float(value))  # type: ignore[arg-type]
            elif name == "link_corrupt":
                self.link.set_noise(corrupt_p=float(value))  # type: ignore[arg-type]
            elif name == "link_delay":
                self.link.set_noise(delay_ms=float(value))  # type: ignore[arg-type]
            elif name == "host_silence":
                self.host_silent = bool(value)
            elif name == "hypertension":
                if self.patient is None:
                    raise ValueError("hypertension needs a patient")
                self.patient.hypertensive = bool(value)

    def schedule(self, at_ms: float, fault: str, value: object = True, **kw: object) -> None:
        """Inject ``fault`` at virtual time ``at_ms`` (the slice is cut there)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self._sched_n += 1
        heapq.heappush(self._sched, (float(at_ms), self._sched_n, fault, dict(kw, value=value)))

    def unschedule(self, fault: str) -> int:
        """Drop every scheduled, not yet injected ``fault`` event; returns how many."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        kept = [e for e in self._sched if e[2] != fault]
        n = len(self._sched) - len(kept)
        heapq.heapify(kept)
        self._sched[:] = kept
        return n

    def post(self, fault: str, value: object = True, **kw: object) -> None:
        """Thread-safe `inject` for a running server: applied before the next slice."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self._posted.put((fault, dict(kw, value=value)))

    def _power_on(self, cause: str) -> None:
        p = self.plant
        if not p.mains and p.battery_mv < p.params.brownout_mv:
            return                    # nothing to boot from
        p.powered = True
        self._reboot(cause)

    def _reboot(self, cause: str) -> None:
        self.runtime.restart(cause)
        self.restarts.append((self.t_ms, cause))
        self._hang_until = None
        self.link.to_pump.clear()
        for hook in list(self.on_power_restore):
            hook(self)

    # ------------------------------------------------------------------ stepping
    def slice(self, n: int, step_ms: int | None = None) -> int:
        """Run up to n controller calls ``step_ms`` apart (default: the control tick); fewer
        when host bytes are due or a fault is scheduled (see module doc). Returns the number
        of calls run."""
        step = step_ms or self.tick_ms
        t0 = self.t_ms
        while not self._posted.empty():
            fault, kw = self._posted.get()
            self.inject(fault, **kw)
        sched = self._sched
        while sched and sched[0][0] <= t0:
            _, _, fault, kw = heapq.heappop(sched)
            self.inject(fault, **kw)
        if sched:
            m = math.ceil((sched[0][0] - t0) / step - 1e-9)
            if m < n:
                n = max(1, m)
        plant = self.plant
        if n > 1 and plant.air_edge_near(0.05):
            # a bubble edge reaches the air sensor soon: read the sensor every call (a board
            # samples it every tick; held over a 200 ms slice it sized a bubble per slice)
            n = 1
        if not plant.powered or self._hang_until is not None:
            return self._dead_slice(n, step)
        rx = self.link.to_pump.schedule(t0, step, n)
        if rx:
            n = rx[-1][0] + 1
        press, enc, flags, batt = plant.sensors()
        steps, enable, alarm, tx = self.runtime.slice(
            (self.start_ms + t0) & _MASK, step, n, press, enc, flags, batt, rx)
        plant.enable = enable
        plant.drive(t0, step, steps, self.tick_ms)
        if steps:
            self._last_steps = steps[-1] if step == self.tick_ms else sum(steps) * self.tick_ms // (step * n)
        if tx:
            send = self.link.to_host.send
            for k, data in tx:
                send(data, t0 + k * step)
        self.t_ms = t0 + n * step
        self._after_slice(alarm, enable)
        return n

    def _dead_slice(self, n: int, step: int) -> int:
        """The firmware is not running (no power, or hung): no calls, bytes to it are lost."""
        t0 = self.t_ms
        plant = self.plant
        hang = self._hang_until is not None and plant.powered
        if hang:
            # the step generator keeps the last rate it was given
            per_tick = self._hang_steps
            plant.drive(t0, step, [per_tick * step // self.tick_ms] * n if per_tick else [0] * n,
                        self.tick_ms)
        else:
            plant.enable = 0
            plant.drive(t0, step, [0] * n, self.tick_ms)
        self.link.to_pump.schedule(t0, step, n)     # arrives at a dead UART
        self.t_ms = t0 + n * step
        if hang:
            if self.t_ms - self._hang_start >= self.watchdog_ms:
                self._reboot("watchdog")
            elif self.t_ms >= self._hang_until:   # type: ignore[operator]
                self._hang_until = None
            self._after_slice(self.alarm, self.enable)
        else:
            self._after_slice(0, 0)
            if plant.powered:                      # powered again by itself (never: needs mains)
                self._reboot("power")
        return n

    def _after_slice(self, alarm: int, enable: int) -> None:
        if alarm != self.alarm:
            self.alarm = alarm
            self.alarms.append((self.t_ms, alarm))
        if enable != self.enable:
            self.enable = enable
            self.enables.append((self.t_ms, enable))
        if self.plant.at_end != self._end_stop:
            self._end_stop = self.plant.at_end
            self.end_stops.append((self.t_ms, self._end_stop))
        pt = self.patient
        if pt is not None:
            d = self.plant.delivered_ml
            dt = self.t_ms / 1000.0 - pt.t_s
            if dt > 0:
                pt.advance(dt, max(0.0, d - self._pt_ml) * self.conc_mg_ml)
                self._pt_ml = max(self._pt_ml, d)
            pr = self.patient_record
            if not pr.t_s or self.t_ms / 1000.0 - pr.t_s[-1] >= PATIENT_RECORD_S:
                pr.add(self.t_ms / 1000.0, pt.cp, pt.true_vitals())
        self.slices += 1

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
