"""Helpers for portable firmware checks: build a controller, send frames, step time.

`Rig` carries a tiny plant so the closed loop has something to close on: the encoder
follows the motor through a dead band of `slack` µsteps (one count per µstep of plunger
travel), the force sensor reads `inp.pressure_mmhg` (scripted by the check, or driven by
`occluded` = pressure rising with the pushed volume into a compliance).
"""
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
_LIB = []


def new_store(flash_blocks=0):
    """(flash, store) for a power-cut or log check: littlefs mounted on a fresh simulated NOR
    flash of `flash_blocks` blocks (`boards.sim`), or (None, a MemStore) for 0."""
    if flash_blocks:
        from boards import sim
        flash = sim.Flash(nblocks=flash_blocks)
        return flash, sim.mount_flash(flash)
    from pumpcore.memstore import MemStore
    return None, MemStore()


def library():
    if not _LIB:
        _LIB.append(DrugLibrary.load(LIB_PATH))
    return _LIB[0]


def crc_frame(body):
    if isinstance(body, str):
        body = body.encode()
    c = P.crc16(body, 0, len(body))
    hx = b"0123456789ABCDEF"
    return body + bytes([42, hx[(c >> 12) & 15], hx[(c >> 8) & 15], hx[(c >> 4) & 15], hx[c & 15], 10])


GUARDED = ("PROG", "STEP", "START", "RESUME", "STANDBY", "TITRATE", "BOLUS", "ACK", "SILENCE",
           "VITALS", "CFG")


def with_boot(body, boot):
    """`body` (text) with ` boot=N` after its word when the command is guarded and has none."""
    p = body.split(" ")
    if len(p) >= 2 and p[1] in GUARDED and " boot=" not in body and " mac=" not in body:
        p.insert(2, "boot=%d" % boot)
        return " ".join(p)
    return body


class Rig:
    """A controller with a virtual clock, a slack/encoder plant stub and scripted pressure."""

    def __init__(self, slack=0, lib=None, settings=None, fault=None, auth=None, **cfg):
        self.ctl = Controller(Config(NL_PER_KSTEP, **cfg), lib or library(), settings, fault, auth)
        self.inp = Inputs()
        self.inp.pressure_mmhg = 20
        self.t = T0
        self.steps = 0          # net µsteps commanded
        self.motor = 0
        self.plunger = 0
        self.slack = slack
        self.frozen = False     # a stalled mechanism: the plunger does not move
        self.drift = 0          # µsteps per tick the plunger moves on its own (runaway)
        self.occluded = False
        self.ul_per_mmhg = 2    # compliance when occluded (≈ 0.002 mL/mmHg)
        self.events = []
        self.nid = 0
        self.ctl.step(self.t, self.inp, b"", 0)

    def _adv(self, ms):
        self.t = (self.t + ms) & 0x3FFFFFFF

    def _plant(self, out):
        n = out.steps
        self.steps += n
        self.motor += n
        if not self.frozen:
            if self.motor > self.plunger + self.slack:
                self.plunger = self.motor - self.slack
            elif self.motor < self.plunger:
                self.plunger = self.motor
        if self.drift:
            self.plunger += self.drift
            self.motor += self.drift
        self.inp.encoder = self.plunger
        if out.tx.n:
            self.events.append(bytes(out.tx.buf[:out.tx.n]))

    def send(self, body, crc=True):
        """Send one request; return everything the pump sent in that step. A guarded
        command given as text without `boot=` gets this boot's number (as a host adds it
        after HELLO); bytes are sent as they are."""
        if isinstance(body, str):
            body = with_boot(body, self.ctl.boot)
        data = crc_frame(body) if crc else (body.encode() if isinstance(body, str) else body) + b"\n"
        out = self.ctl.step(self.t, self.inp, data, len(data))
        tx = bytes(out.tx.buf[:out.tx.n])
        self._plant(out)
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
            p0 = self.plunger
            # a live force sensor is never perfectly still (the firmware faults a frozen one):
            # the controller sees the scripted pressure with one count of dither
            self._dither = d = 1 - getattr(self, "_dither", 0)
            self.inp.pressure_mmhg += d
            out = self.ctl.step(self.t, self.inp, b"", 0)
            self.inp.pressure_mmhg -= d
            self._plant(out)
            if self.occluded:
                dv = (self.plunger - p0) * NL_PER_KSTEP // 1000      # nL pushed
                self._occ_nl += dv
                self.inp.pressure_mmhg = self._occ_p0 + self._occ_nl // (self.ul_per_mmhg * 1000)
        return self

    def occlude(self, on=True):
        self.occluded = on
        self._occ_p0 = self.inp.pressure_mmhg
        self._occ_nl = 0

    def run_until(self, pred, max_ms):
        n = 0
        while n < max_ms:
            if pred(self):
                return True
            self.run(TICK_MS)
            n += TICK_MS
        return pred(self)

    def state(self):
        return self.ctl.fsm.state

    def alarm(self):
        return self.ctl.alarms.highest()

    def event_text(self):
        return b"".join(self.events)
