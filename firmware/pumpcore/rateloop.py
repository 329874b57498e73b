"""The closed rate loop: microsteps that keep the plunger (measured by the encoder) on the
programmed volume–time line, slack take-up at start, back-off after an occlusion, and the
stall and runaway checks that compare commanded motion with measured motion.

Positions are in microsteps relative to the last `start()`: `m` is where the motor has been
commanded, `enc - enc_ref` where the encoder says the plunger is (one count per µstep of
plunger travel). Between motor and plunger sits lost motion (lead-screw backlash, slack
before the pusher meets the plunger, missed steps): the plunger is at most at `m` and lags
it by the lost motion `lost` when pushing.

Phases:
  TAKEUP  after every (re)start: move at TAKEUP_STEPS per tick until the plunger moves
          (encoder) or the force sensor sees the load rise (ENGAGE_MMHG over the pressure at
          start) — that is slack and plunger compliance taken up in a fraction of a second
          instead of minutes at 1 mL/h. The volume line does not advance meanwhile. More than
          TAKEUP_MAX µsteps without engagement is a STALL (nothing is pushed).
  RUN     desired plunger position X* = anchor + line steps since engagement; motor target
          X* + lost. `lost` only grows, from the lag-safe measurement m(LAG ticks ago) − enc,
          so missed steps are made up; overshoot from take-up is absorbed by waiting.
  BACKOFF after an occlusion alarm: reverse, in proportion to the pressure excess, until the
          pressure is back at the level before the occlusion (or a travel/time limit), so the
          volume stored in the compliance is not pushed into the patient when the line opens.

Sensor readings may be up to LAG ticks old (the simulator holds them over a 200 ms slice;
a board reads the encoder every tick); every comparison uses values LAG ticks old on the
side that makes it conservative. Integer only, no allocation.
"""
from array import array

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

IDLE = const(0)
TAKEUP = const(1)
RUN = const(2)
BACKOFF = const(3)

NMAX = const(100)             # µsteps per 50 ms tick: 2000 µsteps/s ≈ 1560 mL/h (50 mL syringe)
TAKEUP_STEPS = const(4)       # 80 µsteps/s ≈ 62 mL/h while looking for the plunger
TAKEUP_MAX = const(3000)      # ≈ 0.65 mL of travel without engagement → STALL
ENGAGE_COUNTS = const(2)      # encoder counts that prove the plunger moves
ENGAGE_MMHG = const(15)       # force rise (as line pressure) that proves the pusher is loaded
LAG = const(6)                # ticks a sensor reading may trail the command
_HIST = const(8)              # history ring (≥ LAG + 1)
STALL_TOL = const(48)         # µsteps the plunger may trail the line (≈ 10 µL)
STALL_MS = const(2000)        # ... for this long before STALL
SLACK_MAX = const(256)        # lost motion assumed before it is measured (≈ 56 µL)
RUNAWAY_TOL = const(8)        # µsteps of unexplained plunger motion
BACKOFF_MAX = const(10000)    # ≈ 2.2 mL: never retract more
BACKOFF_MS = const(20000)
BACKOFF_STEP_MAX = const(40)
BACKOFF_MARGIN = const(3)     # mmHg above the pre-occlusion pressure counts as relieved


