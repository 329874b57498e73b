"""`infusekit ne1000` end to end: the unmodified PyPI client nesp-lib 2.0.0 drives the
simulated pump through the NE-1000 personality over real pseudo-terminals (nesp-lib →
pty → host.ne1000 → host.Pump → pty → firmware). The pump is served in lock-step
(tests/served.py): pump time moves only to answer the personality (its heartbeats too) and
when a test advances it, so waits on the pump are in pump time. The personality's own clock
(the NE-1000 safe-mode timeout, in seconds of the lab's clock as the NE-1000 manual defines
it, and its inter-byte limit) is a `LabClock` the test moves: it stands still unless a test
advances it, so a loaded machine that starves nesp-lib for seconds fires no time out early.
nesp-lib's own polling loop in ``run()`` keeps the wall clock and is waited for with hang
guards only."""
from __future__ import annotations

import binascii
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nesp_lib
import pytest
import serial
from nesp_lib.exceptions import StateException, StatusAlarmException

from hil_sim.link import PtyEndpoint
from host import ne1000_serve
from host.client import Pump
from host.codec import Event
from host.ne1000_serve import Ne1000Server, StateFile
from served import GUARD_S, Served, wall_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parent.parent
INFUSE, WITHDRAW = nesp_lib.PumpingDirection.INFUSE, nesp_lib.PumpingDirection.WITHDRAW
S = nesp_lib.Status


def safe(payload: bytes) -> bytes:
    c = binascii.crc_hqx(payload, 0)
    return b"\x02" + bytes([len(payload) + 4]) + payload + bytes([c >> 8, c & 0xFF]) + b"\x03"


