"""End to end over real loopback TCP:

    infusekit sim serve --scenario … --monitor mllp://…   (its own process: the pump's firmware
                                                          under micropython, the patient, the
                                                          bedside monitor sending PCD-01)
    the vitals bridge (host.vitals_bridge.serve_bridge)   (MLLP listener, host.Pump over socket://)

The bridge runs in the test process on the same `host.Pump` the test sets the pump up with
(the simulator's TCP endpoint takes one client at a time), so it listens before the infusion
starts whatever the machine's speed; `infusekit vitals-bridge` itself runs as a subprocess in
`test_vitals_bridge_cli`. The simulator serves in lock-step (`--speed lockstep`, its control
port's `advance`): pump time, and with it the patient and the monitor, moves when the test
advances it, and never faster than the bridge takes the monitor's messages (each waits for its
ACK, which waits for the pump's reply to the relayed VITALS). So the infusion reaches the
responder's hypertension, or the feed's dropout, at the same pump time whatever the machine's
speed; waits on what the bridge prints are hang guards (GUARD_S), not figures.
"""
from __future__ import annotations

import datetime as dt
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import hl7
import pytest
from hl7.client import MLLPClient

from hil_sim.control import send_command
from host.vitals_bridge import serve_bridge
from served import GUARD_S, wall_until
from test_hl7_bridge import pcd01, SBP, DBP, HR, SPO2, TEMP, T0

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]
INFUSEKIT = [sys.executable, "-m", "host"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines:
    """Collected output lines, waited on."""

    def __init__(self):
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))

    def wait_for(self, pred, timeout=GUARD_S, alive=None, start=0):
        """The first line from index `start` on that satisfies `pred`."""
        return wall_until(
            lambda: next((ln for ln in self.lines[start:] if pred(ln)), None),
            lambda: "a matching line; output so far:\n" + "\n".join(self.lines[-40:]),
            guard_s=timeout, every=0.05, alive=alive)


