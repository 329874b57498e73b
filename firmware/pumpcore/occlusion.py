"""Downstream occlusion: a sustained-rise detector planned from the syringe, with a fixed
threshold backstop and (where a bedside ramp could look the same) a probe at half and then
1.5 × the rate that keeps the motor behind the program's line (campaign run 89).

Physics (docs/firmware.md, "Occlusion"): with the line closed every nL the plunger pushes goes
into the syringe + line compliance C, so the pressure rises at s = Q / C for as long as the
pump pushes, evenly, and stops rising the moment the motor stops. Everything else the bedside
does to the reading is bounded and shaped differently: a pump raised or lowered, an arm
moved, a cough or a strain is a step or a pulse (one or two seconds, either sign, through the
line's R·C); breathing is a few-mmHg sinusoid; a bed raised slowly is a ramp of at most a few
tens of mmHg that goes on whether the pump pushes or not.

The detector averages the reading over *segments* of L ticks and looks at the last four
segment means m0..m3 (three differences d1..d3). An occlusion candidate needs every
difference inside the band [lo, hi] around the expected rise per segment s·T (lo = 0.5 s·T,
hi = 2.5 s·T: the syringe's compliance is known from its model to within the brand's range)
and the rise to be even (3·min d ≥ max d). A step or pulse puts its rise into one or two
differences (and leaves a third near 0 or negative), an R·C exponential decays (uneven),
breathing averages out over a segment, so none of them passes. T is the shortest segment in
which the expected difference s·T is K = 4 σ of a difference's noise (σ of a reading is the
force sensor's σ ÷ the plunger area: the syringe model's), and at least 1 s (so a 2-s arm
move can never fill three differences).

Where the band overlaps the slopes of bedside height ramps (0.45-1.5 mmHg/s: a bed raised
40 cm over 20-60 s), a candidate is *probed*: for three segments the motor runs at half the
line's rate, then for three at 1.5 × (the controller holds back half the line's steps, then
pays them back: never ahead of the line), the first 1.5 × segment letting the line's R·C step
(Q·R) pass. A closed line's rise is the pump's doing and follows it, while a ramp from outside
goes on as before (or ends): the six segments are judged together (`update`), a closed line's
1.5 × rise exceeding its half rate's by 2 × the mean rise per segment before the probe, a
ramp's by nothing.
Elsewhere, where T < 6 s (a bedside step's response: two steps can fill a window), a candidate
is *confirmed* by one segment at twice the rate: its rise must be 1.25-2 × the mean before
(a closed line: 1.5 ×; an open line: its own rise + at most 0.5 × from the Q·R step). There
the window slides by half a segment and holds four means: three differences that rise as a
closed line's do, and the doubled segment is the fourth (session 9: 100 mL/h within 5 s). (A pause would not do: a
resting stopper is held by friction, and the force sensor stops seeing the pressure at all.)
Where a bedside ramp can fill that band, or the rise is within a bedside height change, one
segment at half the rate follows the doubled one: a closed line keeps what the doubling pushed
(it is in the compliance), an open line's Q·R step ebbs as the rate falls, so a ramp from
outside rises no more than its own pace; the half rate pays back half of what the doubling ran
ahead of the program's line (never further ahead) and the rest is held back after, as before.

T also keeps breathing out: K_BREATH × what a BREATH_MMHG swing at up to BREATH_S per breath
leaves in a segment difference must stay under 0.5·s·T too (breathing stops in a closed line,
but a detector that saw it as a rise would false-alarm in an open one).

The tick path (`update`) is integer only: segment sums of at most 1200 ticks × 2000 mmHg,
every value below 2**30; no allocation.
"""
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_HOLDOFF_MS = const(10000)     # wait after a rate change: 5 τ of a 2 s line time constant
_DEBOUNCE_TICKS = const(3)     # fixed threshold: three ticks at or above the limit
_P_CLAMP = const(2000)         # readings beyond ±this are beyond every limit anyway
_NSEG = const(8)               # segment sums kept (5 for the candidate, 2 for the probe; the
                               # last is the controller's: its probe steps' carry)
_PROBE_SEGS = const(6)         # probe: 3 segments at half the rate, then 3 at 1.5 × (1 dead +
                               # 2 measured); the motor ends it on the program's line
_P_TWICE = const(1)            # `probing`: the confirmation's one segment at twice the rate,
_P_LOW = const(2)              # the probe's half rate,
_P_HIGH = const(3)             # the probe's 1.5 × (paying back what the half rate held back)
_LBITS = const(11)             # plan_ints: the trend segment in |L|'s low bits (<= 1200)
_LMASK = const(2047)
_T_STEP_TICKS = const(120)     # 6 s: a bedside step lands within this (move <= 2 s + the
                               # line's R·C); shorter segments let two steps fill a window
_C_SLIDE = const(2)            # `confirm`: three differences sliding by half a segment, then
                               # the doubling (sessions 6-11's fixed-grid confirmation, 1, is
                               # gone: since session 12 no plan took it)
_C_SLIDE2 = const(3)           # ... then the doubling and one segment back at the line's rate
                               # (where a bedside ramp fits the band: docs/firmware.md, 3c)
