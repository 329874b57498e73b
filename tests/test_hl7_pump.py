"""The HL7 bridge in front of the real firmware: python-hl7's `MLLPClient` → loopback TCP →
bridge → host.Pump → pty → simulated pump (firmware under `micropython`).

The pump is served in lock-step (tests/served.py): pump time moves only to answer the host and
when a test advances it; waits are in pump time, so nothing here depends on how fast the
machine is.
"""
from __future__ import annotations

import datetime as dt

import hl7
import pytest
from hl7.client import MLLPClient

from host import Pump
from host.vitals_bridge import Bridge, BridgeServer
from served import Served
from test_hl7_bridge import DBP, HR, SBP, SPO2, T0, pcd01

pytestmark = [pytest.mark.e2e, pytest.mark.micropython]


class Rig:
    """A simulated pump on a pty, a Pump on it, a bridge relaying to it, a monitor client."""

    def __init__(self, vitals_age_ms=None):
        self.served = Served("micropython", seed=5)
        self.sim, self.ep = self.served.sim, self.served.ep
        self.vitals_age_ms = vitals_age_ms
        self.k = 0

    def __enter__(self):
        self.pump = Pump.open(self.ep.url, timeout=5)
        self.pump.hello()
        self.events = []
        self.pump.on_event(self.events.append)
        cfg = {"interlock": 1}
        if self.vitals_age_ms:
            cfg["vitals_age_ms"] = self.vitals_age_ms
        self.pump.configure(**cfg)
        self.pump.program(drug="ketamine", dose="0.5 mg/kg", over="40 min", weight_kg=70)
        self.pump.start()
        self.bridge = Bridge(lambda r: self.pump.vitals(sbp=r.sbp, dbp=r.dbp, hr=r.hr,
                                                        spo2=r.spo2, age_ms=r.age_ms),
                             patient="PAT-1")
        self.server = BridgeServer(self.bridge).start()
        self.mon = MLLPClient("127.0.0.1", self.server.port)
        self.mon.socket.settimeout(30)
        return self

    def __exit__(self, *exc):
        self.mon.close()
        self.server.close()
        self.pump.close()
        self.served.close()

    def send(self, sbp=130, dbp=80, hr=72, spo2=98, patient="PAT-1", raw=None):
        """Send one PCD-01 message 10 s (monitor clock) after the previous; (MSA-1, MSA-3)."""
        self.k += 1
        t = T0 + dt.timedelta(seconds=10 * self.k)
        text = raw if raw is not None else pcd01(
            cid=f"E{self.k}", patient=patient, at=t,
            obs=[(SBP, sbp, t, "R"), (DBP, dbp, t, "R"), (HR, hr, t, "R"), (SPO2, spo2, t, "R")])
        reply = self.mon.send_message(text)
        msa = hl7.parse(reply[1:-2].decode()).segment("MSA")
        return msa.extract_field(1, 1), (msa.extract_field(1, 3) if len(msa) > 3 else "")

    def wait_event(self, name, alarm, max_ms, since=0):
        """An unsolicited ``EV <name> alarm=<alarm>`` from the pump (after event #since),
        within ``max_ms`` of pump time."""
        self.pump.status()                    # frames sent before its reply are in
        self.served.until_host(
            lambda: self.pump.status() and any(
                getattr(e, "name", "") == name and e.fields.get("alarm") == alarm
                for e in list(self.events)[since:]),
            max_ms, f"EV {name} alarm={alarm}", step_ms=500)
        return True


@pytest.mark.req("REQ-HL7-06", "REQ-HL7-02", "REQ-HL7-03")
def test_only_a_good_message_for_this_patient_pauses_the_pump():
    with Rig() as r:
        assert r.send()[0] == "AA"
        assert r.pump.status().state == "RUNNING"
        # SBP 210 in messages the bridge must not use: the pump keeps running
        assert r.send(sbp=210, patient="PAT-2")[0] == "AE"
        bad_unit = pcd01(cid="BU", at=T0 + dt.timedelta(seconds=500),
                         obs=[(("150021", "MDC_PRESS_BLD_NONINV_SYS", "268800", "MDC_DIM_KILO_PASCAL"),
                               210, T0 + dt.timedelta(seconds=500), "R")])
        assert r.send(raw=bad_unit)[0] == "AE"
        assert r.send(raw="MSH|^~\\&|X|Y|||2026||ORU^R01|Q|P|2.6\rOBX|1|NM|150021|x|210")[0] in ("AE", "AR")
        r.k = 100
        assert r.send(raw=pcd01(cid="TYPE", msg_type="ADT^A01^ADT_A01"))[0] == "AR"
        st = r.pump.status()
        assert st.state == "RUNNING" and st.alarm != "VITALS"
        # the pump's patient, over the limit: paused, VITALS (high)
        code, text = r.send(sbp=196, dbp=100)
        assert code == "AA" and "action=paused" in text
        st = r.pump.status()
        assert st.state == "ALARM" and st.alarm == "VITALS"


@pytest.mark.req("REQ-HL7-05", "REQ-HL7-04")
def test_readings_that_stop_end_in_vitals_stale():
    with Rig(vitals_age_ms=10_000) as r:
        assert r.send()[0] == "AA"
        t0 = r.sim.t_ms
        # nothing more arrives: the pump, not the bridge, notices (10 s pump time)
        assert r.wait_event("ALARM", "VITALS_STALE", 60_000), r.pump.status()
        assert r.sim.t_ms - t0 >= 10_000                # not before the readings are 10 s old
        assert r.pump.status().state == "RUNNING"      # medium priority: the infusion goes on
        # a fresh reading clears it (the pump says so; the next lapse raises it again)
        n = len(r.events)
        code, text = r.send()
        assert code == "AA" and "relayed" in text, text
        assert r.wait_event("CLEAR", "VITALS_STALE", 10_000, since=n)
