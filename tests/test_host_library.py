"""The typed library (issue 14): enums and numbers instead of strings, atomic multi-frame
operations, bounded and documented event delivery, one error hierarchy, a NullHandler,
buffered socket reads. Each test is a defect the library had."""
from __future__ import annotations

import json
import logging
import socket
import threading

import pytest

from host import codec
from host.client import EVENT_BACKLOG, Pump, Step
from host.codec import Event, Telemetry
from host.enums import Alarm, Priority, State
from host.errors import PumpError, UsageMistake
from served import GUARD_S

pytestmark = pytest.mark.req("REQ-HOST-07")


def test_status_and_frames_are_typed(fake, pump):
    st = pump.status()
    assert st.state is State.IDLE and st.state == "IDLE" and st.alarm is Alarm.NONE
    assert st.prio is Priority.NONE and json.dumps(st.to_json())       # still plain JSON
    fake.before_reply = [codec.encode_event("ALARM", {"alarm": "OCCLUSION", "prio": 3}),
                         codec.encode_telemetry({"state": "RUNNING", "del_nl": 1500,
                                                 "rate_ul_h": 52500, "p_mmhg": -3,
                                                 "el_ms": 9})]
    pump.status()
    ev, tl = list(pump.events(timeout=0.3))
    assert ev.alarm is Alarm.OCCLUSION and ev.prio is Priority.HIGH and ev.prio > Priority.MEDIUM
    assert ev.values == {"alarm": Alarm.OCCLUSION, "prio": Priority.HIGH}
    assert ev.fields == {"alarm": "OCCLUSION", "prio": "3"}          # the wire text stays
    assert tl.state is State.RUNNING and tl.del_nl == 1500 and tl.p_mmhg == -3
    assert tl.delivered_ml == 0.0015 and tl.rate_ml_h == 52.5
    assert tl.values["el_ms"] == 9


