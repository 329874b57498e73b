"""The CLI commands added with protocol v0's extensions, against the scripted fake pump:
bolus, titrate, standby, silence, vitals, config, log (JSONL/CSV), monitor, firmware flash
(files and ROMFS modes, key provisioning; mpremote replaced by a fake board)."""
from __future__ import annotations

import csv
import io
import json
import re
import stat
import sys
import textwrap
import threading
import time

import pytest

from conftest import run_micropython
from host import cli
from host.auth import KeyStore
from host.firmware_tools import FirmwareToolError, flash


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def j(capsys, fake, *argv):
    code, out, err = run(capsys, "--port", fake.path, "--json", *argv)
    return code, json.loads(out), err


def test_bolus_titrate_silence_vitals_config(fake, capsys):
    assert j(capsys, fake, "program", "--rate", "10", "--vtbi", "5")[0] == 0
    assert j(capsys, fake, "start")[0] == 0
    code, out, _ = j(capsys, fake, "bolus", "--volume", "0.5 mL", "--rate", "100")
    assert code == 0 and out["vol_nl"] == 500000 and out["rate_ul_h"] == 100000
    code, out, _ = j(capsys, fake, "titrate", "--rate", "12.5", "--confirm")
    assert code == 0 and out["rate_ul_h"] == 12500 and out["confirm"] is True
    code, out, _ = j(capsys, fake, "silence")
    assert code == 0 and out["until_ms"] == 120000
    code, out, _ = j(capsys, fake, "vitals", "--sbp", "120", "--dbp", "80", "--hr", "70",
                     "--spo2", "98")
    assert code == 0 and out["action"] == "none"
    assert j(capsys, fake, "stop")[0] == 0
    code, out, _ = j(capsys, fake, "config", "hb_ms=5000", "hb_action=pause")
    assert code == 0 and out["settings"]["hb_ms"] == "5000"
    code, out, err = run(capsys, "--port", fake.path, "titrate", "--rate", "1")
    assert code == 3 and "STATE" in err          # not running: refused by the mirror
    code, out, err = run(capsys, "--port", fake.path, "bolus", "--volume", "1 furlong",
                         "--rate", "1")
    assert code == 2 and "unit" in err


def test_program_by_dose_rate_cli(fake, capsys):
    code, out, err = j(capsys, fake, "program", "--drug", "ketamine", "--dose-rate",
                       "0.5 mg/kg/h", "--weight", "70", "--vtbi", "20", "--load", "0.1 mg/kg",
                       "--load-over", "5 min", "--kvo", "0.5")
    assert code == 0, err
    assert fake.executed[-1].fields["load_ug_kg"] == "100"
    code, _, err = run(capsys, "--port", fake.path, "program", "--drug", "ketamine",
                       "--dose-rate", "0.5 mg/kg/h", "--weight", "70")
    assert code == 2 and "--vtbi" in err


def test_log_export_jsonl_csv_and_file(fake, capsys, tmp_path):
    fake.log = [{"seq": i, "t_ms": 50 * i, "ev": "ALARM", "alarm": "OCCLUSION"} for i in range(40)]
    code, out, _ = run(capsys, "--port", fake.path, "log")
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and len(rows) == 40 and rows[3] == {"seq": 3, "t_ms": 150, "ev": "ALARM",
                                                         "alarm": "OCCLUSION"}
    code, out, _ = run(capsys, "--port", fake.path, "log", "--format", "csv", "--from", "38")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["seq"] for r in table] == ["38", "39"]
    assert list(table[0]) == ["seq", "t_ms", "ev", "alarm"]
    dest = tmp_path / "log.jsonl"
    code, out, _ = j(capsys, fake, "log", "--out", str(dest), "--limit", "5")
    assert code == 0 and out["records"] == 5 and out["next"] == 5
    assert len(dest.read_text().splitlines()) == 5
    code, out, _ = j(capsys, fake, "log", "--from", "39")
    assert out["records"] == [{"seq": 39, "t_ms": 1950, "ev": "ALARM", "alarm": "OCCLUSION"}]


