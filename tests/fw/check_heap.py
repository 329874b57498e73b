"""The steady-state control tick and the frame parser allocate nothing (MicroPython only)."""
from fwkit import Rig, crc_frame, TICK_MS

try:
    import micropython
except ImportError:
    micropython = None


def _locked(fn):
    micropython.heap_lock()
    try:
        fn()
    finally:
        micropython.heap_unlock()


def check_running_tick_allocates_nothing():
    if micropython is None:
        return
    r = Rig()
    r.cmd("PROG", "rate_ul_h=52500 vtbi_nl=35000000")
    r.cmd("TLM", "period_ms=100")
    r.cmd("START")
    r.run(1000)
    ctl = r.ctl
    inp = r.inp
    empty = bytearray(1)

    def ticks():
        t = r.t
        for _ in range(400):
            t = t + TICK_MS
            if t > 0x3FFFFFFF:
                t = t - 0x20000000 - 0x20000000
            ctl.step(t, inp, empty, 0)
        r.t = t

    _locked(ticks)
    assert ctl.line.steps > 0


def check_parser_allocates_nothing():
    if micropython is None:
        return
    r = Rig()
    ctl = r.ctl
    inp = r.inp
    frames = [bytearray(crc_frame("5 STATUS")), bytearray(b"6 STATUS\n"), bytearray(crc_frame("7 FLY")),
              bytearray(b"8 PROG rate_ul_h=1*0000\n"), bytearray(b"\xff\x00 junk\n"), bytearray(b"x" * 200 + b"\n")]

    def feed():
        for f in frames:
            ctl.step(r.t, inp, f, len(f))

    _locked(feed)
    assert ctl.out.tx.n > 0
