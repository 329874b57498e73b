"""Runs the portable firmware checks (tests/fw/check_*.py) under CPython and under the real
`micropython` interpreter, each module in its own process with the firmware dir as cwd.

A check module may declare the requirements its checks verify (docs/safety/requirements.md)
as a module-level literal `REQS = {"check_name": ["REQ-…", …]}`; the generated test of that
check then carries `@pytest.mark.req(...)` for `make trace`."""
import ast
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import FIRMWARE, micropython_exe

FW_TESTS = Path(__file__).parent / "fw"
MODULES = sorted(p.stem for p in FW_TESTS.glob("check_*.py"))


def _checks(mod):
    return re.findall(r"^def (check_\w+)\(", (FW_TESTS / f"{mod}.py").read_text(), re.M)


@lru_cache(maxsize=None)
def _reqs(mod):
    """The module's REQS literal (read without importing: the module is firmware-side)."""
    tree = ast.parse((FW_TESTS / f"{mod}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "REQS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _marks(rt, mod, chk):
    marks = [pytest.mark.micropython] if rt == "micropython" else []
    reqs = _reqs(mod).get(chk)
    if reqs:
        marks.append(pytest.mark.req(*reqs))
    return marks


@lru_cache(maxsize=None)
def _run(runtime, mod):
    exe = sys.executable if runtime == "cpython" else micropython_exe()
    p = subprocess.run([exe, str(FW_TESTS / "runner.py"), mod], cwd=str(FIRMWARE),
                       capture_output=True, text=True, timeout=300)
    results = {}
    for line in p.stdout.splitlines():
        m = re.match(r"(PASS|FAIL) (check_\w+)", line)
        if m:
            results[m.group(2)] = (m.group(1), line)
    return results, p.stdout + p.stderr


CASES = [pytest.param(rt, mod, chk, id=f"{rt}-{mod}-{chk}", marks=_marks(rt, mod, chk))
         for mod in MODULES for chk in _checks(mod) for rt in ("cpython", "micropython")]


@pytest.mark.parametrize("runtime,mod,check", CASES)
def test_firmware_check(runtime, mod, check):
    results, output = _run(runtime, mod)
    assert check in results, f"{check} did not run under {runtime}:\n{output[-3000:]}"
    status, line = results[check]
    assert status == "PASS", f"{line}\n{output[-3000:]}"