_H_BED = const(44)             # mmHg: the largest bedside height change (60 cm: CONTEXT §8)
_RAMP_FAST = const(220)        # 1/100 mmHg/s: the fastest bedside height ramp (3 cm/s: 60 cm
                               # in 20 s); _C_SLIDE only where the band's floor is 2 × that
_DEAD = const(8)               # ticks of the doubling before its segment is summed: the
                               # reading's latency (one 200-ms reading, HOLD_TICKS)
K_SIGMA = 4.0                  # half the expected rise per segment / σ of a difference
K_BREATH = 1.0                 # ... / what breathing leaves in a difference
BREATH_MMHG = 4.0              # "a few mmHg" of venous swing (CONTEXT §8) ...
BREATH_S = 5.0                 # ... at 12 breaths/min and faster
TICK_S = 0.05
HOLD_TICKS = 4                 # ticks per fresh reading (the simulator: 200 ms slices)
T_MIN_S = 0.8                  # a 2-s arm move fills at most three of the four differences
T_MAX_S = 60.0
LO = 0.5                       # band around s·T: the compliance within 0.6-1.4 × the model's
HI = 2.5
RAMP_LO = 0.45                 # mmHg/s: bedside height ramps (40 cm over 20-60 s) ...
RAMP_HI = 1.5                  # ... are probed where the band reaches them

# the stored-volume test (a slowly developing occlusion: docs/firmware.md, "Occlusion", 6.)
_VSEG = const(200)             # ticks per level segment, at least: 10 s (else the plan's T)
_VNONE = const(1 << 20)        # no slip seen (ticks since / between slips saturate here)
_VTAU = const(25600)           # the slow-rise sum leaks with τ = 25600 ticks ≈ 21 min
V_ALARM_NL = 30000             # alarm before 30 µL sit in the compliance (bolus goal 50 µL)
V_RATE_CMMHG_S = 10            # increments up to 0.1 mmHg/s are a slow rise; faster ones are
                               # the bedside (the slowest bed ramp, 20 cm over 70 s: 0.21)

_WATCH = const(0)
_PROBE = const(1)
_VPROBE = const(2)             # the stored-volume test's Q·R probe (the controller starts it)

_TREND = const(1)
_THRESHOLD = const(2)
_VOLUME = const(3)
_UNKNOWN = const(-1048576)     # -1 << 20: no level yet


def _segment(s, sigma_mmhg, joint):
    """The shortest segment L (ticks) in which half the expected rise per segment, 0.5·s·T,
    clears K_SIGMA σ of a segment difference's sensor noise and K_BREATH × what a breath
    leaves in one: *jointly* (root sum of squares) where an open line's single difference
    decides (a probe or a confirmation: an open line's breathing and noise act on that same
    difference), else *each on its own* (max): a closed line has no breathing (the margin
    that lets its rise through is against noise alone), and an open line's breathing alone
    must stay below lo.

    The least L in [L0, lmax) whose segment clears the need, else lmax. The need falls and
    the rise grows with t, so _clears is false and then true: a bisection finds that L in
    ~11 evaluations. (A scan of every L made up to 1,184 of them at a low rate, each a
    dozen float objects on the RP2040's heap: ~380 KB of garbage in the PROG tick, which in
    a small heap ran the GC ~150 times, past the 2-s watchdog; docs/performance.md.)"""
    lo_l = int(T_MIN_S / TICK_S)
    hi_l = int(T_MAX_S / TICK_S)
    while lo_l < hi_l:
        m = (lo_l + hi_l) // 2
        if _clears(m, s, sigma_mmhg, joint):
            hi_l = m
        else:
            lo_l = m + 1
    return lo_l


def _clears(L, s, sigma_mmhg, joint=True):
    """True when half the expected rise over a segment of L ticks stands clear of the noise
    and breathing in a segment difference (jointly, or each on its own: `_segment`); joint
    a float w > 0: jointly, and of 2 × a stopper saw's residual w / t in a segment mean as
    well (w in mmHg·s; the probe's half rate, `plan_ints`). (w rides in `joint`, and `nb`
    carries its term: every frame here is as large as before it, since a frame over 11
    words is taken from the RP2040's heap at command time, and the heap trial is
    sensitive to its layout: docs/performance.md, session 12.)"""
    t = L * TICK_S
    sd = sigma_mmhg * (2.0 * HOLD_TICKS * TICK_S / t) ** 0.5
    rb = BREATH_MMHG * BREATH_S / (3.14159 * t)
    if rb > BREATH_MMHG:
        rb = BREATH_MMHG
    ns = K_SIGMA * sd
    nb = K_BREATH * rb * 1.414
    if joint:
        need = ns * ns + nb * nb
        if joint is not True:
            nb = 2.0 * joint / t       # the saw's term (the breath's is in need)
            need += nb * nb
        need = need ** 0.5
    else:
        need = ns if ns > nb else nb
    return LO * s * t >= need


