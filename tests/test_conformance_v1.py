"""Protocol v1 conformance: a client written from docs/protocol.md alone, against the pump
under both runtimes (the firmware in-process under CPython, and the real `micropython`
interpreter over the slice protocol).

Nothing here imports host/ or pumpcore: frames are built with binascii.crc_hqx and hmac as
the spec describes them, replies are read with the spec's grammar (tests/protocol_grammar.py),
and every frame the pump sends during a test is checked against that grammar. Each test
names the spec section it checks; the regression tests of issue 11's defects are here.
"""
import binascii
import hashlib
import hmac
import json
import re

import pytest

from conftest import FIRMWARE
from protocol_grammar import STATUS_KEYS, pump_frame_error, status_error

KEY = bytes(range(32))
T0 = (1 << 30) - 30000           # 30 s before the pump clock wraps
TICK = 50
RUNTIMES = ["cpython", pytest.param("micropython", marks=pytest.mark.micropython)]


def crc(body: str) -> bytes:
    return b"%s*%04X\n" % (body.encode(), binascii.crc_hqx(body.encode(), 0))


def signed(body: str, ctr: int, key=KEY) -> bytes:
    b = f"{body} ctr={ctr}"
    mac = hmac.new(key, b.encode(), hashlib.sha256).hexdigest()[:16].upper()
    return crc(f"{b} mac={mac}")


def fields(line: bytes) -> dict:
    body = line.split(b"*")[0].decode()
    return dict(t.split("=", 1) for t in body.split(" ")[2:] if "=" in t)


class Pump:
    """The link: bytes in, frames out, in virtual time; every frame sent is grammar-checked."""

    def __init__(self, kind, key=None, monkeypatch=None):
        from hil_sim.runtime import make_runtime
        if key is not None:
            monkeypatch.setenv("INFUSEKIT_SIM_KEY", key.hex())
        self.rt = make_runtime(kind, FIRMWARE)
        self.t = T0
        self.enc = 0
        self.dither = 0
        self.frames: list[bytes] = []
        self.run(1)

    def close(self):
        self.rt.close()

    def run(self, n=1, rx=b""):
        out = []
        for k in range(n):
            self.dither ^= 1
            steps, _en, _al, tx = self.rt.slice(self.t, TICK, 1, 20 + self.dither, self.enc, 0, 4000,
                                                [(0, rx)] if (rx and k == 0) else [])
            self.enc += sum(steps)
            self.t = (self.t + TICK) & ((1 << 30) - 1)
            data = b"".join(c for _, c in tx)
            for line in data.split(b"\n")[:-1]:
                why = pump_frame_error(line)
                assert why is None, (why, line)
                self.frames.append(line)
                out.append(line)
        return out

    def send(self, frame: bytes):
        """Send raw bytes; return (reply line, other frames) of that tick."""
        lines = self.run(1, frame)
        replies = [ln for ln in lines if not ln.startswith(b"!")]
        assert len(replies) == 1, (frame, lines)
        return replies[0].split(b"*")[0], [ln for ln in lines if ln.startswith(b"!")]

    def ask(self, body: str, typed=False):
        return self.send((body.encode() + b"\n") if typed else crc(body))[0]

    def hello(self):
        return fields(self.ask("1 HELLO", typed=True))

    def status(self):
        line = self.send(b"2 STATUS\n")[0]
        full = [ln for ln in self.frames if ln.startswith(b"2 ")][-1]     # with its CRC
        assert status_error(full) is None, (status_error(full), full)
        return fields(line)

    def restart(self):
        self.rt.restart("power")
        self.run(1)


@pytest.fixture(params=RUNTIMES)
def pump(request):
    p = Pump(request.param)
    yield p
    p.close()


@pytest.fixture(params=RUNTIMES)
def keyed(request, monkeypatch):
    p = Pump(request.param, key=KEY, monkeypatch=monkeypatch)
    yield p
    p.close()


