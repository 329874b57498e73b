"""The RP2040 board module (firmware/boards/rp2_pico.py) under CPython with fake hardware.

Fake `machine`, `rp2`, `micropython` and `time` modules are put in sys.modules while the board
module is imported (as openbricks does), so the real board code runs against recording pins,
ADCs, a UART, a PWM, a watchdog and a PIO state machine. The fake `rp2.asm_pio` assembles the
board's PIO program into instructions and `FakeSM.run()` executes them cycle by cycle, so the
checks see the pulses and the DIR level the real PIO would produce from the FIFO words.
"""
import importlib
import sys
import types
from pathlib import Path

import pytest

from conftest import FIRMWARE

# ------------------------------------------------------------------ fake hardware


class FakeTime(types.ModuleType):
    def __init__(self):
        super().__init__("time")
        self.now = 0

    def ticks_ms(self):
        return self.now & 0x3FFFFFFF

    def sleep_ms(self, ms):
        self.now += ms


class Pin:
    IN, OUT = 0, 1
    PULL_UP, PULL_DOWN = 1, 2
    IRQ_RISING, IRQ_FALLING = 4, 8
    all = {}

    def __init__(self, n, mode=IN, pull=None, value=None):
        self.n, self.mode, self.pull = n, mode, pull
        self.v = value if value is not None else (1 if pull == Pin.PULL_UP else 0)
        self.history = [self.v]
        self.handler = None
        self.irq_args = None
        Pin.all[n] = self

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = int(v)
        self.history.append(self.v)

    def irq(self, handler=None, trigger=0, hard=False):
        self.handler = handler
        self.irq_args = (trigger, hard)

    def drive_input(self, v):
        """The outside world changes an input; edges fire the IRQ handler."""
        if v != self.v:
            self.v = v
            if self.handler:
                self.handler(self)


class ADC:
    all = {}

    def __init__(self, n):
        self.n = n
        self.raw = 0
        ADC.all[n] = self

    def read_u16(self):
        return self.raw


class UART:
    def __init__(self, id, baudrate=9600, tx=None, rx=None, timeout=0, rxbuf=64):
        self.id, self.baudrate = id, baudrate
        self.rx = bytearray()
        self.tx = bytearray()
        FakeMachine.uart = self

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n):
        n = min(n, len(self.rx), len(buf))
        buf[:n] = self.rx[:n]
        del self.rx[:n]
        return n

    def write(self, data):
        self.tx += bytes(data)
        return len(data)


class PWM:
    def __init__(self, pin):
        self.pin = pin
        self.f = 0
        self.duty = 0
        FakeMachine.pwm = self

    def freq(self, f):
        self.f = f

    def duty_u16(self, d):
        self.duty = d


class WDT:
    made = []

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        WDT.made.append(self)

    def feed(self):
        self.feeds += 1


class FakeMachine(types.ModuleType):
    WDT_RESET, PWRON_RESET = 3, 1
    uart = None
    pwm = None

    def __init__(self):
        super().__init__("machine")
        self.Pin, self.ADC, self.UART, self.PWM, self.WDT = Pin, ADC, UART, PWM, WDT
        self.cause = 1

    def unique_id(self):
        return b"\xe6\x61\x38\x52\x83\x2b\x1c\x2f"

    def reset_cause(self):
        return self.cause


_OPERANDS = ("block", "pins", "x", "y", "osr", "isr", "y_dec", "x_dec")


def asm_pio(**kw):
    """Assemble a PIO program: run it with instruction recorders as its globals."""
    def dec(fn):
        prog, labels = [], {}
        g = {name: name for name in _OPERANDS}
        g["pull"] = lambda *a: prog.append(("pull",))
        g["out"] = lambda dst, n: prog.append(("out", dst, n))
        g["mov"] = lambda dst, src: prog.append(("mov", dst, src))
        g["set"] = lambda dst, v: prog.append(("set", dst, v))
        g["jmp"] = lambda cond, lab: prog.append(("jmp", cond, lab))
        g["label"] = lambda name: labels.__setitem__(name, len(prog))
        types.FunctionType(fn.__code__, g)()
        return {"prog": prog, "labels": labels, "kw": kw}
    return dec


