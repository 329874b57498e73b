"""host.Pump and the CLI against the simulated pump — firmware in-process (CPython) and
under the real `micropython` interpreter — over a real pseudo-terminal (and TCP for the
link-drop case): commands, events, retries, reconnect, a pump that reboots, a lossy link."""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

from hil_sim.cosim import Simulation
from hil_sim.link import PtyEndpoint, TcpEndpoint
from hil_sim.serve import serve
from host import Pump, cli
from host.client import Step
from host.codec import Event, Telemetry
from host.errors import IllegalCommand, LinkError, PumpRefused, Timeout

pytestmark = [pytest.mark.e2e]
RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.micropython)]


class Recorder:
    """Wraps an endpoint and keeps every byte the host sent to the pump."""

    def __init__(self, ep):
        self.ep, self.sent = ep, bytearray()
        self.url = ep.url
        self.drop = False               # TCP: drop the client (from the serving thread)

    def read(self):
        if self.drop:
            self.drop = False
            self.ep._drop_client()
        data = self.ep.read()
        self.sent += data
        return data

    def __getattr__(self, name):
        return getattr(self.ep, name)

    def lines(self):
        return [ln for ln in bytes(self.sent).split(b"\n") if ln]


class Served:
    """A simulated pump served on an endpoint from a thread; ``reboot()`` swaps in a fresh
    simulation (a power cycle: the firmware starts over) on the same port."""

    def __init__(self, runtime="cpython", speed=20.0, ep=None, seed=1):
        self.runtime, self.speed, self.seed = runtime, speed, seed
        self.ep = Recorder(ep or PtyEndpoint())
        self._start(Simulation(runtime=runtime, seed=seed))

    def _start(self, sim):
        self.sim = sim
        self.stop = threading.Event()
        self.thread = threading.Thread(target=serve, args=(sim, self.ep, self.speed, self.stop),
                                       daemon=True)
        self.thread.start()

    def reboot(self):
        self.stop.set()
        self.thread.join(10)
        self.sim.close()
        self._start(Simulation(runtime=self.runtime, seed=self.seed + 1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.ep.close()
        self.sim.close()


def therapy_lines(rec, word):
    return [ln for ln in rec.lines() if ln.split(b" ")[1:2] == [word.encode()]
            or ln.split(b" ")[1:2] == [word.encode() + b"*"]
            or ln.split(b" ")[1].split(b"*")[0] == word.encode()]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_full_session_events_and_telemetry(runtime):
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=2) as pump:
        assert pump.info.proto == 1 and pump.info.boot and pump.info.dev and pump.info.fw == s.sim.fw_version
        assert pump.info.libh == pump.library.sha16          # the pump enforces our library
        res = pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
        assert (res.vtbi_nl, res.rate_ul_h, res.dose_ug, res.soft) == (35_000_000, 52500, 35000, False)
        assert pump.start() == "RUNNING"
        assert pump.telemetry(100) == 100
        seen_state, tl = [], []
        for ev in pump.events(timeout=3):
            if isinstance(ev, Event) and ev.name == "STATE":
                seen_state.append(ev.fields["state"])
            elif isinstance(ev, Telemetry):
                tl.append(ev)
            if len(tl) >= 3:
                break
        assert "RUNNING" in seen_state and len(tl) >= 3
        assert tl[-1].fields["state"] == "RUNNING" and tl[-1].get_int("el_ms") > 0
        assert pump.pause() == "PAUSED" and pump.state == "PAUSED"
        with pytest.raises(IllegalCommand):
            pump.pause()                                     # refused by the mirror
        assert pump.resume() == "RUNNING"
        st = pump.status()
        assert st.state == "RUNNING" and st.vtbi_nl == 35_000_000 and 0 < st.del_nl < st.vtbi_nl
        assert pump.stop() == "IDLE"
        pump.telemetry(0)
    starts = [ln for ln in s.ep.lines() if re.search(rb" START[ *]", ln)]
    assert len(starts) == 1                                  # never a command not asked for


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pump_refusals_reach_the_caller(runtime):
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=2, check_state=False) as pump:
        with pytest.raises(PumpRefused) as e:
            pump.start()
        assert e.value.code == "STATE" and "IDLE" in e.value.reason
        with pytest.raises(PumpRefused) as e:
            pump.program(drug="ketamine", dose="0.9 mg/kg", over="40 min", weight_kg=70)
        assert e.value.code == "SOFT"
        res = pump.program(drug="ketamine", dose="0.9 mg/kg", over="40 min", weight_kg=70,
                           confirm=True)
        assert res.soft and res.confirm


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_lost_reply_is_retried_and_executed_once_by_the_firmware(runtime):
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=0.5) as pump:
        pump.program(rate=10, vtbi=5)
        real = pump._on_line
        dropped = []

        def lossy(line):                 # the START reply is lost on the way back once
            if b" OK state=RUNNING" in line and not dropped:
                dropped.append(line)
                return
            real(line)
        pump._on_line = lossy
        assert pump.start() == "RUNNING"
        assert dropped and pump.stats.retransmits == 1
        pump._on_line = real
        states = [ev.fields["state"] for ev in pump.events(timeout=0.5)
                  if isinstance(ev, Event) and ev.name == "STATE"]
        assert states.count("RUNNING") == 1                  # executed once
        starts = [ln for ln in s.ep.lines() if re.search(rb" START[ *]", ln)]
        assert len(starts) == 2 and starts[0] == starts[1]   # same id, same bytes


