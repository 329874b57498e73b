"""Serving the simulated pump to a real host: pacing (hil_sim.serve) and the CLI (hil_sim.cli)."""
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from hil_sim.cosim import Simulation
from hil_sim.link import MemoryEndpoint, PtyEndpoint
from hil_sim.serve import serve

ROOT = Path(__file__).resolve().parent.parent


class Served:
    """A simulation served on an endpoint from a background thread."""

    def __init__(self, sim, ep, speed):
        self.sim, self.ep = sim, ep
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(sim, ep, speed, self.stop))
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()
        self.sim.close()


def read_line(ep, timeout=5.0):
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(b"\n") and time.monotonic() < deadline:
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
    assert s.sim.t_ms > 0 and s.sim.speed_x > 50


def test_real_time_follows_the_wall_clock():
    ep = MemoryEndpoint()
    s = Served(Simulation("cpython"), ep, 1.0)
    try:
        time.sleep(0.3)
        ep.host_write(b"1 STATUS\n")
        t = time.perf_counter()
        assert read_line(ep).startswith(b"1 OK")
        assert time.perf_counter() - t >= 0.008           # paced: ~90 bytes at 115200 baud
    finally:
        s.close()
    assert 250 <= s.sim.t_ms <= 1500


def _status_rtts(url, n=15):
    port = serial.serial_for_url(url, baudrate=115200, timeout=2)
    try:
        port.reset_input_buffer()
        rtts, nbytes = [], 0
        for i in range(1, n + 1):
            req = b"%d STATUS\n" % i
            t = time.perf_counter()
            port.write(req)
            line = port.readline()
            rtts.append((time.perf_counter() - t) * 1000)
            assert line.startswith(b"%d OK state=" % i), line
            nbytes = len(req) + len(line)
            time.sleep(0.003)
        return statistics.median(rtts), nbytes * 10 / 115.2
    finally:
        port.close()


@pytest.mark.e2e
@pytest.mark.micropython
def test_status_round_trip_over_a_pty_in_real_time():
    ep = PtyEndpoint()
    s = Served(Simulation("micropython"), ep, 1.0)
    try:
        rtt, wire = _status_rtts(ep.url)
    finally:
        s.close()
        ep.close()
    print(f"STATUS rtt {rtt:.2f} ms, wire {wire:.2f} ms, ratio {rtt / wire:.2f}")
    assert rtt >= wire * 0.95               # never faster than the wire
    assert rtt < 40                         # goal ≤ 15 ms (bench); loose here for busy CI


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
], ids=["cpython-max-pty", "micropython-rt-tcp"])
def test_cli_serve_prints_the_url_and_stops_on_ctrl_c(args):
    proc, url = _cli(*args)
    try:
        assert url.startswith("/dev/" if "pty" in args else "socket://127.0.0.1:"), \
            proc.stderr.read() if not url else url
        port = serial.serial_for_url(url, baudrate=115200, timeout=5)
        try:
            port.write(b"1 HELLO\n")
            assert port.readline().startswith(b"1 OK dev=")
        finally:
            port.close()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(60)           # generous: a loaded machine, not a timing check
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(30)
            raise AssertionError("no exit 60 s after Ctrl-C:\n" + proc.stderr.read()[-4000:])
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


@pytest.mark.req("REQ-HOST-04")
def test_speed_beyond_the_runtime_is_capped_not_a_silent_pump():
    """Asked for a million times real time (no runtime can do it), the served pump keeps
    answering every request promptly, and the cap is reported once with the speed achieved.
    The old pacing let virtual time fall ever further behind the wall clock until the host
    timed out (asked 50x under load: 34x, then silence)."""
    from hil_sim.serve import Pacing
    ep = MemoryEndpoint()
    reports = []
    pacing = Pacing(1e6)
    sim = Simulation("cpython")
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(sim, ep, 1e6, stop),
                         kwargs={"on_capped": lambda a, g: reports.append((a, g)),
                                 "pacing": pacing})
    t.start()
    try:
        for i in range(1, 6):
            ep.host_write(b"%d HELLO\n" % i)
            assert read_line(ep, timeout=5.0).startswith(b"%d OK dev=" % i)
    finally:
        stop.set()
        t.join(10)
        sim.close()
    assert len(reports) == 1 and reports[0][0] == 1e6 and 0 < reports[0][1] < 1e6
    assert pacing.capped and pacing.slipped_ms > 0 and 0 < pacing.achieved < 1e6
