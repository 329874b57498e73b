"""Serving the NE-1000 personality: an endpoint (pty or TCP), the pump behind it, persistence.

The imperative shell around host/ne1000.py: ``PumpBackend`` turns the engine's verbs into
``host.Pump`` calls (and the pump's refusals into ``?NA`` / ``?OOR``), ``StateFile`` keeps
the NE-1000 settings across restarts (an NE-1000 keeps them in non-volatile memory, safe
mode included), and ``Ne1000Server`` runs the byte loop between an endpoint and the engine.
``run()`` is what ``infusekit ne1000`` calls.

Safe mode (``SAF n``) is enforced twice: the engine's own timer pauses the pump when the
NE-1000 host falls silent for n s (and answers ``A?T``), and the pump is configured with
``hb_ms = n s``, ``hb_action = pause`` while this process heartbeats it, so the pump also
pauses by itself when this process or its link to the pump dies.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from host._firmware import pumpcore
from host.client import Pump
from host.errors import LinkError, ProtocolError, PumpError, Refused
from host.ne1000 import BackendDown, BackendReset, NeError, Ne1000, PumpView

HB_PERIOD_S = 0.25        # this process heartbeats the pump at least this often
POLL_S = 0.05             # the byte loop's longest sleep (bounds timer and close latency)
_OOR_CODES = ("RANGE", "LIMIT", "SOFT", "DRUG")   # the pump's refusals that mean "out of range"


class PumpBackend:
    """The engine's verbs on an InfuseKit pump (``host.Pump``)."""

    def __init__(self, pump: Pump, drug: str | None = None) -> None:
        self.pump = pump
        self.drug = drug
        dose = pumpcore("dose")
        self._rates = (dose.RATE_MIN, dose.RATE_MAX)
        lib = pump.library if drug is not None else None
        if lib is not None and drug in lib and pump.info is not None \
                and pump.info.libh == lib.sha16:     # the library the pump enforces
            top = int(lib.get(drug).rate_ml_h_max * 1000)
            self._rates = (self._rates[0], min(self._rates[1], top))
        self._volumes = (dose.VTBI_MIN, dose.VTBI_MAX)
        self._hb_want: int | None = None    # SAF seconds still to be set on the pump
        pump.start_heartbeat(HB_PERIOD_S)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.pump.link_ok:
            try:                                # the pump unplugged or rebooted: find it again
                self.pump.reconnect(attempts=1, delay=0.0)
            except PumpError as e:
                raise BackendDown(str(e)) from e
            raise BackendReset("the pump came back")
        try:
            return fn(*args, **kwargs)
        except Refused as e:
            if e.code == "BOOT":                # the pump rebooted since HELLO (protocol v1)
                try:
                    self.pump.hello()
                except PumpError:
                    pass
                raise BackendReset(str(e)) from e
            raise NeError("OOR" if e.code in _OOR_CODES else "NA", str(e)) from e
        except (LinkError, ProtocolError) as e:
            raise BackendDown(str(e)) from e
        except (PumpError, ValueError) as e:
            raise NeError("NA", str(e)) from e

    def view(self) -> PumpView:
        st = self._call(self.pump.status)
        return PumpView(st.state, st.del_nl, st.alarm, st.prio)

    def rate_limits(self) -> tuple[int, int]:
        return self._rates

    def volume_limits(self) -> tuple[int, int]:
        return self._volumes

    def safe_mode(self, timeout_s: int) -> None:
        """Map SAF n onto the pump's comm-loss pause; CFG needs IDLE, else it waits for the
        next RUN (which passes through IDLE)."""
        self._hb_want = timeout_s
        try:
            if self.view().state == "IDLE":
                self._apply_hb()
        except (NeError, BackendDown):
            pass

    def _apply_hb(self) -> None:
        if self._hb_want is None:
            return
        n = self._hb_want
        self._call(self.pump.configure, hb_ms=n * 1000, hb_action="pause")
        self._hb_want = None

    def start(self, rate_ul_h: int, vtbi_nl: int) -> None:
        if self.view().state != "IDLE":
            self._call(self.pump.stop)          # PROGRAMMED / COMPLETE / STANDBY → IDLE
        self._apply_hb()                        # refused → RUN refused: no unguarded run
        rate, vtbi = f"{rate_ul_h} uL/h", f"{vtbi_nl} nL"
        if self.drug is None:
            self._call(self.pump.program, rate=rate, vtbi=vtbi, kvo=0)
        else:                                   # the drug library's limits apply
            self._call(self.pump.program_steps, [(rate, vtbi)], drug=self.drug, kvo=0)
        self._call(self.pump.start)

    def resume(self) -> None:
        self._call(self.pump.resume)

    def pause(self) -> None:
        self._call(self.pump.pause)

    def stop(self) -> None:
        self._call(self.pump.stop)

    def titrate(self, rate_ul_h: int) -> None:
        self._call(self.pump.titrate, f"{rate_ul_h} uL/h")


