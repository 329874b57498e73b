"""Downstream occlusion: a pressure-trend detector with a fixed-threshold backstop.

Physics (docs/firmware.md): with the line closed, every nL the plunger pushes goes into the
syringe/line compliance C, so the pressure rises at dP/dt = Q / C — a straight line whose
slope is known from the programmed rate Q and the worst-case (largest) compliance. With
the line open the pressure settles at Pv + Q·R instead. The detector fits a least-squares
slope to the pressure over a sliding window and alarms when that slope stays above half the
slowest occlusion slope (Q / C_max / 2) for three samples in a row.

The window is chosen per rate when the rate changes (program time, floats allowed there):
the shortest window, and the coarsest decimation, in which the slope's noise (σ_slope of a
least-squares fit) is K = 6 times below the threshold. High rates get a window of a few
seconds; 1 mL/h about a minute; below that the threshold is raised to K·σ_slope of the
longest window. After a rate change the detector waits _HOLDOFF_MS for the line's R·C
transient (which starts exactly like an occlusion) to die out.

A trend alarm needs two looks (a step is not a ramp): when the window's slope has been above
the threshold for _OVER_N samples (a *candidate*), the detector waits N/8 samples (the end of a
step's transient), then fits a fresh window of N/2 samples: only a rise that goes on — an
occlusion — is still above the same slope there (the half window's threshold is the same
mmHg/s). A rise steeper than _STEEP × the threshold in either window is no occlusion at all
(Q/C_min of the stiffest syringe is under half of it): a pump lowered below the patient (a
hydrostatic step) or a stopper held by friction while the rod's spring is reloaded; the
detector starts over. The level before the rise and how long ago it was left are kept for
the back-off (`base_mmhg`, `onset_ticks`).

The tick path (`update`) is integer only: running sums S0 = Σy and S1 = Σi·y updated in
O(1) per sample, slope test without division, every value below 2**30.
"""
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_N_MAX = const(250)            # samples in the longest window
_N_MIN = const(10)
_HOLDOFF_MS = const(10000)     # wait after a rate change: 5 τ of a 2 s line time constant
_DEBOUNCE_TICKS = const(3)     # fixed threshold: three ticks at or above the limit
_OVER_N = const(3)             # trend: three samples in a row above the slope threshold
_P_CLAMP = const(2000)        # readings above this are above every limit anyway
K_SIGMA = 6                   # threshold / σ_slope
SIGMA_MMHG = 2.0              # design noise of one pressure reading (sim: 1.5)
C_MAX_ML_MMHG = 0.0028        # largest syringe+line compliance, 0.021 mL/kPa (Snijder 2015)
TICK_S = 0.05
_BASE_TICKS = const(4)        # one sample = mean of 4·D readings (D = decimation)

_STEEP = const(16)             # slope ≥ 16 × threshold (3.4 × Q/C_min): a step, not an occlusion
_ONSET_MMHG = const(4)         # the rise began where the samples were last ≤ base + 4 mmHg

_TREND = const(1)
_THRESHOLD = const(2)

_WATCH = const(0)             # full window, looking for a candidate
_WAIT = const(1)              # candidate seen: let a step's transient pass
_CONFIRM = const(2)           # a fresh half window must show the rise again


def plan_ints(rate_ul_h):
    """(D, N, integer threshold) for a rate: computed at program time, used in the tick."""
    d, n, thr = plan(rate_ul_h)
    thr_y = thr * TICK_S * _BASE_TICKS * d * 4.0
    return d, n, int(thr_y * n * (n * n - 1) / 6.0) + 1


def plan(rate_ul_h):
    """(decimation D, window N, slope threshold in mmHg/s) for a delivery rate."""
    q_ml_s = rate_ul_h / 3600000.0
    s_half = q_ml_s / C_MAX_ML_MMHG / 2.0
    d = 1
    while True:
        ts = TICK_S * _BASE_TICKS * d
        sig = SIGMA_MMHG / (d ** 0.5)
        for n in range(_N_MIN, _N_MAX + 1):
            sig_slope = sig * (12.0 / (n * (n * n - 1))) ** 0.5 / ts
            if K_SIGMA * sig_slope <= s_half:
                return d, n, s_half
        if d >= 32:
            sig_slope = sig * (12.0 / (_N_MAX * (_N_MAX * _N_MAX - 1))) ** 0.5 / ts
            return d, _N_MAX, K_SIGMA * sig_slope
        d *= 2


