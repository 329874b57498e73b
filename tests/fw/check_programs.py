"""Every program type through frames, with the exact figures the pump must compute and deliver.

Portable: run under CPython and under the real `micropython` interpreter by
tests/test_fw_checks.py (one process per module). Expected values are worked out by hand in
the comments (integer maths: µg, nL, µL/h, ms; the rig's syringe is 217.078 nL per µstep).
"""
from fwkit import Rig, NL_PER_KSTEP
from pumpcore import fsm


def snapshot(r):
    c = r.ctl
    return (c.fsm.state, c.rate, c.vtbi, c.drug, c.line.steps, c.alarms.act, c.nseg, c.kvo,
            c.dose_ug, c.settings.values())


def _field(rep, key):
    for tok in rep.split(b" "):
        if tok.startswith(key + b"="):
            return tok[len(key) + 1:]
    raise AssertionError("no %s in %s" % (key, rep))


def _ifield(rep, key):
    return int(_field(rep, key))


def check_rate_and_vtbi():
    r = Rig()
    rep = r.cmd("PROG", "rate_ul_h=120000 vtbi_nl=2000000")
    assert rep == b"1 OK rate_ul_h=120000 vtbi_nl=2000000 dur_ms=60000", rep   # v0 form: no KVO
    r.cmd("START")
    r.run(30000)
    # half way: the line is at 1 mL; the motor follows it within one tick's steps
    assert 990000 <= r.ctl.delivered_nl() <= 1000000, r.ctl.delivered_nl()
    r.run(31000)
    assert r.state() == fsm.COMPLETE
    assert r.steps == 2000000 * 1000 // NL_PER_KSTEP, r.steps
    assert 2000000 - 218 < r.ctl.delivered_nl() <= 2000000


def check_vtbi_and_duration():
    r = Rig()
    # 1 mL over 2 min: 1e6 nL × 3600 / 120000 ms = 30000 µL/h; new form: KVO 1 mL/h by default
    rep = r.cmd("PROG", "vtbi_nl=1000000 dur_ms=120000")
    assert rep == b"1 OK rate_ul_h=30000 vtbi_nl=1000000 dur_ms=120000 kvo_ul_h=1000", rep
    r.cmd("START")
    r.run(119000)
    assert r.state() == fsm.RUNNING
    r.run(2000)
    assert r.state() == fsm.KVO, r.state()
    assert r.ctl.current_rate() == 1000
    assert 1000000 - 218 < r.ctl.therapy_nl() <= 1000000
    k0 = r.ctl.kvo_nl()
    r.run(36000)                      # 36 s of KVO at 1 mL/h = 10 µL
    assert 9000 <= r.ctl.kvo_nl() - k0 <= 10000, r.ctl.kvo_nl() - k0
    assert r.ctl.therapy_nl() <= 1000000         # KVO is not counted as therapy volume
    assert r.ctl.delivered_nl() == r.ctl.therapy_nl() + r.ctl.kvo_nl()   # but del_nl has it
    assert b"alarm=VTBI_DONE" in r.event_text()


def check_dose_over_time():
    r = Rig()
    # propofol 1 mg/kg × 70 kg = 70000 µg at 10 mg/mL = 7 mL over 3 min = 140000 µL/h
    rep = r.cmd("PROG", "drug=propofol dose_ug_kg=1000 wt_g=70000 over_ms=180000")
    assert rep == (b"1 OK drug=propofol dose_ug=70000 rate_ul_h=140000 vtbi_nl=7000000 "
                   b"dur_ms=180000 soft=0"), rep
    # the alternative library concentration of ketamine: 10 mg/mL → a tenth of the volume
    r2 = Rig()
    rep = r2.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000 conc_ug_ml=10000")
    assert b"dose_ug=35000 rate_ul_h=5250 vtbi_nl=3500000" in rep, rep
    assert r2.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000 conc_ug_ml=5000").startswith(
        b"2 ER LIMIT conc_ug_ml")
    r.cmd("START")
    r.run(181000)
    assert r.state() == fsm.COMPLETE
    assert 7000000 - 218 < r.ctl.delivered_nl() <= 7000000, r.ctl.delivered_nl()


def check_continuous_dose_mg_kg_h():
    r = Rig()
    # propofol 2 mg/kg/h × 70 kg at 10 mg/mL = 14 mL/h; 10 min → 14000 × 600000 / 3600 nL
    rep = r.cmd("PROG", "drug=propofol dose_ug_kg_h=2000 wt_g=70000 dur_ms=600000")
    assert rep.startswith(b"1 OK drug=propofol dose_ug=23333 rate_ul_h=14000 vtbi_nl=2333333 "), rep
    assert _ifield(rep, b"kvo_ul_h") == 1000 and _ifield(rep, b"soft") == 0
    assert r.ctl.dose_h == 2000 and r.ctl.wt_g == 70000 and r.ctl.conc == 10000
    r.cmd("START")
    r.run(60000)
    d = r.ctl.delivered_nl()
    assert 14000 * 60000 // 3600 - 2000 <= d <= 14000 * 60000 // 3600, d   # 233333 nL in 1 min


