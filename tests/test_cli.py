"""The infusekit CLI: output, --json, exit codes, drug library, firmware build (tree and
ROMFS image)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from host import cli
from host._firmware import firmware_dir
from conftest import run_micropython
from host.firmware_tools import build, romfs_image


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_json_has_state(fake, capsys):
    fake.rate_ul_h, fake.vtbi_nl, fake.del_nl = 52500, 35_000_000, 3_500_000
    code, out, _ = run(capsys, "--port", fake.path, "--json", "status")
    assert code == 0
    obj = json.loads(out)
    assert obj["state"] == "IDLE" and obj["rate_ul_h"] == 52500 and obj["progress"] == 0.1


def test_global_options_after_the_subcommand(fake, capsys):
    code, out, _ = run(capsys, "status", "--port", fake.path, "--json")
    assert code == 0 and json.loads(out)["state"] == "IDLE"


def test_port_from_environment(fake, capsys, monkeypatch):
    monkeypatch.setenv("INFUSEKIT_PORT", fake.path)
    code, out, _ = run(capsys, "status")
    assert code == 0 and out.startswith("state IDLE")


def test_info(fake, capsys):
    code, out, _ = run(capsys, "--port", fake.path, "--json", "info")
    obj = json.loads(out)
    assert code == 0 and obj["dev"] == "FAKE-1" and obj["proto"] == 1
    assert obj["lib_matches_local"] is True
    code, out, _ = run(capsys, "--port", fake.path, "info")
    assert "same as the pump" in out


def test_program_start_stop(fake, capsys):
    code, out, _ = run(capsys, "--port", fake.path, "program", "--rate", "52.5", "--vtbi", "35")
    assert code == 0 and "35 mL at 52.5 mL/h over 40 min" in out
    code, out, _ = run(capsys, "--port", fake.path, "--json", "start")
    assert code == 0 and json.loads(out) == {"ok": True, "state": "RUNNING"}
    for cmd, state in (("pause", "PAUSED"), ("resume", "RUNNING"), ("stop", "IDLE")):
        code, out, _ = run(capsys, "--port", fake.path, cmd)
        assert code == 0 and out.strip() == f"state {state}"


def test_program_by_drug_and_confirm_echo(fake, capsys):
    args = ["--port", fake.path, "program", "--drug", "ketamine", "--dose", "0.9 mg/kg",
            "--over", "40 min", "--weight", "70"]
    code, out, err = run(capsys, *args)
    assert code == 3
    assert "SOFT" in err and "--confirm" in err and out == ""
    code, out, err = run(capsys, *args, "--confirm")
    assert code == 0 and "soft limit overridden" in out and "--confirm" in out
    code, out, _ = run(capsys, *args, "--confirm", "--json")
    obj = json.loads(out)
    assert obj["confirm"] is True and obj["soft"] is True and obj["drug"] == "ketamine"


def test_refused_json(fake, capsys):
    code, out, err = run(capsys, "--port", fake.path, "--json", "start")
    assert code == 3
    obj = json.loads(out)
    assert obj["ok"] is False and obj["code"] == "STATE"
    assert len(err.strip().splitlines()) == 1


def test_hard_limit_exit_3(fake, capsys):
    code, _, err = run(capsys, "--port", fake.path, "program", "--drug", "ketamine", "--dose",
                       "2 mg/kg", "--over", "40 min", "--weight", "70")
    assert code == 3 and "LIMIT" in err and "hard" in err


def test_timeout_exit_4(fake, capsys):
    fake.silent = True
    code, _, err = run(capsys, "--port", fake.path, "--timeout", "0.1", "--retries", "0", "status")
    assert code == 4 and "no reply" in err


def test_bad_port_exit_4(capsys):
    code, _, err = run(capsys, "--port", "/dev/nonexistent-infusekit", "status")
    assert code == 4 and "cannot open" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [
    ["status"],                                                    # no port
    ["program", "--rate", "5"],                                    # only one of three
    ["program", "--drug", "ketamine", "--dose", "0.5 mg/kg"],      # missing over/weight
    ["drugs", "show", "nosuchdrug"],
])
def test_usage_errors_exit_2(argv, capsys, monkeypatch):
    monkeypatch.delenv("INFUSEKIT_PORT", raising=False)
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("infusekit: ")


def test_bad_unit_exit_2(fake, capsys):
    code, _, err = run(capsys, "--port", fake.path, "program", "--rate", "5 furlongs",
                       "--vtbi", "35")
    assert code == 2 and "unknown rate unit" in err


def test_parser_errors_exit_2(capsys):
    assert cli.main(["nosuchcommand"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["sim"]) == 2


def _all_commands(group=None, path=()):
    import click
    group = group or cli.cli
    for name, c in group.commands.items():
        if isinstance(c, click.Group):
            yield from _all_commands(c, path + (name,))
        else:
            yield path + (name,)


@pytest.mark.req("REQ-HOST-04")
def test_every_command_has_help(capsys):
    """Every command's --help works (`vitals --help` used to crash on the % of 'SpO2 %')
    and states the exit codes."""
    cmds = list(_all_commands())
    assert ("vitals",) in cmds and ("drugs", "show") in cmds and ("sim", "run") in cmds
    for argv in [[], *map(list, cmds)]:
        assert cli.main([*argv, "--help"]) == 0, argv
        out = capsys.readouterr().out
        assert "Exit codes: 0 ok; 1 expectations not met" in out and "4 link" in out, argv


def test_drugs_list_and_show(capsys):
    code, out, _ = run(capsys, "drugs", "list")
    assert code == 0 and "ketamine" in out
    code, out, _ = run(capsys, "--json", "drugs", "list")
    obj = json.loads(out)
    assert code == 0 and obj["drugs"][0]["name"] == "ketamine" and len(obj["libh"]) == 16
    code, out, _ = run(capsys, "drugs", "show", "ketamine", "--json")
    obj = json.loads(out)
    assert obj["dose_ug_kg"]["hard_max"] == 1000 and obj["dose_unit"] == "mg/kg"
    code, out, _ = run(capsys, "drugs", "show", "KETAMINE")
    assert code == 0 and "hard max" in out


def test_ports_json(capsys):
    code, out, _ = run(capsys, "--json", "ports")
    assert code == 0 and isinstance(json.loads(out)["ports"], list)


# ------------------------------------------------------------------------------ firmware build

def test_firmware_build_compiles_every_module(tmp_path):
    out = tmp_path / "fw"
    files = build("rp2_pico", out)
    src = firmware_dir()
    modules = [p.relative_to(src) for p in src.rglob("*.py")
               if "__pycache__" not in p.parts and p.name != "manifest.py"]
    for rel in modules:
        if rel.as_posix() in ("main.py", "boot.py"):
            assert (out / rel).read_bytes() == (src / rel).read_bytes()
        else:
            mpy = out / rel.with_suffix(".mpy")
            assert mpy in files
            assert mpy.read_bytes()[:1] == b"M"
            assert not (out / rel).exists()
    for data in [*src.rglob("*.json"), *src.rglob("*.sha256")]:
        if data.name == "pyrightconfig.json":           # a development file: not deployed
            assert not (out / data.relative_to(src)).exists()
            continue
        assert (out / data.relative_to(src)).read_bytes() == data.read_bytes()
    assert (out / "druglib.json.sha256").exists()
    assert not (out / "manifest.py").exists() and not (out / "manifest.mpy").exists()
    assert set(files) == {p for p in out.rglob("*") if p.is_file()}


def test_firmware_build_cli(tmp_path, capsys):
    out = tmp_path / "fw"
    code, stdout, _ = run(capsys, "--json", "firmware", "build", "--board", "sim", "--out", str(out))
    obj = json.loads(stdout)
    assert code == 0 and obj["ok"] and (out / "pumpcore" / "protocol.mpy").exists()
    code, _, err = run(capsys, "firmware", "build", "--board", "nosuch", "--out", str(out))
    assert code == 2 and "unknown board" in err             # a usage error


ROM_WALK = """
import os, sys, vfs
vfs.mount(vfs.VfsRom(open({image!r}, 'rb').read()), '/rom')
sys.path.append('/rom')
def walk(d):
    for name, kind, *_ in os.ilistdir(d):
        p = d + '/' + name
        walk(p) if kind & 0x4000 else print(p[5:])
