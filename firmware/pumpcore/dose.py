"""Dose and volume arithmetic in integers: µg, nL, µL/h, ms, microsteps.

Program-time functions (`dose_ug`, `volume_nl`, `rate_ul_h`, `duration_ms`) run when a
command arrives and may use large intermediates; every value they return, and every value
the rate loop keeps, is below 2**30 so that a 32-bit MicroPython port keeps it a small int.
`VolumeLine` is the rate loop's integrator: exact (Bresenham-style remainders), allocation free.
"""
try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_SMALL_INT_MAX = const(0x3FFFFFFF)   # 2**30 - 1

# limits of any program, whatever the drug (docs/protocol.md)
RATE_MIN = const(100)              # µL/h  (0.1 mL/h)
RATE_MAX = const(1200000)          # µL/h  (1200 mL/h)
VTBI_MIN = const(1000)             # nL    (1 µL)
VTBI_MAX = const(1000000000)       # nL    (1 L)
DURATION_MAX = const(345600000)    # ms    (96 h)
_MS_PER_H = const(3600000)
_UL_H_PER_NL_MS = const(3600)        # 1 nL/ms = 3600 µL/h


def dose_ug(dose_ug_kg, weight_g):
    """Dose for a patient: µg/kg × g / 1000, rounded down (never more than prescribed)."""
    return dose_ug_kg * weight_g // 1000


def volume_nl(amount_ug, conc_ug_ml):
    """Volume of drug solution holding `amount_ug` at `conc_ug_ml`, rounded down."""
    return amount_ug * 1000000 // conc_ug_ml


def rate_ul_h(vol_nl, dur_ms):
    """Constant rate that delivers vol_nl in dur_ms, rounded down (µL/h)."""
    return vol_nl * _UL_H_PER_NL_MS // dur_ms


def dose_rate_ul_h(dose_ug_kg_h, weight_g, conc_ug_ml):
    """Rate for a continuous dose: µg/kg/h × kg / (µg/mL) in µL/h, rounded down.
    (µg/kg/h × g/1000 / (µg/mL) = mL/h × 1/1000; the factors of 1000 cancel.)"""
    return dose_ug_kg_h * weight_g // conc_ug_ml


def drug_ug(vol_nl, conc_ug_ml):
    """Drug held in vol_nl of solution at conc_ug_ml, rounded down (µg)."""
    return vol_nl * conc_ug_ml // 1000000


def volume_for_ms(rate, dur_ms):
    """Volume delivered at rate µL/h in dur_ms, rounded down (nL)."""
    return rate * dur_ms // _UL_H_PER_NL_MS


def duration_ms(vol_nl, rate):
    """Time to deliver vol_nl at rate µL/h, rounded up (ms)."""
    return -((-vol_nl * _UL_H_PER_NL_MS) // rate)


def steps_for_nl(vol_nl, nl_per_kstep):
    """Whole microsteps that displace at most vol_nl (nl_per_kstep: nL per 1000 µsteps)."""
    return vol_nl * 1000 // nl_per_kstep


class VolumeLine:
    """The programmed volume–time line and the microsteps that follow it.

    Each `advance(rate, dt_ms)` moves the target volume on by rate × dt exactly (the
    remainder is carried), clamps it at the limit, and returns the whole microsteps to issue
    so that the cumulative steps equal floor(target_nl × 1000 / nl_per_kstep) at all times.
    All state stays below 2**30 for rate ≤ 1.2e6 µL/h and dt ≤ 200 ms.
    """

    def __init__(self, nl_per_kstep):
        self.nl_per_kstep = nl_per_kstep
        self.reset(0)

    def reset(self, limit_nl):
        self.limit_nl = limit_nl
        self.target_nl = 0      # programmed volume so far
        self.steps = 0          # microsteps issued so far
        self.delivered_nl = 0   # volume those steps displace (rounded down)
        self._vol_rem = 0       # µL/h·ms not yet a whole nL (< 3600)
        self._step_rem = 0      # nL·1000 not yet a whole step (< nl_per_kstep)
        self._del_rem = 0       # step·nl_per_kstep not yet a whole nL (< 1000)

    def preset(self, nl):
        """Start the line at nl already delivered (restored after a reboot)."""
        if nl > self.limit_nl:
            nl = self.limit_nl
        self.target_nl = nl
        self.steps = nl * 1000 // self.nl_per_kstep
        self._step_rem = nl * 1000 - self.steps * self.nl_per_kstep
        dacc = self.steps * self.nl_per_kstep
        self.delivered_nl = dacc // 1000
        self._del_rem = dacc - self.delivered_nl * 1000

    def done(self):
        return self.target_nl >= self.limit_nl

    def advance(self, rate, dt_ms):
        acc = self._vol_rem + rate * dt_ms
        dv = acc // _UL_H_PER_NL_MS
        self._vol_rem = acc - dv * _UL_H_PER_NL_MS
        room = self.limit_nl - self.target_nl
        if dv >= room:
            dv = room
            self._vol_rem = 0
        self.target_nl += dv
        k = self.nl_per_kstep
        sacc = self._step_rem + dv * 1000
        n = sacc // k
        self._step_rem = sacc - n * k
        self.steps += n
        dacc = self._del_rem + n * k
        d = dacc // 1000
        self._del_rem = dacc - d * 1000
        self.delivered_nl += d
        return n
