"""The simulated serial line (pacing, scheduling, noise) and the host endpoints."""
import socket
import time

import pytest
import serial

from hil_sim.link import Channel, MemoryEndpoint, PtyEndpoint, SerialLink, TcpEndpoint

BYTE_MS = 10 * 1000.0 / 115200


@pytest.mark.parametrize("n", [1, 12, 128])
def test_n_bytes_take_n_byte_times(n):
    ch = Channel(115200)
    data = bytes(range(n))
    ch.send(data, 100.0)
    last = 100.0 + n * BYTE_MS
    assert ch.recv(last - BYTE_MS / 2) == data[:-1]
    assert ch.recv(last) == data[-1:]
    assert ch.pending == 0


def test_writes_queue_behind_a_busy_line():
    ch = Channel(115200)
    ch.send(b"a" * 10, 0.0)
    ch.send(b"b" * 10, 0.0)
    assert ch.recv(10 * BYTE_MS) == b"a" * 10
    assert ch.head_done() == pytest.approx(20 * BYTE_MS)
    assert ch.recv(20 * BYTE_MS) == b"b" * 10
    ch.send(b"c", 50.0)                                   # idle line: no queueing
    assert ch.next_arrival() == pytest.approx(50.0 + BYTE_MS)


def test_baud_rate_sets_the_pace():
    link = SerialLink(baud=9600)
    link.to_host.send(b"x" * 96, 0.0)
    assert link.to_host.recv(99.9) == b"x" * 95
    assert link.wire_ms(96) == pytest.approx(100.0)


def test_schedule_places_bytes_before_the_first_call_after_arrival():
    ch = Channel(115200)
    ch.send(b"1 STATUS\n", 0.0)              # 9 bytes, last one at 0.78 ms
    assert ch.schedule(0.0, 1.0, 1) == []    # call 0 at t=0: nothing has arrived
    sched = ch.schedule(0.0, 0.5, 4)         # calls at 0, .5, 1.0, 1.5
    assert sched == [(1, b"1 STA"), (2, b"TUS\n")]
    assert ch.pending == 0


def test_schedule_keeps_bytes_beyond_the_slice():
    ch = Channel(115200)
    ch.send(b"x" * 100, 0.0)                 # 8.68 ms on the wire
    sched = ch.schedule(0.0, 5.0, 2)         # calls at 0 and 5
    assert sched == [(1, b"x" * 57)]
    assert ch.pending == 43
    assert ch.schedule(10.0, 5.0, 1) == [(0, b"x" * 43)]


def test_drop_and_corrupt_are_seeded():
    def run(seed):
        link = SerialLink(drop_p=0.05, corrupt_p=0.05, seed=seed)
        link.to_pump.send(bytes(2000), 0.0)
        return link.to_pump.recv(1e9), link.to_pump

    a, ch = run(1)
    b, _ = run(1)
    c, _ = run(2)
    assert a == b and a != c
    assert 50 < ch.bytes_dropped < 160 and 40 < ch.bytes_corrupted < 150
    assert len(a) == 2000 - ch.bytes_dropped
    assert sum(1 for x in a if x) == ch.bytes_corrupted    # one bit flipped in a zero byte


def test_dropped_bytes_still_take_wire_time():
    link = SerialLink(drop_p=0.5, seed=0)
    link.to_pump.send(bytes(100), 0.0)
    assert len(link.to_pump.recv(1e9)) < 100
    link.set_noise(drop_p=0.0)
    link.to_pump.send(b"z", 0.0)
    assert link.to_pump.next_arrival() == pytest.approx(101 * BYTE_MS)


GUARD_S = 60.0           # wall seconds: hang guards on OS events only, never a figure


def _roundtrip(ep, port):
    """Echo once through an endpoint: host → sim → host."""
    port.write(b"1 HELLO\n")
    deadline = time.monotonic() + GUARD_S
    got = b""
    while time.monotonic() < deadline and not got.endswith(b"\n"):
        ep.wait(0.05)
        got += ep.read()
    assert got == b"1 HELLO\n"
    ep.write(b"1 OK dev=SIM\n")
    assert port.readline() == b"1 OK dev=SIM\n"


def test_pty_endpoint_carries_bytes_both_ways():
    with PtyEndpoint() as ep:
        assert ep.url.startswith("/dev/")
        assert ep.read() == b""
        port = serial.serial_for_url(ep.url, baudrate=115200, timeout=GUARD_S)
        try:
            _roundtrip(ep, port)
            big = bytes(range(256)) * 4                   # raw: every byte value passes
            ep.write(big)
            assert port.read(len(big)) == big
        finally:
            port.close()
        # the host went away and came back
        port = serial.serial_for_url(ep.url, baudrate=115200, timeout=GUARD_S)
        try:
            _roundtrip(ep, port)
        finally:
            port.close()