class FakeSM:
    made = []

    def __init__(self, id, prog, freq=0, set_base=None, out_base=None):
        self.prog, self.freq = prog, freq
        self.set_pin, self.out_pin = set_base.n, out_base.n
        self.fifo = []
        self.on = False
        self.pc = 0
        self.r = {"x": 0, "y": 0, "osr": 0, "isr": 0}
        self.pins = {self.set_pin: 0, self.out_pin: 0}
        self.cycle = 0
        self.events = []           # (cycle, pin, level)
        FakeSM.made.append(self)

    def active(self, v=None):
        if v is not None:
            self.on = bool(v)
        return self.on

    def put(self, word):
        assert 0 <= word < 2**32
        self.fifo.append(word)

    def _pin(self, n, v):
        if self.pins[n] != v:
            self.pins[n] = v
            self.events.append((self.cycle, n, v))

    def run(self):
        """Execute until the program blocks on an empty FIFO; return the events of this run."""
        first = len(self.events)
        prog, labels, r = self.prog["prog"], self.prog["labels"], self.r
        while True:
            if self.pc >= len(prog):
                self.pc = 0                          # wrap
            ins = prog[self.pc]
            op = ins[0]
            if op == "pull":
                if not self.fifo:
                    return self.events[first:]
                r["osr"] = self.fifo.pop(0)
            elif op == "out":
                _, dst, n = ins
                v = r["osr"] & ((1 << n) - 1)
                r["osr"] >>= n                        # shift right
                if dst == "pins":
                    self._pin(self.out_pin, v & 1)
                else:
                    r[dst] = v
            elif op == "mov":
                r[ins[1]] = r[ins[2]]
            elif op == "set":
                self._pin(self.set_pin, ins[2])
            elif op == "jmp":
                reg = ins[1][0]
                was = r[reg]
                r[reg] = (was - 1) & 0xFFFFFFFF
                if was != 0:
                    self.pc = labels[ins[2]]
                    self.cycle += 1
                    continue
            self.pc += 1
            self.cycle += 1


class FakeRP2(types.ModuleType):
    class PIO:
        OUT_LOW, OUT_HIGH, SHIFT_RIGHT, SHIFT_LEFT = 0, 1, 1, 0

    def __init__(self):
        super().__init__("rp2")
        self.asm_pio = asm_pio
        self.StateMachine = FakeSM


# ------------------------------------------------------------------ the board under fakes


@pytest.fixture
def pico(tmp_path):
    fakes = {"machine": FakeMachine(), "rp2": FakeRP2(), "time": FakeTime(),
             "micropython": types.ModuleType("micropython")}
    fakes["micropython"].const = lambda x: x
    saved = {k: sys.modules.get(k) for k in list(fakes) + ["boards.rp2_pico"]}
    Pin.all.clear()
    ADC.all.clear()
    FakeSM.made.clear()
    WDT.made.clear()
    try:
        sys.modules.update(fakes)
        sys.modules.pop("boards.rp2_pico", None)
        mod = importlib.import_module("boards.rp2_pico")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    board = mod.Board(root=str(tmp_path))
    Pin.all[13].v = Pin.all[14].v = 0        # the world at boot: door closed, plunger not at the end
    board.LIB_PATH = str(FIRMWARE / "druglib.json")
    return types.SimpleNamespace(mod=mod, board=board, time=fakes["time"], machine=fakes["machine"])


def crc_frame(body):
    from pumpcore.protocol import crc16
    b = body.encode()
    return b + b"*%04X\n" % crc16(b, 0, len(b))


