"""The local pump gateway (host/gateway.py, `infusekit serve`): several clients share one
pump; what one client sees does not change."""
from __future__ import annotations

import json
import socket
import threading

import pytest

from host import cli, codec
from host.client import Pump
from host.codec import Event
from host.gateway import Gateway
from host_fake import FakePump

pytestmark = pytest.mark.req("REQ-HOST-08")


@pytest.fixture
def gw(fake):
    with Gateway(fake.path, listen=0) as g:
        yield g


def test_cli_commands_while_a_monitor_holds_the_pump(fake, gw, capsys):
    """`monitor` held the port, so `ack` from a second shell failed with a link error."""
    with Pump.open(gw.url, timeout=1.0) as watcher:
        stream = watcher.subscribe()
        for argv in (["program", "--rate", "10", "--vtbi", "5"], ["start"], ["pause"],
                     ["status"], ["stop"]):
            code = cli.main(["--port", gw.url, "--json", *argv])
            out = capsys.readouterr().out
            assert code == 0, (argv, out)
        watcher.status()          # its reply follows every frame the pump sent before it
        states = [e.fields["state"] for e in stream.events(timeout=0)
                  if isinstance(e, Event) and e.name == "STATE"]
        assert states == ["PROGRAMMED", "RUNNING", "PAUSED", "IDLE"]   # the watcher saw all
        assert watcher.status().state == "IDLE"
    assert [r.word for r in fake.executed].count("START") == 1


def test_two_clients_racing_get_their_own_replies(fake, gw):
    results: dict[int, list] = {1: [], 2: []}

    def run(k):
        with Pump.open(gw.url, timeout=1.0) as p:
            for _ in range(15):
                results[k].append(p.status().state)
                results[k].append(p.configure(hb_ms=1000 * k)["hb_ms"])

    ts = [threading.Thread(target=run, args=(k,)) for k in results]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for k, got in results.items():
        assert got[1::2] == [str(1000 * k)] * 15          # each its own CFG reply
    assert gw.stats.unanswered == 0 and gw.stats.clients == 0


def _raw(gw_url):
    host, port = gw_url.removeprefix("socket://").split(":")
    s = socket.create_connection((host, int(port)))
    s.settimeout(2)
    return s


def _readline(s):
    """The next reply line (events skipped)."""
    while True:
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(1)
        if not buf.startswith(b"!"):
            return buf


def test_the_same_line_from_two_clients_is_executed_for_each(fake, gw):
    """The pump answers a repeated (id, CRC) from its cache without executing it: two
    clients that happen to send the identical line must not have one taken for the other's
    retry."""
    line = codec.encode_request(4242, "PROG", {"boot": 1, "rate_ul_h": 10000, "vtbi_nl": 1000000})
    a, b = _raw(gw.url), _raw(gw.url)
    try:
        a.sendall(line)
        assert _readline(a).startswith(b"4242 OK")
        a.sendall(line)                                   # a's own retry: answered from cache
        assert _readline(a).startswith(b"4242 OK")
        b.sendall(line)                                   # b's identical line: executed again
        assert _readline(b).startswith(b"4242 OK")
    finally:
        a.close()
        b.close()
    assert [r.word for r in fake.executed].count("PROG") == 2 and gw.stats.flushes == 1


def _session(url):
    lines = []
    with Pump.open(url, timeout=1.0, first_id=100) as p:
        orig = p._on_line

        def spy(line):
            lines.append(line)
            orig(line)
        p._on_line = spy
        p.status()
        p.program(rate="10 mL/h", vtbi="5 mL")
        p.start()
        try:
            p.start()
        except Exception as e:
            lines.append(type(e).__name__.encode())
        p.stop()
        p.status()                # the frames sent with the last change are in before it
    return lines


def test_a_single_client_sees_the_same_as_on_the_port():
    direct, via = FakePump(), FakePump()
    try:
        a = _session(direct.path)
        with Gateway(via.path, listen=0) as g:
            b = _session(g.url)
        assert a == b and len(a) >= 6
        assert [r.fields for r in direct.executed] == [r.fields for r in via.executed]
    finally:
        direct.close()
        via.close()


def test_serve_cli_refuses_a_bad_port(capsys):
    assert cli.main(["serve", "--port", "foo://x", "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["exit"] == 2


@pytest.mark.e2e
def test_monitor_and_cli_share_the_simulated_pump(capsys):
    """Against the real firmware (CPython runtime) on a pty: a script watches through the
    gateway while the CLI programs, starts, pauses and acknowledges through it."""
    from served import Served
    with Served("cpython") as s, Gateway(s.ep.url, listen=0) as g, \
            Pump.open(g.url, timeout=2.0) as watcher:
        stream = watcher.subscribe()
        for argv in (["program", "--drug", "ketamine", "--dose", "0.5 mg/kg", "--over",
                      "40 min", "--weight", "70"], ["start"], ["pause"], ["resume"],
                     ["stop"], ["stop"]):
            assert cli.main(["--port", g.url, "--timeout", "2", *argv]) == 0, argv
        capsys.readouterr()
        watcher.status()          # through the same gateway: every frame before it is in
        states = [e.state for e in stream.events(timeout=0)
                  if isinstance(e, Event) and e.name == "STATE"]
        assert states == ["PROGRAMMED", "RUNNING", "PAUSED", "RUNNING", "IDLE"]
        assert watcher.status().state == "IDLE"
