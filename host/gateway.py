"""The local pump gateway: ``infusekit serve --port /dev/ttyACM0`` owns the serial port and
offers the pump on ``socket://127.0.0.1:PORT`` to any number of clients at once — the CLI in
one shell, ``infusekit monitor`` in another, scripts, a dashboard.

What one client sees does not change: its request lines go to the pump byte for byte (ids,
CRCs and signatures untouched), the reply with its id comes back to it alone, and every
unsolicited frame (``! EV``, ``! TL``, ``! LG``) goes to every client, as on the wire. The
gateway serialises requests — one in flight on the serial line at a time, the next client's
waits — so two clients' ids can never be confused. The pump answers a repeated (id, CRC)
from its retry cache without executing it; if a client sends a line identical to the one
the previous *other* client sent (same id by chance), the gateway first asks the pump a
``STATUS`` of its own, so the pump never mistakes one client's command for the other's
retry. ``? ER …`` replies (the pump could not read the id) go to the client in flight.

One job: routing bytes. It parses only the first token of each line (id or ``!``/``?``),
never the commands; settings such as the telemetry period are the pump's and so shared.
"""
from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from host.client import open_serial
from host.codec import LineSplitter, encode_request
from host.errors import LinkError

log = logging.getLogger("infusekit.gateway")

REPLY_WAIT_S = 5.0        # a request unanswered this long is given up (its client retries)
FLUSH_ID = 65535          # the gateway's own STATUS id (clients draw theirs at random)
LINE_MAX = 65536          # lines are routed whole; the pump applies its own frame limit


@dataclass
class GatewayStats:
    clients: int = 0            # connected now
    accepted: int = 0           # ever
    requests: int = 0           # lines forwarded to the pump
    replies: int = 0            # replies routed to their client
    broadcast: int = 0          # unsolicited frames sent to every client
    unanswered: int = 0         # requests given up after REPLY_WAIT_S
    flushes: int = 0            # STATUS sent to keep two clients' identical lines apart
    stray: int = 0              # replies with no request in flight


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    addr: tuple
    lock: threading.Lock = field(default_factory=threading.Lock)
    alive: bool = True

    def send(self, data: bytes) -> None:
        with self.lock:
            if not self.alive:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.alive = False


class Gateway:
    """Share the pump on ``port_url`` with every client of ``socket://host:listen``."""

    def __init__(self, port_url: str, listen: int = 0, host: str = "127.0.0.1",
                 baudrate: int = 115200) -> None:
        # exclusive, like host.client: the gateway is the one program on the port
        self.serial = open_serial(port_url, baudrate=baudrate, timeout=0.2, write_timeout=2.0)
        self.port_url = port_url
        self.server = socket.create_server((host, listen))
        self.server.settimeout(0.2)
        self.url = f"socket://{host}:{self.server.getsockname()[1]}"
        self.stats = GatewayStats()
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._requests: queue.Queue = queue.Queue()
        self._inflight: tuple[_Client | None, bytes] | None = None   # (client, id token)
        self._answered = threading.Condition()
        self._last_line: tuple[_Client | None, bytes] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Gateway":
        for target, name in ((self._accept_loop, "accept"), (self._serial_loop, "serial"),
                             (self._dispatch_loop, "dispatch")):
            t = threading.Thread(target=target, name=f"infusekit-gateway-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        self._stop.set()
        with self._answered:
            self._answered.notify_all()
        self._requests.put(None)
        for t in self._threads:
            t.join(2)
        try:
            self.server.close()
        except OSError:
            pass
        with self._lock:
            for c in self._clients:
                c.alive = False
                try:
                    c.sock.close()
                except OSError:
                    pass
            self._clients.clear()
        try:
            self.serial.close()
        except Exception:       # pragma: no cover - best effort
            pass

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def serve_forever(self) -> None:
        """Run until ``close()`` from another thread, a signal, or the serial port failing."""
        self.start()
        try:
            while not self._stop.wait(0.2):
                if self.error is not None:
                    raise self.error
        finally:
            self.close()

    # ------------------------------------------------------------------ clients
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Client(sock, addr)
            with self._lock:
                self._clients.append(c)
                self.stats.clients = len(self._clients)
                self.stats.accepted += 1
            log.info("client %s connected", addr)
            threading.Thread(target=self._client_loop, args=(c,), daemon=True,
                             name="infusekit-gateway-client").start()

    def _client_loop(self, c: _Client) -> None:
        split = LineSplitter(max_frame=LINE_MAX)    # overlong lines reach the pump, as direct
        c.sock.settimeout(0.2)
        try:
            while not self._stop.is_set() and c.alive:
                try:
                    data = c.sock.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not data:
                    break
                for line in split.feed(data):
                    self._requests.put((c, bytes(line) + b"\n"))
        finally:
            c.alive = False
            with self._lock:
                if c in self._clients:
                    self._clients.remove(c)
                self.stats.clients = len(self._clients)
            try:
                c.sock.close()
            except OSError:
                pass
            log.info("client %s left", c.addr)

    # ------------------------------------------------------------------ to the pump
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            item = self._requests.get()
            if item is None:
                return
            client, line = item
            if not client.alive:
                continue
            if self._last_line is not None and self._last_line[1] == line \
                    and self._last_line[0] is not client:
                self._forward(None, encode_request(FLUSH_ID, "STATUS"))
                self.stats.flushes += 1
            self._forward(client, line)

    def _forward(self, client: _Client | None, line: bytes) -> None:
        rid = line.split(b" ", 1)[0]
        with self._answered:
            self._inflight = (client, rid)
        try:
            self.serial.write(line)
            self.serial.flush()
        except Exception as e:
            self.error = LinkError(f"cannot write to the pump: {e}")
            self._stop.set()
            return
        self.stats.requests += 1
        self._last_line = (client, line)
        deadline = time.monotonic() + REPLY_WAIT_S
        with self._answered:
            while self._inflight is not None and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats.unanswered += 1
                    self._inflight = None
                    break
                self._answered.wait(left)

    # ------------------------------------------------------------------ from the pump
    def _serial_loop(self) -> None:
        split = LineSplitter(max_frame=LINE_MAX)
        while not self._stop.is_set():
            try:
                data = self.serial.read(self.serial.in_waiting or 1)
            except Exception as e:
                if not self._stop.is_set():
                    self.error = LinkError(f"serial link failed: {e}")
                    self._stop.set()
                return
            for line in split.feed(data):
                self._route(line)

    def _route(self, line: bytes) -> None:
        head = line.split(b" ", 1)[0]
        line = bytes(line) + b"\n"
        if head == b"!":
            with self._lock:
                clients = list(self._clients)
            for c in clients:
                c.send(line)
            self.stats.broadcast += 1
            return
        with self._answered:
            inflight = self._inflight
            if inflight is not None and (head == inflight[1] or head == b"?"):
                self._inflight = None
                self._answered.notify_all()
            else:
                inflight = None
        if inflight is None:
            self.stats.stray += 1
            return
        client = inflight[0]
        if client is not None:                     # None: the gateway's own STATUS
            client.send(line)
            self.stats.replies += 1


def serve(port_url: str, listen: int = 0, out=print) -> int:
    """``infusekit serve``: print the URL clients connect to (one line), serve until
    Ctrl-C/SIGTERM. Raises LinkError when the pump's port fails."""
    import signal
    gw = Gateway(port_url, listen)
    prev = signal.signal(signal.SIGTERM, lambda *_: gw._stop.set())
    out(gw.url)
    try:
        gw.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, prev)
    return 0
