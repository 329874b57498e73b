"""`infusekit monitor` as a user runs it (issue 14): on a real terminal (a pty), keys p/r/a/s
sent to the pump, and the link dropped and restored — directly on the pump's port (TCP) and
through the gateway (`infusekit serve`).

The oracle is the pump's side of the link, not the monitor: every byte the host sent and the
pump's own STATE/ALARM events are recorded at the simulated pump's endpoint (or read by a
second client through the gateway). The monitor's screen is only read to know when it is
ready and that it says what happened. The pump is served in lock-step (tests/served.py): pump
time moves only to answer the monitor and when the test advances it (the door alarm, two ticks
with the door closed, telemetry), so nothing depends on how fast the machine is. The wall
clock is left only where the monitor, an unmodified real client, keeps its own timers (its
reconnect attempts while the link is down) and as hang guards (WAIT_S) on what it shows;
even there the test waits for what those timers make happen (two failed reconnect attempts,
counted at the pump's port, at a stand-in listener or in the JSON stream), never for a nap."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from conftest import ROOT
from hil_sim.link import PtyEndpoint, TcpEndpoint
from host import Pump
from served import Served

pytestmark = [pytest.mark.e2e, pytest.mark.req("REQ-HOST-13", "REQ-HOST-09")]
WAIT_S = 120.0                        # a hang guard on what the monitor shows, not a figure
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


class PumpSide:
    """The simulated pump's endpoint, recorded both ways; ``down`` cuts the link (a TCP
    client is dropped and any new one refused, nothing goes either way) until cleared."""

    def __init__(self, ep):
        self.ep, self.url = ep, ep.url
        self.sent, self.got = bytearray(), bytearray()      # host -> pump, pump -> host
        self.down = False
        self.attempts_dropped = 0             # connections made (and dropped) while down
        self.lock = threading.Lock()

    def read(self):
        if self.down:
            if isinstance(self.ep, TcpEndpoint):
                self.ep._drop_client()
                self.ep._accept()             # whoever connects is dropped at once
                if self.ep._conn is not None:
                    self.attempts_dropped += 1
                self.ep._drop_client()
            return b""
        data = self.ep.read()
        with self.lock:
            self.sent += data
        return data

    def write(self, data):
        if self.down:
            return
        with self.lock:
            self.got += data
        self.ep.write(data)

    def __getattr__(self, name):
        return getattr(self.ep, name)

    def requests(self, word):
        with self.lock:
            lines = bytes(self.sent).split(b"\n")
        return [ln for ln in lines if re.match(rb"\d+ " + word.encode() + rb"\b", ln)]

    def events(self, name):
        with self.lock:
            lines = bytes(self.got).split(b"\n")
        return [ln for ln in lines if ln.startswith(b"! ") and re.search(rb"\b" + name.encode()
                                                                          + rb"\b", ln)]

    def states(self):
        return [m.group(1).decode() for ln in self.events("STATE")
                for m in [re.search(rb"state=(\w+)", ln)] if m]


class Pumped:
    """A simulated pump (firmware in-process) served in lock-step from a thread on ``ep``."""

    def __init__(self, ep):
        self.side = PumpSide(ep)
        self.served = Served("cpython", ep=self.side, seed=7)
        self.sim = self.served.sim

    def close(self):
        self.served.close()


class Terminal:
    """``infusekit … monitor`` with its stdin, stdout and stderr on a pty (a real terminal:
    the rich panel and the key reader), its screen collected, keys typed into it."""

    def __init__(self, *argv):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("INFUSEKIT_PORT", "NO_COLOR")}
        env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
        self.proc = subprocess.Popen([sys.executable, "-m", "host", *argv], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, cwd=ROOT,
                                     start_new_session=True)
        os.close(slave)
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError as e:
                if e.errno in (errno.EIO, errno.EBADF):
                    return
                raise
            if not data:
                return
            with self.lock:
                self.buf += data

    def text(self):
        with self.lock:
            return ANSI.sub(b"", bytes(self.buf)).decode("utf-8", "replace")

    def wait_for(self, pattern, count=1, what=""):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.text())) >= count:
                return
            assert self.proc.poll() is None, f"monitor exited: {self.text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"monitor never showed {what or pattern!r}: {self.text()[-3000:]}")

    def key(self, ch):
        os.write(self.master, ch.encode())

    def quit(self):
        """``q``: the monitor ends by itself with exit status 0."""
        self.key("q")
        try:
            return self.proc.wait(WAIT_S)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.reader.join(5)
        try:
            os.close(self.master)
        except OSError:
            pass


def until(cond, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def press(term, side, key, word, state=None, shown=None):
    """Type ``key``; the pump receives ``word`` (one more than before) and, when given,
    reports ``state``; the monitor notes it."""
    n_req, n_state = len(side.requests(word)), len(side.states())
    n_note = len(re.findall(shown or rf"{word.lower()} sent", term.text()))
    term.key(key)
    until(lambda: len(side.requests(word)) > n_req, f"{word} reached the pump after {key!r}")
    if state is not None:
        until(lambda: state in side.states()[n_state:], f"the pump reported {state}")
    term.wait_for(shown or rf"{word.lower()} sent", n_note + 1)


def ready(term):
    """The panel is up and the key reader has the terminal (keys typed before cbreak would
    wait for a newline): wait for a second render."""
    term.wait_for(r"p pause\s+r resume", what="the key line")
    term.wait_for(r"elapsed", 2)


def close_door(pumped):
    """Close the door and give the pump two ticks of it closed (a posted fault is applied
    before the next slice)."""
    pumped.sim.post("door_open", False)
    pumped.served.advance(100)
    assert not pumped.sim.plant.door_open


def door_alarm(pumped):
    """Open the door and run the pump until it raises its alarm."""
    pumped.sim.post("door_open", True)
    pumped.served.until(lambda sim: sim.alarm > 0, 10_000, "the door alarm")


def program_and_start(url):
    with Pump.open(url, timeout=5) as p:
        p.program(rate="10 mL/h", vtbi="40 mL")
        assert p.start() == "RUNNING"


def test_monitor_keys_and_a_dropped_link_on_the_pumps_own_port():
    """Directly on the pump's port (TCP, one client at a time): p r s a drive the pump; the
    link cut under a running monitor is shown, a key typed meanwhile is reported and not
    fatal, and after the link comes back the monitor has reconnected and its keys work."""
    pumped = Pumped(TcpEndpoint())
    side = pumped.side
    term = None
    try:
        program_and_start(side.url)
        term = Terminal("--port", side.url, "--timeout", "2", "monitor", "--period", "200")
        ready(term)
        term.wait_for(r"RUNNING", what="RUNNING")
        press(term, side, "p", "PAUSE", "PAUSED")
        press(term, side, "r", "RESUME", "RUNNING")
        door_alarm(pumped)                                # an alarm to silence and acknowledge
        until(lambda: side.events("ALARM") and "ALARM" in side.states(), "the door alarm")
        term.wait_for(r"ALARM DOOR", what="the alarm as an event")
        press(term, side, "s", "SILENCE")
        close_door(pumped)
        press(term, side, "a", "ACK", "PAUSED")
        hellos = len(side.requests("HELLO"))
        side.down = True                                  # the link drops
        term.wait_for(r"link lost", what="the lost link")
        assert term.proc.poll() is None
        term.key("r")                                     # a key while the link is down
        term.wait_for(r"resume: ", what="the refused key, as a note")
        n = side.attempts_dropped           # the monitor's own timers: attempts that fail
        until(lambda: side.attempts_dropped >= n + 2, "two failed reconnect attempts")
        assert term.proc.poll() is None
        side.down = False                                 # the link is back
        until(lambda: len(side.requests("HELLO")) > hellos, "the monitor's reconnect HELLO")
        until(lambda: side.requests("TLM") and len(side.requests("TLM")) >= 2,
              "telemetry asked for again")
        press(term, side, "r", "RESUME", "RUNNING")       # its keys work again
        assert term.quit() == 0
        term = None
    finally:
        if term is not None:
            term.close()
        pumped.close()


class Dropper:
    """Stands on a gone gateway's port until closed: every connection is accepted and closed
    at once (a failed reconnect attempt, counted)."""

    def __init__(self, port):
        import socket
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.attempts, self.stop = 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.close()
            self.attempts += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(WAIT_S)
        self.sock.close()


def _serve_gateway(pump_url, listen=0):
    p = subprocess.Popen([sys.executable, "-m", "host", "serve", "--port", pump_url,
                          "--listen", str(listen)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    line = p.stdout.readline().strip()
    assert line.startswith("socket://"), (line, p.stderr.read() if p.poll() is not None else "")
    return p, line


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_monitor_through_the_gateway_keys_and_a_restarted_gateway():
    """Through `infusekit serve`: the monitor's keys act on the pump that another client is
    using at the same time, and when the gateway goes away and comes back on its port, the
    monitor reconnects by itself and its keys work again."""
    pumped = Pumped(PtyEndpoint())
    side = pumped.side
    gw = term = None
    try:
        gw, url = _serve_gateway(side.url)
        port = int(url.rsplit(":", 1)[1])
        with Pump.open(url, timeout=5) as other:          # a second client, all along
            other.program(rate="10 mL/h", vtbi="40 mL")
            assert other.start() == "RUNNING"
            term = Terminal("--port", url, "--timeout", "2", "monitor", "--period", "200")
            ready(term)
            press(term, side, "p", "PAUSE", "PAUSED")
            assert other.status().state == "PAUSED"
            press(term, side, "r", "RESUME", "RUNNING")
            assert other.status().state == "RUNNING"
            door_alarm(pumped)
            until(lambda: "ALARM" in side.states(), "the door alarm")
            term.wait_for(r"ALARM DOOR", what="the alarm as an event")
            press(term, side, "s", "SILENCE")
            close_door(pumped)
            press(term, side, "a", "ACK", "PAUSED")
            assert other.status().state == "PAUSED"
        hellos = len(side.requests("HELLO"))
        _stop(gw)                                          # the gateway goes away
        term.wait_for(r"link lost", what="the lost link")
        with Dropper(port) as gone:         # the monitor's own timers: attempts that fail
            until(lambda: gone.attempts >= 2, "two failed reconnect attempts")
        assert term.proc.poll() is None
        gw, url2 = _serve_gateway(side.url, listen=port)   # and comes back on its port
        assert url2 == url
        until(lambda: len(side.requests("HELLO")) > hellos, "the monitor's reconnect HELLO")
        press(term, side, "r", "RESUME", "RUNNING")
        with Pump.open(url, timeout=5) as other:
            assert other.status().state == "RUNNING"
        assert term.quit() == 0
        term = None
    finally:
        if term is not None:
            term.close()
        if gw is not None:
            _stop(gw)
        pumped.close()


def test_monitor_json_stream_reports_the_lost_and_restored_link():
    """Off a terminal the monitor is a JSON-lines stream: a dropped link is a
    ``{"type": "link", "ok": false}`` object, the restored one ``ok: true``, and the stream
    goes on (status objects after it) until the run ends."""
    import json
    pumped = Pumped(TcpEndpoint())
    side = pumped.side
    proc = None
    try:
        program_and_start(side.url)
        proc = subprocess.Popen([sys.executable, "-m", "host", "--port", side.url, "--timeout",
                                 "2", "monitor", "--period", "200", "--for", "600"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, start_new_session=True)
        objs: list[dict] = []

        def read():
            for line in proc.stdout:
                objs.append(json.loads(line))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        until(lambda: any(o["type"] == "status" for o in objs), "the stream has begun")
        pumped.served.until_host(lambda: any(o["type"] == "telemetry" for o in objs), 60_000,
                                 "telemetry in the stream")
        side.down = True
        until(lambda: any(o["type"] == "link" and o["ok"] is False for o in objs),
              "a link-lost object")
        # the monitor's own timers: each failed reconnect attempt is one more link-lost object
        until(lambda: sum(o["type"] == "link" and o["ok"] is False for o in objs) >= 3,
              "two failed reconnect attempts")
        side.down = False
        until(lambda: any(o["type"] == "link" and o["ok"] is True for o in objs),
              "a link-restored object")
        n = len(objs)
        until(lambda: any(o["type"] in ("telemetry", "status") for o in objs[n:]),
              "the stream going on after the reconnect")
        proc.send_signal(signal.SIGINT)                    # Ctrl-C: ends with an "end" object
        proc.wait(WAIT_S)
        reader.join(10)
        assert objs[-1]["type"] == "end" and objs[-1]["interrupted"] is True
        kinds = [o["type"] for o in objs]
        lost = kinds.index("link")
        assert objs[lost]["ok"] is False and "message" in objs[lost]
        assert proc.returncode == 0, proc.stderr.read()
        proc = None
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        pumped.close()