@pytest.mark.req("REQ-HOST-09")
def test_monitor_streams_json_lines_until_complete(fake, capsys):
    """Off a terminal the monitor printed two lines, and --json one object: now a JSON-lines
    stream (status, events with times, telemetry, end); the rate at COMPLETE is 0, the
    times are h:mm:ss."""
    fake.rate_ul_h, fake.vtbi_nl, fake.state = 36000, 1000000, "RUNNING"

    def finish():                    # after the monitor has had telemetry (counted, not timed)
        from served import wall_until
        wall_until(lambda: fake.tlm_period_ms and fake.tlm_sent >= 2, "two telemetry frames")
        fake.del_nl = fake.vtbi_nl
        fake.state = "COMPLETE"
        from host import codec
        fake.write(codec.encode_event("ALARM", {"alarm": "VTBI_DONE", "prio": 1}))
        fake.write(codec.encode_event("STATE", {"state": "COMPLETE"}))
    threading.Thread(target=finish).start()
    code, out, err = run(capsys, "--port", fake.path, "monitor", "--period", "50")
    assert code == 0, err
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert objs[0]["type"] == "status" and objs[0]["state"] == "RUNNING"
    assert objs[0]["remaining_ms"] == 100_000 and objs[0]["percent"] == 0
    kinds = {o["type"] for o in objs}
    assert {"status", "event", "telemetry", "end"} <= kinds
    alarm = next(o for o in objs if o["type"] == "event" and o.get("alarm") == "VTBI_DONE")
    assert alarm["prio"] == 1 and alarm["text"].endswith("ALARM VTBI_DONE (priority 1)")
    assert re.match(r"\d\d:\d\d:\d\d \[\d+:\d\d:\d\d\] ", alarm["text"])   # timestamped
    end = objs[-1]
    assert end["type"] == "end" and end["state"] == "COMPLETE" and end["rate_ul_h"] == 0
    assert end["percent"] == 100 and "VTBI_DONE" in end["alarms"]
    assert "\x1b[" not in out                       # no colour when not on a terminal
    assert fake.tlm_period_ms == 0                  # telemetry switched off again
    fake.state = "RUNNING"
    code, out, _ = run(capsys, "--port", fake.path, "--json", "monitor", "--for", "0.3")
    objs = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and objs[-1]["type"] == "end" and objs[-1]["state"] == "RUNNING"


@pytest.mark.req("REQ-HOST-09")
def test_monitor_view_agrees_with_itself():
    """In ALARM the panel and the summary disagreed on the rate; at COMPLETE the rate was
    still shown; time left was in ms; the bar was red during a normal infusion."""
    from host.client import Status
    from host.monitor import PRIO_COLOUR, View, clock
    st = Status(state="RUNNING", rate_ul_h=52500, vtbi_nl=35_000_000, del_nl=3_500_000,
                el_ms=240_000, p_mmhg=20, alarm="NONE", prio=0, drug="ketamine")
    v = View(st, conc_ug_ml=1000)
    assert v.rate_ul_h == 52500 and v.percent == 10.0 and v.dose_rate == "52.5 mg/h"
    assert clock(v.remaining_ms) == "0:36:00" and clock(v.el_ms) == "0:04:00"
    assert v.priority == 0                     # no alarm: the bar takes the state's green
    for state in ("ALARM", "PAUSED", "COMPLETE", "IDLE"):
        v.state = state
        assert v.rate_ul_h == 0 and v.to_json()["rate_ul_h"] == 0 and " 0 mL/h " in v.line()
        assert v.remaining_ms is None
    v.active = {"OCCLUSION": 3}
    assert PRIO_COLOUR[v.priority] == "bold red"


# ------------------------------------------------------------------------------ firmware flash
# The fake mpremote keeps the board's writable filesystem in <state>/board, the ROMFS
# partition in <state>/rom.img, and logs every command to <state>/calls. With
# <state>/no-romfs it answers `romfs deploy` as mpremote does on a build without ROMFS.