walk('/rom')
import pumpcore.protocol
print('imported', pumpcore.protocol.__file__)
"""


def test_romfs_image_holds_exactly_the_code_and_imports_in_place(tmp_path):
    """The image mounts under the real micropython with vfs.VfsRom, holds every compiled
    module and nothing else (no main.py, no data), and pumpcore imports from it."""
    image = romfs_image("sim", tmp_path / "fw.romfs")
    tree = tmp_path / "tree"
    build("sim", tree)
    code = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.mpy"))
    assert code and image.read_bytes()[:3] == b"\xd2\xcd\x31"
    empty = tmp_path / "cwd"
    empty.mkdir()
    p = run_micropython(ROM_WALK.format(image=str(image)), cwd=empty)
    assert p.returncode == 0, p.stderr
    *listed, imported = p.stdout.splitlines()
    assert sorted(listed) == code
    assert imported == "imported /rom/pumpcore/protocol.mpy"


def test_romfs_image_is_deterministic(tmp_path):
    a = romfs_image("rp2_pico", tmp_path / "a" / "fw.romfs").read_bytes()
    b = romfs_image("rp2_pico", tmp_path / "b.img").read_bytes()
    assert a == b and len(a) > 10_000


def test_firmware_build_romfs_cli(tmp_path, capsys):
    out = tmp_path / "fw.romfs"
    code, stdout, _ = run(capsys, "--json", "firmware", "build", "--romfs", "--out", str(out))
    obj = json.loads(stdout)
    assert code == 0 and obj["ok"] and obj["romfs"] and obj["board"] == "rp2_pico"
    assert obj["out"] == str(out) and obj["bytes"] == out.stat().st_size
    code, stdout, _ = run(capsys, "firmware", "build", "--romfs", "--out", str(out))
    assert code == 0 and f"{out}, {out.stat().st_size} bytes" in stdout
    code, _, err = run(capsys, "firmware", "build", "--romfs", "--out", str(tmp_path / "fw.bin"))
    assert code == 2 and "must end in .romfs or .img" in err


def test_console_entry_point_runs():
    p = subprocess.run([sys.executable, "-m", "host", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0 and "infusekit" in p.stdout


# ------------------------------------------------------------------------------ drug library

def test_druglib_plan_matches_firmware_arithmetic():
    from host._firmware import pumpcore
    from host.druglib import DrugLibrary
    dose = pumpcore("dose")
    lib = DrugLibrary.load()
    for dose_ug_kg, wt_g, over_ms in ((500, 70000, 2_400_000), (333, 71234, 1_900_001),
                                      (1000, 250000, 7_200_000)):
        plan = lib.plan("ketamine", dose_ug_kg, wt_g, over_ms)
        amount = dose.dose_ug(dose_ug_kg, wt_g)
        vtbi = dose.volume_nl(amount, lib.get("ketamine").conc_ug_ml)
        assert (plan.dose_ug, plan.vtbi_nl, plan.rate_ul_h) == \
            (amount, vtbi, dose.rate_ul_h(vtbi, over_ms))


def test_druglib_limits_and_hash():
    import hashlib
    from host.druglib import DrugLibrary
    from host.errors import LimitExceeded
    lib = DrugLibrary.load()
    raw = (firmware_dir() / "druglib.json").read_bytes()
    assert lib.sha16 == hashlib.sha256(raw).hexdigest()[:16].upper()
    assert lib.plan("ketamine", 500, 70000, 2_400_000).hard == ()
    assert lib.plan("ketamine", 900, 70000, 2_400_000).soft == \
        ("dose 0.9 mg/kg above soft max 0.75 mg/kg",)
    with pytest.raises(LimitExceeded, match="hard max 1 mg/kg"):
        lib.precheck("ketamine", 2000, 70000, 2_400_000)
    with pytest.raises(LimitExceeded, match="duration 10 min below hard min 20 min"):
        lib.precheck("ketamine", 500, 70000, 600_000)
    with pytest.raises(KeyError, match="known: ketamine"):
        lib.get("nosuchdrug")