def test_reconnect_after_link_drop_over_tcp():
    with Served("cpython", ep=TcpEndpoint()) as s:
        with Pump.open(s.ep.url, timeout=1) as pump:
            pump.program(rate=10, vtbi=5)
            pump.start()
            n = len(s.ep.lines())
            s.ep.drop = True                                 # the link drops
            deadline = time.monotonic() + 5
            while pump.link_ok:
                assert time.monotonic() < deadline, "link drop not noticed"
                time.sleep(0.05)
            with pytest.raises(LinkError):
                pump.status()
            st = pump.reconnect()
            assert st.state == "RUNNING" and pump.state == "RUNNING"
            sent = [ln.split(b" ")[1].split(b"*")[0] for ln in s.ep.lines()[n:]]
            assert sent == [b"HELLO", b"STATUS"]                 # nothing re-sent
            assert pump.pause() == "PAUSED"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pump_reboot_mid_session(runtime):
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=1) as pump:
        pump.program(rate=10, vtbi=5)
        pump.start()
        s.reboot()
        with pytest.raises(PumpRefused) as e:                # the pump lost its program
            pump.pause()
        assert e.value.code == "STATE" and pump.state is None
        assert pump.status().state == "IDLE"
        assert pump.hello().dev
    assert len([ln for ln in s.ep.lines() if re.search(rb" START[ *]", ln)]) == 1
    assert len([ln for ln in s.ep.lines() if b" PROG " in ln]) == 1


def test_pump_that_never_answers_times_out_within_bound():
    ep = PtyEndpoint()                                       # nobody serves it
    try:
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            Pump.open(ep.url, timeout=0.2, retries=1)
        assert time.monotonic() - t0 < 0.4 + 5.0           # + scheduling slack on a loaded machine
    finally:
        ep.close()


def test_lossy_link_gives_answers_or_timely_errors():
    # per-try timeout generous enough for a loaded 2-core CI machine; the bound below still
    # proves every call ends within its retries × timeout
    with Served("cpython", speed=50) as s, Pump.open(s.ep.url, timeout=0.8, retries=3) as pump:
        pump.program(rate=10, vtbi=5)
        s.sim.inject(link_drop=0.002, link_corrupt=0.001)   # per byte
        ok = errors = 0
        for _ in range(25):
            t0 = time.monotonic()
            try:
                assert pump.status().state == "PROGRAMMED"
                ok += 1
            except LinkError:                                # Timeout or persistent corruption
                errors += 1
            assert time.monotonic() - t0 < 0.8 * 4 + 5.0   # + scheduling slack
        s.sim.inject(link_drop=0.0, link_corrupt=0.0)
        assert ok >= 15
        assert pump.status().state == "PROGRAMMED"
    assert not [ln for ln in s.ep.lines() if b" START" in ln]   # nothing it was not asked for


# ------------------------------------------------------------------------------ CLI end to end