def _out(steps=0, enable=True, prio=0, audio=False):
    from pumpcore.controller import Outputs
    o = Outputs()
    o.steps, o.enable, o.alarm_prio, o.audio = steps, enable, prio, audio
    return o


def _rising(events, pin):
    return [c for c, p, v in events if p == pin and v == 1]


def test_steps_go_to_the_pio_with_exact_count_and_direction(pico):
    b = pico.board
    sm = b.sm
    for n in (1, 7, 37, 100):
        b.drive(_out(n))
        assert len(sm.fifo) == 2 and sm.fifo[0] & 1 == 0 and (sm.fifo[0] >> 1) == n - 1
        ev = sm.run()
        steps = _rising(ev, 2)
        assert len(steps) == n
        assert sm.pins[3] == 0                       # DIR low = infuse
        assert ev[-1][0] - ev[0][0] <= 45000          # the train ends inside the 50 ms tick
    # back-off: negative steps reverse the motor, DIR set before the first pulse
    b.drive(_out(-12))
    assert sm.fifo[0] & 1 == 1 and (sm.fifo[0] >> 1) == 11
    ev = sm.run()
    dir_up = [c for c, p, v in ev if p == 3 and v == 1]
    steps = _rising(ev, 2)
    assert len(steps) == 12 and dir_up and dir_up[0] < steps[0]
    assert all(v == 1 for c, p, v in ev if p == 3)     # no DIR change inside the train
    # and forward again: DIR back low before the first pulse
    b.drive(_out(5))
    ev = sm.run()
    dir_down = [c for c, p, v in ev if p == 3 and v == 0]
    steps = _rising(ev, 2)
    assert len(steps) == 5 and dir_down[0] < steps[0] and sm.pins[3] == 0
    # no steps: nothing queued
    b.drive(_out(0))
    assert sm.fifo == []


def test_train_words_and_spacing(pico):
    m = pico.mod
    for n in (1, 2, 50, 100, -1, -40):
        w1, half = m.train_words(n)
        assert (w1 & 1) == (1 if n < 0 else 0) and (w1 >> 1) == abs(n) - 1
        assert half >= 1 and abs(n) * (2 * half + 7) <= 45000


def test_enable_is_active_low_and_cut_on_alarm(pico):
    b = pico.board
    en = Pin.all[4]
    assert en.v == 1                                   # motor off at boot
    b.drive(_out(10, enable=True))
    assert en.v == 0
    sm_before = b.sm
    assert sm_before.fifo                              # a train queued ...
    b.drive(_out(0, enable=False, prio=3, audio=True))  # ... then a high-priority alarm
    assert en.v == 1
    assert b.sm is not sm_before and b.sm.fifo == []   # PIO re-initialised: no stale pulse
    assert en.history.index(1, 1) >= 1                 # driver cut (high) after being on
    b.drive(_out(25, enable=False))                    # steps with the enable off: ignored
    assert b.sm.fifo == [] and en.v == 1


def test_adc_to_mmhg_calibration_and_inputs(pico):
    b, m = pico.board, pico.mod
    from pumpcore.controller import Inputs
    inp = Inputs()
    p_adc, b_adc = ADC.all[26], ADC.all[27]
    for raw, want in ((3277, 0), (3277 + 52428, 1300), (3277 + 26214, 650),
                      (3277 + 16129, 400), (3277 - 4033, -100)):
        p_adc.raw = raw
        b.read_inputs(inp)
        assert inp.pressure_mmhg == want, (raw, inp.pressure_mmhg)
    assert m.pressure_mmhg(65535) == 1544 and m.pressure_mmhg(0) == -81
    b_adc.raw = 24000                                   # 24000/65535 × 9.9 V
    Pin.all[22].drive_input(1)                          # mains present
    b.read_inputs(inp)
    assert inp.battery_mv == 3625 and not inp.on_battery
    Pin.all[22].drive_input(0)
    Pin.all[14].drive_input(1)                          # door open (switch released)
    Pin.all[15].drive_input(1)                          # air
    Pin.all[13].drive_input(1)                          # end stop reached
    b.read_inputs(inp)
    assert inp.on_battery and inp.door_open and inp.air and inp.end_stop
    Pin.all[14].drive_input(0)
    Pin.all[15].drive_input(0)
    Pin.all[13].drive_input(0)
    b.read_inputs(inp)
    assert not (inp.door_open or inp.air or inp.end_stop)
    assert b.BATT_LOW_MV > b.BATT_DEPLETED_MV > 0


