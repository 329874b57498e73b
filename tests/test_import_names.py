"""Import names that cannot collide (issue 14): in CPython the library and the simulator
import the firmware tree under their own package (``host._firmware``), never as top-level
``pumpcore``/``boards`` and never through ``sys.path``; a user's own ``pumpcore``/``boards``
stay theirs; the MicroPython runtimes keep the firmware's own names.

Each check runs in a fresh interpreter: this test process has the firmware on sys.path
(tests/conftest.py puts it there for the firmware unit tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import FIRMWARE, ROOT

pytestmark = pytest.mark.req("REQ-HOST-12")

_PROBE = """
import json, sys
from pathlib import Path
fw = {fw!r}
def firmware_names():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("pumpcore", "boards", "main"))
out = {{}}
{body}
out["top_level"] = firmware_names()
out["fw_on_path"] = [p for p in sys.path if p and Path(p).resolve() == Path(fw).resolve()]
print("RESULT " + json.dumps(out))
"""


def _probe(tmp_path, body, extra_path=()):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INFUSEKIT_FIRMWARE")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), str(ROOT)])
    code = _PROBE.format(fw=str(FIRMWARE), body=textwrap.dedent(body))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def _users_packages(tmp_path):
    """A user's own top-level ``pumpcore`` and ``boards`` (say, another project's)."""
    user = tmp_path / "user"
    for pkg in ("pumpcore", "boards"):
        (user / pkg).mkdir(parents=True)
        (user / pkg / "__init__.py").write_text(f"OWNER = 'user-{pkg}'\n")
    (user / "boards" / "sim.py").write_text("OWNER = 'user-boards.sim'\n")
    return user


def test_library_and_simulator_leave_no_top_level_firmware_names(tmp_path):
    out = _probe(tmp_path, """
        from infusekit import Pump                          # the library, its codec and tables
        import host.codec, host.enums, host.statemachine, host.auth
        from hil_sim.cosim import Simulation
        from hil_sim.runtime import InProcessRuntime
        from hil_sim.scenario import run_scenario
        res = run_scenario("occlusion_25mlh", runtime="cpython")
        out["passed"] = res.passed
        rt = InProcessRuntime()
        out["board_module"] = rt._mod.__name__
        out["fw"] = rt.fw_version
    """)
    assert out["passed"] is True
    assert out["board_module"].endswith("._fw.boards.sim")
    assert out["top_level"] == [] and out["fw_on_path"] == []


def test_a_users_own_pumpcore_and_boards_are_not_shadowed(tmp_path):
    user = _users_packages(tmp_path)
    out = _probe(tmp_path, """
        import pumpcore, boards.sim                  # the user's, imported first
        from hil_sim.runtime import InProcessRuntime
        from hil_sim.scenario import run_scenario
        import host.enums
        res = run_scenario("occlusion_25mlh", runtime="cpython")
        out["passed"] = res.passed
        out["fw_has_version"] = InProcessRuntime().fw_version
        import pumpcore as again, boards.sim as again_sim
        out["owners"] = [pumpcore.OWNER, boards.sim.OWNER, again.OWNER, again_sim.OWNER]
        out["same"] = again is pumpcore
    """, extra_path=[user])
    assert out["passed"] is True and out["fw_has_version"]
    assert out["owners"] == ["user-pumpcore", "user-boards.sim"] * 2 and out["same"]
    # the user's modules are the only top-level ones, and they came from the user's folder
    assert out["top_level"] == ["boards", "boards.sim", "pumpcore"]


def test_the_users_pumpcore_imported_after_the_simulator_is_still_theirs(tmp_path):
    user = _users_packages(tmp_path)
    out = _probe(tmp_path, """
        from hil_sim.runtime import InProcessRuntime
        InProcessRuntime()
        import pumpcore
        out["owner"] = pumpcore.OWNER
    """, extra_path=[user])
    assert out["owner"] == "user-pumpcore"


def test_two_firmware_trees_side_by_side(tmp_path):
    """A copy of the tree (e.g. a deliberately broken firmware) gets its own package: both
    are usable at once in one process, neither evicts the other."""
    import shutil
    copy = tmp_path / "fw_copy"
    shutil.copytree(FIRMWARE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    src = copy / "pumpcore" / "__init__.py"
    src.write_text(src.read_text().replace('VERSION = "', 'VERSION = "copy-'))
    out = _probe(tmp_path, f"""
        from hil_sim.runtime import InProcessRuntime
        a = InProcessRuntime()
        b = InProcessRuntime({str(copy)!r})
        a2 = InProcessRuntime()
        out["versions"] = [a.fw_version, b.fw_version, a2.fw_version]
        out["names"] = [a._mod.__name__, b._mod.__name__]
        out["same"] = a._mod is a2._mod
        # the copy's controller imports its own pumpcore, not the located tree's
        import sys
        app_b = sys.modules[b._mod.__name__.rsplit(".", 2)[0] + ".pumpcore.app"]
        out["app_b_file"] = app_b.__file__
    """)
    v_a, v_b, v_a2 = out["versions"]
    assert v_b == "copy-" + v_a and v_a2 == v_a and out["same"]
    assert out["names"][0] != out["names"][1]
    assert out["app_b_file"].startswith(str(copy))
    assert out["top_level"] == []


def test_the_firmware_source_keeps_its_board_names():
    """The MicroPython side is untouched: the firmware imports itself as pumpcore/boards (the
    rename happens only while CPython compiles it), and no __pycache__ of renamed code is
    written into the tree."""
    from host._firmware import firmware_module
    mod = firmware_module("boards.sim")
    assert mod.__name__.endswith("._fw.boards.sim")
    src = (FIRMWARE / "boards" / "sim.py").read_text()
    assert "from pumpcore.app import App" in src and "_fw" not in src
    caches = [p for p in FIRMWARE.rglob("*.pyc")
              if b"._fw." in p.read_bytes()]
    assert caches == []
