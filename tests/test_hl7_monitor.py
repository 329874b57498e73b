"""The simulated bedside monitor (hil_sim/monitor.py): PCD-01 messages a real HL7 library
reads as such, from the patient model, with NIBP cycles, artefacts and dropouts."""
from __future__ import annotations

import hl7
import pytest

from hil_sim.monitor import Monitor, MonitorParams
from hil_sim.patient import Patient, PatientParams
from host.vitals_bridge import Bridge

EPOCH = 1_767_225_600.0


def _codes(msg):
    m = hl7.parse(msg)
    return {str(s.extract_field(1, 3, 1, 1)): (str(s.extract_field(1, 5, 1, 1)),
                                               str(s.extract_field(1, 11, 1, 1)))
            for s in m.segments("OBX")}


def _run(params, seconds, patient=None):
    mon = Monitor(patient or Patient(PatientParams(noise=False)), params, seed=3, epoch_s=EPOCH)
    out = []
    for t in range(0, seconds * 1000 + 1, 1000):
        out += [(t, m) for m in mon.poll(t)]
    return mon, out


def test_messages_are_pcd01_oru_r01_from_the_patient():
    mon, out = _run(MonitorParams(noise=False), 300)
    m = hl7.parse(out[0][1])
    msh = m.segment("MSH")
    assert (msh.extract_field(1, 9, 1, 1), msh.extract_field(1, 9, 1, 2)) == ("ORU", "R01")
    assert m.segment("PID").extract_field(1, 3, 1, 1) == "PAT-1"
    # HR and SpO2 every 5 s; NIBP when each 30-s cycle ends (5 + 30, then every 120 s)
    nibp = [t for t, msg in out if "150021" in _codes(msg)]
    assert nibp == [35000, 155000, 275000]
    assert len(out) == 300 // 5 + 1
    c = _codes([msg for t, msg in out if t == 35000][0])
    sbp0, dbp0, hr0, spo20 = Patient(PatientParams(noise=False)).true_vitals()
    assert c["150021"] == (str(round(sbp0)), "R") and c["150022"] == (str(round(dbp0)), "R")
    assert c["147842"][0] == str(round(hr0)) and c["150456"][0] == str(round(spo20))


def test_artefacts_fail_nibp_and_invalidate_spo2():
    mon, out = _run(MonitorParams(artefacts_per_h=120, artefact_s=(20, 60)), 1200)
    x = [msg for _, msg in out if _codes(msg).get("150456", ("", ""))[1] == "X"]
    assert x and all(_codes(m)["150456"][0] == "" for m in x)
    assert mon.nibp_failed > 0
    # the bridge uses what is valid and never a value marked X
    got = []
    b = Bridge(lambda r: (got.append(r), "none")[1], patient="PAT-1")
    for _, msg in out:
        assert b.handle(msg).code in ("AA", "AE")
    assert got and all(r.spo2 > 80 for r in got)


def test_dropouts_lose_messages_and_scheduled_ones_count_from_the_infusion():
    pt = Patient(PatientParams(noise=False))
    mon = Monitor(pt, MonitorParams(dropouts=((100, 50),)), seed=3, epoch_s=EPOCH)
    sent = [t for t in range(0, 200_001, 1000) for _ in mon.poll(t)]
    assert mon.lost == 0                          # no drug yet: nothing scheduled has begun
    pt.advance(1.0, 1.0)                          # the infusion starts (first drug at 201 s)
    times = [t for t in range(201_000, 500_001, 1000) for _ in mon.poll(t)]
    assert mon.lost == 10                         # 50 s at one message per 5 s
    assert not [t for t in times if 306_000 <= t < 351_000]
    rnd = Monitor(pt, MonitorParams(dropouts_per_h=30, dropout_s=(30, 30)), seed=3, epoch_s=EPOCH)
    for t in range(0, 3_600_001, 1000):
        rnd.poll(t)
    assert 0 < rnd.lost < rnd.sent


def test_same_seed_same_messages():
    a = _run(MonitorParams(artefacts_per_h=10), 600, Patient(PatientParams(), seed=1))[1]
    b = _run(MonitorParams(artefacts_per_h=10), 600, Patient(PatientParams(), seed=1))[1]
    assert a == b


@pytest.mark.parametrize("bad", [{"nibp_interval_s": 0}, {"nibp_duration_s": 200},
                                 {"artefacts_per_h": -1}, {"colour": 1}])
def test_bad_monitor_parameters_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        MonitorParams.from_toml(bad)


def test_sender_retries_per_message_not_on_a_wall_clock():
    """A monitor whose bridge was not there yet connects at its next message, however soon
    that comes in wall time: a lock-step server (pump time racing ahead of the wall clock) used
    to lose every message of a 0.5-s wall-clock back-off — 300 s of pump time once, in
    test_hl7_e2e's feed-lost case on a quiet machine."""
    import socket
    import threading

    from hil_sim.monitor import MonitorSender
    from served import wall_until

    with socket.socket() as s:            # a free port, nobody listening yet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = _run(MonitorParams(noise=False), 0)[1][0][1]
    sender = MonitorSender(f"mllp://127.0.0.1:{port}", ack_timeout_s=10).start()
    try:
        sender.put(msg)
        wall_until(lambda: not sender.busy(), "the first message given up")
        assert sender.unsent == 1 and not sender.acks

        srv = socket.create_server(("127.0.0.1", port))
        def answer():                       # one MLLP peer: read a block, send an AA
            conn, _ = srv.accept()
            with conn:
                buf = b""
                while not buf.endswith(b"\x1c\r"):
                    buf += conn.recv(4096)
                cid = hl7.parse(buf.strip(b"\x0b\x1c\r").decode()).segment("MSH")[10][0]
                conn.sendall(b"\x0bMSH|^~\\&|B||||||ACK|1|P|2.6\rMSA|AA|%s\r\x1c\r" % str(cid).encode())
        t = threading.Thread(target=answer, daemon=True)
        t.start()
        sender.put(msg)                     # at once: well within any back-off
        wall_until(lambda: not sender.busy(), "the second message acknowledged")
        assert sender.acks == {"AA": 1} and sender.unsent == 1
        srv.close()
    finally:
        sender.close()