# ------------------------------------------------------------------ Frame grammar, HELLO
@pytest.mark.req("REQ-COM-07")
def test_hello_says_version_1_and_the_boot(pump):
    h = pump.hello()
    assert h["proto"] == "1" and re.fullmatch(r"[1-9][0-9]{0,9}", h["boot"]) and h["tick_ms"] == "50"
    assert pump.ask("3 HELLO").startswith(b"3 OK dev=")           # with a CRC too
    # an id with a leading zero is not an id: "00042 HELLO" is refused, not answered as 42
    assert pump.ask("00042 HELLO").startswith(b"? ER SYNTAX")


@pytest.mark.req("REQ-COM-07")
@pytest.mark.parametrize("body", ["7  STATUS", "7 STATUS ", "7\tSTATUS", "7 STATUS x", "7",
                                  "7 STATUS " + " ".join(f"k{i}=1" for i in range(13)),
                                  "7 STATUS drug=k\xe9t"])
def test_malformed_frames_with_a_good_crc_are_answered_with_their_id(pump, body):
    frame = body.encode("latin-1")
    rep, _ = pump.send(b"%s*%04X\n" % (frame, binascii.crc_hqx(frame, 0)))
    assert rep.startswith(b"7 ER SYNTAX "), rep


@pytest.mark.req("REQ-COM-07")
def test_what_the_grammar_forbids_is_refused(pump):
    assert pump.ask(" 7 STATUS").startswith(b"? ER SYNTAX")            # leading space
    lower = b"8 STATUS*%04x\n" % binascii.crc_hqx(b"8 STATUS", 0)
    if lower != lower.upper():
        assert pump.send(lower)[0].startswith(b"? ER CRC")            # lower-case CRC
    # only HELLO and STATUS may go without a CRC
    assert pump.ask("9 HB", typed=True) == b"9 ER CRC this command needs a CRC"
    assert pump.ask("10 LOG from=0", typed=True).startswith(b"10 ER CRC")
    assert pump.ask("11 STATUS", typed=True).startswith(b"11 OK state=IDLE")
    # CR before LF is ignored, and counts toward the 160 bytes
    assert pump.send(crc("12 STATUS")[:-1] + b"\r\n")[0].startswith(b"12 OK")

    def padded(total):                  # a frame of `total` bytes with CR LF
        body = "13 STATUS"
        while len(crc(body)) + 1 + 34 <= total:
            body += " p%d=%s" % (len(body) % 10, "x" * 30)
        body += " z=" + "y" * (total - len(crc(body)) - 1 - 3)
        frame = crc(body)[:-1] + b"\r\n"
        assert len(frame) == total, (len(frame), total)
        return frame
    assert pump.send(padded(160))[0].startswith(b"13 ER ")        # read whole: not LEN
    assert not pump.send(padded(160))[0].startswith(b"? ER LEN")
    assert pump.send(padded(161))[0].startswith(b"? ER LEN")


@pytest.mark.req("REQ-COM-07")
def test_numbers(pump):
    b = pump.hello()["boot"]
    # ten digits are a number: the largest VTBI
    rep = pump.ask(f"3 PROG boot={b} rate_ul_h=1200000 vtbi_nl=1000000000")
    assert rep.startswith(b"3 OK"), rep
    for bad in ("rate_ul_h=052500 vtbi_nl=1000000", "rate_ul_h=52500 vtbi_nl=1073741824",
                "rate_ul_h=-1 vtbi_nl=1000000"):
        rep = pump.ask(f"4 PROG boot={b} {bad}")
        assert rep.startswith(b"4 ER ARG not a number"), (bad, rep)
    assert pump.status()["vtbi_nl"] == "1000000000"
    # a 13-character key
    rep = pump.ask(f"5 CFG boot={b} vitals_age_ms=600000")
    assert rep.startswith(b"5 OK") and fields(rep)["vitals_age_ms"] == "600000"


