# pyright: reportUndefinedVariable=false
"""Raspberry Pi Pico (RP2040) board: the pump's hardware seam for the controller.

Pin map (docs/hardware.md is the wiring table; keep both in step):

  UART0 TX GP0 / RX GP1      host link, 115200 8N1
  STEP GP2 / DIR GP3         stepper driver, both driven by PIO state machine 0
  EN GP4                     driver enable, active low (high at boot: motor off)
  encoder A GP6 / B GP7      quadrature, both edges of both channels (x4), hard IRQ
  end stop GP13              plunger at the end of travel (NC switch to GND: 1 = empty or wire broken)
  door GP14                  door/latch switch to GND (closed = 0; 1 = open or wire broken)
  air GP15                   air-in-line sensor (1 = air)
  buzzer GP16 (PWM)          alarm tone
  red LED GP17 / yellow GP18 alarm lights
  mains GP22                 mains adapter present (divider from the adapter rail; 0 = on battery)
  ADC0 GP26                  line pressure / plunger force sensor
  ADC1 GP27                  battery voltage through a 1:3 divider

Steps: each control tick's microsteps go to the PIO as two FIFO words: `dir | (n-1) << 1`
and the half period. The PIO program sets the DIR pin from the first word *before* its first
pulse and then emits exactly n pulses spread over 90% of a tick, so the count per tick is
exact, a negative count (the back-off after an occlusion) really reverses the motor, and a
direction change can never land in the middle of a pulse train. When the enable line drops
the PIO is re-initialised (its FIFO is emptied), so no stale pulse follows an alarm.

Encoder: a hard IRQ on both edges of A and B decodes the quadrature with a 16-entry bytes
table: integer-only, no allocation (a hard IRQ handler must not allocate).

Alarm signals (IEC 60601-1-8): the controller gives the highest active priority and whether
the auditory signal is due (`out.audio`: False while silenced). Visual and auditory patterns
are 50 ms slots of the board clock: high = red flashing 2 Hz with a 10-pulse burst (3+2+3+2)
every 5 s; medium = yellow flashing 0.625 Hz with a 3-pulse burst every 8 s; low = yellow
constant with a 2-pulse burst every 30 s. SILENCE mutes the buzzer only; the light goes on.

Non-volatile storage lives on the Pico's internal flash, which MicroPython formats as
littlefs and mounts at "/": the event log in "/log" (`pumpcore.store.FileStore`, as the
simulated board does on its simulated flash), settings in "/settings.txt", the replay counter
in "/ctr.txt" (both replaced atomically: write a temporary file, then rename), the device key
in "/key.bin" (provisioned at flash time, never in the repository).
"""
import machine
import os
import rp2
import time
from machine import Pin, ADC, UART, PWM
from micropython import const

from pumpcore.alarms import PRIO_LOW, PRIO_MEDIUM, PRIO_HIGH
from pumpcore.ticks import ticks_diff
from pumpcore.protocol import LINK_BAUD

NL_PER_KSTEP = 217078           # 50 mL syringe, 26.6 mm bore, 1.25 mm lead, 3200 µsteps/rev
BATT_LOW_MV = 3600              # 1S Li-ion under pump load: ≥ 30 min of running left
BATT_DEPLETED_MV = 3400         # stop ≥ 3 min before the cell's protection cuts out
WDT_MS = 2000                   # watchdog timeout (RP2040 allows up to 8388 ms)

_PIO_FREQ = const(1000000)      # 1 µs per PIO instruction
_TRAIN_US = const(45000)        # a tick's pulses fit in 90% of the 50 ms tick
_PULSE_OVH = const(7)           # PIO cycles per pulse besides the two delay loops
_P_OFFSET = const(3277)         # ADC counts at 0 mmHg (0.5 V of the sensor's 0.5–4.5 V)
_P_SPAN = const(1300)           # mmHg across the sensor's span
_P_COUNTS = const(52428)        # ADC counts across the span
_BATT_NUM = const(9900)         # mV at full scale (3.3 V × 3 divider)
_SLOT_MS = const(50)            # resolution of the alarm patterns