class Occlusion:
    def __init__(self, limit_mmhg):
        self.limit = limit_mmhg
        self.ring = array("h", bytes(2 * _N_MAX))   # y <= 4 * _P_CLAMP = 8000: 16 bits
        self.d = 1
        self.n = _N_MAX
        self.thr_num = 1 << 29
        self.slope_mmhg_min = 0     # last threshold, for STATUS/docs (mmHg/min)
        self.flat_y = -1            # 4 × the mean of the last flat window (-1: none yet)
        self.restart()

    def oldest_mmhg(self):
        """Mean pressure of the oldest sample of the window that saw the rise, or -1."""
        if self.mode != _WATCH:
            return self.base_y // 4
        if self.count < self.n:
            return -1
        return self.ring[self.head] // 4

    def base_mmhg(self):
        """The level before a rise: the last flat window's mean (or the oldest sample, if
        lower or no window was flat yet), or -1 when nothing is known."""
        b = self.oldest_mmhg()
        f = self.flat_y
        if f >= 0 and (b < 0 or f // 4 < b):
            return f // 4
        return b

    def onset_ticks(self, p_now, base):
        """Ticks since the pressure left `base` (-1: unknown). After a confirmed trend: the
        rise now (p_now - base) over the fresh window's slope. Otherwise (threshold alarm):
        back to the newest sample within _ONSET_MMHG of base, extrapolated to base."""
        rise = p_now - base
        if rise <= 0:
            return 0
        if self.mode == _CONFIRM and self.num > 0:
            n = self.wn
            q = n * (n * n - 1) // 6
            tpm4 = q * 64 * self.d // self.num        # 4 × ticks per mmHg of the slope
            if rise > 4000:
                rise = 4000
            if tpm4 > 200000:
                tpm4 = 200000
            return rise * tpm4 // 4
        if self.mode != _WATCH or self.count < self.n:
            return -1
        k = self._scan(4 * base)
        if k < 0:
            return -1
        if rise > 2 * _ONSET_MMHG:
            k += _ONSET_MMHG * k // (rise - _ONSET_MMHG)
        return k

    def _scan(self, base_y):
        """Ticks back to the newest sample ≤ base + _ONSET_MMHG in a full window (or -1)."""
        n = self.n
        ring = self.ring
        lim = base_y + 4 * _ONSET_MMHG
        i = self.head - 1 if self.count >= n else self.count - 1
        k = 0
        while k < self.count:
            if i < 0:
                i += n
            if ring[i] <= lim:
                return k * _BASE_TICKS * self.d + self.acc_n
            i -= 1
            k += 1
        return -1

    def configure(self, rate_ul_h):
        """Choose the window for this rate (program time: may allocate) and restart."""
        d, n, thr = plan(rate_ul_h)
        ts = TICK_S * _BASE_TICKS * d
        thr_y = thr * ts * 4.0                  # y is 4 × the mean reading
        self.d = d
        self.n = n
        self.thr_num = int(thr_y * n * (n * n - 1) / 6.0) + 1
        self.slope_mmhg_min = int(thr * 60.0 + 0.5)
        self.flat_y = -1
        self.restart()

    def restart(self):
        self.hi = 0
        self.hold = _HOLDOFF_MS
        self._clear()

    def _clear(self):
        """Empty the window and go back to watching for a rise (the plan's d, n, thr kept)."""
        self.mode = _WATCH
        self.wn = self.n
        self.wthr = self.thr_num
        self.count = 0
        self.head = 0
        self.s0 = 0
        self.s1 = 0
        self.acc = 0
        self.acc_n = 0
        self.over = 0
        self.num = 0
        self.wait = 0
        self.base_y = 0

    def update(self, p, dt):
        """One control tick of pressure p (mmHg). Returns 0, _TREND or _THRESHOLD."""
        if p >= self.limit:
            self.hi += 1
            if self.hi >= _DEBOUNCE_TICKS:
                return _THRESHOLD
        else:
            self.hi = 0
        if self.hold > 0:
            self.hold -= dt
            return 0
        if p > _P_CLAMP:
            p = _P_CLAMP
        elif p < 0:
            p = 0
        self.acc += p
        self.acc_n += 1
        if self.acc_n < _BASE_TICKS * self.d:
            return 0
        y = self.acc // self.d
        self.acc = 0
        self.acc_n = 0
        if self.mode == _WAIT:
            self.wait -= 1
            if self.wait <= 0:
                self.mode = _CONFIRM
            return 0
        n = self.wn
        ring = self.ring
        if self.count < n:
            ring[self.count] = y
            self.s1 += self.count * y
            self.s0 += y
            self.count += 1
            if self.count < n:
                return 0
        else:
            h = self.head
            old = ring[h]
            self.s1 = self.s1 - (self.s0 - old) + (n - 1) * y
            self.s0 = self.s0 - old + y
            ring[h] = y
            h += 1
            self.head = 0 if h >= n else h
        num = self.num = 2 * self.s1 - (n - 1) * self.s0
        thr = self.wthr
        if num >= thr * _STEEP:
            self._clear()                 # too steep for any occlusion: a step
            return 0
        if self.mode == _CONFIRM:
            if num >= thr:
                return _TREND
            self._clear()                 # the rise did not go on: it was a step
            return 0
        if num < thr and num > -thr:
            self.flat_y = self.s0 // n        # a flat window: the level before any rise
        if num >= thr:
            self.over += 1
            if self.over >= _OVER_N:
                # candidate: remember the level before the rise, then look again
                self.base_y = ring[self.head] if self.count >= n else ring[0]
                self.mode = _WAIT
                w = n // 8
                self.wait = w if w > 0 else 1
                n2 = n // 2
                self.wn = n2
                # the same mmHg/s: the integer threshold scales with n(n²-1)
                self.wthr = thr * (n2 * (n2 * n2 - 1) * 256 // (n * (n * n - 1))) // 256 + 1
                self.count = 0
                self.head = 0
                self.s0 = 0
                self.s1 = 0
                self.over = 0
        else:
            self.over = 0
        return 0

    def suspend(self):
        """Keep the trend detector off (the stopper is being loaded); the threshold stays on."""
        self.hold = _HOLDOFF_MS
        self.count = 0
