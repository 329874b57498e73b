"""Locate the firmware tree and import its plain-data modules from CPython.

`firmware/` is not a CPython package: it is the MicroPython tree copied to a board as is.
The host only reads it (the state table, the protocol constants, the version). The tree is
found at ``<repo>/firmware`` next to the ``host`` package, or wherever the environment
variable ``INFUSEKIT_FIRMWARE`` points.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import host

ENV_VAR = "INFUSEKIT_FIRMWARE"


def firmware_dir() -> Path:
    """The firmware tree: ``$INFUSEKIT_FIRMWARE`` or ``<repo>/firmware``."""
    env = os.environ.get(ENV_VAR)
    path = Path(env) if env else Path(host.__file__).resolve().parent.parent / "firmware"
    if not (path / "pumpcore").is_dir():
        raise FileNotFoundError(
            f"firmware tree not found at {path} (set {ENV_VAR} to the folder holding pumpcore/)")
    return path


def pumpcore(name: str) -> ModuleType:
    """Import ``pumpcore.<name>`` from the firmware tree (puts the tree on sys.path once)."""
    path = str(firmware_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"pumpcore.{name}" if name else "pumpcore")


def firmware_version() -> str:
    """``pumpcore.VERSION``: the version the firmware reports in HELLO's ``fw``."""
    return pumpcore("").VERSION