def test_quadrature_encoder_counts_both_ways(pico):
    b = pico.board
    a, bb = Pin.all[6], Pin.all[7]
    assert a.irq_args == (Pin.IRQ_RISING | Pin.IRQ_FALLING, True)   # both edges, hard IRQ
    seq = [(0, 1), (0, 0), (1, 0), (1, 1)]   # from A=1,B=1 (pull-ups), A leading B: forward
    start = b.encoder
    for _ in range(5):
        for va, vb in seq:
            a.drive_input(va) if va != a.v else None
            bb.drive_input(vb) if vb != bb.v else None
    assert b.encoder - start == 20
    # backwards: reverse Gray sequence
    back = [(1, 0), (0, 0), (0, 1), (1, 1)]
    for _ in range(3):
        for va, vb in back:
            a.drive_input(va) if va != a.v else None
            bb.drive_input(vb) if vb != bb.v else None
    assert b.encoder - start == 20 - 12
    assert b.enc_errors == 0


def _timeline(board, prio, audio, ms=30000, step=10):
    red, yel, buz = [], [], []
    for t in range(0, ms, step):
        board.signal(prio, audio, 1000 + t)
        red.append(Pin.all[17].v)
        yel.append(Pin.all[18].v)
        buz.append(1 if FakeMachine.pwm.duty else 0)
    return red, yel, buz


def _edges(xs):
    return sum(1 for i in range(1, len(xs)) if xs[i] and not xs[i - 1]) + (1 if xs and xs[0] else 0)


def _bursts(xs, step=10, gap_ms=1000):
    """Pulse counts of each burst (pulses closer than gap_ms belong to one burst)."""
    out, n, last = [], 0, None
    for i in range(len(xs)):
        if xs[i] and (i == 0 or not xs[i - 1]):
            if last is not None and (i - last) * step > gap_ms:
                out.append(n)
                n = 0
            n += 1
            last = i
    if n:
        out.append(n)
    return out


def test_alarm_signal_patterns_per_priority(pico):
    b = pico.board
    # high: red flashing in 1.4-2.8 Hz, yellow off, 10-pulse bursts
    red, yel, buz = _timeline(b, 3, True, ms=20000)
    f = _edges(red) / 20.0
    assert 1.4 <= f <= 2.8, f
    assert 0.2 <= sum(red) / len(red) <= 0.6           # duty cycle 20-60%
    assert not any(yel)
    assert _bursts(buz)[:3] == [10, 10, 10]
    # medium: yellow flashing 0.4-0.8 Hz, 3-pulse bursts, red off
    b.signal(0, False, 0)
    red, yel, buz = _timeline(b, 2, True, ms=40000)
    f = _edges(yel) / 40.0
    assert 0.4 <= f <= 0.8, f
    assert not any(red)
    assert _bursts(buz)[:3] == [3, 3, 3]
    # low: yellow constant, bursts of 1-2 pulses, at most every 15 s
    b.signal(0, False, 0)
    red, yel, buz = _timeline(b, 1, True, ms=61000)
    assert all(yel) and not any(red)
    bursts = _bursts(buz)
    assert bursts and all(1 <= n <= 2 for n in bursts) and len(bursts) <= 61 // 15 + 1
    # none: everything off
    red, yel, buz = _timeline(b, 0, False, ms=2000)
    assert not any(red) and not any(yel) and not any(buz)


