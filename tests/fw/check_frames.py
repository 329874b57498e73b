"""Worst-case lengths of the frames the pump sends (docs/protocol.md: at most 160 bytes with
the LF), under both runtimes. Each check drives the real reply writer with every field at
the bound the pump or its library loader guarantees: the longest state, alarm and drug
name (24 bytes, the loader's limit), every number at its largest, every optional field.
A frame that does not fit is dropped whole by the writer, so a dropped frame fails too."""
import json

from fwkit import Rig, LIB_PATH, TICK_MS
import pumpcore
from pumpcore import fsm, libload, commands as C, alarms as AL, protocol as P
from pumpcore.druglib import NAME_MAX, LibraryError
from pumpcore.dose import RATE_MAX, VTBI_MAX

NUM_MAX = P.NUM_MAX
LONG = "a" * (NAME_MAX - 1) + "z"


def _doc():
    with open(LIB_PATH) as f:
        return json.loads(f.read())


def _long_lib():
    """The firmware's library with a 12-byte version, its first drug renamed to a 24-byte name, 4
    concentrations of 6 digits and every per-drug number at the loader's bound."""
    doc = _doc()
    doc["version"] = "v" * 12
    d = doc["drugs"][0]
    d["name"] = LONG
    d["conc_ug_ml"] = 999999
    d["concs_ug_ml"] = [999999, 999998, 999997, 999996]
    d["rate_ml_h_max"] = 1200
    d["bolus_max_ul"] = 100000
    d["kvo_ul_h"] = 20000
    return libload.parse(json.dumps(doc).encode())


def _frames(tx, start):
    out = []
    s = start
    for i in range(start, tx.n):
        if tx.buf[i] == 10:
            out.append(bytes(tx.buf[s:i + 1]))
            s = i + 1
    return out


def _extreme(ctl):
    ctl.rate = RATE_MAX
    ctl.vtbi = VTBI_MAX
    ctl.el_ms = NUM_MAX
    ctl.pressure = -9999
    ctl.delivered_nl = lambda: NUM_MAX
    ctl.kvo_nl = lambda: NUM_MAX
    ctl.current_rate = lambda: RATE_MAX


def _longest(names):
    m = names[0]
    for n in names:
        if len(n) > len(m):
            m = n
    return m


def check_status_worst_case_fits():
    r = Rig(lib=_long_lib())
    ctl = r.ctl
    _extreme(ctl)
    ctl.drug = 0
    tx = ctl.out.tx
    worst = 0
    for s in range(len(fsm.STATE_NAMES)):
        ctl.fsm.state = s
        for a in range(len(AL.NAMES)):
            ctl.alarms.highest = lambda a=a: a
            tx.clear()
            d0 = tx.dropped
            C._status(ctl, 65535)
            assert tx.dropped == d0, ("STATUS dropped", fsm.STATE_NAMES[s], AL.NAMES[a])
            fr = _frames(tx, 0)
            assert len(fr) == 1, fr
            assert len(fr[0]) <= P.MAX_FRAME, (len(fr[0]), fr[0])
            assert b" drug=" + LONG.encode() + b" " in fr[0], fr[0]
            if len(fr[0]) > worst:
                worst = len(fr[0])
    # the bound documented in docs/protocol.md (STATUS row) and firmware/pumpcore/commands.py
    assert worst == P.MAX_FRAME, worst
    ln = (len(b"65535 OK state=") + len(_longest(fsm.STATE_NAMES)) + len(b" drug=") + NAME_MAX
          + len(b" rate_ul_h=1200000 vtbi_nl=1000000000 del_nl=1073741823 el_ms=1073741823 alarm=")
          + len(_longest(AL.NAMES)) + len(b" prio=3*XXXX\n"))
    assert ln == worst, (ln, worst)


def check_status_without_drug_says_dash():
    r = Rig()
    r.cmd("PROG", "rate_ul_h=52500 vtbi_nl=35000000")
    st = r.cmd("STATUS")
    assert b" drug=- " in st, st
    r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    st = r.cmd("STATUS")
    assert b" drug=ketamine " in st, st
    r.cmd("START")
    r.run(2000)
    assert b" drug=ketamine " in r.cmd("STATUS")
    r.cmd("STOP")
    st = r.cmd("STATUS")
    # STOP ends the infusion: no program, no drug; del_nl keeps what it delivered
    assert b"state=IDLE drug=- rate_ul_h=0 vtbi_nl=0 del_nl=" in st and b"del_nl=0 " not in st, st