@pytest.mark.req("REQ-COM-07")
def test_error_codes_follow_the_table(pump):
    b = pump.hello()["boot"]
    assert pump.ask("3 TLM").startswith(b"3 ER ARG")
    assert pump.ask(f"4 CFG boot={b}").startswith(b"4 ER ARG")
    assert pump.ask("5 SETTINGS").startswith(b"5 OK occl_mmhg=")
    assert pump.ask(f"6 STEP boot={b} i=0 rate_ul_h=10000 dur_ms=0") == b"6 ER RANGE dur_ms must be positive"
    assert pump.ask(f"7 PROG boot={b} steps=2").startswith(b"7 ER ARG step not stored")
    assert pump.ask(f"8 PROG boot={b} drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000 "
                    f"confirm=01").startswith(b"8 ER ARG not a number")
    assert pump.ask(f"9 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000").startswith(b"9 OK")
    assert pump.ask(f"10 START boot={b}").startswith(b"10 OK state=RUNNING")
    pump.run(4)
    assert pump.ask(f"11 TITRATE boot={b} rate_ul_h=1200001").startswith(b"11 ER RANGE")
    assert pump.ask(f"12 BOLUS boot={b} vol_nl=100000 rate_ul_h=1200001").startswith(b"12 ER RANGE")
    assert pump.ask("13 TLM period_ms=9").startswith(b"13 ER RANGE period_ms must be 0 or 10..60000")
    assert pump.ask("14 TLM period_ms=60001").startswith(b"14 ER RANGE")
    assert pump.ask("15 TLM period_ms=10") == b"15 OK period_ms=10"
    assert pump.ask("16 TLM period_ms=60000") == b"16 OK period_ms=60000"


# ------------------------------------------------------------------ Boot number
@pytest.mark.req("REQ-COM-08")
def test_a_request_does_not_outlive_a_reboot(pump):
    """Issue 11: a retry of a request executed before a power cut was executed again."""
    b = pump.hello()["boot"]
    assert pump.ask(f"3 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000").startswith(b"3 OK")
    start = crc(f"4 START boot={b}")
    assert pump.send(start)[0] == b"4 OK state=RUNNING"
    pump.run(20)
    pump.ask("5 PAUSE")
    pump.restart()                                       # power cut
    h = pump.hello()
    assert h["boot"] != b
    before = pump.status()
    rep, evs = pump.send(start)                          # the host retries the lost START
    assert rep.startswith(b"4 ER BOOT"), rep
    assert not evs and pump.status()["state"] == before["state"] != "RUNNING"
    assert pump.ask("6 START").startswith(b"6 ER BOOT missing boot")
    # the host re-reads and decides again: with the new boot it may resume
    assert pump.ask(f"7 ACK boot={h['boot']}").startswith(b"7 OK")
    assert pump.ask(f"8 RESUME boot={h['boot']}") == b"8 OK state=RUNNING"
    # stopping never needs the boot
    assert pump.ask(f"9 STOP boot={b}") == b"9 OK state=IDLE"


# ------------------------------------------------------------------ retries
def _crc_twins():
    """Two TLM frames with the same id and the same CRC-16 but different periods."""
    seen = {}
    for p in range(10, 60001):
        c = binascii.crc_hqx(b"7 TLM period_ms=%d" % p, 0)
        if c in seen:
            return seen[c], p
        seen[c] = p
    raise AssertionError("no CRC twins")


@pytest.mark.req("REQ-COM-04")
def test_retry_cache_matches_the_whole_frame(pump):
    b = pump.hello()["boot"]
    pump.ask(f"3 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000")
    rep1, ev1 = pump.send(crc(f"4 START boot={b}"))
    rep2, ev2 = pump.send(crc(f"4 START boot={b}"))
    assert rep1 == rep2 == b"4 OK state=RUNNING" and ev1 and not ev2
    p1, p2 = _crc_twins()
    r1 = pump.ask(f"7 TLM period_ms={p1}")
    r2 = pump.ask(f"7 TLM period_ms={p2}")
    assert r1 == b"7 OK period_ms=%d" % p1 and r2 == b"7 OK period_ms=%d" % p2


# ------------------------------------------------------------------ authentication
@pytest.mark.req("REQ-SEC-07")
def test_a_pump_without_a_key_refuses_signed_frames(pump):
    b = pump.hello()["boot"]
    assert "ctr" not in pump.hello()
    pump.ask(f"3 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000")
    assert pump.ask(f"4 START boot={b} ctr=1 mac=0123456789ABCDEF").startswith(b"4 ER AUTH")
    assert pump.ask(f"5 START boot={b} ctr=1").startswith(b"5 ER AUTH")
    assert pump.status()["state"] == "PROGRAMMED"


