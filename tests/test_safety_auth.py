"""Security (docs/safety/hazards.md H-UNAUTH): with authentication required, therapy commands
that are unsigned, wrongly signed or replayed are refused with ER AUTH, change nothing and
are logged; status stays open; the key never appears in anything the pump sends or logs."""
import binascii
import hashlib
import hmac

import pytest

from conftest import FIRMWARE

KEY = bytes(range(1, 33))
T0 = (1 << 30) - 60000


def _crc(body: bytes) -> bytes:
    return body + b"*%04X\n" % binascii.crc_hqx(body, 0)


def _signed(body: str, ctr: int, key=KEY) -> bytes:
    b = f"{body} ctr={ctr}".encode()
    mac = hmac.new(key, b, hashlib.sha256).hexdigest()[:16].upper().encode()
    return _crc(b + b" mac=" + mac)


@pytest.fixture
def pump(monkeypatch):
    from hil_sim.runtime import InProcessRuntime
    rt = InProcessRuntime(FIRMWARE)
    board_cls = rt._mod.Board
    monkeypatch.setattr(board_cls, "key", KEY, raising=False)
    monkeypatch.setattr(board_cls, "counter", 0, raising=False)
    h = rt._mod.Harness(str(FIRMWARE / "druglib.json"))
    state = {"t": T0}

    def send(frame: bytes) -> str:
        _, _, _, tx = h.slice(state["t"], 50, 1, 20, 0, 0, 4000, [(0, frame)])
        state["t"] += 50
        return b"".join(c for _, c in tx).decode()

    boot = h.app.ctl.boot
    assert " OK" in send(_crc(b"1 CFG boot=%d auth=1" % boot)), "a provisioned pump turns auth on"
    send.boot = boot
    return h, send


def _status(send, rid):
    out = send(f"{rid} STATUS\n".encode())
    line = [ln for ln in out.splitlines() if ln.startswith(f"{rid} OK")][0]
    return dict(f.split("=", 1) for f in line.split("*")[0].split()[2:])


@pytest.mark.req("REQ-SEC-01", "REQ-SEC-02", "REQ-SEC-03", "REQ-SEC-04")
def test_unsigned_wrong_and_replayed_commands_are_refused_and_logged(pump):
    h, send = pump
    b = send.boot
    prog = f"PROG boot={b} rate_ul_h=60000 vtbi_nl=1000000"
    assert "2 ER AUTH" in send(_crc(f"2 {prog}".encode()))                      # unsigned
    assert "3 ER AUTH" in send(_signed(f"3 {prog}", 5, key=b"\x00" * 32))       # wrong key
    assert _status(send, 4)["state"] == "IDLE"                                  # status open
    assert "5 OK" in send(_signed(f"5 {prog}", 7))                              # good
    assert "6 OK" in send(_signed(f"6 START boot={b}", 8))
    assert "7 ER AUTH" in send(_signed(f"7 TITRATE boot={b} rate_ul_h=90000", 8))  # replay
    assert "8 ER AUTH" in send(_signed(f"8 TITRATE boot={b} rate_ul_h=90000", 3))  # older
    st = _status(send, 9)
    assert st["state"] == "RUNNING" and st["rate_ul_h"] == "60000"
    recs = h.app.log.records()
    refused = [r for r in recs if r.ev == b"RSP" and b" ER AUTH" in r.data]
    assert len(refused) == 4, [(r.ev, r.data) for r in recs]
    cmds = [r.data for r in recs if r.ev == b"CMD"]
    assert any(c.startswith(b"2 PROG") for c in cmds) and any(c.startswith(b"7 TITRATE") for c in cmds)


@pytest.mark.req("REQ-SEC-05")
def test_key_never_leaves_the_pump(pump):
    h, send = pump
    out = send(b"1 HELLO\n") + send(_signed(f"2 PROG boot={send.boot} rate_ul_h=60000 vtbi_nl=1000000", 9))
    # the key lives on the flash in key.bin and the log's key ring (lk<id>) only, as on a
    # Pico: never in the log, the settings, the counter or a program file
    flash = b"".join(bytes(v) for n, v in h.store.files.items()
                     if n != "key.bin" and not n.startswith("lk"))
    for blob in (out.encode(), flash):
        assert KEY not in blob
        assert KEY.hex().encode() not in blob.lower() and KEY.hex().upper().encode() not in blob
