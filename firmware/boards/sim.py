"""The simulated board: the pump's hardware seam driven by the HIL simulator in virtual time.

The simulator (hil_sim, CPython) owns the plant; this board only carries its readings in
and the controller's outputs back, in *slices* of virtual time. Under CPython the simulator
calls `Harness.slice()` directly; under the `micropython` interpreter it talks to
`serve_stdio()` over pipes with the same arguments, one text line per slice:

  -> S t0 step n press enc flags batt nrx      then nrx lines "k HEX"
  <- R enable alarm s0,s1,...,s(n-1) ntx        then ntx lines "k HEX"
  -> Q                                          exit

Calls are at t0 + k*step (virtual ms; the board wraps them at 2**30 like an RP2040's
ticks_ms). Sensor values are held over the slice. Bytes "k HEX" reach the UART before call k.
"""
import sys

try:
    import binascii
except ImportError:
    import ubinascii as binascii  # type: ignore

from pumpcore.app import App

NL_PER_KSTEP = 217078          # nominal 50 mL syringe: 26.6 mm bore, 1.25 mm lead, 3200 µsteps/rev
_TMASK = 0x3FFFFFFF
FLAG_DOOR_OPEN = 1
FLAG_AIR = 2
STDIO_COMMAND = "import sys; sys.path.insert(0, '.'); from boards import sim; sim.serve_stdio('druglib.json')"


class Board:
    NL_PER_KSTEP = NL_PER_KSTEP
    DEVICE_ID = b"SIM-0001"

    def __init__(self, lib_path="druglib.json"):
        self.LIB_PATH = lib_path
        self.now = 0
        self.press = 0
        self.enc = 0
        self.flags = 0
        self.batt = 4000
        self._rx = b""
        self._rx_pos = 0
        self.tx = []            # bytes written during the current call
        self.steps = 0
        self.enable = 0
        self.alarm = 0

    # --- board interface
    def ticks_ms(self):
        return self.now

    def read_inputs(self, inp):
        inp.pressure_mmhg = self.press
        inp.encoder = self.enc
        inp.door_open = bool(self.flags & FLAG_DOOR_OPEN)
        inp.air = bool(self.flags & FLAG_AIR)
        inp.battery_mv = self.batt

    def uart_read(self, buf):
        n = len(self._rx) - self._rx_pos
        if n <= 0:
            return 0
        if n > len(buf):
            n = len(buf)
        p = self._rx_pos
        for i in range(n):
            buf[i] = self._rx[p + i]
        self._rx_pos = p + n
        return n

    def uart_write(self, buf, n):
        self.tx.append(bytes(buf[:n]))

    def drive(self, out):
        self.steps = out.steps
        self.enable = 1 if out.enable else 0
        self.alarm = out.alarm_prio

    def feed_watchdog(self):
        pass

    def wait_next(self, deadline):
        pass


class Harness:
    """A simulated board plus the firmware app, stepped one slice at a time."""

    def __init__(self, lib_path="druglib.json"):
        self.board = Board(lib_path)
        self.app = App(self.board)

    def slice(self, t0, step, n, press, enc, flags, batt, rx):
        b = self.board
        b.press = press
        b.enc = enc
        b.flags = flags
        b.batt = batt
        steps = [0] * n
        tx = []
        j = 0
        for k in range(n):
            while j < len(rx) and rx[j][0] == k:
                # pending bytes not yet read stay ahead of the new ones
                b._rx = b._rx[b._rx_pos:] + rx[j][1]
                b._rx_pos = 0
                j += 1
            b.now = (t0 + k * step) & _TMASK
            b.tx = []
            self.app.tick()
            s = b.steps
            # a burst larger than one UART read drains at the same instant
            while len(b._rx) - b._rx_pos > 0:
                self.app.tick()
                s += b.steps
            steps[k] = s
            for chunk in b.tx:
                tx.append((k, chunk))
        return steps, b.enable, b.alarm, tx


def serve_stdio(lib_path="druglib.json"):
    """Serve the slice protocol on stdin/stdout (the `micropython` runtime of the simulator)."""
    h = Harness(lib_path)
    from pumpcore import VERSION
    out = sys.stdout
    inp = sys.stdin
    out.write("READY " + VERSION + "\n")
    while True:
        line = inp.readline()
        if not line or line[0] == "Q":
            return
        p = line.split()
        if p[0] != "S":
            out.write("E bad command\n")
            continue
        t0, step, n, press, enc, flags, batt, nrx = [int(x) for x in p[1:9]]
        rx = []
        for _ in range(nrx):
            k, hx = inp.readline().split()
            rx.append((int(k), binascii.unhexlify(hx)))
        steps, en, al, tx = h.slice(t0, step, n, press, enc, flags, batt, rx)
        out.write("R %d %d %s %d\n" % (en, al, ",".join([str(s) for s in steps]), len(tx)))
        for k, chunk in tx:
            out.write("%d %s\n" % (k, binascii.hexlify(chunk).decode()))
        if hasattr(out, "flush"):
            out.flush()