FAKE_MPREMOTE = textwrap.dedent("""
    import os, shutil, sys
    state, port, args = sys.argv[1], sys.argv[3], sys.argv[4:]
    assert sys.argv[2] == "connect", sys.argv
    board = os.path.join(state, "board")
    with open(os.path.join(state, "calls"), "a") as f:
        f.write(" ".join(args) + "\\n")

    def fail(msg):
        sys.exit(print("mpremote: " + msg, file=sys.stderr) or 1)

    cmd, rest = args[:2], [a for a in args[2:] if a != "-r"]
    if cmd == ["fs", "cp"]:
        for s in rest[:-1]:
            target = os.path.join(board, rest[-1][1:] or os.path.basename(s))
            if os.path.isdir(s):
                shutil.copytree(s, target, dirs_exist_ok=True)
            else:
                shutil.copy(s, target)
    elif cmd == ["fs", "ls"]:
        print("ls :")
        for name in sorted(os.listdir(board)):
            path = os.path.join(board, name)
            isdir = os.path.isdir(path)
            print("{:12} {}{}".format(0 if isdir else os.path.getsize(path), name,
                                      "/" if isdir else ""))
    elif cmd == ["fs", "rm"]:
        for p in rest:
            path = os.path.join(board, p[1:])
            if not os.path.exists(path):
                fail("rm: No such file or directory.")
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    elif cmd == ["romfs", "deploy"]:
        image = open(rest[0], "rb").read()
        assert rest[0].endswith((".romfs", ".img")) and image[:3] == b"\\xd2\\xcd\\x31"
        print("Image size is {} bytes".format(len(image)))
        if os.path.exists(os.path.join(state, "no-romfs")):
            fail("ROMFS is not enabled on this device")
        open(os.path.join(state, "rom.img"), "wb").write(image)
    elif args != ["reset"]:
        fail("fake: unexpected command {}".format(args))
""")


@pytest.fixture
def board(tmp_path, monkeypatch, fake):
    """The fake board's state folder; mpremote is the fake, the firmware version the fake's."""
    state = tmp_path / "state"
    (state / "board").mkdir(parents=True)
    script = tmp_path / "mpremote.py"
    script.write_text(FAKE_MPREMOTE)
    monkeypatch.setenv("INFUSEKIT_MPREMOTE", f"{sys.executable} {script} {state}")
    import host.firmware_tools as ft
    monkeypatch.setattr(ft, "firmware_version", lambda: "0.1.0")
    return state


def calls(state):
    return (state / "calls").read_text().splitlines()


def test_firmware_flash_files_provisions_a_private_key(fake, board, capsys, tmp_path):
    store = tmp_path / "keys"
    code, out, err = run(capsys, "--port", fake.path, "--json", "--key-store", str(store),
                         "firmware", "flash", "--board", "sim", "--files")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["dev"] == "FAKE-1" and obj["fw"] == "0.1.0" and obj["mode"] == "files"
    key_file = store / "FAKE-1.key"
    key = key_file.read_bytes()
    assert len(key) == 32 and (board / "board" / "key.bin").read_bytes() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (board / "board" / "pumpcore" / "controller.mpy").exists()
    assert key.hex() not in out + err and key.hex().upper() not in out + err
    assert calls(board) == ["fs cp -r boards druglib.json druglib.json.sha256 main.py pumpcore :",
                            "fs cp key.bin :key.bin", "fs cp ctr.txt :ctr.txt", "reset"]
    assert KeyStore(store).load("FAKE-1") == key


ROM_IMPORT = """
import sys, vfs
vfs.mount(vfs.VfsRom(open({image!r}, 'rb').read()), '/rom')
sys.path[:] = ['', '.frozen', '/lib', '/rom', '/rom/lib']   # '' (the littlefs root) first
import boards.sim, pumpcore.protocol
print(boards.sim.__file__, pumpcore.protocol.__file__)
"""


