"""Issue 10's therapy defects, each attacked as a clinician or an attacker found it: titration
by rate past the drug's limits, KVO of a drug that allows none, boluses without lockout or
cap, alarms that outlive their infusion, storage errors that block STOP or escape the
controller. Every test here failed on the code before the fix."""
import sys

import pytest

from conftest import FIRMWARE
from therapy_kit import Pump, frame, with_boot

sys.path.insert(0, str(FIRMWARE))

from pumpcore import fsm  # noqa: E402
from hil_sim import envelope as E  # noqa: E402

MIN = 60000
ENV_LIB = E.load_library(str(FIRMWARE / "druglib.json"))


def _code(reply):
    p = reply.split()
    return p[1] + (" " + p[2] if p[1] == "ER" else "")


# ------------------------------------------------------------------ titration by rate
@pytest.mark.req("REQ-THR-02")
def test_titrate_rate_inside_the_drugs_dose_rate_limits():
    """Remifentanil 30 kg at 30 µg/kg/h: TITRATE rate_ul_h=100000 (≈167 µg/kg/h against a
    hard max of 60) was accepted; now refused, changing nothing."""
    p = Pump()
    assert _code(p.send("PROG drug=remifentanil dose_ug_kg_h=30 wt_g=30000 vtbi_nl=20000000 confirm=1")) == "OK"
    assert _code(p.send("START")) == "OK"
    p.run(2000)
    before = p.status()
    r = p.send("TITRATE rate_ul_h=100000")
    assert _code(r) == "ER LIMIT", r
    assert p.status()["rate_ul_h"] == before["rate_ul_h"] == "18000"
    # 45 µg/kg/h (27 mL/h) is above the soft max 30: needs confirm=1
    assert _code(p.send("TITRATE rate_ul_h=27000")) == "ER SOFT"
    r = p.send("TITRATE rate_ul_h=27000 confirm=1")
    assert _code(r) == "OK" and "soft=1" in r
    assert _code(p.send("TITRATE rate_ul_h=36001 confirm=1")) == "ER LIMIT"   # > 60 µg/kg/h
    r = p.send("TITRATE rate_ul_h=12000")                                  # 20 µg/kg/h
    assert _code(r) == "OK" and "soft=0" in r
    assert _code(p.send("TITRATE rate_ul_h=300")) == "ER LIMIT"           # < 1 µg/kg/h


@pytest.mark.req("REQ-THR-02")
def test_titrate_rate_of_a_dose_over_time_keeps_its_duration_limits():
    """Ketamine 0.5 mg/kg over 40 min (70 kg: 35 mL) titrated to 199 mL/h (35 mg in 10.5
    min against a 20-min hard minimum) was accepted; now refused."""
    p = Pump()
    assert _code(p.send("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")) == "OK"
    assert _code(p.send("START")) == "OK"
    p.run(60000)
    r = p.send("TITRATE rate_ul_h=199000")
    assert _code(r) == "ER LIMIT", r
    assert p.status()["rate_ul_h"] == "52500"
    assert _code(p.send("TITRATE rate_ul_h=80000")) == "ER SOFT"        # ≈ 27 min in all < 30
    assert _code(p.send("TITRATE rate_ul_h=80000 confirm=1")) == "OK"
    assert _code(p.send("TITRATE rate_ul_h=1000")) == "ER LIMIT"        # > 120 min in all


@pytest.mark.req("REQ-THR-02")
def test_titrating_a_loading_dose_keeps_its_time_limits():
    p = Pump()
    r = p.send("PROG drug=ketamine dose_ug_kg_h=500 wt_g=70000 vtbi_nl=30000000 load_ug_kg=500 load_ms=2400000")
    assert _code(r) == "OK", r
    assert _code(p.send("START")) == "OK"
    p.run(10000)
    assert _code(p.send("TITRATE rate_ul_h=200000")) == "ER LIMIT"       # 35 mg in 10.5 min
    assert _code(p.send("TITRATE rate_ul_h=100000")) == "ER SOFT"        # 21 min < 30
    assert _code(p.send("TITRATE dose_ug_kg_h=500")) == "ER STATE"       # not the maintenance
    assert p.status()["rate_ul_h"] == "52500"