class Proc(Lines):
    """A subprocess whose stdout lines are collected by a thread."""

    def __init__(self, args):
        super().__init__()
        # -X faulthandler: a process that does not stop on Ctrl-C is sent SIGABRT, which
        # makes it print every thread's stack, and the test failure says where it hung
        self.p = subprocess.Popen([INFUSEKIT[0], "-X", "faulthandler"] + INFUSEKIT[1:] + args,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        threading.Thread(target=lambda: [self.add(l) for l in self.p.stdout], daemon=True).start()
        threading.Thread(target=lambda: [self.err.append(l) for l in self.p.stderr],
                         daemon=True).start()

    def wait_for(self, pred, timeout=GUARD_S):
        try:
            return super().wait_for(pred, timeout, alive=lambda: self.p.poll() is None)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstderr:\n" + "".join(self.err[-40:])) from None

    def stop(self):
        """Ctrl-C, as a user stops it; the exit code. A loaded machine gets a minute; a
        process still running then is a hang, reported with its threads' stacks."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(60)
            except subprocess.TimeoutExpired:
                self.p.send_signal(signal.SIGABRT)
                self.p.wait(30)
                time.sleep(0.5)
                raise AssertionError("did not stop within 60 s of Ctrl-C:\n" + "".join(self.err[-80:]))
        return self.p.returncode


def _pump(url, attempts=10):
    """host.Pump on the simulator's TCP link; the endpoint takes one client at a time, so a
    connection that races the previous client's close is retried (nothing was sent on it)."""
    from host import Pump
    from host.errors import LinkError
    for k in range(attempts):
        try:
            p = Pump.open(url, timeout=10)
            p.hello()
            return p
        except LinkError:
            if k == attempts - 1:
                raise
            time.sleep(0.5)


class Bedside:
    """sim serve (lock-step) with the monitor, and the bridge in front of the pump, listening
    first; ``advance``/``run_until_line`` move pump time through the control port."""

    def __init__(self, scenario, runtime="micropython"):
        self.bport = _free_port()
        pump_port = _free_port()
        self.sim = Proc(["sim", "serve", "--runtime", runtime, "--link", f"tcp:{pump_port}",
                         "--speed", "lockstep", "--control", "tcp:0", "--scenario", scenario,
                         "--monitor", f"mllp://127.0.0.1:{self.bport}"])
        self.url = self.sim.wait_for(lambda l: l.startswith("socket://"))
        self.ctl = self.sim.wait_for(lambda l: l.startswith("control://"))
        self.sim.wait_for(lambda l: l.startswith("monitor: PCD-01 for patient PAT-1"))
        self.pump = _pump(self.url)
        self.out = Lines()
        self.stop = threading.Event()
        # the monitor's clock runs at the simulation's speed: the wall-clock check is off
        self.thread = threading.Thread(target=serve_bridge, daemon=True, args=(
            self.pump, f"mllp://127.0.0.1:{self.bport}", "PAT-1"),
            kwargs=dict(max_skew_s=None, out=self.out.add, stop=self.stop))
        self.thread.start()
        self.out.wait_for(lambda l: l == f"listening on mllp://127.0.0.1:{self.bport}")

    def advance(self, ms, until=None):
        reply = send_command(self.ctl, f"advance {ms}" + (f" until={until}" if until else ""),
                             timeout=GUARD_S)
        assert reply.startswith("OK t_ms="), reply
        return int(reply.split("t_ms=")[1].split()[0])

    def run_until_line(self, pred, max_ms, start=0, step_ms=10_000):
        """Advance pump time ``step_ms`` at a time until the bridge has printed a line
        (from index ``start`` on) that satisfies ``pred``; at most ``max_ms``."""
        t = self.advance(0)
        t_end = t + max_ms
        while True:
            for line in self.out.lines[start:]:
                if pred(line):
                    return line
            assert t < t_end, (f"not within {max_ms / 1000:g} s of pump time; bridge output:\n"
                               + "\n".join(self.out.lines[-40:]))
            t = self.advance(step_ms)

    def start_infusion(self):
        self.pump.configure(interlock=1)
        self.pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
        assert self.pump.start() == "RUNNING"

    def close(self):
        self.stop.set()
        self.thread.join(20)
        self.pump.close()
        self.sim.stop()


def _send(port, text):
    with MLLPClient("127.0.0.1", port) as c:
        c.socket.settimeout(60)
        reply = c.send_message(text)
        while not reply.endswith(b"\x1c\r"):
            reply += c.socket.recv(4096)
    msa = hl7.parse(reply.strip(b"\x0b\x1c\r").decode()).segment("MSA")
    return msa.extract_field(1, 1), msa.extract_field(1, 3) if len(msa) > 3 else ""


@pytest.mark.req("REQ-HL7-06", "REQ-HL7-01", "REQ-HL7-02", "REQ-HL7-03", "REQ-HL7-07")
def test_hypertensive_patient_monitor_hl7_bridge_pump_pauses():
    b = Bedside("hl7_hypertensive")
    try:
        # what a monitor must not get through, each with SBP far over the limit, while idle
        bad = {
            "foreign patient": pcd01(cid="X1", patient="PAT-2"),
            "unknown codes": pcd01(cid="X2", obs=[(TEMP, 39, T0, "R")]),
            "malformed": "MSH|^~\\&|MON|ICU|||bad-time||ORU^R01|X3|P|2.6\rPID|||PAT-1\rOBX|1|NM|150021",
            "not HL7": "hello, pump",
        }
        for what, text in bad.items():
            code, reason = _send(b.bport, text.replace("|132|", "|250|"))
            assert code in ("AE", "AR") and reason, (what, code, reason)
        # a truncated message (its end never comes), then the connection closes
        with socket.create_connection(("127.0.0.1", b.bport), timeout=30) as s:
            s.sendall(b"\x0b" + pcd01(cid="X5").replace("|132|", "|250|").encode()[:120])
        assert not any(l.startswith("relayed X") for l in b.out.lines), b.out.lines[-20:]
        b.start_infusion()
        # the monitor's readings are relayed; the ketamine raises the responder's blood
        # pressure past 180/110 and the pump pauses (within the 40-min infusion)
        b.run_until_line(lambda l: l.startswith("relayed SIM") and "action=none" in l, 300_000)
        line = b.run_until_line(lambda l: "action=paused" in l, 2_400_000)
        assert line.startswith("relayed SIM")
        b.out.wait_for(lambda l: l.startswith("pump ALARM") and "alarm=VITALS " in l + " ")
        st = b.pump.status()
        assert st.state == "ALARM" and st.alarm == "VITALS", st
        assert st.delivered_ml < 34.0
        assert not any(l.startswith("relayed X") for l in b.out.lines)
    finally:
        b.close()


@pytest.mark.req("REQ-HL7-05")
def test_monitor_feed_lost_ends_in_vitals_stale():
    # in lock-step the feed never runs ahead of the bridge (it did at --speed max, whose
    # backlog kept relaying after the feed had stopped, and the infusion could end first):
    # the scenario's dropout and VITALS_STALE (1800-1950 s) come at their pump times
    b = Bedside("hl7_feed_lost", runtime="cpython")   # micropython: the test above
    try:
        b.start_infusion()
        relayed = b.run_until_line(lambda l: l.startswith("relayed SIM"), 300_000)
        # the stale alarm that counts is the one after the feed was flowing (an earlier one,
        # before the first NIBP reading, is not what this test judges)
        j = b.out.lines.index(relayed)
        b.run_until_line(lambda l: l.startswith("pump ALARM") and "alarm=VITALS_STALE" in l,
                         2_400_000, start=j + 1)
        assert b.pump.status().state == "RUNNING"        # medium priority
    finally:
        b.close()


def test_vitals_bridge_cli():
    """`infusekit vitals-bridge` as a user runs it, against `infusekit sim serve`."""
    pump_port, bport = _free_port(), _free_port()
    sim = Proc(["sim", "serve", "--runtime", "micropython", "--link", f"tcp:{pump_port}",
                "--speed", "lockstep"])
    try:
        url = sim.wait_for(lambda l: l.startswith("socket://"))
        for attempt in range(5):
            bridge = Proc(["vitals-bridge", "--port", url, "--listen", f"mllp://127.0.0.1:{bport}",
                           "--patient", "PAT-1", "--max-skew", "0"])
            try:
                bridge.wait_for(lambda l: l == f"listening on mllp://127.0.0.1:{bport}")
                break
            except AssertionError:
                if bridge.stop() != 4 or attempt == 4:    # 4: the pump link; retried
                    raise
        try:
            assert _send(bport, pcd01(cid="C1"))[0] == "AA"
            bridge.wait_for(lambda l: l.startswith("relayed C1: sbp=132 dbp=81 hr=72 spo2=97"))
            assert _send(bport, pcd01(cid="C2", patient="PAT-2"))[0] == "AE"
            bridge.wait_for(lambda l: l.startswith("AE C2: patient PAT-2"))
        finally:
            assert bridge.stop() == 0
    finally:
        sim.stop()
