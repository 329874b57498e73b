"""Serving the simulated pump to a real host: pacing (hil_sim.serve) and the CLI (hil_sim.cli).

Nothing here depends on how fast the machine is. The real-time pacing is tested against a
fake wall clock (a `FakeWall` the endpoint's ``wait`` moves, and that a "slow runtime" moves
on every reading), so its figures are exact; the lock-step mode is tested on its own terms
(pump time moves only when asked, deterministically); the round-trip time in wall
milliseconds is a bench figure (`host.rtt_ms`, bench/bench_host.py), not a test.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from hil_sim.control import send_command
from hil_sim.cosim import Simulation
from hil_sim.link import MemoryEndpoint, PtyEndpoint
from hil_sim.serve import LOCKSTEP, Clock, ClockError, Pacing, serve

ROOT = Path(__file__).resolve().parent.parent
GUARD_S = 120.0          # wall seconds: hang guards only, never a measured figure


class Served:
    """A simulation served on an endpoint from a background thread."""

    def __init__(self, sim, ep, speed, **kw):
        self.sim, self.ep = sim, ep
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(sim, ep, speed, self.stop), kwargs=kw)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(GUARD_S)
        assert not self.thread.is_alive()
        self.sim.close()


def read_line(ep, timeout=GUARD_S):
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n"):
        assert time.monotonic() < deadline, f"hang guard: no reply line ({got!r})"
        got += ep.host_read(timeout=0.1)
    return got


def test_max_speed_answers_a_connected_host():
    ep = MemoryEndpoint()
    s = Served(Simulation("cpython"), ep, None)
    try:
        ep.host_write(b"1 HELLO\n")
        assert read_line(ep).startswith(b"1 OK dev=")
    finally:
        s.close()
    assert s.sim.t_ms > 0


# ------------------------------------------------------------- real-time pacing, fake wall
class FakeWall:
    """A wall clock that moves only when told: by ``wait`` on the endpoint (the server
    sleeping) and, for a slow runtime, by ``cost_s`` on every reading."""

    def __init__(self, cost_s=0.0):
        self.t, self.cost_s = 0.0, cost_s

    def __call__(self):
        self.t += self.cost_s
        return self.t


class ScriptedHost(MemoryEndpoint):
    """A host on a fake wall clock: writes ``script`` = [(wall_s, bytes)] when the wall
    reaches each time, records every pump write with the wall time it reached the host, and
    stops the server at ``end_s``."""

    def __init__(self, wall, script, end_s, stop):
        super().__init__()
        self.wall, self.script, self.end_s, self.stop = wall, list(script), end_s, stop
        self.got = []                      # (wall_s, bytes)

    def _due(self):
        while self.script and self.script[0][0] <= self.wall.t:
            self.host_write(self.script.pop(0)[1])

    def read(self):
        if self.wall.t >= self.end_s:
            self.stop.set()
        self._due()
        return super().read()

    def write(self, data):
        self.got.append((self.wall.t, data))

    def wait(self, timeout):
        nxt = self.script[0][0] if self.script else self.end_s
        self.wall.t = min(self.wall.t + max(0.0, timeout), max(self.wall.t, nxt))
        if self.wall.t >= self.end_s:
            self.stop.set()
        self._due()
        return bool(self._in)

    def reply_at(self, prefix):
        """The wall time the line starting ``prefix`` had reached the host, and all bytes."""
        buf = b""
        for t, data in self.got:
            buf += data
            i = buf.find(prefix)
            if i >= 0 and buf.find(b"\n", i) >= 0:
                return t, buf
        return None, buf


def _paced(speed, script, end_s, cost_s=0.0, **kw):
    wall, stop = FakeWall(cost_s), threading.Event()
    ep = ScriptedHost(wall, script, end_s, stop)
    sim = Simulation("cpython")
    try:
        serve(sim, ep, speed, stop, wall=wall, **kw)
    finally:
        sim.close()
    return sim, ep, wall


@pytest.mark.parametrize("speed", [1.0, 20.0])
def test_real_time_follows_the_wall_clock(speed):
    """Virtual time is the wall clock times the speed (to a step), and a STATUS is answered
    no sooner than its bytes take on the wire, within a step and a byte of it."""
    sim, ep, wall = _paced(speed, [(0.3, b"1 STATUS\n")], end_s=1.0)
    assert abs(sim.t_ms - 1000 * speed * wall.t) <= 1 + 10      # one step + the idle poll
    t_reply, buf = ep.reply_at(b"1 OK state=")
    assert t_reply is not None, buf
    line = buf[buf.index(b"1 OK state="):]
    line = line[:line.index(b"\n") + 1]
    wire_s = (len(b"1 STATUS\n") + len(line)) * sim.link.to_pump.byte_ms / 1000 / speed
    assert 0.3 + wire_s * 0.999 <= t_reply <= 0.3 + wire_s + 0.002 / speed + 1e-6, \
        (t_reply, wire_s)


@pytest.mark.req("REQ-HOST-04")
def test_speed_beyond_the_runtime_is_capped_not_a_silent_pump():
    """Asked for a million times real time on a runtime that costs wall time at every step
    (the fake wall moves 1 ms per reading), the served pump answers every request, and the
    cap is reported once with the speed achieved. The old pacing let virtual time fall ever
    further behind the wall clock until the host timed out (asked 50x under load: 34x, then
    silence)."""
    reports = []
    pacing = Pacing(1e6)
    script = [(0.25 * i, b"%d HELLO\n" % i) for i in range(1, 5)]
    sim, ep, wall = _paced(1e6, script, end_s=1.25, cost_s=0.002,
                           on_capped=lambda a, g: reports.append((a, g)), pacing=pacing)
    for i in range(1, 5):
        t, buf = ep.reply_at(b"%d OK dev=" % i)
        assert t is not None and t < 0.25 * i + 0.25, (i, t)   # before the next request
    assert len(reports) == 1 and reports[0][0] == 1e6 and 0 < reports[0][1] < 1e6
    assert pacing.capped and pacing.slipped_ms > 0 and 0 < pacing.achieved < 1e6


# ------------------------------------------------------------------------------ lock-step
def _lockstep(ep, runtime="cpython", **kw):
    clock = Clock(guard_s=GUARD_S)
    return Served(Simulation(runtime), ep, LOCKSTEP, clock=clock, **kw), clock


def test_lockstep_time_stands_still_until_the_host_or_the_clock_moves_it():
    ep = MemoryEndpoint()
    s, clock = _lockstep(ep)
    try:
        ep.host_write(b"1 HELLO\n")
        assert read_line(ep).startswith(b"1 OK dev=")
        t = s.sim.t_ms
        assert 0 < t <= 2 * s.sim.tick_ms            # one exchange: the bytes and a tick
        time.sleep(0.2)                              # the host thinks: no pump time passes
        assert s.sim.t_ms == t
        assert clock.advance(1000) == t + 1000       # whole ticks
        assert clock.run_until(lambda sim: sim.t_ms >= t + 5000, 60_000)
        assert s.sim.t_ms == t + 5000
        assert not clock.run_until(lambda sim: False, 400)
        assert s.sim.t_ms == t + 5400
    finally:
        s.close()
    with pytest.raises(ClockError):
        clock.advance(100)                           # the server has stopped: at once


def test_lockstep_is_deterministic_whatever_the_machine_speed():
    """The same requests give the same pump times, twice (a load, a slow thread or a fast
    one changes nothing): each exchange runs until its reply is at the host."""
    reqs = [b"1 HELLO\n", b"2 STATUS\n", b"3 FLY\n", b"4 STATUS\n"]
    runs = []
    for _ in range(2):
        ep = MemoryEndpoint()
        s, clock = _lockstep(ep)
        try:
            times = []
            for r in reqs:
                ep.host_write(r)
                assert read_line(ep).startswith(r.split(b" ")[0] + b" ")
                times.append(s.sim.t_ms)
                clock.advance(123)
        finally:
            s.close()
        runs.append(times)
    assert runs[0] == runs[1] and runs[0] == sorted(set(runs[0]))


def test_lockstep_a_request_with_no_reply_ends_after_answer_ms():
    """host_silence: nothing reaches the pump; the exchange still runs pump time (a lost
    request costs time, as on a real line) and ends answer_ms after the request."""
    ep = MemoryEndpoint()
    s, clock = _lockstep(ep, answer_ms=700)
    try:
        s.sim.post("host_silence", True)
        clock.advance(1)                             # the fault is applied (a slice)
        t = s.sim.t_ms
        ep.host_write(b"1 HELLO\n")
        deadline = time.monotonic() + GUARD_S
        while s.sim.t_ms < t + 700:                  # by itself: no grant
            assert time.monotonic() < deadline, f"hang guard: t_ms={s.sim.t_ms}"
            time.sleep(0.01)
        time.sleep(0.2)                              # then it stops (a run-on shows here)
        assert t + 700 <= s.sim.t_ms <= t + 700 + s.sim.tick_ms
        assert ep.host_read(timeout=0) == b""
    finally:
        s.close()


@pytest.mark.e2e
def test_lockstep_runs_no_faster_than_the_host_reads_a_pty():
    """2 min of 100-ms telemetry is ~110 kB, more than a pty buffers: a reader that
    takes its time still gets every frame (the grant waits for it), none is overrun."""
    ep = PtyEndpoint()
    s, clock = _lockstep(ep)
    port = serial.serial_for_url(ep.url, baudrate=115200, timeout=GUARD_S)
    frames, replies, stop = [], [], threading.Event()

    def reader():
        buf = b""
        while not stop.is_set():
            chunk = port.read(256)
            time.sleep(0.002)                        # a slow consumer
            buf += chunk
            *lines, buf = buf.split(b"\n")
            frames.extend(ln for ln in lines if ln.startswith(b"! TL "))
            replies.extend(ln for ln in lines if ln.startswith(b"2 OK"))
    port.timeout = 0.05                              # the reader's poll, not a figure
    th = threading.Thread(target=reader, daemon=True)
    try:
        from host.codec import encode_request
        port.write(encode_request(1, "TLM", {"period_ms": 100}))
        th.start()
        clock.advance(200)
        clock.advance(120_000)
        port.write(b"2 STATUS\n")                   # its reply comes after every frame
        deadline = time.monotonic() + GUARD_S
        while not replies:
            assert time.monotonic() < deadline, f"hang guard: {len(frames)} frames"
            time.sleep(0.01)
        t = [int(f.split(b"t_ms=")[1].split()[0]) for f in frames]
        assert len(t) >= 1200 and ep.overruns == 0, (len(t), ep.overruns)
        assert all((b - a) % 2**30 == 100 for a, b in zip(t, t[1:])), "a frame was lost"
    finally:
        stop.set()
        if th.is_alive():
            th.join(GUARD_S)
        port.close()
        s.close()
        ep.close()


def test_control_port_advance_needs_lockstep_and_moves_the_clock():
    from hil_sim.control import ControlServer
    ep = MemoryEndpoint()
    s, clock = _lockstep(ep)
    try:
        with ControlServer(s.sim, clock=clock) as ctl, ControlServer(s.sim) as plain:
            assert send_command(plain.url, "advance 100", GUARD_S).startswith("ER advance needs")
            assert send_command(ctl.url, "advance", GUARD_S).startswith("ER usage")
            assert send_command(ctl.url, "advance 10 until=never", GUARD_S).startswith("ER until")
            t = s.sim.t_ms
            assert send_command(ctl.url, "advance 2000", GUARD_S) == f"OK t_ms={t + 2000}"
            assert send_command(ctl.url, "advance 5000 until=alarm", GUARD_S) == \
                f"OK t_ms={t + 7000} reached=0"
            ep.host_write(b"1 STATUS\n")
            assert read_line(ep).startswith(b"1 OK")
    finally:
        s.close()


# ------------------------------------------------------------------------------ the CLI
def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # -X faulthandler: on a hang the test sends SIGABRT and stderr shows every thread's stack
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "hil_sim.cli", "sim",
                             "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)
    url = proc.stdout.readline().strip()
    return proc, url


@pytest.mark.e2e
@pytest.mark.parametrize("args", [
    ("--runtime", "cpython", "--speed", "max", "--link", "pty"),
    ("--runtime", "micropython", "--speed", "1", "--link", "tcp:0", "--seed", "4"),
    ("--runtime", "micropython", "--speed", "lockstep", "--link", "tcp:0", "--control", "tcp:0"),
], ids=["cpython-max-pty", "micropython-rt-tcp", "micropython-lockstep-tcp"])
def test_cli_serve_prints_the_url_and_stops_on_ctrl_c(args):
    proc, url = _cli(*args)
    try:
        assert url.startswith("/dev/" if "pty" in args else "socket://127.0.0.1:"), \
            proc.stderr.read() if not url else url
        ctl = proc.stdout.readline().strip() if "--control" in args else None
        port = serial.serial_for_url(url, baudrate=115200, timeout=GUARD_S)   # a hang guard
        try:
            port.write(b"1 HELLO\n")
            assert port.readline().startswith(b"1 OK dev=")
            if ctl:
                t = int(send_command(ctl, "status", GUARD_S).split("t_ms=")[1].split()[0])
                assert send_command(ctl, "advance 1000", GUARD_S) == f"OK t_ms={t + 1000}"
                port.write(b"2 HELLO\n")
                assert port.readline().startswith(b"2 OK dev=")
        finally:
            port.close()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(GUARD_S)      # a hang guard, not a timing check
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(30)
            raise AssertionError("no exit after Ctrl-C:\n" + proc.stderr.read()[-4000:])
        assert rc == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_usage_errors():
    r = subprocess.run([sys.executable, "-m", "hil_sim.cli", "sim", "serve", "--link", "usb"],
                       capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and "pty or tcp:PORT" in r.stderr
    r = subprocess.run([sys.executable, "-m", "hil_sim.cli", "sim", "serve", "--speed", "fast"],
                       capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and "'lockstep'" in r.stderr
