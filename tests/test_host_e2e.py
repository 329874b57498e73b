"""host.Pump and the CLI against the simulated pump — firmware in-process (CPython) and
under the real `micropython` interpreter — over a real pseudo-terminal (and TCP for the
link-drop case): commands, events, retries, reconnect, a pump that reboots, a lossy link.
The simulation is served in lock-step (tests/served.py): pump time moves only to answer the
host and when a test advances it, so nothing here depends on how fast the machine is."""
from __future__ import annotations

import json
import re
import threading

import pytest

from hil_sim.link import PtyEndpoint, TcpEndpoint
from host import Pump, cli
from host.client import Step
from host.codec import Event, Telemetry
from host.errors import IllegalCommand, LinkError, PumpRefused, Timeout
from served import GUARD_S, Served, wall_until

pytestmark = [pytest.mark.e2e]
RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.micropython)]


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
        s.advance(1000)                                      # ~10 telemetry frames
        seen_state, tl = [], []
        for ev in pump.events(timeout=GUARD_S):             # a hang guard: they are sent
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
    # the client's own per-attempt timer (wall clock, by design) decides the retransmission:
    # 1 s, while a lock-step reply takes a few ms of CPU
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=1.0) as pump:
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
        pump.status()                    # every frame the pump sent before it is in
        states = [ev.fields["state"] for ev in pump.events(timeout=0)
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
            wall_until(lambda: not pump.link_ok, "the client notices the link drop")
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


def test_pump_that_never_answers_times_out_after_its_attempts():
    """A pump that never answers: the open gives up with Timeout after its 1 + retries
    attempts (counted on the wire, not timed: the bound in seconds is the client's own
    per-attempt timer, tests/test_host_client.py)."""
    ep = PtyEndpoint()                                       # nobody serves it
    try:
        with pytest.raises(Timeout):
            Pump.open(ep.url, timeout=0.2, retries=1)
        sent = b""
        while True:
            chunk = ep.read()
            if not chunk:
                break
            sent += chunk
        hellos = [ln for ln in sent.split(b"\n") if b" HELLO" in ln]
        assert len(hellos) == 2 and hellos[0] == hellos[1]  # the request, then one retry
    finally:
        ep.close()


def test_lossy_link_gives_answers_or_timely_errors():
    # every call ends within its 1 + retries attempts (counted, not timed); the per-attempt
    # timer is the client's own (wall clock, by design), generous beside a lock-step reply
    with Served("cpython") as s, Pump.open(s.ep.url, timeout=0.8, retries=3) as pump:
        pump.program(rate=10, vtbi=5)
        s.sim.post("link_drop", 0.002)                       # per byte
        s.sim.post("link_corrupt", 0.001)
        ok = errors = 0
        for _ in range(25):
            n0 = len(s.ep.lines())
            try:
                assert pump.status().state == "PROGRAMMED"
                ok += 1
            except LinkError:                                # Timeout or persistent corruption
                errors += 1
            assert len(s.ep.lines()) - n0 <= 1 + 3         # at most 1 + retries attempts
        s.sim.post("link_drop", 0.0)
        s.sim.post("link_corrupt", 0.0)
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
    with Served(runtime) as s:
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
        # the monitor follows the stream to the end of the program (72 s of pump time),
        # which runs, once the monitor has asked for telemetry, as fast as the monitor reads
        n_tlm = len(therapy_lines(s.ep, "TLM"))
        ended = threading.Event()

        def monitor():
            try:
                return cli.main([*p, "monitor", "--period", "100"])   # a JSON-lines stream
            finally:
                ended.set()
        box = []
        th = threading.Thread(target=lambda: box.append(monitor()), daemon=True)
        th.start()
        wall_until(lambda: ended.is_set() or len(therapy_lines(s.ep, "TLM")) > n_tlm,
                   "the monitor asks for telemetry")
        with s.running(step_ms=500, max_ms=300_000):
            th.join(GUARD_S)
        assert box, "the monitor did not end"
        code = box[0]
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
    with Served(runtime) as s, Pump.open(s.ep.url, timeout=2) as pump:
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
    with Served("cpython") as s, Pump.open(s.ep.url, timeout=2) as pump:
        for d in lib["drugs"]:
            got = pump.drug_limits(d["name"])
            assert got["rate_max_ul_h"] == round(d["rate_ml_h_max"] * 1000)
            assert got["bolus_max_nl"] == round(d["bolus_max_ul"] * 1000)
            assert got["bolus_lockout_ms"] == round(d.get("bolus_lockout_min", 0) * 60000)
            assert got["bolus_h_ug"] == round(d.get("bolus_max_h_ug", 0))
            assert got["dose_ug_kg"]["hard_max"] == d["dose_ug_kg"]["hard_max"]
            if "vitals" in d:
                assert got["vitals"]["sbp_max"] == d["vitals"]["sbp_max"]
