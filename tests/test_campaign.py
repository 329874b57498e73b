"""Randomised fault campaigns (hil_sim.campaign): the spec's strictness, seeds that make every
run replayable alone, the Clopper–Pearson bound, the oracle caught failing on purpose, a
broken firmware caught by a small campaign with replayable failing runs, and identical
per-run results on the local pool, Dask and Ray.

Every run is in virtual time; nothing here depends on wall-clock speed."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil_sim.campaign import run_campaign
from hil_sim.campaign import draw as D
from hil_sim.campaign import oracle, runner, stats
from hil_sim.campaign.spec import CAMPAIGN_DIR, SpecError, load, parse
from hil_sim.scenario import parse as parse_scenario
from hil_sim.scenario import run_scenario

ROOT = Path(__file__).resolve().parent.parent
INFUSEKIT = str(Path(sys.executable).parent / "infusekit")

MINI = """
[campaign]
name = "mini"
seed = 3
[pump]
syringe_ml = { dist = "choice", values = [20, 50] }
[[program]]
form = "rate"
rate_ml_h = { dist = "uniform", low = 30, high = 60 }
vtbi_ml = 0.6
[run]
settle_s = 10
max_s = 300
[[faults]]
name = "occlusion"
onset_frac = { dist = "uniform", low = 0.1, high = 0.3 }
"""


@pytest.mark.req("REQ-CAMP-01")
@pytest.mark.parametrize("bad, what", [
    ("[campaign]\nname='x'\ncolour='red'\n[[program]]\nform='rate'\n", "colour"),
    ("[campaign]\nname='x'\n[[program]]\nform='rate'\n[[faults]]\nname='meteor'\n", "meteor"),
    ("[campaign]\nname='x'\n[pump.params]\nwarp=1\n[[program]]\nform='rate'\n", "warp"),
    ("[campaign]\nname='x'\n[pump.bedside]\nwobble=1\n[[program]]\nform='rate'\n", "bedside parameter(s) ['wobble']"),
    ("[campaign]\nname='x'\n[patient.params]\nmood=1\n[[program]]\nform='rate'\n", "patient parameter(s) ['mood']"),
    ("[campaign]\nname='x'\n[[program]]\nform='rate'\nrate_ml_h={dist='uniform',low=5,high=1}\n", "high < low"),
    ("[campaign]\nname='x'\n[[program]]\nform='rate'\nrate_ml_h={dist='gamma',k=2}\n", "dist"),
    ("[campaign]\nname='x'\n[pump]\nsyringe_ml=30\n[[program]]\nform='rate'\n", "syringe_ml"),
    ("[campaign]\nname='x'\n", "program"),
])
def test_spec_is_strict(bad, what):
    with pytest.raises(SpecError, match=re.escape(what)):
        parse(bad)


@pytest.mark.req("REQ-CAMP-01")
def test_library_specs_parse_and_cover_every_fault():
    specs = {p.stem: load(p) for p in CAMPAIGN_DIR.glob("*.toml")}
    assert {"default", "smoke"} <= set(specs)
    from hil_sim.cosim import FAULTS
    named = {f.name for f in specs["default"].faults} | {d.name for d in specs["default"].disturbances}
    # every fault the simulator injects is drawn by the default campaign (or is a setting)
    settings = {"fill_ml", "battery_mv", "battery_soc", "link_drop"}
    assert set(FAULTS) - named <= settings, set(FAULTS) - named - settings


@pytest.mark.req("REQ-CAMP-02")
def test_run_seed_depends_only_on_campaign_seed_and_index():
    sp = load("default")
    a = [D.draw(sp, 11, i) for i in range(30)]
    b = [D.draw(sp, 11, i) for i in reversed(range(30))][::-1]
    assert a == b                                   # order does not matter
    assert D.draw(sp, 11, 7) == a[7]                # one run alone
    assert len({x["campaign"]["seed"] for x in a}) == 30
    assert D.draw(sp, 12, 7) != a[7]
    # the draw is spread over the spec's choices: every program form and many faults appear
    assert {x["campaign"]["form"] for x in a} == {"rate", "dose"}
    assert len({x["campaign"]["fault"] for x in a}) >= 8
    for x in a:                                     # each is an ordinary scenario
        parse_scenario(runner.scenario_toml(sp, 11, x["campaign"]["index"]))


@pytest.mark.req("REQ-CAMP-02")
def test_dose_programs_fall_in_their_drawn_region_of_the_library():
    sp = parse(MINI.replace('form = "rate"', 'form = "dose"\nregion = { dist = "choice", '
                                              'values = ["inside", "soft", "hard"] }'))
    lib = {d["name"]: d for d in json.loads((ROOT / "firmware" / "druglib.json").read_text())["drugs"]}
    seen = set()
    for i in range(60):
        x = D.draw(sp, 1, i)
        prog, facts = x["program"], x["campaign"]
        d = lib[prog["drug"]]
        ug, over = round(prog["dose_mg_kg"] * 1000), prog["over_min"]
        dl, ol = d["dose_ug_kg"], d["over_min"]
        hard = not (dl["hard_min"] <= ug <= dl["hard_max"] and ol["hard_min"] <= over <= ol["hard_max"])
        soft = not (dl["soft_min"] <= ug <= dl["soft_max"] and ol["soft_min"] <= over <= ol["soft_max"])
        seen.add(facts["region"])
        if facts["region"] == "hard":
            assert hard or facts["limit"] == "rate"
        elif facts["region"] == "soft":
            assert soft and not hard and prog.get("confirm")
        else:
            assert not soft
    assert seen == {"inside", "soft", "hard"}


@pytest.mark.req("REQ-CAMP-04")
@pytest.mark.parametrize("k, n", [(0, 1), (0, 3), (0, 1000), (1, 10), (3, 100), (50, 1000),
                                  (999, 1000), (7, 2_000_000)])
def test_clopper_pearson_matches_scipy(k, n):
    beta = pytest.importorskip("scipy.stats").beta
    assert stats.upper(k, n) == pytest.approx(beta.ppf(0.95, k + 1, n - k), rel=1e-7)


@pytest.mark.req("REQ-CAMP-04")
def test_rule_of_three():
    assert stats.upper(0, 3000) == pytest.approx(3 / 3000, rel=0.01)
    assert stats.upper(10, 10) == 1.0


# ---------------------------------------------------------------- the oracle, attacked
def _one(spec_text=MINI, index=0):
    sp = parse(spec_text)
    raw = D.draw(sp, sp.campaign.seed, index)
    import tomli_w
    res = run_scenario(parse_scenario(tomli_w.dumps(raw)))
    return raw, res


@pytest.mark.req("REQ-CAMP-05")
def test_oracle_passes_a_good_occlusion_run_and_fails_it_when_the_alarm_is_hidden():
    raw, res = _one()
    v = oracle.judge(raw, res)
    assert not v.failed, v.findings
    assert v.figures["alarm"] == "OCCLUSION" and v.figures["time_to_alarm_s"] > 0
    # the alarm frame removed and the board's alarm output silenced: the pump stopped early
    # (trend detection) without a word, so the shortfall is silent
    res.alarms = [a for a in res.alarms if a["name"] != "OCCLUSION"]
    res.sim.alarms = []
    assert "silent_stop" in oracle.judge(raw, res).hazards


@pytest.mark.req("REQ-CAMP-05")
def test_oracle_fails_over_infusion_and_motion_after_a_high_alarm():
    raw, res = _one()
    rec = res.sim.record
    k = len(rec.t_s) // 2
    vol = raw["campaign"]["programmed_ml"]
    for i in range(k, len(rec.t_s)):            # more than the VTBI from the middle on
        rec.delivered_ml[i] += vol + 0.05
        rec.cmd_ml_h[i] = 50.0                  # and the rotor still driving forward
    hz = oracle.judge(raw, res).hazards
    assert "over_infusion" in hz and "not_stopped" in hz


@pytest.mark.req("REQ-CAMP-05")
def test_upstream_occlusion_charges_the_pump_with_the_syringe_store_only():
    """Default campaign (seed 2026) run 276: a tip occlusion on a 10 mL syringe at 6.1 mL/h.
    The line is cut off the syringe, so the volume the pump pushed is the gravimetric volume
    plus the *syringe's* store; charging the line's compliance at the syringe pressure as
    well made the oracle report an over-infusion the plant never saw (its gravimetric volume
    stays flat from the onset). Pushing more than that still fails it."""
    spec = load(CAMPAIGN_DIR / "default.toml")
    raw = D.draw(spec, 2026, 276)
    assert raw["campaign"]["fault"] == "occlusion_up"
    res = run_scenario(parse_scenario(runner.scenario_toml(spec, 2026, 276)))
    v = oracle.judge(raw, res)
    assert "over_infusion" not in v.hazards, v.findings
    rec = res.sim.record
    up = [i for i, t in enumerate(rec.t_s) if t > raw["events"][0]["at_s"]]
    extra = 0.03                                  # 30 µL more reaching the patient meanwhile
    for i in up:
        rec.delivered_ml[i] += extra
    assert "over_infusion" in oracle.judge(raw, res).hazards


@pytest.mark.req("REQ-CAMP-05")
def test_oracle_counts_an_alarm_without_cause_as_false_and_a_refused_hard_program_as_right():
    sp_text = MINI.replace('name = "occlusion"', 'name = "none"')
    raw, res = _one(sp_text)
    v = oracle.judge(raw, res)
    assert not v.failed and not v.false_alarms, v.findings
    res.alarms.append({"t_s": 30.0, "name": "DOOR", "prio": 3})
    v = oracle.judge(raw, res)
    assert v.false_alarms and "DOOR" in v.false_alarms[0]
    # a hard-limit program: the real pump refuses it, the oracle agrees; accepted, it is wrong
    raw["campaign"]["region"] = "hard"
    raw["campaign"]["limit"] = "dose"
    assert "wrong_program" in oracle.judge(raw, res).hazards


# ---------------------------------------------------------------- broken firmware
@pytest.fixture(scope="module")
def broken_firmware(tmp_path_factory):
    """A copy of the firmware with occlusion detection switched off (test only)."""
    d = tmp_path_factory.mktemp("fw_broken") / "firmware"
    shutil.copytree(ROOT / "firmware", d, ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
    src = (d / "pumpcore" / "occlusion.py").read_text()
    head = '        """One control tick of pressure p (mmHg). Returns 0, _TREND or _THRESHOLD."""\n'
    assert head in src
    (d / "pumpcore" / "occlusion.py").write_text(src.replace(head, head + "        return 0  # BROKEN\n"))
    return d


@pytest.mark.req("REQ-CAMP-06")
def test_broken_firmware_is_caught_and_its_failing_runs_replay(broken_firmware, tmp_path):
    good = run_campaign("smoke", runs=8, workers=1)
    assert good["failed"] == 0, [r["findings"] for r in good["runs"] if r["failed"]]
    out = tmp_path / "c"
    bad = run_campaign("smoke", runs=8, workers=1, firmware_dir=str(broken_firmware), out=out)
    occl = [r for r in bad["runs"] if r["fault"] == "occlusion"]
    assert occl and all("alarm_missed" in r["hazards"] for r in occl)
    assert bad["hazards"]["alarm_missed"]["count"] == len(occl)
    files = sorted((out / "failing").glob("*.toml"))
    assert len(files) == bad["failed"]
    env = dict(os.environ, INFUSEKIT_FIRMWARE=str(broken_firmware))
    for f in files[:1]:
        # the stand-alone file, replayed by the CLI on the broken firmware: the same failure
        p = subprocess.run([INFUSEKIT, "sim", "run", str(f), "--json"], capture_output=True,
                           text=True, env=env, timeout=240)
        assert p.returncode == 1, p.stderr
        checks = json.loads(p.stdout)["checks"]
        idx = int(f.stem.rsplit("-", 1)[1])
        want = next(r for r in bad["runs"] if r["index"] == idx)
        got = [c["detail"] for c in checks if not c["ok"] and c["what"].startswith("campaign oracle")]
        assert got == [d for h, d in want["findings"] if h != "false_alarm"]
        # ... and it passes on the real firmware: the break, not the scenario, fails it
        env_ok = {k: v for k, v in os.environ.items() if k != "INFUSEKIT_FIRMWARE"}
        p = subprocess.run([INFUSEKIT, "sim", "run", str(f)], capture_output=True, text=True,
                           env=env_ok, timeout=240)
        assert p.returncode == 0, p.stdout


# ---------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def reference():
    return run_campaign("smoke", runs=6, workers=1)


def _digests(res):
    return [(r["index"], r["digest"]) for r in res["runs"]]


@pytest.mark.req("REQ-CAMP-07")
def test_local_pool_two_workers_matches_one(reference):
    two = run_campaign("smoke", runs=6, workers=2, engine="local", chunk=1)
    assert _digests(two) == _digests(reference)


@pytest.mark.req("REQ-CAMP-07")
@pytest.mark.timeout(900)          # a LocalCluster starts slowly on a loaded machine
def test_dask_matches_local(reference):
    pytest.importorskip("dask.distributed")
    res = run_campaign("smoke", runs=6, workers=2, engine="dask", chunk=2)
    assert _digests(res) == _digests(reference)


@pytest.mark.req("REQ-CAMP-07")
@pytest.mark.timeout(900)          # Ray's start-up (retried when it times out) at load 20: ~4 min
def test_ray_matches_local(reference):
    pytest.importorskip("ray")
    res = run_campaign("smoke", runs=6, workers=2, engine="ray", chunk=2)
    assert _digests(res) == _digests(reference)
    assert [r["hazards"] for r in res["runs"]] == [r["hazards"] for r in reference["runs"]]


@pytest.mark.req("REQ-CAMP-03")
def test_cli_campaign_json_and_outputs(tmp_path):
    out = tmp_path / "cli"
    p = subprocess.run([INFUSEKIT, "sim", "campaign", "smoke", "--runs", "3", "--workers", "1",
                        "--seed", "5", "--out", str(out), "--json"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert [r["index"] for r in d["runs"]] == [0, 1, 2]
    assert all(r["seed"] == D.run_seed(5, r["index"]) for r in d["runs"])
    assert set(d["hazards"]) == set(oracle.HAZARDS)
    assert (out / "result.json").exists() and "<img" in (out / "report.html").read_text()
    bad = subprocess.run([INFUSEKIT, "sim", "campaign", "no_such_spec"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no campaign spec" in bad.stderr