class StateFile:
    """The NE-1000 settings as a JSON file, replaced atomically on every change."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def load(self) -> dict | None:
        try:
            d = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) else None

    def save(self, settings: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(settings, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def default_state_path(dev: str, address: int) -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "infusekit" / f"ne1000-{dev}-{address}.json"


def open_endpoint(link: tuple[str, int]) -> Any:
    """A pty (``/dev/pts/N``) or a TCP listener (``socket://127.0.0.1:PORT``): the same
    endpoints ``sim serve`` prints (host/endpoints.py)."""
    from host.endpoints import PtyEndpoint, TcpEndpoint
    kind, port = link
    return PtyEndpoint() if kind == "pty" else TcpEndpoint(port)


class Ne1000Server:
    """The personality on ``endpoint`` in front of ``pump``, served from a thread."""

    def __init__(self, pump: Pump, endpoint: Any, address: int = 0,
                 state: StateFile | None = None, drug: str | None = None) -> None:
        self.pump = pump
        self.endpoint = endpoint
        self.url = endpoint.url
        self.backend = PumpBackend(pump, drug)
        self.state = state
        self.engine = Ne1000(self.backend, address, state.load() if state else None,
                             state.save if state else None)
        if self.engine.settings.safe_s:
            self.backend.safe_mode(self.engine.settings.safe_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def serve(self) -> None:
        """The byte loop, until ``close()``."""
        ep, eng, clock = self.endpoint, self.engine, time.monotonic
        while not self._stop.is_set():
            ep.wait(POLL_S)
            data = ep.read()
            now = clock()
            out = eng.feed(data, now) if data else b""
            eng.poll(now)
            if out:
                ep.write(out)

    def start(self) -> "Ne1000Server":
        def run() -> None:
            try:
                self.serve()
            except BaseException as e:        # surfaced by close() / the CLI
                self.error = e
        self._thread = threading.Thread(target=run, name="infusekit-ne1000", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.pump.stop_heartbeat()
        self.endpoint.close()


def parse_link(text: str) -> tuple[str, int]:
    """``pty`` or ``tcp:PORT`` (as ``sim serve --link``)."""
    if text == "pty":
        return ("pty", 0)
    if text.startswith("tcp:") and text[4:].isdigit() and int(text[4:]) <= 65535:
        return ("tcp", int(text[4:]))
    raise ValueError(f"--link is pty or tcp:PORT, not {text!r}")


def run(pump: Pump, link: tuple[str, int] = ("pty", 0), address: int = 0,
        state_path: str | None = None, drug: str | None = None) -> int:
    """``infusekit ne1000`` on an open pump: print the endpoint's URL (one line, as
    ``sim serve`` does), serve until Ctrl-C or SIGTERM. Exit codes: 0 ok, 2 usage,
    4 the endpoint could not be opened or the loop failed."""
    if not 0 <= address <= 99:
        print("infusekit ne1000: --address is 0..99", file=sys.stderr)
        return 2
    try:
        endpoint = open_endpoint(link)
    except OSError as e:
        print(f"infusekit ne1000: cannot open the {link[0]} link: {e}", file=sys.stderr)
        return 4
    dev = pump.info.dev if pump.info else "pump"
    state = StateFile(state_path or default_state_path(dev, address))
    server = Ne1000Server(pump, endpoint, address, state, drug)
    done = threading.Event()
    prev = signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(server.url, flush=True)
    try:
        server.start()
        while not done.wait(0.5):
            if server.error is not None:
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
        server.close()
    if server.error is not None:
        print(f"infusekit ne1000: {server.error}", file=sys.stderr)
        return 4
    return 0