# quadrature decoding: index (previous AB << 2 | new AB) -> 0 none, 1 forward (infusing: A
# leads B, 00 10 11 01), 2 back, 3 invalid (both channels changed: an edge was missed)
_QDEC = const(b"\x00\x02\x01\x03\x01\x00\x03\x02\x02\x03\x00\x01\x03\x01\x02\x00")

# alarm patterns, one byte per 50 ms slot: "1" = on. A pattern is its burst followed by
# silence up to its period (in slots); the silence is not stored (constant bytes are in flash
# on the frozen image, a computed b"0" * n would be heap).
# visual:
_VIS_HIGH = const(b"1111100000")                # 2 Hz, 50% duty (IEC: 1.4–2.8 Hz, 20–60%)
_VIS_MED = const(b"1111111111111111")           # 0.625 Hz, 50% duty (0.4–0.8 Hz)
_VIS_MED_SLOTS = const(32)
# auditory: 10 pulses of 100 ms (3 + 2 + 3 + 2) every 5 s
_AUD_HIGH = const(b"110110110000110110000000110110110000110110")
_AUD_HIGH_SLOTS = const(100)
# 3 pulses of 150 ms every 8 s
_AUD_MED = const(b"1110011100111")
_AUD_MED_SLOTS = const(160)
# 2 pulses of 150 ms every 30 s
_AUD_LOW = const(b"11100111")
_AUD_LOW_SLOTS = const(600)
_ON = const(49)                                 # ord("1")
del const   # compile-time only (each module global is a slot of heap on the board)


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW, out_init=rp2.PIO.OUT_LOW,
             out_shiftdir=rp2.PIO.SHIFT_RIGHT)
def step_train():
    pull(block)                 # noqa: F821  word 1: dir | (pulses - 1) << 1
    out(pins, 1)                # noqa: F821  DIR first (1 = withdraw), before any pulse
    out(x, 31)                  # noqa: F821  pulses - 1
    pull(block)                 # noqa: F821  word 2: half period in PIO loop iterations
    mov(isr, osr)               # noqa: F821
    label("pulse")              # noqa: F821
    set(pins, 1)                # type: ignore  # noqa: F821  (PIO instruction)
    mov(y, isr)                 # noqa: F821
    label("high")               # noqa: F821
    jmp(y_dec, "high")          # noqa: F821
    set(pins, 0)                # type: ignore  # noqa: F821  (PIO instruction)
    mov(y, isr)                 # noqa: F821
    label("low")                # noqa: F821
    jmp(y_dec, "low")           # noqa: F821
    jmp(x_dec, "pulse")         # noqa: F821


def _lit(pattern, period, slot):
    """1 when `slot` (50 ms) falls on an "on" slot of a pattern repeating every `period`."""
    i = slot % period
    return 1 if i < len(pattern) and pattern[i] == _ON else 0


