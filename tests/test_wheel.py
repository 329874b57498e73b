"""The wheel (issue 14): built from the checkout, installed into a fresh venv outside it, the
CLI and a simulated infusion run from the installed package alone.

The fresh venv gets the wheel with ``--no-deps``; its dependencies come from this test's own
environment through a .pth line naming that site-packages directory (a directory added by a
.pth line does not run its own .pth files, so the checkout's editable install is not visible:
``import host`` must fail there)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.req("REQ-HOST-11")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    wheel = next(dist.glob("infusekit-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                   "['purelib'])"], capture_output=True, text=True,
                                  check=True).stdout.strip())
    (purelib / "infusekit-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                        "--no-deps", str(wheel)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0 and "no such option: --python" in p.stderr:     # pip < 22.3
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--target", str(purelib), str(wheel)], capture_output=True,
                           text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    work = tmp / "elsewhere"                   # nowhere near the checkout
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INFUSEKIT_FIRMWARE",
                                                            "INFUSEKIT_PORT")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}" \
                  f"{env.get('PATH', '')}"         # the micropython interpreter of the deps
    return {"wheel": wheel, "py": py, "cli": venv / "bin" / "infusekit", "cwd": work,
            "env": env}


def _run(inst, *cmd, timeout=300):
    return subprocess.run([str(c) for c in cmd], cwd=inst["cwd"], env=inst["env"],
                          capture_output=True, text=True, timeout=timeout)


def test_the_wheel_has_one_import_name_and_the_firmware(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"infusekit"}, tops                     # no host, hil_sim, pumpcore, boards
    for need in ("infusekit/firmware/druglib.json", "infusekit/firmware/druglib.json.sha256",
                 "infusekit/firmware/pumpcore/controller.py", "infusekit/firmware/main.py",
                 "infusekit/firmware/boards/sim.py", "infusekit/sim/scenarios/occlusion_25mlh.toml"):
        assert need in names, need
    code = "\n".join(f.read().decode() for f in map(zipfile.ZipFile(installed["wheel"]).open,
                     [n for n in names if n.endswith(".py") and "/firmware/" not in n]))
    assert "from host" not in code and "from hil_sim" not in code and "import host\n" not in code


def test_library_imports_from_the_installed_package(installed):
    p = _run(installed, installed["py"], "-c",
             "from infusekit import Pump; import infusekit.codec, infusekit.sim.cosim\n"
             "from infusekit._firmware import firmware_dir\n"
             "print(Pump.__module__, firmware_dir())\n"
             "from infusekit.sim.runtime import InProcessRuntime; rt = InProcessRuntime()\n"
             "import sys; assert rt._mod.__name__ == 'infusekit._fw.boards.sim', rt._mod\n"
             "assert not [m for m in sys.modules if m.split('.')[0] in ('pumpcore', 'boards')]\n"
             "assert not [p for p in sys.path if 'firmware' in p], sys.path\n"
             "import importlib.util as u; print(u.find_spec('host'), u.find_spec('hil_sim'))")
    assert p.returncode == 0, p.stderr
    mod, fw, *_ = p.stdout.split()
    assert mod == "infusekit.client" and "site-packages/infusekit/firmware" in fw
    assert p.stdout.strip().endswith("None None")          # the checkout names are not there


def test_cli_and_a_simulated_infusion_from_the_wheel(installed):
    cli = installed["cli"]
    p = _run(installed, cli, "--help")
    assert p.returncode == 0 and "Exit codes" in p.stdout, p.stderr
    p = _run(installed, cli, "--json", "drugs", "list")
    assert p.returncode == 0 and json.loads(p.stdout)["drugs"][0]["name"] == "ketamine", p.stderr
    p = _run(installed, cli, "demo", "--runtime", "cpython", "--json", "--no-plot")
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert res["final_state"] == "COMPLETE" and abs(res["error_pct"]) <= 0.5
    p = _run(installed, cli, "--json", "sim", "run", "occlusion_25mlh", "--runtime", "micropython")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["passed"] is True