@pytest.mark.req("REQ-SEC-06", "REQ-SEC-08")
def test_signatures_per_the_command_table(keyed):
    p = keyed
    h = p.hello()
    b, ctr = h["boot"], int(h["ctr"])
    assert h["auth"] == "0"
    assert p.send(signed(f"3 CFG boot={b} auth=1", ctr + 1))[0].startswith(b"3 OK")
    ctr += 1
    assert p.hello()["auth"] == "1" and int(p.hello()["ctr"]) == ctr
    # guarded commands unsigned: refused, nothing changes
    for i, word in enumerate(("PROG rate_ul_h=60000 vtbi_nl=9000000", "ACK", "SILENCE", "CFG occl_mmhg=300",
                              "VITALS sbp=120 dbp=80 hr=70 spo2=98")):
        assert p.ask(f"{10 + i} {word.split()[0]} boot={b} {' '.join(word.split()[1:])}".rstrip()
                     ).startswith(b"%d ER AUTH" % (10 + i)), word
    # reads and stopping never need a signature
    assert p.ask("20 TLM period_ms=0") == b"20 OK period_ms=0"
    assert p.ask("21 HB") == b"21 OK"
    # a refused signed frame uses up no counter
    assert p.send(signed(f"22 START boot={b}", ctr + 1))[0].startswith(b"22 ER STATE")
    assert int(p.hello()["ctr"]) == ctr
    assert p.send(signed(f"23 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000", ctr + 1))[0].startswith(b"23 OK")
    ctr += 1
    assert p.send(signed(f"24 START boot={b}", ctr + 1))[0] == b"24 OK state=RUNNING"
    ctr += 1
    p.run(4)
    assert p.ask(f"25 STANDBY boot={b}").startswith(b"25 ER STATE")   # RUNNING: not allowed
    assert p.ask("26 PAUSE") == b"26 OK state=PAUSED"
    assert p.ask(f"27 STANDBY boot={b}").startswith(b"27 ER AUTH")
    # a counter beyond the window is refused: no single frame can exhaust the counter
    assert p.send(signed(f"28 RESUME boot={b}", 999999999))[0].startswith(b"28 ER AUTH ctr too far")
    assert p.send(signed(f"29 RESUME boot={b}", ctr + 1000001))[0].startswith(b"29 ER AUTH")
    assert p.send(signed(f"30 RESUME boot={b}", ctr + 1000000))[0] == b"30 OK state=RUNNING"
    ctr += 1000000
    assert p.ask("31 STOP") == b"31 OK state=IDLE"
    # the counter survives a power cut; the old boot's frames are dead
    p.restart()
    h2 = p.hello()
    assert int(h2["ctr"]) == ctr and h2["boot"] != b and h2["auth"] == "1"
    assert p.send(signed(f"32 CFG boot={b} auth=0", ctr + 1))[0].startswith(b"32 ER BOOT")
    assert p.send(signed(f"33 CFG boot={h2['boot']} auth=0", ctr + 1))[0].startswith(b"33 OK")


# ------------------------------------------------------------------ telemetry
@pytest.mark.req("REQ-COM-07")
def test_telemetry_goes_out_on_control_ticks(pump):
    b = pump.hello()["boot"]
    pump.ask(f"3 PROG boot={b} rate_ul_h=600000 vtbi_nl=90000000")
    pump.ask(f"4 START boot={b}")
    assert pump.ask("5 TLM period_ms=50") == b"5 OK period_ms=50"
    tl = [fields(ln) for ln in pump.run(40) if ln.startswith(b"! TL ")]
    assert len(tl) == 40
    el = [int(f["el_ms"]) for f in tl]
    assert all(b - a == TICK for a, b in zip(el, el[1:])), el     # a new tick every frame


