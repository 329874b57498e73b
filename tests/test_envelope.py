"""The therapy-envelope oracle (hil_sim/envelope.py) itself: it agrees with the library the
pump loads, contains every legal delivery of every program form, and excludes the deliveries
of the defects issue 10 lists (titration past the drug's limits, KVO of a no-KVO drug,
unlimited boluses). The same cases run under the real `micropython` interpreter."""
import json
import sys

import pytest

from conftest import FIRMWARE, ROOT, run_micropython

sys.path.insert(0, str(FIRMWARE))

from hil_sim import envelope as E  # noqa: E402
from pumpcore.druglib import DrugLibrary  # noqa: E402

LIB_PATH = str(FIRMWARE / "druglib.json")
H = 3600000
MIN = 60000

# (name, PROG fields, STEP list) - one of every program form
FORMS = [
    ("rate", "PROG rate_ul_h=52500 vtbi_nl=35000000 drug=ketamine", None),
    ("rate_nodrug", "PROG rate_ul_h=600000 vtbi_nl=50000000", None),
    ("vol_time", "PROG vtbi_nl=20000000 dur_ms=3600000 drug=midazolam", None),
    ("dose_time", "PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000", None),
    ("dose_rate", "PROG drug=propofol dose_ug_kg_h=2000 wt_g=70000 dur_ms=3600000", None),
    ("load_maint", "PROG drug=ketamine dose_ug_kg_h=500 wt_g=70000 vtbi_nl=30000000 load_ug_kg=500 load_ms=2400000", None),
    ("steps", "PROG steps=3 drug=ketamine", [(100000, 5000000), (20000, 2000000), (5000, 1000000)]),
]


def _ideal(segs, t):
    """Volume the accepted program delivers t ms after START at its programmed rates."""
    v = 0
    for r, vol in segs:
        d = vol * 3600 // r
        if t >= d:
            v += vol
            t -= d
        else:
            return v + r * t // 3600
    return v