def test_pty_overrun_when_nobody_reads():
    with PtyEndpoint() as ep:
        for _ in range(200):
            ep.write(b"! TL state=RUNNING del_nl=123456 p_mmhg=20*ABCD\n" * 20)
        assert ep.overruns > 0                            # never blocks, never raises


def test_tcp_endpoint_carries_bytes_both_ways_one_client_at_a_time():
    with TcpEndpoint(0) as ep:
        assert ep.url == f"socket://127.0.0.1:{ep.port}"
        ep.write(b"lost: nobody connected\n")
        port = serial.serial_for_url(ep.url, timeout=GUARD_S)
        try:
            deadline = time.monotonic() + GUARD_S
            while not ep.connected and time.monotonic() < deadline:
                ep.wait(0.05)
                ep.read()
            assert ep.connected
            second = socket.create_connection(("127.0.0.1", ep.port), timeout=GUARD_S)
            ep.wait(0.5)
            ep.read()
            assert second.recv(1) == b""                  # closed at once
            second.close()
            _roundtrip(ep, port)
        finally:
            port.close()
        deadline = time.monotonic() + GUARD_S
        while ep.connected and time.monotonic() < deadline:
            ep.wait(0.05)
            ep.read()
        assert not ep.connected
        port = serial.serial_for_url(ep.url, timeout=GUARD_S)
        try:
            while not ep.connected:
                ep.wait(0.05)
                ep.read()
            _roundtrip(ep, port)
        finally:
            port.close()


def test_memory_endpoint():
    ep = MemoryEndpoint()
    assert not ep.wait(0.0)
    ep.host_write(b"abc")
    assert ep.wait(0.0) and ep.read() == b"abc"
    ep.write(b"xyz")
    assert ep.host_read(timeout=1.0) == b"xyz"
    assert ep.host_read() == b""


def test_delay_adds_latency_and_keeps_order():
    link = SerialLink(115200)
    link.set_noise(delay_ms=40.0)
    ch = link.to_pump
    ch.send(b"abc", 0.0)
    assert ch.recv(39.0) == b""                           # nothing before the latency
    assert ch.recv(40.0 + 3 * BYTE_MS) == b"abc"          # then paced as usual
    link.set_noise(delay_ms=0.0)
    ch.send(b"x", 100.0)
    assert ch.recv(100.0 + BYTE_MS) == b"x"
    with pytest.raises(ValueError):
        link.set_noise(delay_ms=-1)


def test_delayed_link_slows_round_trips_in_the_simulation():
    from hil_sim.cosim import Simulation
    from host.codec import encode_request

    def rtt(sim):
        t0 = sim.t_ms
        sim.host_send(encode_request(7, "STATUS", {}))
        got = b""
        while b"7 OK" not in got:
            sim.run_for(10)
            got += sim.host_recv()
        return sim.t_ms - t0

    with Simulation("cpython", seed=1) as sim:
        base = rtt(sim)
        sim.inject(link_delay=100)
        slow = rtt(sim)
    assert slow >= base + 190          # 100 ms each way (virtual time)


def test_pty_overrun_under_a_slow_reader_never_looks_like_a_disconnect():
    # the pump (its own thread, as in `serve`) writes faster than the host reads: the newest
    # bytes are lost, but a pyserial reader never sees "ready to read but no data", which it
    # takes for a disconnect
    import threading
    with PtyEndpoint() as ep:
        port = serial.serial_for_url(ep.url, timeout=0.01)
        stop = threading.Event()
        frame = b"! TL state=RUNNING del_nl=123456 p_mmhg=20*ABCD\n" * 40

        def pump():
            while not stop.is_set():
                ep.write(frame)

        th = threading.Thread(target=pump, daemon=True)
        th.start()
        try:
            got = reads = 0
            t_end = time.monotonic() + GUARD_S  # a hang guard: the loop ends on counts
            while not (ep.overruns > 0 and got > 0 and reads >= 300):
                assert time.monotonic() < t_end, (ep.overruns, got, reads)
                got += len(port.read(512))      # raises SerialException on a false EOF
                reads += 1
            assert ep.overruns > 0 and got > 0
        finally:
            stop.set()
            th.join(timeout=5)
            port.close()
