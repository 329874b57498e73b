"""Locate the firmware tree and import its plain-data modules from CPython.

`firmware/` is not a CPython package: it is the MicroPython tree copied to a board as is.
The host only reads it (the state table, the protocol constants, the version). This is the
one firmware locator: ``$INFUSEKIT_FIRMWARE`` if set, else ``firmware/`` inside the installed
package (the wheel: ``infusekit/firmware``), else ``<checkout>/firmware`` next to ``host/``.
Everything that needs the tree or the drug library (``druglib_path()``) asks here.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

ENV_VAR = "INFUSEKIT_FIRMWARE"
_HERE = Path(__file__).resolve().parent


def firmware_dir() -> Path:
    """The firmware tree: ``$INFUSEKIT_FIRMWARE``, the installed package's ``firmware/``, or
    the checkout's ``firmware/``."""
    env = os.environ.get(ENV_VAR)
    candidates = [Path(env)] if env else [_HERE / "firmware", _HERE.parent / "firmware"]
    for path in candidates:
        if (path / "pumpcore").is_dir():
            return path
    raise FileNotFoundError(
        f"firmware tree not found at {' or '.join(map(str, candidates))} (set {ENV_VAR} to "
        f"the folder holding pumpcore/)")


def druglib_path() -> Path:
    """The drug library the firmware ships (``firmware/druglib.json``)."""
    return firmware_dir() / "druglib.json"


def pumpcore(name: str) -> ModuleType:
    """Import ``pumpcore.<name>`` from the firmware tree (puts the tree on sys.path once)."""
    path = str(firmware_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"pumpcore.{name}" if name else "pumpcore")


def firmware_version() -> str:
    """``pumpcore.VERSION``: the version the firmware reports in HELLO's ``fw``."""
    return pumpcore("").VERSION