@pytest.mark.req("REQ-THR-02")
def test_titration_never_leaves_the_envelope():
    """Every titration the pump accepts, over a grid of rates and moments, is one the
    independent oracle allows."""
    for prog in ("PROG drug=remifentanil dose_ug_kg_h=30 wt_g=30000 vtbi_nl=20000000 confirm=1",
                 "PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000",
                 "PROG drug=propofol dose_ug_kg_h=2000 wt_g=70000 dur_ms=3600000"):
        env = E.Envelope(ENV_LIB)
        assert env.program(prog) is None
        wt = E.parse_fields(prog)["wt_g"]
        for rate in (500, 5000, 18000, 36000, 52500, 80000, 105000, 150000, 199000):
            for confirm in ("", " confirm=1"):
                p = Pump()
                p.send(prog)
                p.send("START")
                p.run(30000)
                st = p.status()
                e_ms = int(st["el_ms"])
                r = p.send("TITRATE rate_ul_h=%d%s" % (rate, confirm))
                why = env.titration_refusal(rate, e_ms, int(st["del_nl"]), bool(confirm), wt)
                assert (_code(r) == "OK") == (why is None), (prog, rate, confirm, r, why)


# ------------------------------------------------------------------ KVO
@pytest.mark.req("REQ-THR-03")
def test_kvo_refused_for_a_drug_without_kvo_and_above_the_library():
    p = Pump()
    r = p.send("PROG drug=remifentanil rate_ul_h=2000 vtbi_nl=2000000 kvo_ul_h=1000")
    assert _code(r) == "ER LIMIT", r
    assert p.ctl.fsm.state == fsm.IDLE
    r = p.send("PROG drug=ketamine rate_ul_h=52500 vtbi_nl=35000000 kvo_ul_h=2000")
    assert _code(r) == "ER LIMIT", r
    r = p.send("PROG drug=ketamine rate_ul_h=52500 vtbi_nl=35000000 kvo_ul_h=500")
    assert _code(r) == "OK" and "kvo_ul_h=500" in r
    # steps and dose programs too
    p.send("STOP")
    p.send("STEP i=0 rate_ul_h=2000 vol_nl=1000000")
    assert _code(p.send("PROG steps=1 drug=remifentanil kvo_ul_h=100")) == "ER LIMIT"


