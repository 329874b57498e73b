"""The scenario library (hil_sim/scenarios/*.toml) runs in CI, every scenario under every runtime
it lists; `infusekit sim run` exits 0/1 on its expectations.

A scenario with ``status = "pending"`` still runs, as a non-strict xfail with its
``pending_reason``: one that passes shows up as XPASS in the ``-ra`` summary (time to mark it
active); `test_pending_scenarios_report` lists which pending scenarios' alarms the firmware
already names (``pending_on``), so they can be checked and flipped.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil_sim.scenario import SCENARIO_DIR, ScenarioError, library, load, parse, run_scenario

ROOT = Path(__file__).resolve().parent.parent
FW = Path(os.environ.get("INFUSEKIT_FIRMWARE") or ROOT / "firmware") / "pumpcore"
CASES = [(s.name, rt) for s in library() for rt in s.runtimes]


def firmware_alarm_names() -> set[str]:
    names = set()
    for p in FW.glob("*.py"):
        names.update(m.decode() for m in re.findall(rb'b"([A-Z][A-Z_]+)"', p.read_bytes()))
    return names


def _marks(name, runtime):
    marks = [pytest.mark.micropython] if runtime == "micropython" else []
    return marks


@pytest.mark.parametrize("name,runtime", [pytest.param(n, r, marks=_marks(n, r), id=f"{n}-{r}")
                                          for n, r in CASES])
def test_scenario(name, runtime, request):
    scn = load(name)
    if scn.status == "pending":
        request.node.add_marker(pytest.mark.xfail(
            reason=f"pending: {scn.meta['pending_reason']}", strict=False))
    res = run_scenario(scn, runtime)
    failed = [f"{c.what}: {c.detail}" for c in res.checks if not c.ok]
    assert res.checks, "a scenario must check something"
    assert res.passed, f"{name} under {runtime}: {failed}"


def test_pending_scenarios_report(capsys):
    named = firmware_alarm_names()
    ready = [s.name for s in library() if s.status == "pending" and s.meta.get("pending_on")
             and set(s.meta["pending_on"]) <= named]
    for s in library():
        if s.status == "pending":
            assert s.meta.get("pending_reason"), s.name
    with capsys.disabled():
        if ready:
            print(f"\npending scenarios whose alarms the firmware now names: {ready}")


def test_every_alarm_has_a_scenario():
    proto = (ROOT / "docs" / "protocol.md").read_text()
    line = next(ln for ln in proto.splitlines() if ln.startswith("Alarms (name, priority)"))
    block = proto[proto.index(line):proto.index("High-priority (3) alarms")]
    alarms = set(re.findall(r"`([A-Z_]+)`", block)) | {"RESTART"}
    assert {"OCCLUSION", "AIR", "VITALS_STALE"} <= alarms
    covered = set()
    for s in library():
        for spec in s.raw.get("expect", {}).get("alarm", []):
            covered.add(spec["name"])
    missing = alarms - covered
    assert not missing, f"alarms without a scenario: {sorted(missing)}"


def test_clinical_cases_are_present():
    names = {s.name for s in library()}
    assert {"ketamine_40min", "hypertensive_interlock", "occlusion_1mlh", "occlusion_25mlh",
            "power_cut", "host_silent"} <= names
    for s in library():
        assert s.meta.get("description"), s.name
        assert set(s.runtimes) <= {"cpython", "micropython"}
        if s.status == "pending":
            assert s.meta.get("pending_reason")


def test_malformed_scenarios_are_refused():
    with pytest.raises(ScenarioError, match="unknown fault"):
        parse('[[events]]\nat_s = 1\nfault = "meteor"\n')
    with pytest.raises(ScenarioError, match="unknown section"):
        parse("[pupm]\nsyringe_ml = 50\n")
    with pytest.raises(ScenarioError, match="pending_reason"):
        parse('[scenario]\nstatus = "pending"\n')
    with pytest.raises(FileNotFoundError):
        load("no_such_scenario")


def test_a_failing_expectation_fails_the_run(tmp_path):
    text = (SCENARIO_DIR / "occlusion_upstream.toml").read_text()
    bad = text.replace("latest_s = 360", "latest_s = 61")
    res = run_scenario(parse(bad, tmp_path / "x.toml"), "cpython")
    assert not res.passed
    assert any(not c.ok and "OCCLUSION" in c.what for c in res.checks)


def test_sim_run_cli_exit_status_json_and_report(tmp_path):
    cmd = [sys.executable, "-m", "host", "sim", "run"]
    p = subprocess.run(cmd + ["occlusion_upstream", "--runtime", "cpython", "--json",
                              "--report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["passed"] and out["alarms"][0]["name"] == "OCCLUSION"
    assert out["metrics"]["occlusion"][0]["time_to_alarm_s"] > 0
    html = Path(out["report"]["html"]).read_text()
    assert "occlusion_upstream" in html and "<img" in html
    assert Path(out["report"]["run"]).stat().st_size > 5000
    bad = tmp_path / "bad.toml"
    bad.write_text((SCENARIO_DIR / "occlusion_upstream.toml").read_text()
                   .replace("latest_s = 360", "latest_s = 61"))
    p = subprocess.run(cmd + [str(bad), "--runtime", "cpython"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "FAIL" in p.stdout


# ------------------------------------------------------------------------------ strict schema

BASE = (SCENARIO_DIR / "occlusion_upstream.toml").read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


@pytest.mark.req("REQ-HOST-06")
@pytest.mark.parametrize("old,new,key,suggest,needle", [
    ("latest_s = 360", "lastest_s = 360", "expect.alarm[0].lastest_s", "latest_s", "lastest_s"),
    ("[expect]\n", "[expect]\nmax_bolus = 0.1\n", "expect.max_bolus", "max_bolus_ml",
     "max_bolus ="),
    ("primed = true", "primed = true\nsyringe_mll = 50", "pump.syringe_mll", "syringe_ml",
     "syringe_mll"),
    ('fault = "occlusion_up"', 'faultt = "occlusion_up"', "events[0]", "fault", "faultt"),
    ('fault = "occlusion_up"', 'fault = "occlusion_upp"', "events[0].fault", "occlusion_up",
     "occlusion_upp"),
    ("duration_s = 400", "duration_s = 400\nslice = 100", "run.slice", "slice_ms", "slice ="),
    ("[pump]\n", "[pump.params]\nnoise_mhg = 1\n[pump]\n", "pump.params",
     "pressure_noise_mmhg", "noise_mhg"),
])
def test_a_misspelt_key_names_file_line_key_and_suggestion(tmp_path, old, new, key, suggest,
                                                           needle):
    """A misspelt key used to pass silently (the check it named never ran)."""
    text = BASE.replace(old, new)
    assert text != BASE
    f = tmp_path / "typo.toml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as e:
        load(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:{_line_of(text, needle)}: {key}"), msg
    assert f"did you mean '{suggest}'?" in msg, msg


@pytest.mark.req("REQ-HOST-06")
@pytest.mark.parametrize("old,new,words", [
    ("rate_ml_h = 10.0", 'rate_ml_h = "fast"', "program.rate_ml_h"),
    ("rate_ml_h = 10.0", "rate_ml_h = -1", "greater than 0"),
    ("rate_ml_h = 10.0", "", "a program needs rate_ml_h"),
    ("at_s = 60", "at_s = -1", "events[0].at_s"),
    ('runtimes = ["cpython", "micropython"]', 'runtimes = ["pypy"]', "scenario.runtimes[0]"),
    ("prio = 3", "prio = 7", "expect.alarm[0].prio"),
])
def test_wrong_types_and_values_are_refused(tmp_path, old, new, words):
    f = tmp_path / "bad.toml"
    f.write_text(BASE.replace(old, new))
    with pytest.raises(ScenarioError, match=re.escape(words)):
        load(f)


def test_every_library_scenario_passes_the_schema():
    assert len(library()) >= 20          # load() validates each


@pytest.mark.req("REQ-HOST-04", "REQ-HOST-06")
def test_sim_run_broken_scenario_is_exit_2_not_a_traceback(tmp_path):
    """A broken scenario file used to end in a traceback (exit 1, like a FAIL): CI could
    not tell a bad file from a regression."""
    f = tmp_path / "broken.toml"
    f.write_text(BASE.replace("rate_ml_h = 10.0", ""))          # the runner's KeyError
    p = subprocess.run([sys.executable, "-m", "host", "--json", "sim", "run", str(f),
                        "--runtime", "cpython"], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    obj = json.loads(p.stdout)
    assert obj["ok"] is False and obj["exit"] == 2 and str(f) in obj["message"]