class RateLoop:
    def __init__(self):
        self.m_hist = array("i", [0] * _HIST)
        self.x_hist = array("i", [0] * _HIST)
        self.reset()

    def reset(self):
        """New infusion: forget positions (the encoder reference is taken at start())."""
        self.phase = IDLE
        self.m = 0
        self.enc_ref = 0
        self.enc_rel = 0
        self.tgt = 0            # cumulative line steps since the infusion started
        self.anchor_x = 0
        self.anchor_t = 0
        self.lost = 0
        self.lost_known = False
        self.take = 0
        self.p_start = 0
        self.stall_ms = 0
        self.stall = False
        self.runaway = False
        self.engaged_now = False
        self.back_ms = 0
        self.back_target = 0
        self.back_from = 0
        self.back_ok = 0
        self.hi = 0
        self.x_start = 0
        self.started = False
        for i in range(_HIST):
            self.m_hist[i] = 0
            self.x_hist[i] = 0

    def start(self, enc, p):
        """(Re)start delivery: take up slack before following the line."""
        if not self.started:
            self.started = True
            self.enc_ref = enc
            self.m = 0
        self.enc_rel = enc - self.enc_ref
        self.phase = TAKEUP
        self.x_start = self.enc_rel
        # the encoder counts only real plunger travel: whatever moves from here on is
        # delivered, slack is not; the line's steps from here on are what must move
        self.anchor_x = self.x_start
        self.anchor_t = self.tgt
        self.take = 0
        self.p_start = p
        self.stall_ms = 0
        self._fill_hist(self.m, self.enc_rel)

    def stop(self):
        self.phase = IDLE

    def _fill_hist(self, m, x):
        for i in range(_HIST):
            self.m_hist[i] = m
            self.x_hist[i] = x

    def backoff(self, p_base):
        """Start relieving pressure down to p_base + BACKOFF_MARGIN."""
        self.phase = BACKOFF
        self.back_ms = 0
        self.back_target = p_base
        self.back_from = self.enc_rel
        self.back_ok = 0

    def tick(self, enc, p, n_line, dt):
        """One control tick. n_line: line steps this tick (RUN only). Returns µsteps."""
        self.enc_rel = x = enc - self.enc_ref
        self.engaged_now = False
        lagi = self.hi - LAG + 1
        if lagi < 0:
            lagi += _HIST
        m_old = self.m_hist[lagi]
        x_old = self.x_hist[lagi]
        ph = self.phase
        n = 0
        if ph == TAKEUP:
            self.tgt += n_line
            n_line = 0
            if x - self.x_start >= ENGAGE_COUNTS or p - self.p_start >= ENGAGE_MMHG:
                ph = self.phase = RUN
                self.engaged_now = True
                lm = m_old - x
                if lm < 0:
                    lm = 0
                self.lost = lm            # measured afresh at every engagement
                self.lost_known = True
                self.stall_ms = 0
                x_old = x
            else:
                n = TAKEUP_STEPS
                self.take += n
                if self.take > TAKEUP_MAX:
                    self.stall = True
                    n = 0
        xs = x
        if ph == RUN:
            self.tgt += n_line
            xs = self.anchor_x + self.tgt - self.anchor_t
            lm = m_old - x
            if lm > self.lost:
                self.lost = lm            # missed steps: make them up
            n = xs + self.lost - self.m
            if n < 0:
                n = 0
            elif n > NMAX:
                n = NMAX
            # the plunger trails where the line was LAG ticks ago: missed steps or a stall
            if x_old - x > STALL_TOL:
                self.stall_ms += dt
                if self.stall_ms >= STALL_MS:
                    self.stall = True
            else:
                self.stall_ms = 0
        elif ph == BACKOFF:
            self.back_ms += dt
            ex = p - self.back_target
            if ex <= 0:
                self.back_ok += 1
            else:
                self.back_ok = 0
            if (self.back_ok >= 3 or self.back_from - x >= BACKOFF_MAX
                    or self.back_ms >= BACKOFF_MS):
                self.phase = IDLE
            elif ex > 0:
                # gentle proportional gain: with readings LAG ticks old and a compliance as
                # small as 0.3 µL/mmHg, ex/8 per tick never overshoots the target
                n = -(ex // 8) - 1
                if n < -BACKOFF_STEP_MAX:
                    n = -BACKOFF_STEP_MAX
        self.m += n
        # runaway: the plunger is ahead of every position the motor could have put it at
        # (pushing, the plunger is never ahead of the motor; while the motor reverses or looks
        # for the plunger it may be, by at most the slack)
        tol = RUNAWAY_TOL if ph == RUN else SLACK_MAX + RUNAWAY_TOL
        if x > self.m + tol:
            self.runaway = True
        h = self.hi + 1
        if h >= _HIST:
            h = 0
        self.hi = h
        self.m_hist[h] = self.m
        self.x_hist[h] = xs
        return n
