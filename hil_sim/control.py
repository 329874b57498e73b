"""Fault injection into a *running* simulated pump: a small text control channel.

``infusekit sim serve --control tcp:PORT`` (or `ControlServer(sim, port)` in-process) listens
on 127.0.0.1 and reads one command per line::

    occlusion on            -> OK        (any fault of hil_sim.cosim.FAULTS)
    occlusion on where=up
    bubble_ul 150
    battery_mv none         (back to the discharge model)
    power_cut on / power_cut off
    faults                  -> OK occlusion,occlusion_up,…
    status                  -> OK t_ms=… powered=1 occluded=0 pressure=…
    advance 5000            -> OK t_ms=…  (``--speed lockstep`` only: run 5 s of virtual
                               time now, as fast as the runtime goes; answered when done)
    advance 60000 until=alarm   (… or until the pump shows an alarm — ``high``: a high-priority
                                 one: OK t_ms=… reached=1|0)

and answers ``OK …`` or ``ER reason``. Values: on/off/true/false, none, numbers. The fault is
applied before the simulation's next slice (`Simulation.post`, thread-safe), so it lands at
a well-defined virtual time. In-process tests can call ``sim.post(...)`` directly;
`send_command(url, line)` is the client side.
"""
from __future__ import annotations

import socket
import threading

from hil_sim.cosim import FAULTS, Simulation
from hil_sim.serve import Clock, ClockError

#: what ``advance MS until=NAME`` can wait for (a predicate on the simulation)
UNTIL = {
    "alarm": lambda sim: sim.alarm > 0,
    "high": lambda sim: sim.alarm >= 3,
    "no_alarm": lambda sim: sim.alarm == 0,
    "motor_on": lambda sim: sim.enable != 0,
    "motor_off": lambda sim: sim.enable == 0,
}


def parse_value(text: str) -> object:
    t = text.lower()
    if t in ("on", "true", "yes", "1"):
        return True
    if t in ("off", "false", "no", "0"):
        return False
    if t == "none":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def execute(sim: Simulation, line: str, clock: Clock | None = None) -> str:
    parts = line.split()
    if not parts:
        return "ER empty command"
    name = parts[0]
    if name == "advance":
        return _advance(sim, parts[1:], clock)
    if name == "faults":
        return "OK " + ",".join(FAULTS)
    if name == "status":
        p = sim.plant
        return (f"OK t_ms={sim.t_ms} powered={int(p.powered)} occluded={int(p.occluded)} "
                f"pressure={p.pressure:.1f} delivered_ml={p.delivered_ml:.6f} alarm={sim.alarm}")
    if name not in FAULTS:
        return f"ER unknown fault {name} (try 'faults')"
    value: object = True
    kw: dict[str, object] = {}
    for tok in parts[1:]:
        if "=" in tok:
            k, _, v = tok.partition("=")
            kw[k] = parse_value(v)
        else:
            value = parse_value(tok)
    try:
        sim.post(name, value, **kw)
    except ValueError as e:
        return f"ER {e}"
    return "OK"


def _advance(sim: Simulation, args: list[str], clock: Clock | None) -> str:
    if clock is None:
        return "ER advance needs a lock-step server (sim serve --speed lockstep)"
    kw = dict(a.partition("=")[::2] for a in args if "=" in a)
    pos = [a for a in args if "=" not in a]
    try:
        ms = float(pos[0]) if len(pos) == 1 else None
    except ValueError:
        ms = None
    if ms is None or not ms >= 0 or set(kw) - {"until"}:
        return "ER usage: advance MS [until=" + "|".join(UNTIL) + "]"
    try:
        if "until" in kw:
            pred = UNTIL.get(kw["until"])
            if pred is None:
                return f"ER until: one of {', '.join(UNTIL)}"
            reached = clock.run_until(pred, ms)
            return f"OK t_ms={sim.t_ms} reached={int(reached)}"
        clock.advance(ms)
    except ClockError as e:
        return f"ER {e}"
    return f"OK t_ms={sim.t_ms}"


class ControlServer:
    """Accepts any number of clients, one thread; ``url`` is control://127.0.0.1:PORT.
    ``clock``: the lock-step server's `Clock` (enables ``advance``)."""

    def __init__(self, sim: Simulation, port: int = 0, host: str = "127.0.0.1",
                 clock: Clock | None = None) -> None:
        self.sim = sim
        self.clock = clock
        self._ls = socket.create_server((host, port))
        self.port = self._ls.getsockname()[1]
        self.url = f"control://{host}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        self._ls.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._ls.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            conn.settimeout(0.5)
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    reply = execute(self.sim, line.decode(errors="replace").strip(),
                                    self.clock)
                    conn.sendall(reply.encode() + b"\n")

    def close(self) -> None:
        self._stop.set()
        try:
            self._ls.close()
        except OSError:
            pass
        self._thread.join(timeout=2)

    def __enter__(self) -> ControlServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_command(url: str, line: str, timeout: float = 5.0) -> str:
    """Send one control command to ``control://HOST:PORT`` and return the reply line."""
    hostport = url.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(line.strip().encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()