def _band(s, sigma_mmhg, L):
    t = L * TICK_S
    sd = sigma_mmhg * (2.0 * HOLD_TICKS * TICK_S / t) ** 0.5
    lo = LO * s * t
    if lo < 2.5 * sd:
        lo = 2.5 * sd                  # very low rates: the noise sets the floor
    hi = HI * s * t + 3.0 * sd
    probe = lo / t <= RAMP_HI and hi / t >= RAMP_LO
    return lo, hi, probe


def plan(rate_ul_h, c_nl_mmhg, sigma_mmhg):
    """(segment ticks L, lo, hi mmHg per segment, probe) for a rate, a syringe compliance
    (syringe + line, nL/mmHg) and the noise of one reading (mmHg, 1 σ). Program time.

    T is the shortest segment in which half the expected rise per segment, 0.5·s·T, stands
    K_SIGMA σ clear of the sensor noise of a segment difference and K_BREATH × what breathing
    leaves in one (BREATH_MMHG at up to BREATH_S per breath, averaged over T): each on its
    own where the candidate alarms by itself (T ≥ the step response, not probed), jointly
    where a probe or a confirmation decides on an open line's difference (`_segment`)."""
    s = _slope(rate_ul_h, c_nl_mmhg)
    L = _segment(s, sigma_mmhg, False)
    lo, hi, probe = _band(s, sigma_mmhg, L)
    if probe or L < _T_STEP_TICKS:
        # a probe or a confirmation decides: plan for breathing and noise together
        L = _segment(s, sigma_mmhg, True)
        lo, hi, probe = _band(s, sigma_mmhg, L)
    return L, lo, hi, probe


def level_ticks(rate_ul_h, c_nl_mmhg, sigma_mmhg):
    """The joint-margin segment (ticks): the stored-volume test's levels are judged on a line
    that is still open (a partial occlusion), where breathing and noise act together."""
    return _segment(_slope(rate_ul_h, c_nl_mmhg), sigma_mmhg, True)


def _slope(rate_ul_h, c_nl_mmhg):
    s = rate_ul_h / 3.6 / c_nl_mmhg           # mmHg/s: nL/s ÷ nL/mmHg
    return s if s > 0 else 1e-6


def plan_ints(rate_ul_h, c_nl_mmhg=2100, sigma_cmmhg=150):
    """The plan as three integers for the tick: (L, lo, hi) in units of segment sums
    (mmHg × L), L negative when candidates are probed. sigma in 1/100 mmHg. |L| carries the
    trend segment in its low 11 bits (L <= 1200) and, above them, the joint-margin segment
    Lj the stored-volume test's levels are planned from (0: the trend segment) — on a probed
    plan, where that is the trend segment, the probe's segment instead (below)."""
    L, lo, hi, probe = plan(rate_ul_h, c_nl_mmhg, sigma_cmmhg / 100.0)
    if probe:
        # The probe's segment: the shortest in which its contrast — the 1.5 × stage's two
        # differences less the half rate's, four segment means, a closed line 2·s·T, a ramp
        # from outside 0, judged halfway at s·T — stands K_SIGMA σ of its sensor noise
        # (2 σ_mean) and K_BREATH × its breathing (four means' residuals) clear, jointly:
        # the candidate's joint need (½·s·T against √2 σ_mean and √2 × a mean's breath)
        # with the margin and the errors each √2 × larger, so `_segment` of √2 × the slope.
        # And the stopper's stick-slip at the half rate: a saw of F / A in the reading, one
        # cycle per F / k of plunger travel, leaves up to 1/8 of its height × its period ÷ T
        # in a segment mean, F² / (8·k·(Q/2)·T) as a pressure whatever the bore (F = 0.6 N,
        # the battery's largest stick-slip excess, any size; k = 120 N/mm, the softest
        # stopper: 0.36 / 960 N·mm × 7500.6 mmHg/MPa = 2.8127 mmHg·mm³ over Q/2 in mm³/s);
        # the half rate's sum (a closed line 1 × the mean, a ramp 2 ×, judged within
        # 0.5-1.5 ×) holds two such means, so its margin ½·s·T clears 2·√2 × that
        # (`_clears`). Never longer than L (docs/firmware.md, "Occlusion", 3.).
        Lj = 2.8127 / (rate_ul_h / 7200.0) if rate_ul_h > 0 else True    # w (no new local)
        Lj = _segment(1.41421 * _slope(rate_ul_h, c_nl_mmhg), sigma_cmmhg / 100.0, Lj)
        if Lj > L:
            Lj = L
    else:
        Lj = level_ticks(rate_ul_h, c_nl_mmhg, sigma_cmmhg / 100.0)
    a = L | (Lj << _LBITS)
    return (-a if probe else a), int(lo * L) + 1, int(hi * L) + 1