def test_firmware_flash_romfs_end_to_end(fake, board, capsys, tmp_path):
    """Default mode: image to the ROMFS partition, stale code copies removed from littlefs,
    main.py and data copied, the log and other files left alone; then the code imports from
    /rom with the board's littlefs root first in sys.path."""
    fs = board / "board"
    for stale in ("pumpcore/controller.mpy", "boards/sim.mpy", "log/0001.log"):
        (fs / stale).parent.mkdir(exist_ok=True)
        (fs / stale).write_bytes(b"old")
    store = tmp_path / "keys"
    code, out, err = run(capsys, "--port", fake.path, "--json", "--key-store", str(store),
                         "firmware", "flash", "--board", "sim")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["mode"] == "romfs" and obj["dev"] == "FAKE-1" and obj["fw"] == "0.1.0"
    deploy, *after = calls(board)
    assert deploy.startswith("romfs deploy ") and deploy.endswith("/firmware.romfs")
    assert after == ["fs ls :", "fs rm -r :boards :pumpcore",
                     "fs cp -r druglib.json druglib.json.sha256 main.py :",
                     "fs cp key.bin :key.bin", "fs cp ctr.txt :ctr.txt", "reset"]
    assert sorted(p.name for p in fs.iterdir()) == ["ctr.txt", "druglib.json", "druglib.json.sha256",
                                                    "key.bin", "log", "main.py"]
    assert (fs / "ctr.txt").read_bytes() == b"0"      # re-provisioning resets the counter
    assert (fs / "log" / "0001.log").read_bytes() == b"old"
    key = (store / "FAKE-1.key").read_bytes()
    assert (fs / "key.bin").read_bytes() == key and key.hex() not in out + err
    p = run_micropython(ROM_IMPORT.format(image=str(board / "rom.img")), cwd=fs)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["/rom/boards/sim.mpy", "/rom/pumpcore/protocol.mpy"]


def test_firmware_flash_romfs_without_stale_copies_removes_nothing(fake, board):
    res = flash(fake.path, "sim", boot_wait_s=0, timeout=1.0)
    assert res.mode == "romfs" and res.key_file is None
    assert [c.split()[:2] for c in calls(board)] == [["romfs", "deploy"], ["fs", "ls"],
                                                     ["fs", "cp"], ["reset"]]


def test_firmware_flash_romfs_refused_without_partition(fake, board, capsys):
    """--romfs on a build without ROMFS: one clear error naming --files, nothing changed."""
    (board / "no-romfs").touch()
    (board / "board" / "pumpcore").mkdir()
    code, out, err = run(capsys, "--port", fake.path, "--json",
                         "firmware", "flash", "--board", "sim", "--no-key", "--romfs")
    obj = json.loads(out)
    assert code == 1 and obj["ok"] is False and obj["error"] == "firmware"
    assert "no ROMFS partition" in obj["message"] and "--files" in obj["message"]
    assert len(err.strip().splitlines()) == 1
    assert [c.split()[:2] for c in calls(board)] == [["romfs", "deploy"]]
    assert [p.name for p in (board / "board").iterdir()] == ["pumpcore"]


def test_firmware_flash_falls_back_to_files_without_partition(fake, board, capsys):
    """The default on a build without ROMFS (the stock Pico firmware): files, and says why."""
    (board / "no-romfs").touch()
    code, out, err = run(capsys, "--port", fake.path, "--json",
                         "firmware", "flash", "--board", "sim", "--no-key")
    obj = json.loads(out)
    assert code == 0 and obj["mode"] == "files", (out, err)
    assert "no ROMFS partition" in obj["note"] and "heap" in obj["note"]
    assert [c.split()[:2] for c in calls(board)] == [["romfs", "deploy"], ["fs", "cp"], ["reset"]]
    assert (board / "board" / "pumpcore" / "protocol.mpy").exists()
    code, out, err = run(capsys, "--port", fake.path, "firmware", "flash", "--board", "sim",
                         "--no-key")
    assert code == 0 and "(files)" in out and "note: " in out and "no ROMFS partition" in out


def test_firmware_flash_romfs_refuses_data_inside_a_code_package(fake, board, tmp_path,
                                                                 monkeypatch):
    import shutil
    from host._firmware import firmware_dir
    src = tmp_path / "fw"
    shutil.copytree(firmware_dir(), src, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "pumpcore" / "table.json").write_text("{}")
    monkeypatch.setenv("INFUSEKIT_FIRMWARE", str(src))
    with pytest.raises(FirmwareToolError, match="pumpcore/table.json sit in a code package"):
        flash(fake.path, "sim", boot_wait_s=0)
    assert not (board / "calls").exists()