@pytest.mark.req("REQ-THR-03")
def test_remifentanil_no_kvo_after_the_vtbi():
    """20 mL were delivered after a 2 mL VTBI of remifentanil in 1 h."""
    p = Pump()
    assert _code(p.send("PROG drug=remifentanil rate_ul_h=100000 vtbi_nl=2000000 kvo_ul_h=20000")) == "ER LIMIT"
    assert _code(p.send("PROG drug=remifentanil vtbi_nl=2000000 dur_ms=72000")) == "OK"
    p.send("START")
    p.run(3600000 // 20)          # 3 min; the VTBI takes 72 s
    assert p.ctl.fsm.state == fsm.COMPLETE
    st = p.status()
    assert int(st["del_nl"]) <= 2000000


@pytest.mark.req("REQ-THR-03")
def test_kvo_volume_is_in_del_nl_and_kept_after_pause():
    p = Pump()
    assert _code(p.send("PROG drug=ketamine rate_ul_h=100000 vtbi_nl=1000000 kvo_ul_h=1000")) == "OK"
    p.send("START")
    p.run(36000 + 600000)          # VTBI in 36 s, then 10 min of KVO at 1 mL/h
    assert p.ctl.fsm.state == fsm.KVO
    st = p.telemetry()             # the KVO part is telemetry's (STATUS has no room for it)
    kvo = int(st["kvo_nl"])
    assert kvo > 100000
    assert int(st["del_nl"]) >= 1000000 - 218 + kvo - 218, st     # del_nl counts the KVO too
    p.send("PAUSE")
    st2 = p.telemetry()
    assert int(st2["kvo_nl"]) == kvo and int(st2["del_nl"]) == int(st["del_nl"]), st2
    assert int(p.status()["del_nl"]) == int(st["del_nl"])


# ------------------------------------------------------------------ bolus lockout / hourly cap
@pytest.mark.req("REQ-THR-04")
def test_bolus_lockout_and_hourly_cap():
    """20 × 1 mL of remifentanil in 12.5 min were accepted; now: one per 5 min, 150 µg
    (3 mL) an hour."""
    p = Pump()
    assert _code(p.send("PROG drug=remifentanil dose_ug_kg_h=6 wt_g=70000 vtbi_nl=40000000")) == "OK"
    p.send("START")
    p.run(1000)
    ok = 0
    for _ in range(20):
        r = p.send("BOLUS vol_nl=1000000 rate_ul_h=100000")
        if _code(r) == "OK":
            ok += 1
        else:
            assert _code(r) == "ER LIMIT", r
        p.run(37500)
    assert ok == 3, ok                   # at 0, 5 and 10 min
    # a refused bolus changes nothing; the hour's cap holds even after the lockout
    p.run(20 * MIN)                      # 33 min: lockout over, 3 mL (150 µg) in this hour
    r = p.send("BOLUS vol_nl=1000000 rate_ul_h=100000")
    assert _code(r) == "ER LIMIT" and "hour" in r, r
    p.run(30 * MIN)                      # > 60 min after the first
    assert _code(p.send("BOLUS vol_nl=1000000 rate_ul_h=100000")) == "OK"


@pytest.mark.req("REQ-THR-04")
def test_bolus_limits_survive_stop_and_new_program_of_the_same_drug():
    p = Pump()
    p.send("PROG drug=remifentanil rate_ul_h=8400 vtbi_nl=40000000")
    p.send("START")
    assert _code(p.send("BOLUS vol_nl=1000000 rate_ul_h=100000")) == "OK"
    p.run(60000)
    p.send("STOP")
    p.send("PROG drug=remifentanil rate_ul_h=8400 vtbi_nl=40000000")
    p.send("START")
    assert _code(p.send("BOLUS vol_nl=1000000 rate_ul_h=100000")) == "ER LIMIT"


# ------------------------------------------------------------------ alarms end with the infusion
@pytest.mark.req("REQ-THR-05")
def test_vitals_alarm_ends_with_the_infusion():
    p = Pump()
    p.send("CFG interlock=1")
    p.send("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    p.send("START")
    p.send("VITALS sbp=120 dbp=80 hr=70 spo2=98")
    p.run(2000)
    r = p.send("VITALS sbp=200 dbp=80 hr=70 spo2=98")
    assert "action=paused" in r
    assert p.ctl.fsm.state == fsm.ALARM
    p.send("STOP")
    st = p.status()
    assert st["state"] == "IDLE" and st["alarm"] == "NONE", st
    p.send("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    p.send("VITALS sbp=120 dbp=80 hr=70 spo2=98")
    assert _code(p.send("START")) == "OK"


# ------------------------------------------------------------------ storage errors
class _Boom:
    def __call__(self, *a):
        raise OSError(28, "no space")


@pytest.mark.req("REQ-THR-06")
def test_settings_store_error_raises_fault_alarm_not_an_exception():
    p = Pump()
    p.ctl.store_settings = _Boom()
    r = p.send("CFG occl_mmhg=500")          # must not raise out of Controller.step
    assert _code(r) == "ER FAULT", r
    assert p.ctl.settings.occl_mmhg != 500, "a refused CFG changed the setting"
    assert p.status()["alarm"] == "FAULT"


@pytest.mark.req("REQ-THR-06")
def test_counter_store_error_raises_fault_alarm_not_an_exception():
    """An OSError from storing the auth counter escaped Controller.step."""
    from pumpcore.auth import Auth, mac16
    key = b"k" * 16
    a = Auth(key, 0, _Boom())
    p = Pump(auth=a)
    p.ctl.auth.required = True
    signed = b"1 PROG boot=%d rate_ul_h=1000 vtbi_nl=1000000 ctr=1" % p.ctl.boot
    out, tx = p.step(frame(signed + b" mac=" + mac16(key, signed)))   # must not raise
    assert "1 " in tx, tx
    assert p.status()["alarm"] == "FAULT"
    assert p.ctl.auth.counter == 1            # advanced in RAM: no replay in this boot
    out, tx = p.step(frame(signed + b" mac=" + mac16(key, signed)))
    assert "ER" in tx or "1 OK" in tx         # the retry cache or a refusal, never a second run


@pytest.mark.req("REQ-THR-06")
def test_stop_and_pause_work_after_a_log_write_failure():
    """A failed log write during RUNNING left the pump in FAULT where STOP was refused."""
    from boards.sim import Harness
    from pumpcore.memstore import MemStore

    class FailingStore(MemStore):
        fail = False

        def append(self, name, data):
            if self.fail:
                raise OSError(28, "no space")
            MemStore.append(self, name, data)

        def write(self, name, data):         # the heartbeat file too: the flash fails whole
            if self.fail:
                raise OSError(28, "no space")
            MemStore.write(self, name, data)

    store = FailingStore()
    h = Harness(str(FIRMWARE / "druglib.json"), store)
    now = [(1 << 30) - 60000]
    rid = [0]
    enc = [0]

    def send(body, ticks=1):
        rid[0] += 1
        rx = [(0, frame(with_boot("%d %s" % (rid[0], body), h.app.ctl.boot)))]
        out = []
        for k in range(ticks):          # one tick per slice: the encoder follows the steps
            steps, en, al, tx = h.slice(now[0], 50, 1, 20 + (k & 1), enc[0], 0, 4000, rx if k == 0 else [])
            now[0] += 50
            enc[0] += sum(steps)
            out += [c for _, c in tx]
        return b"".join(out).decode()

    assert "OK" in send("PROG rate_ul_h=100000 vtbi_nl=50000000")
    assert "OK state=RUNNING" in send("START", 40)
    store.fail = True
    send("HB", 220)                  # 11 s: the heartbeat is due and cannot be written
    assert h.app.ctl.fsm.state != fsm.RUNNING, "kept infusing without its write-ahead log"
    r = send("PAUSE")
    assert "%d OK" % rid[0] in r or "%d ER STATE" % rid[0] in r, r
    r = send("STOP")
    assert "%d OK state=" % rid[0] in r, r
    s = send("STATUS")
    assert "alarm=FAULT" in s, s
    assert "state=IDLE" in s, s
    r = send("START")
    assert "%d ER" % rid[0] in r, r          # nothing starts while the log is unwritable
    store.fail = False
    send("TLM period_ms=0", 2)     # the next record is written: the condition is gone
    send("ACK")
    assert "alarm=NONE" in send("STATUS")


@pytest.mark.req("REQ-THR-04")
def test_host_library_shows_the_bolus_limits():
    """The host reads the same library file and shows the lockout and hourly cap."""
    from host.druglib import DrugLibrary as HostLib, render_show
    d = HostLib.load().get("remifentanil")
    j = d.to_json()
    assert j["bolus_lockout_min"] == 5 and j["bolus_max_h_ug"] == 150 and j["kvo_ul_h"] == 0
    t = render_show(d)
    cells = [list(c.cells) for c in t.columns]
    rows = list(zip(*cells))
    assert ("bolus lockout (min)", "5", "", "", "") in rows, rows
    assert ("bolus dose per hour (µg)", "", "", "", "150") in rows, rows
    assert "no KVO" in t.caption


# ------------------------------------------------------------------ found by the grammar fuzzer
@pytest.mark.req("REQ-THR-07", "REQ-COM-04")
def test_retry_of_an_ack_that_announced_events_gets_its_reply():
    """ACK writes `! EV CLEAR` before its reply; the retry cache kept the event as "the
    reply", so a retried ACK was answered with the event alone - no reply at all."""
    p = Pump()
    p.send("PROG rate_ul_h=100000 vtbi_nl=20000000")
    p.send("START")
    p.inp.door_open = True
    p.run(200)
    p.inp.door_open = False
    p.run(200)
    p.rid += 1
    f = frame(with_boot("%d ACK" % p.rid, p.ctl.boot))   # ACK is guarded: it names the boot
    _, tx1 = p.step(f)
    assert "! EV CLEAR" in tx1 and ("%d OK" % p.rid) in tx1, tx1
    _, tx2 = p.step(f)                              # the host retries: same bytes
    assert ("%d OK" % p.rid) in tx2, tx2


@pytest.mark.req("REQ-THR-07", "REQ-COM-02")
def test_refused_ack_keeps_the_cumulative_air_record():
    """A refused ACK (alarm condition still present) cleared the 15-min air buckets."""
    p = Pump()
    p.send("PROG rate_ul_h=600000 vtbi_nl=50000000")
    p.send("START")
    p.inp.air = True
    for _ in range(40):                            # small bubbles, cleared between
        p.run(100)
        p.inp.air = not p.inp.air
    p.inp.air = False
    p.ctl.alarms.raise_(13, p.ctl.out.tx, p.t)     # a high alarm whose condition stays (FAULT)
    p.ctl.fsm.fire(fsm.T_ALARM)
    before = list(p.ctl.air_b)
    assert sum(before) > 0
    r = p.send("ACK")
    assert _code(r) == "ER STATE", r
    assert list(p.ctl.air_b) == before


@pytest.mark.req("REQ-THR-02", "REQ-THR-07")
def test_dose_over_time_is_not_titrated_by_dose_rate():
    """TITRATE dose_ug_kg_h on a dose over time made it a dose rate that no longer kept the
    dose's minimum time (a later rate titration was then checked as a dose rate)."""
    p = Pump()
    p.send("PROG drug=ketamine dose_ug_kg=500 wt_g=70000 over_ms=2400000")
    p.send("START")
    p.run(1000)
    assert _code(p.send("TITRATE dose_ug_kg_h=1000")) == "ER ARG"
    assert p.ctl.dose_h == 0
