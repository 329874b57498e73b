"""The CLI's contract (issue 14): exit codes, --json for every error, exact options, options
only where they apply, port URLs, idempotent stop, closed pipes, units and limits in the
user's words. Each test is a defect the argparse CLI had."""
from __future__ import annotations

import json
import os
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