def test_silence_mutes_the_buzzer_not_the_light(pico):
    b = pico.board
    red, yel, buz = _timeline(b, 3, False, ms=10000)      # audio off: silenced
    assert not any(buz)
    assert 1.4 <= _edges(red) / 10.0 <= 2.8
    b.signal(0, False, 0)
    red, yel, buz = _timeline(b, 2, False, ms=10000)
    assert not any(buz) and any(yel)


def test_uart_read_write_path(pico):
    b = pico.board
    u = FakeMachine.uart
    assert u.baudrate == 115200
    buf = bytearray(8)
    assert b.uart_read(buf) == 0
    u.rx += b"0123456789AB"
    assert b.uart_read(buf) == 8 and bytes(buf) == b"01234567"
    assert b.uart_read(buf) == 4 and bytes(buf[:4]) == b"89AB"
    tx = bytearray(b"1 OK state=IDLE\nxxxxxxxxxx")
    b.uart_write(tx, 16)
    assert bytes(u.tx) == b"1 OK state=IDLE\n"


def test_app_runs_on_the_pico_board(pico):
    """The whole firmware (App + controller + event log on the flash filesystem) driven
    through the fake Pico: frames in over the UART, replies out, steps to the PIO."""
    from pumpcore import fsm
    from pumpcore.app import App

    b, clock = pico.board, pico.time
    app = App(b)
    u = FakeMachine.uart
    u.rx += crc_frame("1 HELLO")
    app.tick()
    assert u.tx.startswith(b"1 OK dev=E66138") and b"lib=" in u.tx
    assert WDT.made and WDT.made[0].feeds == 1 and WDT.made[0].timeout == pico.mod.WDT_MS
    Pin.all[22].drive_input(1)                           # on mains
    ADC.all[26].raw = 3277 + 806                          # ~20 mmHg
    u.tx.clear()
    u.rx += crc_frame("2 PROG boot=1 rate_ul_h=60000 vtbi_nl=1000000") + crc_frame("3 START boot=1")
    app.tick()
    assert b"2 OK" in u.tx and b"3 OK state=RUNNING" in u.tx, bytes(u.tx)
    pulses = 0
    enc = Pin.all[6], Pin.all[7]
    for _ in range(200):                                  # 10 s
        clock.now += 50
        app.tick()
        ev = b.sm.run()
        n = len(_rising(ev, 2))
        pulses += n
        for _ in range(n):                                # the plunger follows: encoder x4 edges
            b.encoder += 1
    assert Pin.all[4].v == 0
    assert 700 < pulses <= 768, pulses        # 60 mL/h = 76.8 µsteps/s, less the take-up
    assert app.ctl.fsm.state == fsm.RUNNING
    assert (Path(b.ROOT) / "log").is_dir() and any((Path(b.ROOT) / "log").iterdir())
    assert WDT.made[0].feeds >= 200
    # the door opens: high-priority alarm, motor cut, red flashing
    Pin.all[14].drive_input(1)
    for _ in range(30):
        clock.now += 50
        app.tick()
    assert app.ctl.fsm.state == fsm.ALARM and Pin.all[4].v == 1
    assert 1 in Pin.all[17].history


def test_settings_key_and_counter_on_flash(pico, tmp_path):
    b = pico.board
    assert b.load_settings() is None and b.load_key() is None and b.load_counter() == 0
    b.store_settings(b"occl=400 hb=0*1234\n")
    assert b.load_settings() == b"occl=400 hb=0*1234\n"
    b.store_counter(41)
    b.store_counter(42)
    assert b.load_counter() == 42
    assert not (tmp_path / "ctr.txt.tmp").exists()
    (tmp_path / "key.bin").write_bytes(b"k" * 32)
    assert b.load_key() == b"k" * 32
    pico.machine.cause = FakeMachine.WDT_RESET
    assert b.reset_cause() == "watchdog"