def check_continuous_dose_mcg_kg_min():
    r = Rig()
    # remifentanil 0.1 mcg/kg/min = 6 µg/kg/h on the wire; 70 kg at 50 µg/mL → 8400 µL/h
    rep = r.cmd("PROG", "drug=remifentanil dose_ug_kg_h=6 wt_g=70000 dur_ms=3600000")
    assert rep.startswith(b"1 OK drug=remifentanil dose_ug=420 rate_ul_h=8400 vtbi_nl=8400000 "), rep
    assert b"kvo_ul_h" not in rep             # no KVO for remifentanil: it completes
    # 0.5 mcg/kg/min = 30 µg/kg/h is the soft max; 0.6 needs confirm; 1.1 is above the hard max
    assert r.cmd("PROG", "drug=remifentanil dose_ug_kg_h=36 wt_g=70000 dur_ms=3600000").startswith(b"2 ER SOFT")
    assert r.cmd("PROG", "drug=remifentanil dose_ug_kg_h=66 wt_g=70000 dur_ms=3600000 confirm=1") \
        == b"3 ER LIMIT dose_ug_kg_h above hard max 60"
    assert r.ctl.rate == 8400


def check_loading_then_maintenance():
    r = Rig()
    # load 1 mg/kg over 5 min: 70000 µg / 10 mg/mL = 7 mL at 84000 µL/h; then 14 mL/h for 10 min
    rep = r.cmd("PROG", "drug=propofol load_ug_kg=1000 load_ms=300000 dose_ug_kg_h=2000 "
                        "wt_g=70000 dur_ms=600000")
    assert rep.startswith(b"1 OK drug=propofol dose_ug=93333 rate_ul_h=84000 vtbi_nl=9333333 "
                          b"dur_ms=900000"), rep
    assert r.ctl.nseg == 2
    r.cmd("START")
    r.run(150000)
    assert r.ctl.current_rate() == 84000
    r.run(151000)                    # past the 5-min load
    assert r.ctl.current_rate() == 14000 and r.state() == fsm.RUNNING
    d = r.ctl.delivered_nl()
    # 7 mL load + 1 s of maintenance (3888 nL), to a tick's steps
    assert 7000000 <= d <= 7000000 + 14000 * 1000 // 3600 + 1000, d
    # a load outside the drug's dose limits is refused and named
    r2 = Rig()
    assert r2.cmd("PROG", "drug=propofol load_ug_kg=3000 load_ms=300000 dose_ug_kg_h=2000 "
                          "wt_g=70000 dur_ms=600000") == b"1 ER LIMIT load_ug_kg above hard max 2500"


def check_bolus_limits_and_return_to_basal():
    r = Rig()
    r.cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    assert b"ER STATE" in r.cmd("BOLUS", "vol_nl=100000 rate_ul_h=100000")     # not running
    r.cmd("START")
    r.run(5000)
    before = snapshot(r)
    assert r.cmd("BOLUS", "vol_nl=6000000 rate_ul_h=100000") == b"4 ER LIMIT vol_nl above bolus max 5000000"
    assert r.cmd("BOLUS", "vol_nl=100000 rate_ul_h=300000") == b"5 ER LIMIT rate_ul_h above max 200000"
    assert r.cmd("BOLUS", "vol_nl=500 rate_ul_h=100000").startswith(b"6 ER RANGE")
    assert snapshot(r) == before and not r.ctl.bolus_on
    d0 = r.ctl.delivered_nl()
    assert r.cmd("BOLUS", "vol_nl=200000 rate_ul_h=200000") == b"7 OK vol_nl=200000 rate_ul_h=200000"
    assert r.ctl.current_rate() == 200000
    r.run(3700)                       # 0.2 mL at 200 mL/h = 3.6 s
    assert not r.ctl.bolus_on and r.ctl.current_rate() == 52500      # back to the basal rate
    assert r.ctl.bolus_nl == r.ctl.bline.delivered_nl or r.ctl.bolus_nl > 199000
    assert 199000 < r.ctl.bolus_nl <= 200000, r.ctl.bolus_nl
    # basal line paused during the bolus (ketamine dose is not exceeded by the bolus time)
    assert r.ctl.delivered_nl() - d0 <= 200000 + 52500 * 100 // 3600 + 1000


