"""The firmware type-checks against the MicroPython RP2 stubs (pyright, stubs in .typings/rp2)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE, ROOT


def test_firmware_typechecks_against_rp2_stubs():
    stubs = ROOT / ".typings" / "rp2"
    if not (stubs / "machine").exists() and not (stubs / "machine.pyi").exists():
        pytest.fail("MicroPython stubs missing: run `make test` (it installs micropython-rp2-stubs into .typings/rp2)")
    exe = Path(sys.executable).parent / "pyright"
    exe = str(exe) if exe.exists() else shutil.which("pyright")
    assert exe, "pyright is not installed (dev extra)"
    p = subprocess.run([exe], cwd=str(FIRMWARE), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "0 errors" in p.stdout
