"""The CLI's contract (issue 14): exit codes, --json for every error, exact options, options
only where they apply, port URLs, idempotent stop, closed pipes, units and limits in the
user's words. Each test is a defect the argparse CLI had."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from host import cli

pytestmark = pytest.mark.req("REQ-HOST-04")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [
    ["nosuchcommand"],
    ["status", "--nosuchoption"],
    ["program", "--rate"],                       # option without its value
    ["vitals", "--sbp", "120"],                  # required options missing
    ["monitor", "--period", "fast"],             # not an integer
    ["sim", "serve", "--speed", "0"],
])
def test_usage_errors_honour_json(argv, capsys):
    code, out, err = run(capsys, "--json", *argv)
    assert code == 2
    obj = json.loads(out)                        # exactly one JSON object on stdout
    assert obj["ok"] is False and obj["error"] == "usage" and obj["exit"] == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("infusekit: ")


def test_json_after_the_subcommand_for_usage_errors(capsys):
    code, out, _ = run(capsys, "status", "--bogus", "--json")
    assert code == 2 and json.loads(out)["error"] == "usage"


def test_no_prefix_abbreviations(fake, capsys):
    code, out, err = run(capsys, "--port", fake.path, "program", "--rat", "10", "--vtbi", "5")
    assert code == 2 and "--rat" in err and "--rate" in err      # did you mean
    assert fake.executed == []                                     # nothing was sent
    code, _, err = run(capsys, "--port", fake.path, "stat")         # commands neither
    assert code == 2 and "stat" in err


def _help(capsys, *argv):
    assert cli.main([*argv, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", [["ports"], ["drugs", "list"], ["drugs", "show"],
                                  ["firmware", "build"], ["sim", "list"], ["demo"]])
def test_local_commands_take_no_pump_options(argv, capsys):
    out = _help(capsys, *argv)
    for opt in ("--port", "--retries", "--key-store", "--timeout"):
        assert opt not in out, (argv, opt)
    assert "--json" in out


def test_pump_options_where_they_apply(capsys):
    out = _help(capsys, "status")
    assert all(o in out for o in ("--port", "--timeout", "--retries", "--key-store"))
    out = _help(capsys, "firmware", "flash")              # mpremote: no request retries
    assert "--port" in out and "--key-store" in out and "--retries" not in out


def test_pump_option_given_to_a_local_command_is_an_error(capsys):
    code, _, err = run(capsys, "--port", "/dev/null", "drugs", "list")
    assert code == 2 and "--port does not apply" in err


@pytest.mark.parametrize("url,words", [
    ("foo://bar", "unknown URL scheme 'foo'"),
    ("socket://localhost", "needs HOST:PORT"),
    ("socket://localhost:0", "needs HOST:PORT"),
    ("rfc2217://:7001", "needs HOST:PORT"),
    ("socket://localhost:99999", "needs HOST:PORT"),
])
def test_bad_port_urls_are_usage_errors(url, words, capsys):
    code, out, err = run(capsys, "--json", "--port", url, "status")
    assert code == 2, err
    assert words in err and "not supported" not in err and json.loads(out)["exit"] == 2


def test_library_refuses_bad_urls_inside_its_hierarchy():
    from host.client import Pump
    from host.errors import BadPortURL, PumpError
    with pytest.raises(BadPortURL) as e:
        Pump.open("socket://localhost", timeout=0.1)
    assert isinstance(e.value, PumpError) and isinstance(e.value, ValueError)


def test_stop_on_an_idle_pump_is_ok(fake, capsys):
    code, out, _ = run(capsys, "--port", fake.path, "--json", "stop")
    assert code == 0 and json.loads(out) == {"ok": True, "state": "IDLE", "already": True}
    code, out, _ = run(capsys, "--port", fake.path, "stop")
    assert code == 0 and "already stopped" in out
    code, _, err = run(capsys, "--port", fake.path, "pause")     # other commands still refuse
    assert code == 3 and "STATE" in err


def test_closed_stdout_pipe_is_quiet():
    """`infusekit … | head` must not end in BrokenPipeError: stdout is a pipe whose reader
    has already gone, so the very first write fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        p = subprocess.run([sys.executable, "-m", "host", "--json", "drugs", "list"], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)
    finally:
        os.close(w)
    assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr
    assert p.returncode == 0


# ------------------------------------------------------------------------------ units and words

@pytest.mark.req("REQ-HOST-05")
@pytest.mark.parametrize("argv", [
    ["program", "--drug", "ketamine", "--dose", "1", "--over", "40 min", "--weight", "70"],
    ["program", "--drug", "remifentanil", "--dose", "1", "--over", "5 min", "--weight", "70"],
    ["program", "--drug", "ketamine", "--dose-rate", "0.5", "--weight", "70", "--over", "1 h"],
    ["program", "--drug", "ketamine", "--dose-rate", "0.5 mg/kg/h", "--weight", "70",
     "--over", "1 h", "--load", "0.1", "--load-over", "5 min"],
])
def test_a_dose_without_a_unit_is_refused(argv, fake, capsys):
    """`--dose 1` used to be 1 mg/kg of ketamine but 1 µg/kg of remifentanil."""
    code, out, err = run(capsys, "--port", fake.path, "--json", *argv)
    assert code == 2 and "needs a unit" in err and " is dosed in " in err
    assert json.loads(out)["error"] == "usage"
    assert not [r for r in fake.executed if r.word == "PROG"]        # nothing was sent