def _segs(env_fields, steps):
    f = E.parse_fields(env_fields)
    lib = E.load_library(LIB_PATH)
    if steps:
        return steps
    d = lib.get(f.get("drug"))
    if "dose_ug_kg_h" in f:
        rate = f["dose_ug_kg_h"] * f["wt_g"] // d.conc
        vt = f.get("vtbi_nl") or rate * f["dur_ms"] // 3600
        out = []
        if "load_ug_kg" in f:
            ln = f["load_ug_kg"] * f["wt_g"] // 1000 * 1000000 // d.conc
            out.append((ln * 3600 // f["load_ms"], ln))
        return out + [(rate, vt)]
    if "dose_ug_kg" in f:
        vt = f["dose_ug_kg"] * f["wt_g"] // 1000 * 1000000 // d.conc
        return [(vt * 3600 // f["over_ms"], vt)]
    vt = f["vtbi_nl"]
    return [(f.get("rate_ul_h") or vt * 3600 // f["dur_ms"], vt)]


@pytest.mark.req("REQ-THR-01")
def test_library_conversion_agrees_with_the_pump():
    """Two independent readings of druglib.json (the oracle's and pumpcore.libload's) agree."""
    mine = E.load_library(LIB_PATH)
    pump = DrugLibrary.load(LIB_PATH)
    drugs = [pump.drug(i) for i in range(len(pump.names))]
    assert sorted(mine) == sorted(d.name.decode() for d in drugs)
    for d in drugs:
        m = mine[d.name.decode()]
        assert m.rate_max == d.rate_max and m.bolus_nl == d.bolus_max_nl and m.kvo == d.kvo_ul_h
        assert (m.over.hard_min, m.over.hard_max) == (d.over.hard_min, d.over.hard_max)
        assert (m.dose.hard_min, m.dose.hard_max) == (d.dose.hard_min, d.dose.hard_max)
        assert m.lockout_ms > 0 and m.bolus_h_ug > 0, "every drug has a bolus lockout and hourly cap"


@pytest.mark.req("REQ-THR-01")
@pytest.mark.parametrize("name,prog,steps", FORMS, ids=[f[0] for f in FORMS])
def test_the_programmed_delivery_is_inside(name, prog, steps):
    env = E.Envelope(LIB_PATH)
    assert env.program(prog, steps) is None
    segs = _segs(prog, steps)
    total = sum(v for _, v in segs)
    t = 0
    while _ideal(segs, t) < total:
        assert env.check(t, _ideal(segs, t)) == [], (name, t)
        t += 17 * 1000 + 13
    assert env.check(t + H, total) == []
    # and one microstep + a control lag is all the slack there is: the whole VTBI at once is out
    if segs[0][0] < env.rate_max():
        assert env.check(1000, total) != []


@pytest.mark.req("REQ-THR-01")
def test_remifentanil_titrated_past_its_dose_rate_is_outside():
    """Remifentanil 30 kg at 30 µg/kg/h titrated by rate to 100 mL/h (≈167 µg/kg/h against a
    hard max of 60): the delivery leaves the envelope within minutes."""
    env = E.Envelope(LIB_PATH)
    assert env.program("PROG drug=remifentanil dose_ug_kg_h=30 wt_g=30000 vtbi_nl=20000000") is None
    assert env.titration_refusal(100000, 0, 0, wt_g=30000) is not None
    assert env.titration_refusal(36000, 0, 0, wt_g=30000, confirm=True) is None   # 60 µg/kg/h
    assert env.titration_refusal(36000, 0, 0, wt_g=30000) is not None             # soft max 30
    v = 100000 * 10 * MIN // 3600          # 10 min at 100 mL/h
    assert env.check(10 * MIN, v) != []
    assert env.check(10 * MIN, 18000 * 10 * MIN // 3600) == []


@pytest.mark.req("REQ-THR-01")
def test_ketamine_dose_over_time_titrated_to_199_mlh_is_outside():
    env = E.Envelope(LIB_PATH)
    assert env.program("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000") is None
    assert env.titration_refusal(199000, 0, 0) is not None        # 35 mL in 10.5 min < 20 min
    assert env.titration_refusal(105000, 0, 0, confirm=True) is None   # exactly 20 min
    assert env.titration_refusal(80000, 0, 0) is not None          # 26 min: soft min 30 -> confirm
    assert env.titration_refusal(80000, 0, 0, confirm=True) is None
    assert env.titration_refusal(60000, 0, 0) is None              # 35 min
    assert env.check(int(10.5 * MIN), 35000000) != []
    assert env.check(20 * MIN, 35000000) == []


@pytest.mark.req("REQ-THR-01")
def test_kvo_of_a_no_kvo_drug_is_outside_and_refused():
    env = E.Envelope(LIB_PATH)
    assert env.program("PROG drug=remifentanil rate_ul_h=2000 vtbi_nl=2000000 kvo_ul_h=1000") is not None
    assert env.program("PROG drug=remifentanil rate_ul_h=2000 vtbi_nl=2000000") is None
    assert env.kvo_rate_max() == 0
    assert env.check(2 * H, 2000000, kvo_nl=1000) != []
    assert env.program("PROG drug=ketamine rate_ul_h=52500 vtbi_nl=35000000 kvo_ul_h=2000") is not None
    env.program("PROG drug=ketamine rate_ul_h=52500 vtbi_nl=35000000")
    assert env.kvo_rate_max() == 1000
    assert env.check(H, 35000000, kvo_nl=1000 * H // 3600) == []


@pytest.mark.req("REQ-THR-01")
def test_twenty_remifentanil_boluses_in_12_minutes_are_outside():
    env = E.Envelope(LIB_PATH)
    assert env.program("PROG drug=remifentanil dose_ug_kg_h=6 wt_g=70000 vtbi_nl=40000000") is None
    t = int(12.5 * MIN)
    basal = 84000 * (t + env.lag_ms) // 3600     # titrated to the hard max (60 µg/kg/h) at once
    assert env.check(t, basal + 20 * 1000000) != []
    assert env.check(t, basal + 3 * 1000000) == []     # 0, 5, 10 min: lockout 5 min
    assert env.check(t, basal + 4 * 1000000) != []


@pytest.mark.req("REQ-THR-01")
def test_no_program_no_delivery():
    env = E.Envelope(LIB_PATH)
    assert env.check(H, 0) == []
    assert env.check(H, 1) != []
    env.program("PROG rate_ul_h=1000 vtbi_nl=1000000")
    env.stop()
    assert env.check(H, 5000) != []


MP_SCRIPT = r"""
import sys, json
sys.path.insert(0, ROOT + "/hil_sim")
import envelope as E
env = E.Envelope(E.load_library(ROOT + "/firmware/druglib.json"))
out = []
for prog, steps in CASES:
    r = env.program(prog, steps)
    row = [r, env.rate_max(), env.kvo_rate_max()]
    for t in (0, 1000, 600000, 2400000, 7200000):
        row += [env.volume_max(t), env.kvo_max(t), env.dose_max(t)]
    row.append(env.titration_refusal(199000, 0, 0, False, 70000))
    out.append(row)
print(json.dumps(out))
"""


def _cases():
    return [[p, [list(s) for s in st] if st else None] for _, p, st in FORMS] + [
        ["PROG drug=remifentanil rate_ul_h=2000 vtbi_nl=2000000 kvo_ul_h=1000", None]]


@pytest.mark.micropython
@pytest.mark.req("REQ-THR-01", "REQ-SW-03")
def test_same_envelope_under_micropython():
    src = "ROOT = %r\nCASES = %s\n" % (str(ROOT), json.dumps(_cases()).replace("null", "None")) + MP_SCRIPT
    p = run_micropython(src)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    env = E.Envelope(LIB_PATH)
    want = []
    for prog, steps in _cases():
        r = env.program(prog, steps)
        row = [r, env.rate_max(), env.kvo_rate_max()]
        for t in (0, 1000, 600000, 2400000, 7200000):
            row += [env.volume_max(t), env.kvo_max(t), env.dose_max(t)]
        row.append(env.titration_refusal(199000, 0, 0, False, 70000))
        want.append(row)
    assert got == want
