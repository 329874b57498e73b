"""A controller on an ideal mechanism, driven by frames in virtual time (for the therapy tests).

`Pump.send(body)` sends one CRC'd request and returns its reply line (str, without CRC);
`Pump.run(ms)` advances time in control ticks with the encoder following the steps.
"""
import binascii
import sys

from conftest import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from pumpcore.controller import Controller, Config, Inputs, TICK_MS  # noqa: E402
from pumpcore.druglib import DrugLibrary  # noqa: E402

K = 217078
T0 = (1 << 30) - 60000
LIB = DrugLibrary.load(str(FIRMWARE / "druglib.json"))


def with_boot(body, boot):
    """`body` with ` boot=N` after its word when the command is guarded and names no boot (as
    a host adds it after HELLO, docs/protocol.md *Boot number*)."""
    from host.statemachine import GUARDED_WORDS
    p = body.split(" ")
    if len(p) >= 2 and p[1] in GUARDED_WORDS and " boot=" not in body and " mac=" not in body:
        p.insert(2, "boot=%d" % boot)
    return " ".join(p)


def frame(body):
    b = body.encode() if isinstance(body, str) else body
    return b + b"*%04X\n" % binascii.crc_hqx(b, 0)


class Pump:
    def __init__(self, ctl=None, **kw):
        self.ctl = ctl or Controller(Config(K), LIB, **kw)
        self.inp = Inputs()
        self.inp.pressure_mmhg = 20
        self.t = T0
        self.rid = 0
        self.lines = []
        self.step(b"")

    def step(self, data):
        out = self.ctl.step(self.t, self.inp, data, len(data))
        self.inp.encoder += out.steps
        tx = bytes(out.tx.buf[:out.tx.n]).decode()
        for ln in tx.splitlines():
            self.lines.append(ln.split("*")[0])
        return out, tx

    def send(self, body):
        self.rid += 1
        _, tx = self.step(frame(with_boot("%d %s" % (self.rid, body), self.ctl.boot)))
        for ln in tx.splitlines():
            if ln.startswith("%d " % self.rid):
                return ln.split("*")[0]
        raise AssertionError("no reply to %r: %r" % (body, tx))

    def run(self, ms):
        n = ms // TICK_MS
        for _ in range(n):
            self.t = (self.t + TICK_MS) & 0x3FFFFFFF
            self.inp.pressure_mmhg ^= 1       # a live force sensor is never exactly still
            self.step(b"")

    def status(self):
        r = self.send("STATUS")
        return dict(tok.split("=", 1) for tok in r.split()[2:] if "=" in tok)

    def telemetry(self):
        """One `! TL` frame's fields (subscribe, one tick, unsubscribe)."""
        self.send("TLM period_ms=50")
        n = len(self.lines)
        self.run(TICK_MS)
        tl = [ln for ln in self.lines[n:] if ln.startswith("! TL ")]
        self.send("TLM period_ms=0")
        assert tl, self.lines[n:]
        return dict(tok.split("=", 1) for tok in tl[0].split()[2:] if "=" in tok)