@pytest.mark.req("REQ-HOST-05")
def test_unit_mistakes_are_in_the_one_hierarchy():
    from host import units
    from host.errors import PumpError, UnitError
    for bad in (lambda: units.dose_ug_kg("0.5"), lambda: units.rate_ul_h("5 furlongs"),
                lambda: units.volume_nl("-1 mL"), lambda: units.duration_ms("40")):
        with pytest.raises(UnitError) as e:
            bad()
        assert isinstance(e.value, PumpError) and isinstance(e.value, ValueError)


@pytest.mark.req("REQ-HOST-05")
@pytest.mark.parametrize("reason,drug,words", [
    ("rate_ul_h must be 100..1200000", None, "rate must be 0.1 mL/h to 1200 mL/h"),
    ("vtbi_nl must be 1000..1000000000", None, "volume must be 0.001 mL to 1000 mL"),
    ("dose_ug_kg_h above hard max 6000", "propofol", "dose rate above hard maximum 6 mg/kg/h"),
    ("dose_ug_kg_h above hard max 60", "remifentanil",
     "dose rate above hard maximum 1 mcg/kg/min"),
    ("dose_ug_kg above hard max 1000", "ketamine", "dose above hard maximum 1 mg/kg"),
    ("wt_g below hard min 30000", "ketamine", "weight below hard minimum 30 kg"),
    ("kvo_ul_h must be 0 or 100..20000", None, "KVO rate must be 0 or 0.1 mL/h to 20 mL/h"),
])
def test_pump_refusals_in_the_users_units(reason, drug, words):
    from host.errors import PumpRefused
    from host.messages import refusal
    text = refusal(PumpRefused("LIMIT" if "hard" in reason else "RANGE", reason), drug)
    assert words in text and "_ul_h" not in text and "_ug_kg" not in text and "_nl" not in text
    if drug and "hard" in reason:
        assert f"infusekit drugs show {drug}" in text          # where every limit is


@pytest.mark.req("REQ-HOST-05")
def test_cli_refusal_speaks_the_drugs_units(fake, capsys):
    fake.libh = "0" * 16                       # the host cannot pre-check: the pump refuses
    fake.refuse_next = ("LIMIT", "dose_ug_kg_h above hard max 1000")
    code, out, err = run(capsys, "--port", fake.path, "--json", "program", "--drug", "ketamine",
                         "--dose-rate", "2 mg/kg/h", "--weight", "70", "--over", "1 h")
    assert code == 3
    assert "dose rate above hard maximum 1 mg/kg/h" in err, err
    obj = json.loads(out)
    assert obj["code"] == "LIMIT" and obj["reason"] == "dose_ug_kg_h above hard max 1000"


def test_misspelt_drug_gets_a_suggestion(fake, capsys):
    code, out, err = run(capsys, "--port", fake.path, "program", "--drug", "ketamin",
                         "--dose", "0.5 mg/kg", "--over", "40 min", "--weight", "70")
    assert code == 3 and "did you mean 'ketamine'?" in err
    assert not [r for r in fake.executed if r.word == "PROG"]
    code, _, err = run(capsys, "drugs", "show", "propofl")
    assert code == 2 and "did you mean 'propofol'?" in err


def test_drugs_list_and_show_every_limit_the_pump_enforces(capsys, monkeypatch):
    """The dose-rate, loading, bolus (size, lockout, per hour), KVO and vitals-interlock
    limits were hidden; the oracle here is the library file itself."""
    from host._firmware import firmware_dir
    raw = json.loads((firmware_dir() / "druglib.json").read_text())
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run(capsys, "drugs", "list")
    assert code == 0
    for col in ("dose rate", "bolus", "KVO", "max rate"):
        assert col in out
    code, out, _ = run(capsys, "drugs", "show", "propofol")
    assert code == 0
    for label in ("dose rate (mg/kg/h)", "loading dose (mg/kg)", "bolus (mL)",
                  "bolus lockout (min)", "bolus dose per hour (mg)", "interlock: SpO2 (%)"):
        assert label in out, label
    p = next(d for d in raw["drugs"] if d["name"] == "propofol")
    code, out, _ = run(capsys, "drugs", "show", "propofol", "--json")
    obj = json.loads(out)
    for key in ("dose_ug_kg_h", "bolus_max_ul", "bolus_lockout_min", "bolus_max_h_ug",
                "kvo_ul_h", "vitals"):
        assert obj[key] == p[key], key


@pytest.mark.req("REQ-HOST-09")
def test_status_text_after_stop_is_sane(fake, capsys):
    """After stop it read 'delivered 1.104 mL of 0 mL (-)'."""
    fake.del_nl, fake.vtbi_nl, fake.rate_ul_h, fake.state = 1_104_000, 0, 0, "IDLE"
    code, out, _ = run(capsys, "--port", fake.path, "status")
    assert code == 0
    assert "delivered 1.104 mL (no program)" in out and "of 0 mL" not in out and "(-)" not in out
    fake.vtbi_nl, fake.rate_ul_h, fake.state = 35_000_000, 52_500, "PAUSED"
    fake.del_nl = 3_500_000
    code, out, _ = run(capsys, "--port", fake.path, "status")
    assert "rate 0 mL/h (programmed 52.5 mL/h)" in out and "of 35 mL (10.0 %)" in out
    assert re.search(r"elapsed \d+:\d\d:\d\d  ", out) and "alarm none" in out