def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cli_commands_end_to_end_json(runtime, capsys):
    with Served(runtime, speed=50) as s:
        p = ["--port", s.ep.url, "--json", "--timeout", "2"]
        code, out, err = run(capsys, *p, "info")
        assert code == 0 and out["proto"] == 1 and out["lib_matches_local"], err
        code, out, err = run(capsys, *p, "program", "--rate", "100 mL/h", "--vtbi", "2 mL")
        assert code == 0 and out["rate_ul_h"] == 100000 and out["vtbi_nl"] == 2_000_000, err
        code, out, _ = run(capsys, *p, "start")
        assert code == 0 and out == {"ok": True, "state": "RUNNING"}
        code, out, _ = run(capsys, *p, "pause")
        assert code == 0 and out["state"] == "PAUSED"
        code, out, _ = run(capsys, *p, "start")             # illegal in PAUSED: exit 3
        assert code == 3 and out["ok"] is False and out["code"] == "STATE"
        code, out, _ = run(capsys, *p, "resume")
        assert code == 0 and out["state"] == "RUNNING", out
        code = cli.main([*p, "monitor", "--period", "100"])   # a JSON-lines stream
        lines, err = capsys.readouterr()
        out = json.loads(lines.splitlines()[-1])
        assert code == 0 and out["type"] == "end" and out["state"] == "COMPLETE", err   # 72 s
        assert out["del_nl"] == pytest.approx(2_000_000, rel=1e-3) and "VTBI_DONE" in out["alarms"]
        code, out, _ = run(capsys, *p, "status")
        assert code == 0 and out["state"] == "COMPLETE" and out["progress"] == pytest.approx(1.0, abs=1e-3)
        code, out, _ = run(capsys, *p, "stop")
        assert code == 0 and out["state"] == "IDLE"
        code, out, _ = run(capsys, *p, "pause")             # refused by the host mirror
        assert code == 3 and out["code"] == "STATE"
        code, out, _ = run(capsys, *p, "status")
        assert out["state"] == "IDLE" and out["vtbi_nl"] == 0


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_added_commands_against_the_firmware(runtime):
    with Served(runtime, speed=50) as s, Pump.open(s.ep.url, timeout=2) as pump:
        pump.heartbeat()
        now = pump.configure(hb_ms=5000, hb_action="pause")
        assert now["hb_ms"] == "5000" and now["hb_action"] == "pause"
        pump.configure(hb_ms=0)
        assert pump.vitals(sbp=120, dbp=80, hr=70, spo2=98) == "none"
        res = pump.program_steps([Step("10 mL/h", volume="0.2 mL"), Step("20 mL/h", volume="0.3 mL")])
        assert res.vtbi_nl == 500_000 and pump.state == "PROGRAMMED"
        assert pump.standby() == "STANDBY"
        assert pump.start() == "RUNNING"
        t = pump.titrate("15 mL/h")
        assert t.rate_ul_h == 15000
        b = pump.bolus("0.05 mL", "100 mL/h")
        assert b.vol_nl == 50_000 and b.rate_ul_h == 100_000
        assert pump.silence() > 0
        assert pump.stop() == "IDLE"
        records = pump.read_log()
        seqs = [r.seq for r in records]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))   # consecutive, none lost
        assert len(records) > 32                 # more than one LOG batch was needed
        evs = [r.fields["ev"] for r in records]
        assert evs[:3] == ["TH", "BOOT", "TH"] or "BOOT" in evs
        states = [r.fields.get("state") for r in records if r.fields["ev"] == "EV"]
        for st in ("PROGRAMMED", "STANDBY", "RUNNING", "IDLE"):
            assert st in states, (st, states)   # every state change is on the log
        cmds = " ".join(r.fields.get("txt", "") for r in records if r.fields["ev"] == "CMD")
        for word in ("STEP", "PROG", "START", "TITRATE", "BOLUS", "STOP"):
            assert word in cmds, (word, cmds)   # every therapy command is on the log


@pytest.mark.req("REQ-COM-07")
def test_drug_limits_read_from_the_firmware_match_the_library():
    """`Pump.drug_limits` against the real firmware: every limit the pump enforces, the bolus
    lockout and hourly cap included, equal to the library file in wire units."""
    from pathlib import Path
    lib = json.loads((Path(__file__).resolve().parent.parent / "firmware" / "druglib.json")
                     .read_text())
    with Served("cpython", speed=50) as s, Pump.open(s.ep.url, timeout=2) as pump:
        for d in lib["drugs"]:
            got = pump.drug_limits(d["name"])
            assert got["rate_max_ul_h"] == round(d["rate_ml_h_max"] * 1000)
            assert got["bolus_max_nl"] == round(d["bolus_max_ul"] * 1000)
            assert got["bolus_lockout_ms"] == round(d.get("bolus_lockout_min", 0) * 60000)
            assert got["bolus_h_ug"] == round(d.get("bolus_max_h_ug", 0))
            assert got["dose_ug_kg"]["hard_max"] == d["dose_ug_kg"]["hard_max"]
            if "vitals" in d:
                assert got["vitals"]["sbp_max"] == d["vitals"]["sbp_max"]
