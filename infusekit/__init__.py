"""Checkout-only alias (never in the wheel; see setup.py): ``infusekit`` is the import name of
the installed wheel, where the library is ``infusekit`` and the simulator ``infusekit.sim``.
In the checkout the code keeps its historical names ``host`` and ``hil_sim``; this package
maps ``infusekit.X`` to the very same module objects as ``host.X`` and ``infusekit.sim.X`` to
``hil_sim.X`` (one copy of every module, so ``isinstance`` and module state agree whichever
name a caller used). ``from infusekit import Pump`` works in both.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

_MAP = (("infusekit.sim", "hil_sim"), ("infusekit", "host"))


def _real(name: str) -> str | None:
    for new, old in _MAP:
        if name == new or name.startswith(new + "."):
            return old + name[len(new):]
    return None


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``infusekit.<x>`` -> the module ``host.<x>`` (``infusekit.sim.<x>`` -> ``hil_sim.<x>``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        real = _real(name)
        if real is None or name == "infusekit":
            return None
        if importlib.util.find_spec(real) is None:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=True)

    def create_module(self, spec):
        module = importlib.import_module(_real(spec.name))
        self._saved = (module, module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module) -> None:
        saved = getattr(self, "_saved", None)
        if saved is not None and saved[0] is module:     # keep the module's own identity
            module.__spec__, module.__loader__ = saved[1], saved[2]


if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _AliasFinder())

import host as _host  # noqa: E402

__all__ = list(_host.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_host, name)
