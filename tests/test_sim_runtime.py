"""Firmware runtimes (hil_sim.runtime): in-process CPython vs the real micropython process."""
import binascii
import textwrap

import pytest

from hil_sim.runtime import (DEFAULT_FIRMWARE_DIR, FirmwareError, InProcessRuntime,
                             MicroPythonRuntime, build_mpy, make_runtime, stdio_command)

T0 = 2**30 - 1000          # the script crosses the 2**30 wrap
GUARD_S = 120.0            # wall seconds for a reply that comes: a hang guard only


def frame(body: bytes) -> bytes:
    return b"%s*%04X\n" % (body, binascii.crc_hqx(body, 0))


def script():
    """Slices exercising commands, delivery, telemetry, an occlusion alarm and the wrap."""
    rx_at = {
        1: [(0, b"1 HELLO\n"), (2, frame(b"2 PROG boot=1 rate_ul_h=52500 vtbi_nl=35000000"))],
        2: [(1, frame(b"3 START boot=1")), (3, frame(b"4 TLM period_ms=100"))],
        9: [(0, b"5 STATUS\n"), (1, b"garbage*0000\n"), (2, b"x" * 300 + b"\n")],
        30: [(0, frame(b"6 ACK boot=1"))],
    }
    t = T0
    for i in range(40):
        press = 20 if i < 20 else 400            # occlusion from slice 20
        if i >= 28:
            press = 10
        yield (t, 50, 4, press, 0, 0, 4000 - i, rx_at.get(i, []))
        t += 200
    # calls faster than the control tick
    for i in range(5):
        yield (t, 5, 10, 10, 0, 0, 3900, [(3, b"7 STATUS\n")] if i == 2 else [])
        t += 50


def run_script(rt):
    return [rt.slice(*args) for args in script()]


@pytest.fixture(scope="module")
def cpython_outputs():
    rt = InProcessRuntime()
    try:
        return run_script(rt)
    finally:
        rt.close()


def test_inprocess_runtime_runs_the_script(cpython_outputs):
    outs = cpython_outputs
    tx = b"".join(b for o in outs for _, b in o[3])
    assert b"1 OK dev=" in tx and b"! EV STATE state=RUNNING" in tx
    assert any(sum(o[0]) > 0 for o in outs)                  # it delivered
    assert any(o[2] == 3 for o in outs)                      # occlusion: high priority
    assert b"! TL " in tx


@pytest.mark.micropython
@pytest.mark.parametrize("compiled", [False, True], ids=["py", "mpy"])
def test_micropython_runtime_agrees_with_cpython(cpython_outputs, compiled):
    with MicroPythonRuntime(compiled=compiled) as rt:
        assert rt.fw_version
        outs = run_script(rt)
    for i, (a, b) in enumerate(zip(cpython_outputs, outs)):
        assert a == b, f"slice {i} differs"
    assert len(outs) == len(cpython_outputs)


@pytest.mark.micropython
def test_build_mpy_is_cached(tmp_path):
    a = build_mpy()
    assert (a / "boards" / "sim.mpy").exists() and (a / "druglib.json").exists()
    assert build_mpy() == a
    out = build_mpy(out_dir=tmp_path / "out")
    assert (out / "pumpcore" / "controller.mpy").exists()
    assert not list(out.rglob("controller.py"))


def test_make_runtime():
    rt = make_runtime("cpython")
    assert rt.name == "cpython"
    with pytest.raises(ValueError):
        make_runtime("jython")
    assert "serve_stdio" in stdio_command(DEFAULT_FIRMWARE_DIR)


def _fake_firmware(tmp_path, body):
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "__init__.py").write_text("")
    (tmp_path / "boards" / "sim.py").write_text(textwrap.dedent(body))
    (tmp_path / "druglib.json").write_text("{}")
    return tmp_path


@pytest.mark.micropython
def test_firmware_traceback_is_surfaced(tmp_path):
    fw = _fake_firmware(tmp_path, """
        import sys
        def serve_stdio(lib):
            print("READY fake")
            sys.stdin.readline()
            print("debug line")
            boom = {}
            boom["missing_key_xyz"]
    """)
    rt = MicroPythonRuntime(fw, timeout_s=GUARD_S)
    with pytest.raises(FirmwareError) as e:
        rt.slice(0, 50, 1, 0, 0, 0, 4000, [])
    assert "missing_key_xyz" in str(e.value) and "KeyError" in e.value.output
    assert rt.log[0] == "debug line"
    rt.close()                                              # idempotent


@pytest.mark.micropython
def test_firmware_hang_times_out(tmp_path):
    fw = _fake_firmware(tmp_path, """
        import sys
        def serve_stdio(lib):
            print("READY fake")
            while True:
                pass
    """)
    # the boot (READY) comes, however slowly a loaded machine starts the process; the bound
    # under test is then short: the fake firmware never answers, so any bound is reached
    # (it was 0.5 s for the boot too, which a loaded machine need not meet)
    rt = MicroPythonRuntime(fw, timeout_s=GUARD_S)
    rt.timeout_s = 0.5
    with pytest.raises(FirmwareError, match="no reply within 0.5 s"):
        rt.slice(0, 50, 1, 0, 0, 0, 4000, [])


@pytest.mark.micropython
def test_firmware_that_dies_at_boot(tmp_path):
    fw = _fake_firmware(tmp_path, """
        def serve_stdio(lib):
            raise ValueError("bad drug library")
    """)
    with pytest.raises(FirmwareError, match="bad drug library"):
        MicroPythonRuntime(fw, timeout_s=GUARD_S)