class LabClock:
    """The personality's clock (``time.monotonic`` of host.ne1000_serve), moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.reads = 0                  # the byte loop reads it once a turn

    def monotonic(self) -> float:
        self.reads += 1
        return self.t

    def advance(self, s: float) -> None:
        """``s`` seconds pass; returns once the byte loop has polled the engine at the new
        time (two turns: one may have read the clock just before)."""
        self.t += s
        n = self.reads
        wall_until(lambda: self.reads >= n + 2, "the personality's byte loop turning")


class Rig:
    """A simulated pump on a pty (lock-step), host.Pump on it, the personality on another pty,
    on a lab clock the test moves (``lab.t``)."""

    def __init__(self, tmp: Path, runtime: str = "cpython", drug: str | None = None) -> None:
        self.served = Served(runtime, seed=3)
        self.sim, self.sim_ep = self.served.sim, self.served.ep
        self.pump = Pump.open(self.sim_ep.url, timeout=2.0, retries=3)
        self.state = StateFile(tmp / "ne1000.json")
        self.lab, self._time = LabClock(), ne1000_serve.time
        ne1000_serve.time = self.lab          # read once, as the byte loop starts
        self.server = Ne1000Server(self.pump, PtyEndpoint(), 0, self.state, drug).start()
        self.url = self.server.url

    def close(self) -> None:
        try:
            self.server.close()
            self.pump.close()
            self.served.close()
        finally:
            ne1000_serve.time = self._time
        assert self.server.error is None


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def exchange(ser: serial.Serial, data: bytes, expect: bytes | int) -> bytes:
    """Send ``data``, read as many bytes as ``expect`` has (or ``expect`` bytes)."""
    n = expect if isinstance(expect, int) else len(expect)
    ser.write(data)
    got = b""
    while len(got) < n:
        chunk = ser.read(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.micropython
@pytest.mark.req("REQ-NE-01", "REQ-NE-03")
def test_nesp_lib_drives_the_pump(tmp_path):
    """open, version, diameter, direction, rate, volume, run, dispensed, stop, completion;
    an out-of-range rate, withdrawing and purging refused — firmware under micropython."""
    rig = Rig(tmp_path, "micropython")
    port = nesp_lib.Port(rig.url)
    try:
        p = nesp_lib.Pump(port)                       # SAF0 (answered A?R, then S), VER
        assert (p.model_number, p.firmware_version) == (1000, (3, 928))
        p.syringe_diameter_mm = 26.7
        assert p.syringe_diameter_mm == 26.7
        p.pumping_direction = INFUSE
        assert p.pumping_direction == INFUSE
        p.pumping_rate_ml_per_min = 0.875
        assert p.pumping_rate_ml_per_min == 0.875
        p.pumping_volume_ml = 1.0
        assert p.pumping_volume_ml == 1.0
        p.volume_infused_clear()
        assert p.volume_infused_ml == 0.0
        p.run(wait_while_running=False)
        assert p.status == S.INFUSING
        st = rig.pump.status()
        assert (st.state, st.rate_ul_h, st.vtbi_nl) == ("RUNNING", 52_500, 1_000_000)
        rig.served.until_host(lambda: p.volume_infused_ml > 0, 120_000, "a dispensed volume")
        p.stop()                                      # first STP pauses
        assert p.status == S.PAUSED and rig.pump.status().state == "PAUSED"
        paused_at = p.volume_infused_ml
        assert 0 < paused_at < 1.0
        assert p.volume_infused_ml == paused_at       # nothing moves while paused
        # the clinical refusals, while paused: nothing changes
        with pytest.raises(ValueError):
            p.pumping_rate_ml_per_min = 25.0          # 1500 mL/h > the pump's 1200 mL/h
        assert p.pumping_rate_ml_per_min == 0.875 and rig.pump.status().rate_ul_h == 52_500
        with pytest.raises(StateException):
            p.pumping_direction = WITHDRAW
        assert p.pumping_direction == INFUSE
        with pytest.raises(StateException):
            p.run_purge()
        assert rig.pump.status().state == "PAUSED"
        p.stop()                                      # second STP ends the program
        assert p.status == S.STOPPED and rig.pump.status().state == "IDLE"
        assert p.volume_infused_ml == paused_at       # DIS keeps what was dispensed
        # a program run to its end: exactly the volume, then stopped (no keep-vein-open)
        p.volume_infused_clear()
        p.pumping_volume_ml = 0.02
        with rig.served.running():                    # pump time runs while nesp-lib polls
            p.run()                                   # waits while running
        assert p.status == S.STOPPED
        st = rig.pump.status()
        assert (st.state, st.vtbi_nl) == ("COMPLETE", 20_000)
        assert 19_900 <= st.del_nl <= 20_000                  # the pump's own count
        # DIS is the pump's count, in the display's 4 digits (µL here), rounded down
        assert 0 <= st.del_nl - p.volume_infused_ml * 1e6 < 10 + 1e-6
    finally:
        port.close()
        rig.close()


CHILD = r"""
import sys, time, nesp_lib
p = nesp_lib.Pump(nesp_lib.Port(sys.argv[1]), safe_mode_timeout_s=int(sys.argv[2]))
p.pumping_rate_ml_per_min = 0.875
p.pumping_volume_ml = 5.0
p.run(wait_while_running=False)
print("running", flush=True)
time.sleep(600)
"""


@pytest.mark.req("REQ-NE-05", "REQ-NE-06")
def test_safe_mode_timeout_pauses_the_pump_when_the_lab_software_dies(rig):
    child = subprocess.Popen([sys.executable, "-c", CHILD, rig.url, "3"],
                             stdout=subprocess.PIPE, text=True)
    try:
        r, _, _ = select.select([child.stdout], [], [], 120)
        assert r and child.stdout.readline().strip() == "running"
        assert rig.pump.status().state == "RUNNING"
        assert rig.state.load()["safe_s"] == 3                  # persisted
    finally:
        child.kill()                                            # the lab software crashes
        child.wait(30)
    # however long the machine took, no lab time passed: no time out yet, nor before 3 s
    assert rig.server.engine.timeouts == 0 and rig.pump.status().state == "RUNNING"
    rig.lab.advance(2.9)
    assert rig.server.engine.timeouts == 0 and rig.pump.status().state == "RUNNING"
    rig.lab.advance(0.2)                            # past SAF 3 of the lab's clock
    wall_until(lambda: rig.server.engine.timeouts >= 1, "the safe-mode time out")
    # ... then it sends PAUSE (its reply is all the pump time that takes)
    wall_until(lambda: rig.pump.status().state == "PAUSED", "the pump paused")
    with serial.Serial(rig.url, timeout=10) as ser:             # still in safe mode
        assert exchange(ser, safe(b"0"), safe(b"00A?T")) == safe(b"00A?T")
        assert exchange(ser, safe(b"0"), safe(b"00P")) == safe(b"00P")
        # basic text is not a packet: not answered (the next reply is the packet's)
        assert exchange(ser, b"0VER\r" + safe(b"0"), safe(b"00P")) == safe(b"00P")


@pytest.mark.req("REQ-NE-05")
def test_safe_mode_maps_onto_the_pumps_comm_loss_pause(rig):
    """The personality itself dies: the pump, configured by SAF n, pauses on its own."""
    with serial.Serial(rig.url, timeout=10) as ser:
        assert exchange(ser, b"*\r", b"\x0200A?R\x03") == b"\x0200A?R\x03"
        assert exchange(ser, b"0SAF3\r", safe(b"00S")) == safe(b"00S")
        for cmd in (b"0RAT875UM", b"0VOL5"):
            assert exchange(ser, safe(cmd), safe(b"00S")) == safe(b"00S")
        assert exchange(ser, safe(b"0RUN"), safe(b"00I")) == safe(b"00I")
    assert rig.pump.status().state == "RUNNING"
    early = [e for e in rig.pump.events(timeout=0) if isinstance(e, Event)
             and e.name == "ALARM" and e.fields.get("alarm") == "COMM_LOSS"]
    assert early == []                                          # no comm loss while served
    rig.server.close()                                          # loop and heartbeat end
    t0 = rig.sim.t_ms
    rig.served.until(lambda sim: sim.alarm > 0, 10_000, "the pump's comm-loss alarm")
    assert rig.sim.t_ms - t0 >= 2500                # not before SAF 3: 3 s of silence
    for ev in rig.pump.events(timeout=GUARD_S):
        if isinstance(ev, Event) and ev.name == "ALARM" and ev.fields.get("alarm") == "COMM_LOSS":
            break
    else:
        raise AssertionError("the pump raised no COMM_LOSS")
    st = rig.pump.status()
    assert st.state in ("PAUSED", "ALARM") and st.rate_ul_h >= 0
    assert rig.pump.status().state != "RUNNING"


@pytest.mark.req("REQ-NE-04")
def test_an_occlusion_is_a_stall_alarm(rig):
    port = nesp_lib.Port(rig.url)
    try:
        p = nesp_lib.Pump(port)
        p.pumping_rate_ml_per_min = 10.0              # 600 mL/h: the pressure rises fast
        p.pumping_volume_ml = 20.0
        p.run(wait_while_running=False)
        rig.sim.post("occlusion", True)
        rig.served.until(lambda sim: sim.alarm == 3, 400_000, "the occlusion alarm")
        assert rig.pump.status().alarm == "OCCLUSION"
        with pytest.raises(StatusAlarmException) as e:
            p.status
        assert e.value.alarm_status == nesp_lib.AlarmStatus.STALLED
        assert p.status == S.STOPPED                  # reported once; the pump keeps ALARM
        with pytest.raises(StateException):
            p.run(wait_while_running=False)           # cleared at the pump, not remotely
        assert rig.pump.status().state == "ALARM"
    finally:
        port.close()


@pytest.mark.req("REQ-NE-03")
def test_the_drug_librarys_limits_apply(tmp_path):
    """--drug ketamine: its hard rate limit (200 mL/h) refuses an NE-1000 rate and a
    titration above it."""
    rig = Rig(tmp_path, drug="ketamine")
    port = nesp_lib.Port(rig.url)
    try:
        p = nesp_lib.Pump(port)
        with pytest.raises(ValueError):
            p.pumping_rate_ml_per_min = 4.0           # 240 mL/h > ketamine's 200 mL/h
        p.pumping_rate_ml_per_min = 3.0               # 180 mL/h
        p.pumping_volume_ml = 10.0
        p.run(wait_while_running=False)
        st = rig.pump.status()
        assert (st.state, st.rate_ul_h) == ("RUNNING", 180_000)
        with pytest.raises(ValueError):
            p.pumping_rate_ml_per_min = 3.5           # a titration above the limit: refused
        assert rig.pump.status().rate_ul_h == 180_000
        # without the personality's own check the pump still refuses (ER LIMIT → ?OOR)
        rig.server.backend._rates = (100, 1_200_000)
        with pytest.raises(ValueError):
            p.pumping_rate_ml_per_min = 4.0           # TITRATE refused by the pump
        assert rig.pump.status().rate_ul_h == 180_000
        p.stop()
        p.stop()
        p.pumping_rate_ml_per_min = 4.0               # stored: checked at RUN by the pump
        with pytest.raises(ValueError):
            p.run(wait_while_running=False)           # PROG refused by the pump
        assert rig.pump.status().state == "IDLE"
    finally:
        port.close()
        rig.close()


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    r, _, _ = select.select([proc.stdout], [], [], 120)
    assert r, f"{args} printed no URL"
    return proc, proc.stdout.readline().strip()


def _end(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def _sock_exchange(s: socket.socket, data: bytes, expect: bytes) -> bytes:
    n = len(expect)
    s.sendall(data)
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.req("REQ-NE-01", "REQ-NE-06")
def test_cli_pty_and_tcp_and_safe_mode_across_restarts(tmp_path):
    sim, sim_url = _start(["-m", "hil_sim.cli", "sim", "serve", "--runtime", "cpython",
                           "--speed", "lockstep"])
    state = str(tmp_path / "ne.json")
    try:
        ne, url = _start(["-m", "host", "ne1000", "--port", sim_url, "--state", state])
        try:
            assert url.startswith("/dev/pts/")
            port = nesp_lib.Port(url)
            p = nesp_lib.Pump(port)
            assert p.model_number == 1000 and p.status == S.STOPPED
            port.close()
        finally:
            assert _end(ne) == 0
        ne, url = _start(["-m", "host", "ne1000", "--port", sim_url, "--state", state,
                          "--link", "tcp:0", "--address", "5"])
        try:
            assert url.startswith("socket://127.0.0.1:")
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 30) as s:
                s.settimeout(30)
                assert _sock_exchange(s, b"5VER\r", b"\x0205A?R\x03") == b"\x0205A?R\x03"
                assert _sock_exchange(s, b"5SAF7\r", safe(b"05S")) == safe(b"05S")
        finally:
            assert _end(ne) == 0
        ne, url = _start(["-m", "host", "ne1000", "--port", sim_url, "--state", state,
                          "--link", "tcp:0", "--address", "5"])
        try:                                           # a power cycle: still in safe mode
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 30) as s:
                s.settimeout(30)
                assert _sock_exchange(s, safe(b"5SAF"), safe(b"05A?R")) == safe(b"05A?R")
                assert _sock_exchange(s, safe(b"5SAF"), safe(b"05S7")) == safe(b"05S7")
                assert _sock_exchange(s, safe(b"5SAF0"), b"\x0205S\x03") == b"\x0205S\x03"
        finally:
            assert _end(ne) == 0
    finally:
        _end(sim)


def test_cli_refuses_a_bad_link_and_no_pump(tmp_path):
    r = subprocess.run([sys.executable, "-m", "host", "ne1000", "--port", "/dev/null-none",
                        "--state", str(tmp_path / "x.json")], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 4
    r = subprocess.run([sys.executable, "-m", "host", "ne1000", "--port", "loop://",
                        "--link", "udp:5"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "pty or tcp:PORT" in r.stderr
    r = subprocess.run([sys.executable, "-m", "host", "ne1000", "--port", "loop://",
                        "--address", "100"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "--address" in r.stderr
