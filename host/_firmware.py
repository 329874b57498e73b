"""Locate the firmware tree and import its modules into CPython under collision-free names.

`firmware/` is not a CPython package: it is the MicroPython tree copied to a board as is,
whose modules import each other as ``pumpcore.…`` and ``boards.…`` (the names a board and the
``micropython`` runtimes keep). This module owns two things:

* **The one firmware locator**: ``$INFUSEKIT_FIRMWARE`` if set, else ``firmware/`` inside the
  installed package (the wheel: ``infusekit/firmware``), else ``<checkout>/firmware`` next to
  ``host/``. Everything that needs the tree or the drug library (``druglib_path()``) asks here.
* **The firmware's import names in CPython.** A tree is never put on ``sys.path`` and its
  ``pumpcore``/``boards`` never become top-level modules (they would shadow, or be shadowed
  by, any other package of those names). Each tree is imported as sub-packages of this
  library: the located tree under ``<lib>._fw`` (``infusekit._fw.pumpcore``, ``…boards.sim``
  in the wheel; ``host._fw.…`` in the checkout, where ``infusekit._fw.…`` names the same
  module objects), any other tree (e.g. a deliberately broken copy in a test) under
  ``<lib>._fw_<hash of its path>``. A meta-path finder maps those names to the tree's files;
  its loader compiles each file with the firmware's absolute imports of its own top-level
  names (``from pumpcore.x import y``, ``import boards.sim``) renamed into that namespace, so
  the source, its line numbers and what a board runs stay exactly as they are.

``firmware_module("boards.sim", tree)`` imports one; ``pumpcore(name)`` is the shorthand the
host uses for the plain-data tables (states, alarms, protocol, auth).
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

ENV_VAR = "INFUSEKIT_FIRMWARE"
_HERE = Path(__file__).resolve().parent
NAMESPACE = __name__.rpartition(".")[0] + "._fw"     # "infusekit._fw" (wheel), "host._fw" (checkout)


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


# ---------------------------------------------------------------- the firmware's namespace

class _Tree:
    """One firmware tree imported into CPython: its folder, its package name and the
    top-level names its modules import each other by."""

    def __init__(self, root: str, folder: Path) -> None:
        self.root = root
        self.folder = folder
        self.tops = frozenset(
            p.stem if p.suffix == ".py" else p.name for p in folder.iterdir()
            if not p.name.startswith((".", "_"))
            and ((p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"))


_trees: dict[str, _Tree] = {}          # package name -> tree
_lock = threading.Lock()


def _register(folder: str | os.PathLike | None) -> _Tree:
    d = Path(folder or firmware_dir()).resolve()
    with _lock:
        for tree in _trees.values():
            if tree.folder == d:
                return tree
        if NAMESPACE not in _trees and (folder is None or d == firmware_dir().resolve()):
            root = NAMESPACE
        else:
            root = NAMESPACE + "_" + hashlib.sha256(str(d).encode()).hexdigest()[:12]
        tree = _trees[root] = _Tree(root, d)
        return tree


def firmware_package(folder: str | os.PathLike | None = None) -> str:
    """The package name the tree ``folder`` (default: the located one) is imported under."""
    return _register(folder).root


def firmware_module(name: str, folder: str | os.PathLike | None = None) -> ModuleType:
    """Import the firmware module ``name`` (``"pumpcore.states"``, ``"boards.sim"``) of the
    tree ``folder`` (default: the located tree) into its namespace and return it."""
    return importlib.import_module(f"{firmware_package(folder)}.{name}")


def pumpcore(name: str) -> ModuleType:
    """``pumpcore.<name>`` (``pumpcore`` itself for ``""``) of the located firmware tree."""
    return firmware_module(f"pumpcore.{name}" if name else "pumpcore")


def firmware_version() -> str:
    """``pumpcore.VERSION``: the version the firmware reports in HELLO's ``fw``."""
    return pumpcore("").VERSION


class _Rename(ast.NodeTransformer):
    """``pumpcore.x`` -> ``<root>.pumpcore.x`` in absolute import statements."""

    def __init__(self, tree: _Tree) -> None:
        self.tree = tree

    def _ours(self, dotted: str | None) -> bool:
        return bool(dotted) and dotted.split(".", 1)[0] in self.tree.tops

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        if node.level == 0 and self._ours(node.module):
            node.module = f"{self.tree.root}.{node.module}"
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST | list[ast.AST]:
        if not any(self._ours(a.name) for a in node.names):
            return node
        out: list[ast.AST] = []
        for a in node.names:
            if not self._ours(a.name):
                out.append(ast.Import(names=[a]))
            elif a.asname or "." not in a.name:
                # import pumpcore.x as y / import pumpcore: bind the namespaced module
                out.append(ast.Import(names=[ast.alias(f"{self.tree.root}.{a.name}",
                                                       a.asname or a.name)]))
            else:
                # import pumpcore.x (binds pumpcore, with .x loaded): load x, bind the package
                top = a.name.split(".", 1)[0]
                out.append(ast.Import(names=[ast.alias(f"{self.tree.root}.{a.name}", top)]))
                out.append(ast.Import(names=[ast.alias(f"{self.tree.root}.{top}", top)]))
        for n in out:
            ast.copy_location(n, node)
        return out


class _Loader(importlib.machinery.SourceFileLoader):
    """A firmware source file, compiled with its own imports renamed into its namespace.
    Never reads or writes ``__pycache__`` (a plain import of the same file must not pick up
    the renamed code)."""

    def __init__(self, fullname: str, path: str, tree: _Tree) -> None:
        super().__init__(fullname, path)
        self.tree = tree

    def get_code(self, fullname: str):
        source = self.get_data(self.path)
        node = _Rename(self.tree).visit(ast.parse(source, self.path))
        ast.fix_missing_locations(node)
        return compile(node, self.path, "exec", dont_inherit=True)


class _RootLoader(importlib.abc.Loader):
    """The namespace package itself: empty, its children found by `_Finder` alone."""

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.__doc__ = "The firmware tree imported into CPython (host._firmware)."


class _Finder(importlib.abc.MetaPathFinder):
    """``<root>`` and ``<root>.<top>.…`` -> the files of that firmware tree."""

    def find_spec(self, name: str, path=None, target=None):
        if not name.startswith(NAMESPACE):
            return None
        root, _, rest = _split(name)
        tree = _trees.get(root)
        if tree is None:
            if root != NAMESPACE:
                return None
            tree = _register(None)          # a fresh process (a worker, unpickling)
        if not rest:
            spec = importlib.machinery.ModuleSpec(name, _RootLoader(), is_package=True)
            spec.submodule_search_locations = []
            return spec
        parts = rest.split(".")
        if parts[0] not in tree.tops:
            return None
        base = tree.folder.joinpath(*parts)
        if (base / "__init__.py").is_file():
            init = str(base / "__init__.py")
            return importlib.util.spec_from_file_location(
                name, init, loader=_Loader(name, init, tree),
                submodule_search_locations=[str(base)])
        src = base.with_suffix(".py")
        if src.is_file():
            return importlib.util.spec_from_file_location(
                name, str(src), loader=_Loader(name, str(src), tree))
        return None


def _split(name: str) -> tuple[str, str, str]:
    """``host._fw_ab12.pumpcore.x`` -> (``host._fw_ab12``, ".", ``pumpcore.x``)."""
    lib_len = len(NAMESPACE.rpartition(".")[0]) + 1
    head, dot, rest = name[lib_len:].partition(".")
    return name[:lib_len] + head, dot, rest


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