@pytest.mark.req("REQ-COM-07")
def test_telemetry_between_control_ticks_goes_out_at_its_time(pump):
    """TLM period_ms=10 (host.telemetry_hz >= 50): the simulated board wakes for frames due
    between control ticks (Controller.wake_at), so each goes out at its own virtual time —
    the slice reports it d ms after call k as k + d/step — and says that time (t_ms) and the
    age of the tick whose figures it repeats (age_ms)."""
    b = pump.hello()["boot"]
    pump.ask(f"3 PROG boot={b} rate_ul_h=600000 vtbi_nl=90000000")
    pump.ask(f"4 START boot={b}")
    pump.run(10)
    t_tick = pump.t - TICK                           # the last call ran a control tick
    assert pump.ask("5 TLM period_ms=10") == b"5 OK period_ms=10"
    tl = []
    for _ in range(20):                              # 1 s
        pump.dither ^= 1
        t = pump.t
        steps, _en, _al, tx = pump.rt.slice(t, TICK, 1, 20 + pump.dither, pump.enc, 0, 4000, [])
        pump.enc += sum(steps)
        pump.t = (t + TICK) & ((1 << 30) - 1)
        for k, chunk in tx:
            for line in chunk.split(b"\n")[:-1]:
                assert pump_frame_error(line) is None, line
                if line.startswith(b"! TL "):
                    f = fields(line)
                    assert int(f["t_ms"]) == round(t + k * TICK), (k, t, f)   # sent at its time
                    tl.append(f)
    ts = [int(f["t_ms"]) for f in tl]
    assert len(tl) >= 98 and all(b - a == 10 for a, b in zip(ts, ts[1:])), ts
    for f in tl:
        assert int(f["age_ms"]) == (int(f["t_ms"]) - t_tick) % TICK, f
    for a, b in zip(tl, tl[1:]):
        same = {k: v for k, v in a.items() if k not in ("t_ms", "age_ms")}
        if int(b["age_ms"]) > int(a["age_ms"]):      # between ticks: the same tick's figures
            assert same == {k: v for k, v in b.items() if k not in ("t_ms", "age_ms")}, (a, b)
        else:
            assert int(b["el_ms"]) == int(a["el_ms"]) + TICK, (a, b)
    pump.ask("6 TLM period_ms=0")


# ------------------------------------------------------------------ event log
@pytest.mark.req("REQ-COM-07", "REQ-LOG-01")
def test_log_frames_keep_the_grammar_and_a_retry_is_logged_once(pump):
    b = pump.hello()["boot"]
    pump.ask(f"3 PROG boot={b} rate_ul_h=52500 rate_ul_h=52500 vtbi_nl=1000000")   # refused: duplicate
    pump.ask(f"4 PROG boot={b} rate_ul_h=00000052500 vtbi_nl=1000000")             # refused: not a number
    pump.ask(f"5 PROG boot={b} rate_ul_h=52500 vtbi_nl=1000000 " + " ".join(f"k{i}=1" for i in range(9)))
    pump.ask(f"6 PROG boot={b} rate_ul_h=60000 vtbi_nl=9000000")
    start = crc(f"7 START boot={b}")
    pump.send(start)
    pump.send(start)                                    # a retry
    pump.run(10)
    recs, frm = [], 0
    while True:
        lines = pump.run(1, crc(f"9 LOG from={frm} max=32"))
        rep = [ln for ln in lines if ln.startswith(b"9 ")][0]
        n, nxt = int(fields(rep)["n"]), int(fields(rep)["next"])
        got = [ln for ln in lines if ln.startswith(b"! LG ")]
        while len(got) < n:
            got += [ln for ln in pump.run(1) if ln.startswith(b"! LG ")]
        recs += [fields(ln) for ln in got]
        if n == 0:
            break
        frm = nxt
    # every LG frame passed the grammar check in Pump.run (12 fields, keys once, numbers)
    cmds = [r for r in recs if r.get("ev") == "CMD"]
    starts = [r for r in cmds if "START" in r.get("txt", "")]
    assert len(starts) == 1, starts
    assert any("00000052500" in r.get("txt", "") for r in cmds), cmds