def check_telemetry_worst_case_fits():
    r = Rig(lib=_long_lib())
    ctl = r.ctl
    _extreme(ctl)
    # the pump clock at its last value, the latest control tick as long ago as it can be
    # (a step at or after the next tick runs that tick: age_ms <= tick_ms - 1)
    ctl._now = NUM_MAX
    ctl._last_ctrl = NUM_MAX - (TICK_MS - 1)
    tx = ctl.out.tx
    for s in range(len(fsm.STATE_NAMES)):
        ctl.fsm.state = s
        tx.clear()
        d0 = tx.dropped
        C.telemetry(ctl)
        assert tx.dropped == d0
        fr = _frames(tx, 0)
        assert len(fr) == 1 and len(fr[0]) <= P.MAX_FRAME, fr
        assert b" kvo_nl=1073741823 t_ms=1073741823 age_ms=49*" in fr[0], fr[0]


class _Keyed:
    provisioned = True
    required = True
    counter = 999999999


def check_hello_worst_case_fits():
    # the device id is 16 hex digits on the Pico (8-byte unique id); fw at most 8 bytes
    assert len(pumpcore.VERSION) <= 8, pumpcore.VERSION
    r = Rig(lib=_long_lib(), device_id=b"E6611860" * 2)
    ctl = r.ctl
    ctl.boot = NUM_MAX
    ctl.log_damage = NUM_MAX        # reported capped at 99
    ctl.auth = _Keyed()             # auth=1 ctr=999999999
    ctl.fsm.state = fsm.FAULT
    tx = ctl.out.tx
    tx.clear()
    C._hello(ctl, 65535)
    fr = _frames(tx, 0)
    assert len(fr) == 1 and len(fr[0]) <= P.MAX_FRAME, fr
    assert b" lib=" + b"v" * 12 + b" " in fr[0] and b" fault=1" in fr[0] and b" logdmg=99" in fr[0], fr[0]
    assert b" auth=1 ctr=999999999" in fr[0], fr[0]


def check_drug_frames_worst_case_fit():
    r = Rig(lib=_long_lib())
    ctl = r.ctl
    tx = ctl.out.tx
    for body in ("DRUG drug=" + LONG, "DRUG i=0", "LIB"):
        tx.clear()
        d0 = tx.dropped
        r.nid = 65534
        r.cmd(*body.split(" ", 1)) if " " in body else r.cmd(body)
        assert tx.dropped == d0, body


def check_loader_refuses_what_does_not_fit():
    for bad in ("a" * (NAME_MAX + 1), "", "Ketamine", "ket amine", "ket*", "ket=1", "1ket"):
        doc = _doc()
        doc["drugs"][0]["name"] = bad
        try:
            libload.parse(json.dumps(doc).encode())
            assert False, "accepted drug name %r" % bad
        except LibraryError:
            pass
    for key, val in (("version", "v" * 13), ("version", "2026"), ("version", "a b")):
        doc = _doc()
        doc[key] = val
        try:
            libload.parse(json.dumps(doc).encode())
            assert False, "accepted %s=%r" % (key, val)
        except LibraryError:
            pass
    for key, val in (("concs_ug_ml", [1000, 2000, 3000, 4000, 5000]), ("conc_ug_ml", 1000000),
                     ("rate_ml_h_max", 1201), ("bolus_max_ul", 100001)):
        doc = _doc()
        d = doc["drugs"][0]
        d[key] = val
        if key == "conc_ug_ml":
            d["concs_ug_ml"] = [val]
        try:
            libload.parse(json.dumps(doc).encode())
            assert False, "accepted %s=%r" % (key, val)
        except LibraryError:
            pass


_DRUG_FIELDS = ("name", "conc_ug_ml", "concs", "rate_max", "bolus_max_nl", "bolus_lockout_ms",
                "bolus_h_ug", "kvo_ul_h")