class Occlusion:
    def __init__(self, limit_mmhg):
        self.limit = limit_mmhg
        self.seg = array("i", bytes(4 * _NSEG))
        self.L = 20
        self.Lj = 20                # the joint-margin segment (the levels' length, at least);
                                    # on a probed plan (where that is L) the probe's segment
        self.lo = 1 << 29
        self.hi = 1 << 29
        self.probe = False
        self.confirm = 0            # an unprobed candidate is confirmed by one doubled segment
                                    # (_C_SLIDE, _C_SLIDE2: how the candidate is found)
        self.probing = 0            # the controller's rate while probing: 0 the line's,
                                    # _P_TWICE 2 ×, _P_LOW 0.5 ×, _P_HIGH 1.5 ×
        self.slope_mmhg_min = 0     # expected rise, for STATUS/docs (mmHg/min)
        # the stored-volume test: level segments of v_len ticks (levels in mmHg / 256)
        self.v_thr = 1 << 29        # alarm level of the slow-rise sum (mmHg / 256)
        self.v_sig = 0              # 0.6 σ of a reading (mmHg / 256): 3 σ of a 10-s difference
        self.v_len = _VSEG
        self.v_max = 3 * _VSEG      # ... and ends at a slip, or at this many ticks
        self.v_slip = 1 << 20       # a fall of the reading by this much in one tick is a slip
        self.v_last = 0             # the last tick's reading (mmHg)
        self.v_np = 0               # the previous level's length (ticks)
        self.v_ts = _VNONE          # ticks since the last slip
        self.v_per = _VNONE         # ticks between the last two slips
        self.v_a = 0                # slow rise since the line was loaded (mmHg / 256)
        self.v_acc = 0
        self.v_n = 0
        self.v_prev = _UNKNOWN
        self.v_lo = _UNKNOWN        # the lowest level since the line settled (mmHg / 256)
        self.restart()

    def set_syringe(self, c_nl_mmhg, sigma_cmmhg):
        """Plan the stored-volume test from the syringe model (config time): alarm when the
        slow rise A reaches V_ALARM_NL / C."""
        if c_nl_mmhg < 1:
            c_nl_mmhg = 1
        self.v_thr = V_ALARM_NL * 256 // c_nl_mmhg
        self.v_sig = sigma_cmmhg * 6 * 256 // 1000
        # a stopper slip: the reading falls by 4 σ of a reading-to-reading difference (4·√2 σ)
        self.v_slip = sigma_cmmhg * 566 // 10000 + 1
        self._v_plan()

    def _v_plan(self):
        """Level segments of max(10 s, the trend segment T): a stick-slip saw at the lowest
        rates is averaged over as long as the trend test averages it. An increment is slow
        when it is at most V_RATE × the segment, or 3 σ of a 10-s level difference
        (0.2 σ·3; longer segments are less noisy), whichever is larger: the noise of a small
        syringe must not be cut off one-sidedly."""
        n = self.L if self.probe else self.Lj      # (probed: L is the joint segment)
        if n < _VSEG:
            n = _VSEG
        self.v_len = n
        self.v_max = 3 * n

    def set_plan(self, L, lo, hi):
        """Take a plan from `plan_ints` (stored per program segment) and restart."""
        self.probe = L < 0
        a = -L if L < 0 else L
        self.L = a & _LMASK
        self.Lj = a >> _LBITS
        if self.Lj == 0:
            self.Lj = self.L
        c = 0
        if not self.probe and self.L < _T_STEP_TICKS:
            # confirmed; sliding where no bedside ramp reaches half the band's floor, which as
            # a slope is 20·lo/L² mmHg/s (docs/firmware.md, "Occlusion", 3b)
            c = _C_SLIDE if 1000 * lo >= _RAMP_FAST * self.L * self.L else _C_SLIDE2
        self.confirm = c
        self._v_plan()
        self.lo = lo
        self.hi = hi
        # the expected rise lo/LO per segment, per minute
        self.slope_mmhg_min = lo * 2 * 1200 // (self.L * self.L)
        self.restart()

    def restart(self):
        self.restart_ref()
        self.hi_n = 0
        self.hold = _HOLDOFF_MS
        self.v_restart()           # the slow rise so far is kept: it is still in the line
        self._clear()

    def _clear(self):
        """Forget the segments and go back to watching (the plan kept)."""
        self.mode = _WATCH
        self.probing = 0
        self.nseg = 0
        self.acc = 0
        self.acc_n = 0
        self.run_d = 0
        self.pn = 0
        self.base = -1 << 20       # segment sum before the rise (unknown)

    def v_restart(self):
        """Start a new level segment; the next increment is not counted (a gap)."""
        self.v_acc = 0
        self.v_n = 0
        self.v_np = 0
        self.v_ts = _VNONE
        self.v_per = _VNONE
        self.v_prev = _UNKNOWN

    def restart_ref(self):
        self.ref = -1 << 20        # lowest segment sum since the line settled
        self.v_lo = _UNKNOWN       # ... and the lowest level (the back-off's base, whole cycles)

    def suspend(self):
        """Keep the trend detector off (the stopper is being loaded); the threshold stays on."""
        self.hold = _HOLDOFF_MS
        self.v_a = 0               # a line at rest while the stopper loads: nothing stored
        self.v_restart()
        self._clear()

    # ------------------------------------------------------------ for the back-off
    def base_mmhg(self):
        """The level before the rise (mmHg), or -1 when nothing is known: the lower of the
        candidate's first segment and the lowest level since the line settled (a rise that
        began in the hold-off, or too slow for the band: the stored volume is relieved down to
        there), else the lowest segment; never below 0."""
        v = -1
        b = self.base
        if self.ref > -1 << 20 and (b == -1 << 20 or self.ref < b):
            b = self.ref               # the rise may have begun before the window (hold-off)
        if b > -1 << 20:
            v = b // self.L
        if v > -1:
            return v
        if self.base > -1 << 20 or self.ref > -1 << 20:
            return 0                   # below the tare: relieve to 0, never suck back
        if self.confirm >= _C_SLIDE:
            # half-segments: the lowest of the segments (pairs of halves) kept
            n = self.nseg if self.nseg < 8 else 8
            if n < 2:
                return -1
            lo = self.seg[0] + self.seg[1]
            for i in range(1, n - 1):
                if self.seg[i] + self.seg[i + 1] < lo:
                    lo = self.seg[i] + self.seg[i + 1]
            return lo // self.L
        n = self.nseg if self.nseg < 5 else 5
        if n == 0:
            return -1
        lo = self.seg[0]
        for i in range(1, n):
            if self.seg[i] < lo:
                lo = self.seg[i]
        return lo // self.L

    def oldest_mmhg(self):
        """ACK's reference: the candidate window's first level (-1 when the alarm had none)."""
        if self.base > -1 << 20:
            v = self.base // self.L
            return v if v > 0 else 0
        return -1

    def onset_ticks(self, p_now, base):
        """Ticks since the pressure left `base`, from the candidate's rise per segment
        (-1: unknown, e.g. a threshold alarm without a trend)."""
        rise = p_now - base
        if rise <= 0:
            return 0
        if self.run_d <= 0:
            return -1
        if rise > 4000:
            rise = 4000
        # rise ÷ (run_d / 3 per segment of L ticks, in sums of L) = rise·3·L·L / run_d
        t = rise * 3 * self.L // self.run_d * self.L
        return t if t < 1 << 28 else 1 << 28

    # ------------------------------------------------------------ the tick
    def _volume(self, p):
        """The stored-volume test, one tick: True when the slow rise reaches V_ALARM_NL.

        A level is the mean reading from one stopper slip to the next: where the stopper saws
        (its last two slips at most v_max = 3 × v_len apart, the next not overdue by half
        that interval) a level ends at the first slip once it holds the whole cycles nearest
        v_len (the slip's reading starts the next level; at v_max at the latest), else at
        v_len ticks. So a level holds whole stick-slip cycles and the saw averages out of
        it; levels of a fixed length alias the saw (docs/firmware.md, "Occlusion", 6.)."""
        slip = self.v_last - p >= self.v_slip
        self.v_last = p
        ts = self.v_ts
        if slip:
            self.v_per = ts                   # the saw's period: the last two slips apart
            ts = 0
        elif ts < _VNONE:
            ts += 1
        self.v_ts = ts
        n = self.v_n
        per = self.v_per
        vl = self.v_len
        if per <= self.v_max and 2 * ts <= 3 * per:
            # the stopper saws: end at a slip once the level holds the whole cycles nearest
            # its length (from v_len − per/2 on, at least v_len/2: one cycle of a saw
            # slower than v_len), at v_max at the latest
            m = vl - (per >> 1)
            if m < (vl >> 1):
                m = vl >> 1
            done = (slip and n >= m) or n >= self.v_max
        else:
            done = n >= vl
        if not done:
            self.v_acc += p
            self.v_n = n + 1
            return False
        acc = self.v_acc                      # the level [start, this tick)
        self.v_acc = p
        self.v_n = 1
        # the level, mmHg / 256 (acc < 4800 × 2000: split so that nothing reaches 2**30)
        y = (acc // n) * 256 + (acc % n) * 256 // n
        prev = self.v_prev
        np_ = self.v_np
        # one whole stick-slip cycle, slip to slip (its length kept negative); two in a row
        # of the same length within 1/8: the saw of a line the bedside does not reach
        one = slip and n == per + 1          # (per counts the ticks between the slips)
        reg = False
        if np_ < 0:
            np_ = -np_
            e = n - np_
            reg = one and 8 * e <= n and -8 * e <= n
        self.v_prev = y
        self.v_np = -n if one else n
        if prev == _UNKNOWN:
            return False                      # (the first level may start mid-cycle)
        if self.v_lo == _UNKNOWN or y < self.v_lo:
            self.v_lo = y
        a = self.v_a
        if a >= 0:
            a -= a * n // _VTAU
        else:
            a += (-a) * n // _VTAU
        d = y - prev
        # slow: at most V_RATE over the time between the two levels' middles, that time
        # counted up to v_len (a longer level must not let more of a bedside edge leak into
        # the sum than a level of v_len does), or the noise
        dt = (n + np_) >> 1
        if dt > vl and not reg:
            dt = vl
        clip = V_RATE_CMMHG_S * dt * 256 // 2000
        if clip < self.v_sig:
            clip = self.v_sig
        if -clip <= d <= clip:
            a += d
        thr = self.v_thr
        if a < -thr:
            a = -thr
        self.v_a = a
        if a < thr:
            return False
        # where the slow rise began: A below the level now (for the back-off and ACK); on a
        # regular saw (a closed line: nothing from the bedside reaches the reading) the lowest
        # level since the line settled, if lower: the whole rise is stored, also the
        # increments a rise faster than the bound had dropped from A
        b = y - a
        if reg and self.v_lo < b:
            b = self.v_lo
        self.base = b * self.L // 256
        self.run_d = 0
        self.v_a = 0
        return True

    def update(self, p, dt):
        """One control tick of pressure p (mmHg). Returns 0, _TREND or _THRESHOLD."""
        if p >= self.limit:
            self.hi_n += 1
            if self.hi_n >= _DEBOUNCE_TICKS:
                return _THRESHOLD
        else:
            self.hi_n = 0
        if self.hold > 0:
            self.hold -= dt
            return 0
        if p > _P_CLAMP:
            p = _P_CLAMP
        elif p < -_P_CLAMP:
            p = -_P_CLAMP
        if self.mode == _VPROBE:
            # the stored-volume test's Q·R probe (docs/firmware.md, "Occlusion", 6.), started
            # by the controller when the slow sum reached its threshold: seg[0] = W ticks at
            # half the line's rate, the reading summed over their last W//2 (seg[1]); then
            # _VOLUME, and the controller judges the fall from the level before against the
            # line's resting Q·R; if it goes on, W ticks at 1.5 × pay back what the half
            # rate held back (never ahead of the line). The trend test and the levels held
            seg = self.seg
            n = self.acc_n + 1
            self.acc_n = n
            L = seg[0]
            if n <= L:
                if n > L - (L >> 1):
                    seg[1] += p
                return _VOLUME if n == L else 0
            if n >= L + L:
                self._clear()
                self.v_restart()           # (a gap: the next increment is not counted)
                self.hold = _HOLDOFF_MS
            return 0
        if self._volume(p):
            return _VOLUME
        n = self.acc_n + 1
        self.acc_n = n
        if n <= 0:
            return 0                   # the doubling's first _DEAD ticks (the reading's latency)
        self.acc += p
        L = self.L
        if self.confirm:
            if self.mode != _WATCH:
                L -= _DEAD             # the doubled segment: L ticks, the last L - _DEAD summed
            else:
                L = L >> 1 if self.pn == 0 else L - (L >> 1)     # half-segments (pn: which)
        elif self.mode != _WATCH:
            L = self.Lj                # the probe's segment (`plan_ints`)
        if n < L:
            return 0
        y = self.acc
        self.acc = 0
        self.acc_n = 0
        seg = self.seg
        if self.confirm >= _C_SLIDE and self.mode == _WATCH:
            # confirmed plans (unprobed, T < the step response: 15-100 mL/h and up), y a
            # half-segment sum (L//2 and L - L//2 ticks alternately: two consecutive
            # halves are one segment of L ticks). The last eight halves make four segment
            # means m0..m3 ending at this half, so the window slides by half a segment
            # and a rise is judged within half a segment of its onset, not up to a whole
            # one later. A candidate: three differences in the band, even, and as a
            # closed line's are (below); the fourth difference is then the doubled
            # segment: one segment fewer than four differences and a separate confirming
            # one (docs/firmware.md, "Occlusion", 3b). (Inline: a method would be one
            # more slot in the class's map on the RP2040's heap.)
            self.pn ^= 1
            n = self.nseg
            if n < 8:
                seg[n] = y
                self.nseg = n + 1
                if n > 0:
                    s = seg[n - 1] + y
                    if self.ref == -1 << 20 or s < self.ref:
                        self.ref = s
                if n + 1 < 8:
                    return 0
                self.run_d = 0             # the window is full again: a kept rise expires
            else:
                for i in range(7):
                    seg[i] = seg[i + 1]
                seg[7] = y
                s = seg[6] + y
                if s < self.ref:
                    self.ref = s
            lo = self.lo
            hi = self.hi
            m0 = seg[0] + seg[1]
            d1 = seg[2] + seg[3] - m0
            d2 = seg[4] + seg[5] - m0 - d1
            d3 = seg[6] + seg[7] - m0 - d1 - d2
            if d1 < lo or d1 > hi or d2 < lo or d2 > hi or d3 < lo or d3 > hi:
                return 0
            # as a closed line rises: its rise per segment is the pump's, the same in
            # each up to the stopper's saw, the first holding only part of the onset
            # (closed lines on the tuning plants at their first candidate: d2/d1 >= 0.81,
            # d3/d2 0.65-1.65, d3 / mean(d1, d2) >= 0.77). Not so a bedside event's: a
            # step's response through the line's R·C and the stopper dies away (by
            # e^(-T/τ) per segment), a second event makes the rise dip and jump
            if (4 * d2 < 3 * d1 or 3 * d3 < 2 * d2 or 2 * d3 > 3 * d2
                    or 3 * d3 < d1 + d2 or 3 * d1 < d3 or 3 * d1 < d2):
                return 0
            self.run_d = d1 + d2 + d3          # three segments' rise
            self.base = m0
            self.mode = _PROBE
            self.probing = _P_TWICE
            self.pn = 0
            self.acc_n = -_DEAD
            return 0
        if self.confirm and self.mode == _PROBE:
            # the doubled segment (L ticks at 2Q), its mean taken over its last L - D ticks
            # (D = _DEAD: the reading shows the doubling about one 200-ms reading late;
            # averaged over the whole segment a closed line at 100 mL/h on 50 mL gave
            # 1.17-1.56 × instead of 1.5 ×: docs/firmware.md, "Occlusion", 3b). Its rise over
            # the mean of the segment before, per mean rise r/3 before: a closed line's is
            # 1.5 + (D - δ)/L × for a latency δ <= D (>= 1.5 ×); a ramp from outside going on
            # (1 + D/2L) ×, plus at most 0.5 × from the open line's Q·R step. OCCLUSION if
            # >= (1.25 + D/4L) × (halfway) and <= (2 + 4D/3L) × (a closed line's most, with no
            # latency and the mean before low by a first difference holding only a third of
            # its segment's rise, is (1.5 + D/L) × 9/7: a bedside step that lands in this
            # segment more than doubles it). _C_SLIDE: the segment before is the window's
            # last (two halves), and this is its 4th difference
            L = self.L
            y = y * L // (L - _DEAD)
            r = self.run_d
            c = self.confirm
            if self.pn:
                # the segment after the doubling, at *half* the line's rate (_C_SLIDE2: it
                # pays back half of what the doubling ran ahead, never more ahead), its mean
                # too over its last L - D ticks, over the doubled one's: a closed line keeps
                # what the doubling pushed (the volume is in its compliance) and rises
                # (1.25 - 3D/4L + 3δ/2L) x the mean rise before for a latency δ <= D; an open
                # line's Q·R step ebbs through its R·C as the rate falls, so a ramp from
                # outside rises its own 1 x *less* u (2.5 - e) (1 - e) - 1.5 of the line's
                # s·T (e = e^(-1/u), u = R·C / T: -0.34 at u = 0.65, -0.05 at 1.55, < 0.02
                # up to u = 3). OCCLUSION if >= (1.125 - 3D/8L) x (halfway) and
                # <= (2 + 4D/3L) x (a bedside step landing in it) (docs/firmware.md, 3c);
                # or, under that but >= 5/8 x (half a closed line's 1.25: a rise that ended,
                # a ramp's or a step's, reads 0 to 1 x), if this mean is above the window's
                # first by more than a bedside height change (_H_BED) + 3 lo: lo for the
                # noise and breathing, 2 lo for what is left here of the open line's answer
                # to the two rate steps (<= ~1.03 s·T of the model's). A closed line's figure
                # is 1.30 ± 0.22 (the doubled segment's noise in it with the opposite sign):
                # 13 % fell under the threshold and the window had to refill (session 14).
                # Only below half the limit over the settled line (ref): a trend alarm's
                # back-off is planned for an early alarm, and higher up the threshold is near
                d = y - seg[0]
                if 9 * L * d <= (6 * L + 4 * _DEAD) * r and (
                        8 * L * d >= (3 * L - _DEAD) * r
                        or (24 * d >= 5 * r and y - self.base >= _H_BED * L + 3 * self.lo
                            and 2 * (y - self.ref) < self.limit * L)):
                    self.probing = 0
                    return _TREND
            else:
                d = y - (seg[6] + seg[7])
                if 12 * L * d >= (5 * L + _DEAD) * r and 9 * L * d <= (6 * L + 4 * _DEAD) * r:
                    if c == _C_SLIDE and y - self.base >= _H_BED * L + self.lo:
                        # a bedside height change moves the reading by at most _H_BED: a rise
                        # above the window's first mean by more than that (and lo for the
                        # noise and breathing) is no ramp's (3c)
                        self.probing = 0
                        return _TREND
                    # where a ramp fits the band, or the rise is within a bedside height
                    # change: one segment more, at half the rate (3c)
                    seg[0] = y
                    seg[_NSEG - 1] = 0         # the controller's: the half rate's odd step
                    self.pn = 1
                    self.probing = _P_LOW
                    self.acc_n = -_DEAD
                    return 0
            self._clear()
            # its rise kept while the window refills (then it expires): a threshold alarm
            # meanwhile — a closed line at 100 mL/h on 10 mL reaches the limit ~9 s after
            # its onset — takes its onset, and so the back-off's flange target, from it
            # (controller._occlusion; without it 0.117 mL went out when the line opened)
            self.run_d = r
            return 0
        if self.mode == _PROBE:
            pn = self.pn + 1
            self.pn = pn
            # the candidate's rise per three of its segments (sums of L ticks), as three of
            # the probe's (sums of Lj ticks: a segment's rise and its sum each scale with it)
            r = self.run_d * L // self.L * L // self.L
            # the probe (docs/firmware.md, "Occlusion", 3.): three segments at half the rate,
            # then three at 1.5 × — the motor holds back half the line's steps and then pays
            # them back, so it is never ahead of the program's line. A closed line's rise is
            # the pump's doing: its rise per segment falls to 0.5 × the mean before and then
            # grows to 1.5 ×; a ramp from outside goes on at its own pace (1 ×), a rise that
            # decays or ends (a step's reload, a ramp's end) less. The first segment of each
            # rate lets the open line's Q·R step pass (and holds the step of the segment
            # means: half the old slope, half the new); the two after it are measured. All
            # six run (the 1.5 × pays back what the half rate held back) and are judged
            # together at the end, so no segment at 1.5 × is left to the next candidate's
            # window (one holding them measured a mean rise 1.3-1.45 × a closed line's, and
            # its probe then failed: session 10). OCCLUSION only if
            #  * the half rate's two measured differences add up to 0.5-1.5 × the mean (a
            #    closed line 1 ×, a ramp going on 2 ×, a rise that ended 0 ×: halfway);
            #  * each 1.5 × difference is >= 1 × the mean and both add up to >= 2.5 × (a
            #    closed line 1.5 × each, a ramp 1 ×; a bedside step fills one of them), and
            #    neither is over twice the other (a closed line's rise at one rate is even:
            #    a bedside step landing inside the first splits over both, unevenly) nor
            #    over 3 × the mean (twice a closed line's: bedside steps in both do more);
            #  * the 1.5 × differences exceed the half rate's by >= 1 × the mean (a closed
            #    line 3 − 1 = 2 ×, a ramp going on 2 − 2 = 0 ×: halfway; twice the
            #    separation of the 1.5 × sum alone, 3 against 2 ×, for the same spread).
            # A probe that passes the contrast but not the rest is run once more at once.
            # (Session 9 required each 1.5 × difference >= 1.25 ×: a closed line's measured
            # ones are 1.46 ± 0.26 × where the stopper saws, so a third of its probes failed.)
            if pn == 1:
                seg[6] = y                     # the half rate's first segment (its Q·R step)
            elif pn == _PROBE_SEGS // 2:
                lo = y - seg[6]                # the half rate's two measured differences
                seg[1] = lo
                if seg[3] == 2 and r <= 6 * lo <= 3 * r:
                    # the repeat of a probe that failed only as a closed line's 1.5 × stage
                    # does where the stopper saws (its two differences even and under 3 ×,
                    # below 1 × or 2.5 × only: the friction falling as the stopper speeds up)
                    # while its half rate and contrast said "the pump's doing": its half rate
                    # in the same band says so a third time — OCCLUSION now, three segments
                    # sooner; the motor is behind the line (session 13, REQ-OCC-26)
                    self.probing = 0
                    return _TREND
                self.probing = _P_HIGH
            elif pn == _PROBE_SEGS // 2 + 2:
                seg[2] = y - seg[5]            # the first measured 1.5 × difference
            elif pn == _PROBE_SEGS:
                lo = seg[1]                    # in segment sums; r is three means' rise
                h = seg[2]
                h2 = y - seg[5]
                hs = h + h2
                c = 3 * (hs - lo) >= r
                if (c and r <= 6 * lo <= 3 * r and 3 * h >= r and 3 * h2 >= r
                        and 6 * hs >= 5 * r and 2 * h >= h2 and 2 * h2 >= h
                        and h <= r and h2 <= r):
                    self.probing = 0
                    return _TREND
                if c and seg[3] == 0:
                    # the pump's doing by the contrast but not by every test: probed once
                    # more at once (the closed line's rise goes on at the line's rate; a new
                    # candidate would first need five segments), never twice in a row;
                    # 2: the half rate was in its band and the 1.5 × stage even and under
                    # 3 × (no bedside step in it: one fills a difference unevenly), so the
                    # repeat's half rate decides (above); 1: the whole probe again
                    seg[3] = 1
                    if (r <= 6 * lo <= 3 * r and 2 * h >= h2 and 2 * h2 >= h
                            and h <= r and h2 <= r):
                        seg[3] = 2
                    self.pn = 0
                    self.probing = _P_LOW
                    return 0
                self._clear()                  # not the pump's doing: not an occlusion
                return 0
            seg[5] = y
            return 0
        # WATCH: the reference level follows the pressure down, never up
        if self.ref == -1 << 20 or y < self.ref:
            self.ref = y
        # slide the last five segment sums
        n = self.nseg
        if n < 5:
            seg[n] = y
            self.nseg = n + 1
            if n + 1 < 5:
                return 0
            self.run_d = 0                 # the window is full again: a kept rise expires
        else:
            seg[0] = seg[1]
            seg[1] = seg[2]
            seg[2] = seg[3]
            seg[3] = seg[4]
            seg[4] = y
            self.nseg = n + 1 if n < 1 << 20 else n
        lo = self.lo
        hi = self.hi
        mn = 1 << 29
        mx = -mn
        for i in range(4):
            d = seg[i + 1] - seg[i]
            if d < lo or d > hi:
                return 0
            if d < mn:
                mn = d
            if d > mx:
                mx = d
        if 3 * mn < mx:
            return 0                       # uneven: a step's R·C transient, not a ramp
        self.run_d = (seg[4] - seg[0]) * 3 // 4     # as three segments' rise
        self.base = seg[0]
        if not self.probe:
            return _TREND                  # (a confirmed plan's candidates are the sliding
                                           # window's, above: here confirm is 0)
        self.mode = _PROBE
        seg[3] = 0                         # no probe repeated yet
        self.pn = 0
        self.probing = _P_LOW
        return 0
