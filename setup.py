"""The wheel's layout (issue 14): one top-level import name, ``infusekit``.

In the checkout the code lives under its historical names — ``host/`` (library and CLI),
``hil_sim/`` (simulator), ``firmware/`` (the MicroPython tree) — and every colleague's code
keeps importing ``host`` and ``hil_sim``. The wheel installs none of those names:

    infusekit/            <- host/        (imports rewritten: host -> infusekit)
    infusekit/sim/        <- hil_sim/     (hil_sim -> infusekit.sim), scenarios, campaigns
    infusekit/firmware/   <- firmware/    (package data, byte for byte: the firmware tree and
                                           the drug library, as deployed to a board)

so ``from infusekit import Pump`` works and nothing it installs can collide with another
distribution's ``host`` or ``hil_sim``. An editable install (``make venv``) keeps the checkout
names and adds the checkout-only alias package ``infusekit/`` (infusekit/__init__.py), which
maps ``infusekit.X`` to the very same module objects as ``host.X`` (``infusekit.sim.X`` to
``hil_sim.X``). tests/test_wheel.py builds the wheel, installs it into a fresh venv outside the
checkout and runs the CLI and a simulated infusion from it.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
EDITABLE = any(a in ("editable_wheel", "develop") for a in sys.argv)

# (pattern, replacement) applied to every .py file of infusekit/ and infusekit/sim/ in the
# wheel; firmware/ is never rewritten (it runs under MicroPython as deployed)
REWRITES = (
    (re.compile(r"^(\s*)import host\s*$", re.M), r"\1import infusekit as host"),
    (re.compile(r"^(\s*)import hil_sim\s*$", re.M), r"\1import infusekit.sim as hil_sim"),
    (re.compile(r"\bfrom hil_sim(\.|\s)"), r"from infusekit.sim\1"),
    (re.compile(r"\bfrom host(\.|\s)"), r"from infusekit\1"),
    (re.compile(r"\bimport hil_sim\."), r"import infusekit.sim."),
    (re.compile(r"\bimport host\."), r"import infusekit."),
    (re.compile(r"([\"'])hil_sim(\.|[\"'])"), r"\1infusekit.sim\2"),
    (re.compile(r"([\"'])host\.(?=[a-z_])"), r"\1infusekit."),
)


def rewrite(text: str) -> str:
    for pat, rep in REWRITES:
        text = pat.sub(rep, text)
    return text


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("__pycache__", "node_modules") or n.endswith(".pyc")]


class wheel_layout(build_py):
    """build_py, then rewrite the imports and add the firmware tree and the data files."""

    def run(self) -> None:
        super().run()
        if EDITABLE:
            return
        pkg = Path(self.build_lib) / "infusekit"
        for py in pkg.rglob("*.py"):
            if "firmware" in py.relative_to(pkg).parts[:1]:
                continue
            py.write_text(rewrite(py.read_text(encoding="utf-8")), encoding="utf-8")
        fw = pkg / "firmware"
        shutil.rmtree(fw, ignore_errors=True)
        shutil.copytree(ROOT / "firmware", fw, ignore=_ignore)
        for sub in ("scenarios", "campaigns", "rp2040"):   # rp2040: the emulator harness (JS)
            dst = pkg / "sim" / sub
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(ROOT / "hil_sim" / sub, dst, ignore=_ignore)


if EDITABLE:
    packages = find_packages(include=["host*", "hil_sim*", "infusekit"])
    package_dir: dict[str, str] = {}
else:
    packages = (["infusekit"] + ["infusekit." + p for p in find_packages("host")]
                + ["infusekit.sim"] + ["infusekit.sim." + p for p in find_packages("hil_sim")])
    package_dir = {"infusekit": "host", "infusekit.sim": "hil_sim"}

setup(packages=packages, package_dir=package_dir, cmdclass={"build_py": wheel_layout},
      package_data={"hil_sim": ["scenarios/*.toml", "campaigns/*.toml"]} if EDITABLE else {})