# ------------------------------------------------------------------ semantics
@pytest.mark.req("REQ-COM-07")
def test_drug_library_readable_from_the_pump(pump):
    lib = json.loads((FIRMWARE / "druglib.json").read_text())
    lines = pump.run(1, crc("3 LIB"))
    rep = fields([ln for ln in lines if ln.startswith(b"3 ")][0])
    assert rep["lib"] == lib["version"] and int(rep["n"]) == len(lib["drugs"])
    names = [fields(ln)["drug"] for ln in lines if ln.startswith(b"! DL ")]
    assert names == [d["name"] for d in lib["drugs"]]
    for d in lib["drugs"]:
        lines = pump.run(1, crc(f"4 DRUG drug={d['name']}"))
        dl = [fields(ln) for ln in lines if ln.startswith(b"! DL ")]
        assert int(fields([ln for ln in lines if ln.startswith(b"4 ")][0])["n"]) == len(dl)
        lims = {f["lim"]: f for f in dl if "lim" in f}
        top = [f for f in dl if "conc_ug_ml" in f][0]
        # the library file in its own units, converted here to the wire units
        assert int(top["rate_max_ul_h"]) == round(d["rate_ml_h_max"] * 1000)
        assert int(top["bolus_max_nl"]) == round(d["bolus_max_ul"] * 1000)
        assert int(top["kvo_ul_h"]) == d["kvo_ul_h"]
        bol = [f for f in dl if "bolus_lockout_ms" in f]
        assert len(bol) == 1
        assert int(bol[0]["bolus_lockout_ms"]) == round(d.get("bolus_lockout_min", 0) * 60000)
        assert int(bol[0]["bolus_h_ug"]) == round(d.get("bolus_max_h_ug", 0))
        assert [int(c) for c in top["concs"].split(",")] == d.get("concs_ug_ml", [d["conc_ug_ml"]])
        for key, src, scale in (("dose_ug_kg", "dose_ug_kg", 1), ("over_ms", "over_min", 60000),
                                ("wt_g", "weight_kg", 1000), ("dose_ug_kg_h", "dose_ug_kg_h", 1)):
            if src not in d:
                assert key not in lims
                continue
            for edge in ("hard_min", "soft_min", "soft_max", "hard_max"):
                assert int(lims[key][edge]) == round(d[src][edge] * scale), (d["name"], key, edge)


@pytest.mark.req("REQ-COM-07")
def test_ack_without_alarm_and_silence_across_the_wrap(pump):
    b = pump.hello()["boot"]
    assert pump.ask(f"3 ACK boot={b}") == b"3 OK state=IDLE"
    sent_at = pump.t                      # the pump clock is the virtual time of the slice
    rep = fields(pump.ask(f"4 SILENCE boot={b}"))
    now = sent_at
    assert rep["left_ms"] == "120000"
    d = (int(rep["until_ms"]) - now) % (1 << 30)
    assert d == 120000                                     # wraps: until_ms < now here
    assert int(rep["until_ms"]) < now


# ------------------------------------------------------------------ STATUS (issue 14: the drug)