def test_program_steps_from_two_threads_never_mix(fake):
    """Each thread's STEP frames and its PROG go out together (20 rounds, two threads
    racing); the old client interleaved them."""
    pumps_ok = []

    def worker(pump, rate):
        for _ in range(20):
            pump.program_steps([Step(rate, volume=1), Step(rate, volume=2)])
        pumps_ok.append(rate)

    with Pump.open(fake.path, timeout=1.0) as pump:
        threads = [threading.Thread(target=worker, args=(pump, r)) for r in (10, 20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(pumps_ok) == [10, 20]
    frames = [r for r in fake.executed if r.word in ("STEP", "PROG")]
    assert len(frames) == 2 * 20 * 3
    for k in range(0, len(frames), 3):
        a, b, prog = frames[k:k + 3]
        assert (a.word, a.fields["i"], b.word, b.fields["i"], prog.word) == \
            ("STEP", "0", "STEP", "1", "PROG"), frames[k:k + 3]
        assert a.fields["rate_ul_h"] == b.fields["rate_ul_h"]          # one thread's program


def test_events_are_not_replayed_from_the_connect(fake):
    """The old client queued every frame since connecting (up to 10,000) and replayed them
    to the first events() loop."""
    with Pump.open(fake.path, timeout=1.0) as pump:
        probe = pump.subscribe()          # another stream: tells when the 50 are in
        for i in range(50):
            fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": i}))
        assert len([probe.get(GUARD_S) for _ in range(50)]) == 50
        assert list(pump.events(timeout=0)) == []                     # begins now
        fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": 99}))
        pump.status()                     # its reply follows the event: the event is in
        got = list(pump.events(timeout=0))
        assert [e.fields["n"] for e in got] == ["99"]


def test_a_threads_events_start_at_its_first_request_and_continue(fake, pump):
    pump.status()                                       # this thread's stream begins here
    fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": 1}))
    pump.status()                       # its reply follows event 1: the event is in
    assert [e.fields["n"] for e in pump.events(timeout=0)] == ["1"]
    fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": 2}))
    pump.status()                       # between two events() calls
    fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": 3}))
    pump.status()
    assert [e.fields["n"] for e in pump.events(timeout=0)] == ["2", "3"]   # no gap


def test_two_readers_each_see_every_frame(fake, pump):
    """Two events() loops used to split the frames between them."""
    seen: dict[str, list[str]] = {"a": [], "b": []}
    ready = threading.Barrier(3)

    def reader(name):
        stream = pump.subscribe()
        ready.wait()
        for ev in stream.events(timeout=GUARD_S):      # a hang guard: ends on the count
            seen[name].append(ev.fields["n"])
            if len(seen[name]) == 30:
                break

    threads = [threading.Thread(target=reader, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    ready.wait()
    for i in range(30):
        fake.write(codec.encode_event("STATE", {"state": "IDLE", "n": i}))
    for t in threads:
        t.join(GUARD_S)
    pump.status()                        # nothing more arrived behind the 30
    assert seen["a"] == seen["b"] == [str(i) for i in range(30)]
    assert list(pump.subscribe().events(timeout=0)) == []


def test_event_delivery_is_bounded(fake, pump):
    stream = pump.subscribe()
    n = EVENT_BACKLOG + 200
    for i in range(0, n, 50):
        fake.write(b"".join(codec.encode_event("STATE", {"state": "IDLE", "n": j})
                            for j in range(i, min(n, i + 50))))
    pump.status()                        # its reply follows every frame: all are in
    got = list(stream.events(timeout=0))
    assert len(got) == EVENT_BACKLOG and got[-1].fields["n"] == str(n - 1)
    assert stream.dropped == 200 and pump.stats.dropped_events >= 200


def test_every_library_mistake_is_in_the_hierarchy(fake, pump):
    for bad in (lambda: pump.program(rate=1),                    # one of three
                lambda: pump.titrate(),
                lambda: pump.bolus("0 mL", "10 mL/h"),
                lambda: pump.vitals(sbp=80, dbp=120, hr=60, spo2=99),
                lambda: pump.configure(),
                lambda: pump.program_steps([])):
        with pytest.raises(UsageMistake) as e:
            bad()
        assert isinstance(e.value, PumpError) and isinstance(e.value, ValueError)
    assert fake.executed == [r for r in fake.executed if r.word in ("HELLO", "STATUS")]


def test_the_library_logger_has_a_null_handler():
    import host  # noqa: F401
    handlers = logging.getLogger("infusekit").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_socket_reads_are_buffered():
    """On socket:// the reader took one byte per read call (in_waiting is at most 1)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    burst = b"".join(codec.encode_telemetry({"state": "IDLE", "del_nl": i, "rate_ul_h": 0,
                                             "p_mmhg": 0, "el_ms": i}) for i in range(200))

    def serve():
        conn, _ = srv.accept()
        with conn:
            buf = b""
            while b"\n" not in buf:
                buf += conn.recv(1024)
            rid = int(buf.split(b" ", 1)[0])
            conn.sendall(codec.encode_ok(rid, {"dev": "SOCK-1", "fw": "0", "proto":
                                               codec.PROTO_VERSION, "lib": "x", "libh": "0" * 16,
                                               "tick_ms": 10}))
            # the burst once the client's stream has begun (a stream sees what comes after
            # it): waited for, not slept for (a loaded machine took longer than a nap)
            subscribed.wait(GUARD_S)
            conn.sendall(burst)
            done.wait(GUARD_S)

    done, subscribed = threading.Event(), threading.Event()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with Pump.open(f"socket://127.0.0.1:{port}", timeout=2.0, library=None) as pump:
        stream = pump.subscribe()
        subscribed.set()
        got = []
        for f in stream.events(timeout=GUARD_S):      # a hang guard: ends on the count
            got.append(f)
            if len(got) == 200:
                break
        done.set()
    srv.close()
    assert len(got) == 200 and all(isinstance(f, Telemetry) for f in got)
    assert pump.stats.reads < 50, pump.stats.reads            # was one per byte: > 10,000


def test_asyncio_client(fake):
    """The asyncio face: commands awaited, two coroutines' requests never mixed, events as an
    async iterator, the same errors."""
    import asyncio

    from host.aio import AsyncPump
    from host.errors import IllegalCommand

    async def main():
        async with await AsyncPump.open(fake.path, timeout=1.0) as pump:
            assert pump.info.dev == "FAKE-1"
            st = await pump.status()
            assert st.state is State.IDLE
            with pytest.raises(IllegalCommand):
                await pump.start()
            await asyncio.gather(*(pump.program_steps([Step(r, volume=1), Step(r, volume=2)])
                                   for r in (10, 20, 30)))
            got = []

            async def collect():
                async for ev in pump.events(timeout=GUARD_S):   # a hang guard
                    got.append(ev)
                    break
            task = asyncio.create_task(collect())
            await asyncio.sleep(0)              # one turn of the loop: collect() has subscribed
            fake.write(codec.encode_event("ALARM", {"alarm": "DOOR", "prio": 3}))
            await task
            await pump.status()                 # nothing more behind it
            async for ev in pump.events(timeout=0):
                got.append(ev)
            return got

    got = asyncio.run(main())
    assert len(got) == 1 and got[0].alarm is Alarm.DOOR
    frames = [r for r in fake.executed if r.word in ("STEP", "PROG")]
    for k in range(0, len(frames), 3):
        assert [f.word for f in frames[k:k + 3]] == ["STEP", "STEP", "PROG"]