def check_multi_step_ramp_hold_taper():
    r = Rig()
    assert r.cmd("PROG", "steps=2").startswith(b"1 ER ARG step not stored")
    assert r.cmd("STEP", "i=0 rate_ul_h=10000 dur_ms=60000") == \
        b"2 OK i=0 rate_ul_h=10000 vol_nl=166666 dur_ms=60000"
    assert r.cmd("STEP", "i=1 rate_ul_h=20000 vol_nl=333333").startswith(b"3 OK i=1")
    assert r.cmd("STEP", "i=2 rate_ul_h=5000 dur_ms=60000").startswith(b"4 OK i=2 rate_ul_h=5000 vol_nl=83333")
    assert r.cmd("STEP", "i=8 rate_ul_h=5000 dur_ms=60000").startswith(b"5 ER RANGE")
    rep = r.cmd("PROG", "steps=3")
    assert rep.startswith(b"6 OK rate_ul_h=10000 vtbi_nl=583332 "), rep
    assert _ifield(rep, b"kvo_ul_h") == 1000
    r.cmd("START")
    seen = []
    for _ in range(19):
        r.run(10000)
        seen.append(r.ctl.current_rate())
    # ramp (0-60 s) 10 mL/h, hold (60-120 s) 20 mL/h, taper (120-180 s) 5 mL/h, then KVO 1 mL/h
    assert seen[:5] == [10000] * 5 and seen[6:11] == [20000] * 5, seen
    assert seen[12:17] == [5000] * 5 and seen[18] == 1000, seen
    assert r.state() == fsm.KVO
    assert 583332 - 218 < r.ctl.therapy_nl() <= 583332


def check_titration_limits_and_soft_confirm():
    r = Rig()
    r.cmd("PROG", "drug=propofol dose_ug_kg_h=2000 wt_g=70000 dur_ms=3600000")
    assert b"ER STATE" in r.cmd("TITRATE", "dose_ug_kg_h=3000")     # programmed, not running
    r.cmd("START")
    r.run(2000)
    before = snapshot(r)
    assert r.cmd("TITRATE", "dose_ug_kg_h=7000") == b"4 ER LIMIT dose_ug_kg_h above hard max 6000"
    rep = r.cmd("TITRATE", "dose_ug_kg_h=5000")
    assert rep.startswith(b"5 ER SOFT"), rep
    assert snapshot(r) == before
    rep = r.cmd("TITRATE", "dose_ug_kg_h=5000 confirm=1")
    # 5 mg/kg/h × 70 kg / 10 mg/mL = 35 mL/h
    assert rep.startswith(b"6 OK rate_ul_h=35000 ") and rep.endswith(b"soft=1"), rep
    assert r.ctl.current_rate() == 35000 and r.ctl.dose_h == 5000
    rep = r.cmd("TITRATE", "dose_ug_kg_h=1000")
    assert rep.startswith(b"7 OK rate_ul_h=7000 ") and rep.endswith(b"soft=0"), rep
    assert r.cmd("TITRATE", "rate_ul_h=160000") == b"8 ER LIMIT rate_ul_h above hard max 150000"
    assert r.cmd("TITRATE", "rate_ul_h=20000").startswith(b"9 OK rate_ul_h=20000")
    r.run(1000)
    assert r.ctl.current_rate() == 20000


def check_kvo_never_above_programmed_rate():
    r = Rig()
    # 10 µL over 72 s = 500 µL/h; KVO asked at 1 mL/h is clamped to 0.5 mL/h
    rep = r.cmd("PROG", "vtbi_nl=10000 dur_ms=72000 kvo_ul_h=1000")
    assert rep == b"1 OK rate_ul_h=500 vtbi_nl=10000 dur_ms=72000 kvo_ul_h=500", rep
    r.cmd("START")
    r.run(75000)
    assert r.state() == fsm.KVO and r.ctl.current_rate() == 500
    # titrating down below the KVO rate lowers the KVO too
    r2 = Rig()
    r2.cmd("PROG", "rate_ul_h=5000 vtbi_nl=1000000 kvo_ul_h=2000")
    r2.cmd("START")
    r2.run(1000)
    assert r2.cmd("TITRATE", "rate_ul_h=1500").startswith(b"3 OK")
    assert r2.ctl.kvo == 1500
    assert r2.cmd("PROG", "rate_ul_h=5000 vtbi_nl=1000000 kvo_ul_h=30000").startswith(b"4 ER STATE")
    r3 = Rig()
    assert r3.cmd("PROG", "rate_ul_h=5000 vtbi_nl=1000000 kvo_ul_h=30000").startswith(b"1 ER RANGE kvo_ul_h")