@pytest.mark.req("REQ-COM-09")
def test_status_carries_the_programs_drug(pump):
    """*Session, status and library*: STATUS says which drug the program infuses (`-` for
    none), and exactly the fields the spec lists; live readings are telemetry's."""
    b = pump.hello()["boot"]
    st = pump.status()
    assert list(st) == STATUS_KEYS and st["drug"] == "-", st
    pump.ask(f"3 PROG boot={b} drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    st = pump.status()
    assert st["drug"] == "ketamine" and st["state"] == "PROGRAMMED", st
    pump.ask(f"4 START boot={b}")
    pump.run(100)
    assert pump.status()["drug"] == "ketamine"
    pump.ask("5 TLM period_ms=50")
    tl = [fields(ln) for ln in pump.run(2) if ln.startswith(b"! TL ")]
    assert tl and "p_mmhg" in tl[0] and "drug" not in tl[0]
    pump.ask("6 TLM period_ms=0")
    delivered = int(pump.status()["del_nl"])
    assert pump.ask("7 STOP") == b"7 OK state=IDLE"
    st = pump.status()
    # STOP clears the program and its drug; del_nl keeps what the ended infusion delivered
    assert st["drug"] == "-" and st["vtbi_nl"] == "0" and st["rate_ul_h"] == "0", st
    assert int(st["del_nl"]) >= delivered > 0            # (the STOP's tick delivered too)
    pump.ask(f"8 PROG boot={b} rate_ul_h=52500 vtbi_nl=1000000")
    st = pump.status()
    assert st["drug"] == "-" and st["del_nl"] == "0", st        # a program without a drug


def _long_name_firmware(tmp_path):
    """The firmware tree with ketamine renamed to a 24-byte name (the loader's longest)."""
    import shutil
    d = tmp_path / "fw"
    shutil.copytree(FIRMWARE, d, ignore=shutil.ignore_patterns("__pycache__"))
    lib = json.loads((d / "druglib.json").read_text())
    lib["drugs"][0]["name"] = "ketamine-10mg-ml-in-50ml"
    lib["drugs"][0]["rate_ml_h_max"] = 1200
    raw = json.dumps(lib).encode()
    (d / "druglib.json").write_bytes(raw)
    (d / "druglib.json.sha256").write_text(hashlib.sha256(raw).hexdigest() + "\n")
    return d


@pytest.mark.micropython
@pytest.mark.req("REQ-COM-09")
def test_status_with_the_longest_drug_name_keeps_the_frame_limit(tmp_path):
    """The shipped code path (`micropython`) with a 24-byte drug name, the largest rate and
    VTBI, an alarm active: every frame still parses and fits (Pump.run checks each one)."""
    name = "ketamine-10mg-ml-in-50ml"
    assert len(name) == 24
    from hil_sim.runtime import MicroPythonRuntime
    p = Pump.__new__(Pump)
    p.rt = MicroPythonRuntime(_long_name_firmware(tmp_path))
    p.t, p.enc, p.dither, p.frames = T0, 0, 0, []
    try:
        p.run(1)
        b = p.hello()["boot"]
        p.ask(f"65533 CFG boot={b} callback_ms=10000")
        rep = p.ask(f"65535 PROG boot={b} drug={name} rate_ul_h=1200000 vtbi_nl=1000000000")
        assert rep.startswith(b"65535 OK drug=" + name.encode()), rep
        rep = p.ask("65534 STATUS")
        assert fields(rep)["drug"] == name and len(rep) + 6 <= 160, rep
        p.run(10000 // TICK + 2)                          # CALLBACK raised (medium)
        rep = p.ask("65532 STATUS")
        st = fields(rep)
        assert st["alarm"] == "CALLBACK" and st["drug"] == name, st
        assert status_error([ln for ln in p.frames if ln.startswith(b"65532 ")][-1]) is None
    finally:
        p.close()


# ------------------------------------------------------------------ Semantics: KVO, accuracy, pauses
@pytest.mark.req("REQ-COM-07", "REQ-THR-03")
def test_kvo_defaults_per_program_form(pump):
    """*Semantics, KVO*: rate and dose-over-time programs have none; volume-over-time and
    steps get the drug's KVO or 1000 µL/h; dose-rate programs the drug's; kvo_ul_h=0 turns
    it off; a KVO above the rate is lowered to the rate and the reply says so; above the
    drug's KVO is ER LIMIT."""
    b = pump.hello()["boot"]
    cases = [
        ("rate_ul_h=60000 vtbi_nl=1000000", None),
        ("vtbi_nl=1000000 dur_ms=60000", "1000"),
        ("vtbi_nl=1000000 dur_ms=60000 kvo_ul_h=0", None),
        ("drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000", None),
        ("drug=ketamine dose_ug_kg_h=100 wt_g=70000 dur_ms=3600000", "1000"),
        ("drug=remifentanil dose_ug_kg_h=10 wt_g=70000 dur_ms=3600000", None),   # library KVO 0
        ("rate_ul_h=500 vtbi_nl=10000 kvo_ul_h=2000", "500"),                    # lowered, said
    ]
    for i, (body, kvo) in enumerate(cases):
        rep = pump.ask(f"{3 + i} PROG boot={b} {body}")
        assert rep.startswith(b"%d OK" % (3 + i)), (body, rep)
        assert fields(rep).get("kvo_ul_h", "0" if kvo is None else None) == (kvo or "0"), (body, rep)
    rep = pump.ask(f"20 PROG boot={b} drug=ketamine rate_ul_h=60000 vtbi_nl=1000000 kvo_ul_h=5000")
    assert rep.startswith(b"20 ER LIMIT"), rep
    assert pump.ask(f"21 STEP boot={b} i=0 rate_ul_h=10000 vol_nl=100000").startswith(b"21 OK")
    rep = pump.ask(f"22 PROG boot={b} steps=1")
    assert rep.startswith(b"22 OK") and fields(rep)["kvo_ul_h"] == "1000", rep


@pytest.mark.req("REQ-COM-07")
def test_loading_and_maintenance_reply(pump):
    """*Semantics, Loading + maintenance*: the reply's rate is the loading rate; vtbi_nl and
    dose_ug cover both segments (ketamine at 1000 µg/mL: 1 µg is 1000 nL)."""
    b = pump.hello()["boot"]
    rep = pump.ask(f"3 PROG boot={b} drug=ketamine dose_ug_kg_h=100 wt_g=70000 dur_ms=3600000 "
                   f"load_ug_kg=200 load_ms=1800000")
    f = fields(rep)
    assert rep.startswith(b"3 OK") and f["drug"] == "ketamine", rep
    load_ug = 200 * 70
    assert int(f["rate_ul_h"]) == load_ug * 1000 * 3600 // 1800000, f      # 28000 µL/h
    assert int(f["dose_ug"]) > load_ug and int(f["vtbi_nl"]) == int(f["dose_ug"]) * 1000, f
    pump.ask(f"4 START boot={b}")
    assert pump.status()["rate_ul_h"] == f["rate_ul_h"]                    # the loading segment


@pytest.mark.req("REQ-COM-07")
def test_a_program_ends_short_by_less_than_a_microstep(pump):
    """*Semantics, Accuracy*: del_nl at COMPLETE is at most the VTBI and short of it by less
    than one microstep (about 0.22 µL on the 50 mL syringe)."""
    b = pump.hello()["boot"]
    pump.ask(f"3 PROG boot={b} rate_ul_h=1200000 vtbi_nl=1000000")
    pump.ask(f"4 START boot={b}")
    for _ in range(200):                       # 1 mL at 1200 mL/h: 3 s, 60 ticks
        pump.run(5)
        if pump.status()["state"] == "COMPLETE":
            break
    st = pump.status()
    assert st["state"] == "COMPLETE", st
    assert 1000000 - 230 < int(st["del_nl"]) <= 1000000, st


@pytest.mark.req("REQ-COM-07")
def test_comm_loss_pauses_and_a_vitals_violation_alarms(pump):
    """*Semantics, Pauses*: a communication loss with hb_action=pause moves RUNNING to PAUSED
    (COMM_LOSS high priority, cleared by the next valid request; RESUME continues); a
    vital-sign violation with the interlock on moves to ALARM, ACK is refused while the
    readings are out of limits, then moves to PAUSED, and only then RESUME continues."""
    b = pump.hello()["boot"]
    assert pump.ask(f"3 CFG boot={b} hb_ms=1000 hb_action=pause interlock=1").startswith(b"3 OK")
    pump.ask(f"4 PROG boot={b} drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    pump.ask(f"5 START boot={b}")
    out = pump.run(40)                                                     # 2 s of silence
    assert any(ln.startswith(b"! EV ALARM alarm=COMM_LOSS prio=3") for ln in out), out
    assert any(ln.startswith(b"! EV STATE state=PAUSED") for ln in out), out
    st = pump.status()                                                     # a valid request
    assert st["state"] == "PAUSED" and st["alarm"] != "COMM_LOSS", st
    assert pump.ask(f"6 RESUME boot={b}") == b"6 OK state=RUNNING"
    rep = pump.ask(f"7 VITALS boot={b} sbp=200 dbp=80 hr=70 spo2=98")
    assert fields(rep)["action"] == "paused" and fields(rep)["limit"] == "sbp", rep
    st = pump.status()
    assert st["state"] == "ALARM" and st["alarm"] == "VITALS" and st["prio"] == "3", st
    assert pump.ask(f"8 ACK boot={b}").startswith(b"8 ER STATE")            # still out of limits
    assert pump.ask(f"9 RESUME boot={b}").startswith(b"9 ER STATE")
    pump.ask(f"10 VITALS boot={b} sbp=120 dbp=80 hr=70 spo2=98")
    assert pump.ask(f"11 ACK boot={b}") == b"11 OK state=PAUSED"
    assert pump.ask(f"12 RESUME boot={b}") == b"12 OK state=RUNNING"