def half_period(n):
    """PIO delay-loop count per half pulse so that n pulses fit in _TRAIN_US (n >= 1)."""
    h = (_TRAIN_US // n - _PULSE_OVH) // 2
    return h if h > 0 else 1


def train_words(n):
    """The two FIFO words for a tick of n microsteps (n != 0; negative = reverse)."""
    if n < 0:
        return ((-n - 1) << 1) | 1, half_period(-n)
    return (n - 1) << 1, half_period(n)


def pressure_mmhg(raw_u16):
    """ADC counts (read_u16) to mmHg, rounded to nearest; below the sensor's 0 V reads < 0."""
    d = raw_u16 - _P_OFFSET
    if d >= 0:
        return (d * _P_SPAN + _P_COUNTS // 2) // _P_COUNTS
    return -((-d * _P_SPAN + _P_COUNTS // 2) // _P_COUNTS)


def battery_mv(raw_u16):
    return raw_u16 * _BATT_NUM // 65535


class Board:
    NL_PER_KSTEP = NL_PER_KSTEP
    BATT_LOW_MV = BATT_LOW_MV
    BATT_DEPLETED_MV = BATT_DEPLETED_MV
    LIB_PATH = "druglib.json"
    ROOT = ""                   # "" = the flash filesystem's root ("/...")

    def __init__(self, root=""):
        import binascii
        self.ROOT = root
        self.DEVICE_ID = binascii.hexlify(machine.unique_id()).upper()
        self.uart = UART(0, baudrate=LINK_BAUD, tx=Pin(0), rx=Pin(1), timeout=0, rxbuf=512)
        self.en = Pin(4, Pin.OUT, value=1)          # high = driver disabled
        self._enabled = False
        self._sm_init()
        # encoder: x4 quadrature decoding in a hard IRQ
        self.enc_a = Pin(6, Pin.IN, Pin.PULL_UP)
        self.enc_b = Pin(7, Pin.IN, Pin.PULL_UP)
        self.encoder = 0
        self.enc_errors = 0
        self._qs = (self.enc_a.value() << 1) | self.enc_b.value()
        handler = self._on_enc                      # one bound method, made here, not in the IRQ
        self.enc_a.irq(handler, Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)
        self.enc_b.irq(handler, Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)
        self.end_stop = Pin(13, Pin.IN, Pin.PULL_UP)
        self.door = Pin(14, Pin.IN, Pin.PULL_UP)
        self.air = Pin(15, Pin.IN, Pin.PULL_DOWN)
        self.mains = Pin(22, Pin.IN, Pin.PULL_DOWN)
        self.p_adc = ADC(26)
        self.b_adc = ADC(27)
        self.led_red = Pin(17, Pin.OUT, value=0)
        self.led_yellow = Pin(18, Pin.OUT, value=0)
        self.buzzer = PWM(Pin(16))
        self.buzzer.freq(880)                       # square wave: a tone rich in harmonics
        self.buzzer.duty_u16(0)
        self._red = 0
        self._yel = 0
        self._buz = 0
        self._prio = 0
        self._t_alarm = 0                           # patterns start with the alarm
        self.wdt = None                             # armed at the first loop pass (after boot)
        self._poll = None                           # UART poller of wait_next (made at first use)
        self.store = self._log_store()
        self.log_key = self.load_key()

    # ------------------------------------------------------------------ motor
    def _sm_init(self):
        self.sm = rp2.StateMachine(0, step_train, freq=_PIO_FREQ, set_base=Pin(2),
                                   out_base=Pin(3))
        self.sm.active(1)

    def _on_enc(self, pin):
        # hard IRQ: integer-only, no allocation
        s = ((self._qs << 2) | (self.enc_a.value() << 1) | self.enc_b.value()) & 15
        self._qs = s & 3
        d = _QDEC[s]
        if d == 1:
            self.encoder += 1
        elif d == 2:
            self.encoder -= 1
        elif d == 3:
            self.enc_errors += 1                    # both channels changed: a missed edge

    def drive(self, out):
        en = out.enable
        if en != self._enabled:
            self._enabled = en
            if en:
                self.en.value(0)
            else:
                self.en.value(1)                    # cut the driver first ...
                self.sm.active(0)                   # ... then drop any queued pulses
                self._sm_init()
        n = out.steps
        if en and n:
            if n < 0:
                self.sm.put(((-n - 1) << 1) | 1)
                self.sm.put(half_period(-n))
            else:
                self.sm.put((n - 1) << 1)
                self.sm.put(half_period(n))
        self.signal(out.alarm_prio, out.audio, time.ticks_ms())

    # ------------------------------------------------------------------ alarm signals
    def signal(self, prio, audio, now):
        """Drive the lamps and the buzzer for the highest active priority (IEC 60601-1-8)."""
        if prio != self._prio:
            self._prio = prio
            self._t_alarm = now
        slot = ticks_diff(now, self._t_alarm) // _SLOT_MS
        red = 0
        yel = 0
        buz = 0
        if prio == PRIO_HIGH:
            red = _lit(_VIS_HIGH, len(_VIS_HIGH), slot)
            buz = _lit(_AUD_HIGH, _AUD_HIGH_SLOTS, slot) if audio else 0
        elif prio == PRIO_MEDIUM:
            yel = _lit(_VIS_MED, _VIS_MED_SLOTS, slot)
            buz = _lit(_AUD_MED, _AUD_MED_SLOTS, slot) if audio else 0
        elif prio == PRIO_LOW:
            yel = 1
            buz = _lit(_AUD_LOW, _AUD_LOW_SLOTS, slot) if audio else 0
        if red != self._red:
            self._red = red
            self.led_red.value(red)
        if yel != self._yel:
            self._yel = yel
            self.led_yellow.value(yel)
        if buz != self._buz:
            self._buz = buz
            self.buzzer.duty_u16(32768 if buz else 0)

    # ------------------------------------------------------------------ board interface
    def ticks_ms(self):
        return time.ticks_ms()

    def read_inputs(self, inp):
        inp.pressure_mmhg = pressure_mmhg(self.p_adc.read_u16())
        inp.encoder = self.encoder
        inp.door_open = self.door.value() == 1
        inp.air = self.air.value() == 1
        inp.end_stop = self.end_stop.value() == 1
        inp.on_battery = self.mains.value() == 0
        inp.battery_mv = battery_mv(self.b_adc.read_u16())

    def uart_read(self, buf):
        n = self.uart.any()
        if not n:
            return 0
        if n > len(buf):
            n = len(buf)
        r = self.uart.readinto(buf, n)
        return r or 0

    def uart_write(self, buf, n):
        if n == len(buf):
            self.uart.write(buf)
        else:
            self.uart.write(memoryview(buf)[:n])

    def feed_watchdog(self):
        w = self.wdt
        if w is None:
            w = self.wdt = machine.WDT(timeout=WDT_MS)
        w.feed()

    def wait_next(self, deadline):
        # sleep in the port's C poll loop (WFE between events) until the deadline or a UART
        # byte: no Python runs while waiting, unlike a sleep_ms(1) loop (~1 ms of CPU per
        # 50 ms tick on the chip, measured on the emulated RP2040)
        p = self._poll
        if p is None:
            import select
            p = self._poll = select.poll()
            p.register(self.uart, select.POLLIN)
        d = ticks_diff(deadline, time.ticks_ms())
        if d > 0 and not self.uart.any():
            for _ in p.ipoll(d):
                break

    def reset_cause(self):
        c = machine.reset_cause()
        if c == machine.WDT_RESET:
            return "watchdog"
        if c == machine.PWRON_RESET:
            return "power-on"
        return "other"

    # ------------------------------------------------------------------ flash filesystem
    def _path(self, name):
        return self.ROOT + "/" + name

    def _log_store(self):
        from pumpcore.store import FileStore
        # power cut = the whole chip; littlefs: replace in place (pumpcore.store)
        return FileStore(self._path("log"), keep_open=True, in_place=True)

    def _read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def _replace(self, name, data):
        """Atomic replace on littlefs: write a temporary file, then rename over the old one."""
        tmp = self._path(name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self._path(name))

    def load_settings(self):
        return self._read("settings.txt")

    def store_settings(self, raw):
        self._replace("settings.txt", raw)

    def load_key(self):
        return self._read("key.bin")

    def load_counter(self):
        from pumpcore.auth import parse_counter, COUNTER_FILE
        return parse_counter(self._read(COUNTER_FILE))   # missing 0; unreadable: refuse all

    def store_counter(self, n):
        self._replace("ctr.txt", b"%d" % n)
