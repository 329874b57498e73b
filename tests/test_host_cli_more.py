"""The CLI commands added with protocol v0's extensions, against the scripted fake pump:
bolus, titrate, standby, silence, vitals, config, log (JSONL/CSV), monitor, firmware flash
with key provisioning (mpremote replaced by a recorder)."""
from __future__ import annotations

import csv
import io
import json
import stat
import sys
import textwrap
import threading
import time

from host import cli
from host.auth import KeyStore


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


def test_monitor_until_complete_plain_and_json(fake, capsys):
    fake.rate_ul_h, fake.vtbi_nl, fake.state = 36000, 1000000, "RUNNING"

    def finish():
        time.sleep(0.4)
        fake.del_nl = fake.vtbi_nl
        fake.state = "COMPLETE"
        from host import codec
        fake.write(codec.encode_event("ALARM", {"alarm": "VTBI_DONE", "prio": 1}))
        fake.write(codec.encode_event("STATE", {"state": "COMPLETE"}))
    threading.Thread(target=finish).start()
    code, out, err = run(capsys, "--port", fake.path, "monitor", "--period", "50")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("RUNNING  36 mL/h  0 mL of 1 mL (0.0 %)  left 1 min 40 s")
    assert "ALARM VTBI_DONE (priority 1)" in lines and "state COMPLETE" in lines
    assert "\x1b[" not in out                       # no colour when not on a terminal
    assert fake.tlm_period_ms == 0                  # telemetry switched off again
    fake.state = "RUNNING"
    code, out, _ = run(capsys, "--port", fake.path, "--json", "monitor", "--for", "0.3")
    obj = json.loads(out)
    assert code == 0 and obj["state"] == "RUNNING" and obj["remaining_ms"] == 0


def test_firmware_flash_provisions_a_private_key(fake, capsys, tmp_path, monkeypatch):
    board = tmp_path / "board"
    board.mkdir()
    recorder = tmp_path / "mpremote.py"
    recorder.write_text(textwrap.dedent(f"""
        import os, shutil, sys
        args = sys.argv[1:]
        assert args[:2] == ["connect", {fake.path!r}], args
        args = args[2:]
        with open({str(tmp_path / 'calls')!r}, "a") as f:
            f.write(" ".join(args) + "\\n")
        if args[:2] == ["fs", "cp"]:
            srcs, dest = args[2:-1], args[-1]
            srcs = [s for s in srcs if s != "-r"]
            for s in srcs:
                target = os.path.join({str(board)!r}, dest[1:] or os.path.basename(s))
                if os.path.isdir(s):
                    shutil.copytree(s, os.path.join({str(board)!r}, s))
                else:
                    shutil.copy(s, target)
    """))
    monkeypatch.setenv("INFUSEKIT_MPREMOTE", f"{sys.executable} {recorder}")
    import host.firmware_tools as ft
    monkeypatch.setattr(ft, "firmware_version", lambda: "0.1.0")
    store = tmp_path / "keys"
    code, out, err = run(capsys, "--port", fake.path, "--json", "--key-store", str(store),
                         "firmware", "flash", "--board", "sim")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["dev"] == "FAKE-1" and obj["fw"] == "0.1.0"
    key_file = store / "FAKE-1.key"
    key = key_file.read_bytes()
    assert len(key) == 32 and (board / "key.bin").read_bytes() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (board / "pumpcore" / "controller.mpy").exists()
    assert key.hex() not in out + err and key.hex().upper() not in out + err
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[-1] == "reset" and calls[-2] == "fs cp key.bin :key.bin"
    assert KeyStore(store).load("FAKE-1") == key
