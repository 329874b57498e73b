# pyright: reportUndefinedVariable=false
"""Raspberry Pi Pico (RP2040) board: the pump's hardware seam for the controller.

Pin map (docs/hardware.md): UART0 TX GP0 / RX GP1 (host link, 115200 8N1); stepper driver
STEP GP2, DIR GP3, EN GP4 (active low, A4988/TMC2209 style); encoder A GP6 / B GP7;
door switch GP14 (closed = low); air sensor GP15 (air = high); pressure sensor on ADC0
(GP26); battery divider on ADC1 (GP27); red LED GP17, yellow LED GP18, buzzer GP16 (PWM).

Steps: a PIO state machine emits exactly N evenly spaced pulses per control tick
(N-1 and the half-period are pushed to its FIFO), so the count per tick is exact and the
timing needs no CPU. Encoder: pin IRQ, integer-only handler, no allocation.
"""
import machine
import rp2
import time
from machine import Pin, ADC, UART, PWM
from micropython import const

from pumpcore.controller import TICK_MS, ticks_diff

NL_PER_KSTEP = 217078           # 50 mL syringe, 26.6 mm bore, 1.25 mm lead, 3200 µsteps/rev
_PIO_FREQ = const(1000000)      # 1 µs per PIO delay-loop iteration
_TICK_US = const(50000)         # must equal TICK_MS * 1000
_P_OFFSET = const(3277)         # ADC counts at 0 mmHg (0.5 V of 3.3 V, 0.5–4.5 V sensor via divider)
_P_SPAN = const(1300)           # mmHg across the sensor's span
_P_COUNTS = const(52428)        # ADC counts across the span
_BATT_NUM = const(9900)         # mV at full scale (3.3 V × 3 divider)


@rp2.asm_pio(set_init=rp2.PIO.OUT_LOW)
def _step_train():
    pull(block)                 # noqa: F821  pulses - 1
    mov(x, osr)                 # noqa: F821
    pull(block)                 # noqa: F821  half period in PIO loop iterations
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


class Board:
    NL_PER_KSTEP = NL_PER_KSTEP
    LIB_PATH = "druglib.json"

    def __init__(self):
        import binascii
        self.DEVICE_ID = binascii.hexlify(machine.unique_id()).upper()
        self.uart = UART(0, baudrate=115200, tx=Pin(0), rx=Pin(1), timeout=0, rxbuf=512)
        self.dir = Pin(3, Pin.OUT, value=0)
        self.en = Pin(4, Pin.OUT, value=1)          # high = driver disabled
        self.sm = rp2.StateMachine(0, _step_train, freq=_PIO_FREQ, set_base=Pin(2))
        self.sm.active(1)
        self.enc_a = Pin(6, Pin.IN, Pin.PULL_UP)
        self.enc_b = Pin(7, Pin.IN, Pin.PULL_UP)
        self.encoder = 0
        self.enc_a.irq(self._on_enc, Pin.IRQ_RISING)
        self.door = Pin(14, Pin.IN, Pin.PULL_UP)
        self.air = Pin(15, Pin.IN, Pin.PULL_DOWN)
        self.p_adc = ADC(26)
        self.b_adc = ADC(27)
        self.led_red = Pin(17, Pin.OUT, value=0)
        self.led_yellow = Pin(18, Pin.OUT, value=0)
        self.buzzer = PWM(Pin(16))
        self.buzzer.freq(2000)
        self.buzzer.duty_u16(0)
        self.wdt = machine.WDT(timeout=2000)

    def _on_enc(self, pin):
        # integer-only: no allocation in the IRQ handler
        if self.enc_b.value():
            self.encoder -= 1
        else:
            self.encoder += 1

    def ticks_ms(self):
        return time.ticks_ms()

    def read_inputs(self, inp):
        raw = self.p_adc.read_u16() - _P_OFFSET
        inp.pressure_mmhg = raw * _P_SPAN // _P_COUNTS
        inp.encoder = self.encoder
        inp.door_open = self.door.value() == 1
        inp.air = self.air.value() == 1
        inp.battery_mv = self.b_adc.read_u16() * _BATT_NUM // 65535

    def uart_read(self, buf):
        n = self.uart.any()
        if not n:
            return 0
        r = self.uart.readinto(buf, min(n, len(buf)))
        return r or 0

    def uart_write(self, buf, n):
        self.uart.write(memoryview(buf)[:n])

    def drive(self, out):
        self.en.value(0 if out.enable else 1)
        n = out.steps
        if out.enable and n > 0:
            half = _TICK_US // (2 * n) - 2     # loop overhead of 2 cycles per half period
            if half < 1:
                half = 1
            self.sm.put(n - 1)
            self.sm.put(half)
        self._signal(out.alarm_prio)

    def _signal(self, prio):
        # IEC 60601-1-8 visual signals: high = red flashing ~2 Hz, medium = yellow ~0.6 Hz,
        # low = yellow constant. Audio: high and medium beep with the flash.
        t = time.ticks_diff(time.ticks_ms(), 0)
        if prio == 3:
            on = (t // 250) & 1
            self.led_red.value(on)
            self.led_yellow.value(0)
            self.buzzer.duty_u16(32768 if on else 0)
        elif prio == 2:
            on = (t // 800) & 1
            self.led_red.value(0)
            self.led_yellow.value(on)
            self.buzzer.duty_u16(16384 if on and (t // 800) % 4 == 1 else 0)
        else:
            self.led_red.value(0)
            self.led_yellow.value(1 if prio == 1 else 0)
            self.buzzer.duty_u16(0)

    def feed_watchdog(self):
        self.wdt.feed()

    def wait_next(self, deadline):
        while ticks_diff(deadline, time.ticks_ms()) > 0:
            if self.uart.any():
                return
            time.sleep_ms(1)