def check_standby_keeps_program_and_delivers_nothing():
    r = Rig()
    r.cmd("CFG", "callback_ms=10000")
    r.cmd("PROG", "rate_ul_h=60000 vtbi_nl=1000000")
    assert r.cmd("STANDBY") == b"3 OK state=STANDBY"
    s0 = r.steps
    r.run(30000)                      # three times the callback time
    assert r.steps == s0 and not r.ctl.out.enable
    assert r.alarm() == 0 and r.state() == fsm.STANDBY
    assert r.ctl.rate == 60000 and r.ctl.vtbi == 1000000
    assert r.cmd("START") == b"4 OK state=RUNNING"
    r.run(5000)
    assert r.steps > s0
    # running → paused → standby → resume
    r.cmd("PAUSE")
    assert r.cmd("STANDBY") == b"6 OK state=STANDBY"
    assert r.cmd("RESUME") == b"7 OK state=RUNNING"


def check_hard_limit_refusals_name_the_limit():
    r = Rig()
    before = snapshot(r)
    cases = (
        ("drug=ketamine dose_ug_kg=500 wt_g=20000 over_ms=2400000", b"wt_g below hard min 30000"),
        ("drug=ketamine dose_ug_kg=500 wt_g=300000 over_ms=2400000", b"wt_g above hard max 250000"),
        ("drug=ketamine dose_ug_kg=20 wt_g=70000 over_ms=2400000", b"dose_ug_kg below hard min 50"),
        ("drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=600000", b"over_ms below hard min 1200000"),
        ("drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=9000000", b"over_ms above hard max 7200000"),
        ("drug=propofol dose_ug_kg_h=50 wt_g=70000 dur_ms=600000", b"dose_ug_kg_h below hard min 100"),
        ("drug=midazolam rate_ul_h=60000 vtbi_nl=1000000", b"rate_ul_h above hard max 50000"),
    )
    for i, (fields, why) in enumerate(cases):
        rep = r.cmd("PROG", fields)
        assert rep == b"%d ER LIMIT " % (i + 1) + why, rep
        assert snapshot(r) == before
    # a hard limit is refused even with confirm=1
    rep = r.cmd("PROG", "drug=ketamine dose_ug_kg=1100 wt_g=70000 over_ms=2400000 confirm=1")
    assert rep.endswith(b"ER LIMIT dose_ug_kg above hard max 1000"), rep
    assert snapshot(r) == before


def check_soft_limit_confirm_every_form():
    for fields in ("drug=ketamine dose_ug_kg=500 wt_g=35000 over_ms=2400000",      # weight < 40 kg
                   "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=1500000",      # 25 min < 30
                   "drug=propofol dose_ug_kg_h=5000 wt_g=70000 dur_ms=600000",     # > 4 mg/kg/h
                   "drug=midazolam dose_ug_kg_h=150 wt_g=70000 vtbi_nl=1000000"):
        r = Rig()
        before = snapshot(r)
        rep = r.cmd("PROG", fields)
        assert rep.startswith(b"1 ER SOFT outside soft limits"), rep
        assert snapshot(r) == before
        rep = r.cmd("PROG", fields + " confirm=1")
        assert rep.startswith(b"2 OK") and rep.endswith(b"soft=1"), rep
        assert r.state() == fsm.PROGRAMMED
    assert Rig().cmd("PROG", "drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000 confirm=2") \
        .startswith(b"1 ER RANGE confirm")


REQS = {
    "check_rate_and_vtbi": ["REQ-VOL-02"],
    "check_vtbi_and_duration": ["REQ-VOL-02"],
    "check_dose_over_time": ["REQ-VOL-02", "REQ-LIM-01"],
    "check_continuous_dose_mg_kg_h": ["REQ-VOL-02"],
    "check_continuous_dose_mcg_kg_min": ["REQ-LIM-01", "REQ-LIM-02", "REQ-LIM-03"],
    "check_loading_then_maintenance": ["REQ-VOL-02", "REQ-LIM-03"],
    "check_bolus_limits_and_return_to_basal": ["REQ-LIM-01", "REQ-LIM-03", "REQ-COM-02"],
    "check_multi_step_ramp_hold_taper": ["REQ-VOL-02"],
    "check_titration_limits_and_soft_confirm": ["REQ-LIM-01", "REQ-LIM-02", "REQ-LIM-03"],
    "check_kvo_never_above_programmed_rate": ["REQ-VOL-01"],
    "check_standby_keeps_program_and_delivers_nothing": ["REQ-MOT-01"],
    "check_hard_limit_refusals_name_the_limit": ["REQ-LIM-01", "REQ-LIM-03"],
    "check_soft_limit_confirm_every_form": ["REQ-LIM-02"],
}
