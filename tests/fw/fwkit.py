"""Helpers for portable firmware checks: build a controller, send frames, step time."""
import sys

if "." not in sys.path:
    sys.path.insert(0, ".")

from pumpcore.controller import Controller, Config, Inputs, TICK_MS
from pumpcore.druglib import DrugLibrary
from pumpcore import protocol as P

import pumpcore

NL_PER_KSTEP = 217078
LIB_PATH = pumpcore.__file__.rsplit("/", 2)[0] + "/druglib.json"  # the firmware tree's library
T0 = 0x3FFFFFFF - 60000          # a minute before the 2**30 clock wraps


def crc_frame(body):
    if isinstance(body, str):
        body = body.encode()
    c = P.crc16(body, 0, len(body))
    hx = b"0123456789ABCDEF"
    return body + bytes([42, hx[(c >> 12) & 15], hx[(c >> 8) & 15], hx[(c >> 4) & 15], hx[c & 15], 10])


class Rig:
    """A controller with a virtual clock and a scripted pressure reading."""

    def __init__(self, **cfg):
        self.ctl = Controller(Config(NL_PER_KSTEP, **cfg), DrugLibrary.load(LIB_PATH))
        self.inp = Inputs()
        self.inp.pressure_mmhg = 20
        self.t = T0
        self.steps = 0
        self.nid = 0
        self.ctl.step(self.t, self.inp, b"", 0)

    def _adv(self, ms):
        self.t = (self.t + ms) & 0x3FFFFFFF

    def send(self, body, crc=True):
        """Send one request; return the reply line (bytes, without CRC/LF) and all tx."""
        data = crc_frame(body) if crc else (body.encode() if isinstance(body, str) else body) + b"\n"
        out = self.ctl.step(self.t, self.inp, data, len(data))
        self.steps += out.steps
        tx = bytes(out.tx.buf[:out.tx.n])
        return tx

    def cmd(self, word, fields=""):
        self.nid += 1
        body = "%d %s%s" % (self.nid, word, (" " + fields) if fields else "")
        tx = self.send(body)
        for line in tx.split(b"\n"):
            if line.startswith(b"%d " % self.nid):
                return line.split(b"*")[0]
        return b""

    def run(self, ms):
        n = ms // TICK_MS
        for _ in range(n):
            self._adv(TICK_MS)
            out = self.ctl.step(self.t, self.inp, b"", 0)
            self.steps += out.steps
        return self

    def state(self):
        return self.ctl.fsm.state