def _same_limits(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        got = tuple(getattr(a, k) for k in ("hard_min", "soft_min", "soft_max", "hard_max"))
        want = tuple(getattr(b, k) for k in ("hard_min", "soft_min", "soft_max", "hard_max"))
        assert got == want, (what, got, want)


def _same_vitals(a, b, what):
    assert (a is None) == (b is None), what
    if a is not None:
        for k in ("sbp_max", "dbp_max", "hr_max", "hr_min", "spo2_min"):
            assert getattr(a, k) == getattr(b, k), (what, k)


def check_library_packed_form_keeps_every_limit():
    # the controller keeps the library packed (pumpcore.druglib): every drug decodes to what
    # the loader checked, field by field, with and without the optional parts
    for variant in range(3):
        doc = _doc()
        if variant >= 1:                    # a drug without dose-rate limits or own vitals
            doc["drugs"][0].pop("dose_ug_kg_h", None)
            doc["drugs"][0].pop("vitals", None)
            doc["drugs"][-1]["concs_ug_ml"] = [doc["drugs"][-1]["conc_ug_ml"], 7, 8, 9]
        if variant == 2:                    # no default vitals either
            doc.pop("vitals_default", None)
        parsed = libload.parse(json.dumps(doc).encode())
        moved = parsed.moved()              # the boot's copy in fresh heap (pumpcore.boot)
        assert moved.rec is not parsed.rec and list(moved.rec) == list(parsed.rec)
        assert (moved.version, moved.sha256_16) == (parsed.version, parsed.sha256_16)
        assert moved.names == parsed.names
        for lib in (parsed, moved):
            dv = doc.get("vitals_default")
            dv = libload._vitals(dv) if dv is not None else None
            _same_vitals(lib.vitals(-1), dv, "vitals_default")
            assert len(lib.names) == len(doc["drugs"])
            for i in range(len(doc["drugs"])):
                want = libload._drug(doc["drugs"][i], dv)
                got = lib.drug(i)
                for k in _DRUG_FIELDS:
                    assert getattr(got, k) == getattr(want, k), (variant, i, k)
                for k in ("dose", "over", "weight", "dose_h"):
                    _same_limits(getattr(got, k), getattr(want, k), (variant, i, k))
                _same_vitals(got.vitals, want.vitals, (variant, i))
                _same_vitals(lib.vitals(i), want.vitals, (variant, i))
                assert lib.rate_max(i) == want.rate_max and lib.kvo_max(i) == want.kvo_ul_h
                assert lib.names[i] == want.name
    doc = _doc()
    doc["drugs"][0]["weight_kg"]["hard_max"] = 1 << 30      # no int32 record holds it
    try:
        libload.parse(json.dumps(doc).encode())
        assert False, "accepted a limit of 2**30"
    except LibraryError:
        pass


def check_library_sidecar_hash_is_checked():
    # the full SHA-256 is compared with druglib.json.sha256 at load, then only its first 16
    # digits (HELLO libh) stay in the heap
    with open(LIB_PATH, "rb") as f:
        raw = f.read()
    full = libload.parse(raw).sha256
    assert len(full) == 64
    base = "/tmp/infusekit_check_sidecar.json"
    with open(base, "wb") as f:
        f.write(raw)
    for side, good in ((full, True), (full.upper() + b"\n", True), (b"0" * 64, False),
                       (full[:63] + (b"0" if full[63:] != b"0" else b"1"), False)):
        with open(base + ".sha256", "wb") as f:
            f.write(side)
        try:
            lib = libload.load(base)
            assert good, side
            assert lib.sha256 == b"" and lib.sha256_16 == full[:16].upper()
        except LibraryError:
            assert not good, side


# requirements these checks verify (docs/safety/requirements.md; read by tests/test_fw_checks.py)
REQS = {
    "check_status_worst_case_fits": ["REQ-COM-09"],
    "check_status_without_drug_says_dash": ["REQ-COM-09"],
    "check_telemetry_worst_case_fits": ["REQ-COM-09"],
    "check_hello_worst_case_fits": ["REQ-COM-09"],
    "check_drug_frames_worst_case_fit": ["REQ-COM-09"],
    "check_loader_refuses_what_does_not_fit": ["REQ-COM-09"],
    "check_library_packed_form_keeps_every_limit": ["REQ-LIM-01", "REQ-THR-03", "REQ-THR-04"],
    "check_library_sidecar_hash_is_checked": ["REQ-LIM-01"],
}
