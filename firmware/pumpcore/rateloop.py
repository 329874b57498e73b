"""The closed rate loop: microsteps that keep the plunger (measured by the encoder) on the
programmed volume–time line, slack and stopper take-up at start, back-off after an occlusion,
and the stall and runaway checks that compare commanded motion with measured motion.

Positions are in microsteps relative to the last `start()`: `m` is where the motor has been
commanded, `enc - enc_ref` where the encoder says the plunger flange is (one count per µstep
of flange travel). Between motor and flange sits lost motion (lead-screw backlash, slack
before the pusher meets the flange, missed steps); between flange and fluid sits the rubber
stopper, a stiff spring held by friction: the force sensor (tared by the glide force, read as
mmHg) reads 0 or less while that spring is looser than the glide force, and the line
pressure while the stopper glides.

Phases:
  TAKEUP  after every (re)start: move at _TAKEUP_STEPS per tick until the flange moves
          (encoder) or the force rises (_ENGAGE_MMHG): the slack is gone.
  LOAD    then at _LOAD_STEPS per tick (at least the line's rate) until the stopper is loaded:
          the flange position where the force reading last sat at the floor (≤ _LOAD_FLOOR:
          spring looser than the glide force, nothing can move forward) is the *anchor*, the
          zero of delivered volume. LOAD ends when the stopper breaks away (the reading falls
          _BREAK_MMHG from its peak), glides (the reading rose less than 1 mmHg per 4 counts
          over the last _LOAD_BLK counts, after 16), or after _LOAD_SPAN counts past the anchor
          (_LOAD_MAX without any force). After a break-away or a glide the anchor moves up by
          the stopper's travel: the counts since it less the spring's compression (the
          reading's rise at the loading slope measured over the whole run, less a margin for
          line pressure, so it errs short: nothing counted before it moved). Slack and
          stopper compression (≈ 60 µsteps ≈ 13 µL on a 50 mL syringe: 46 s at 1 mL/h) are
          thus taken up in seconds, not delivered late.
  RUN     desired flange position X* = anchor + line steps since the (re)start; motor target
          X* + lost. `lost` only grows, from the lag-safe measurement m(_LAG ticks ago) − enc,
          so missed steps are made up — by at most _LOST_MAX + 0.2 % of the travel beyond the
          lost motion measured at engagement (more is a mechanism that does not follow, or an
          encoder reading short: STALL, never a runaway chase nor more than 0.2 % over).
  BACKOFF after an occlusion alarm: (A) reverse in proportion to the pressure excess until
          the reading is back at the target; (B) when the reading fell far faster per count
          than it rose during the occlusion, the stopper is held by friction and the fluid is
          still under pressure: retract on to the flange position where the rise began minus
          _BACKOFF_BAND (the friction band: 2 × glide force over the stopper's stiffness), so
          the volume stored in the compliance is taken back and not pushed into the patient
          when the line opens. Travel and time are bounded.
          *Sensor-ended* (S, `backoff(..., 2)`; the threshold alarm, where the model's compliance
          C·ΔP is the only estimate of the flange travel and a brand's C is 0.6-1.4 × the
          model's): (S1) retract until the stopper moves back — the reading falls along the
          rod's spring (k ÷ A per count) while friction holds the stopper, along the line
          (a ÷ C, ~10 × less) once it glides: judged against the two slopes' geometric mean
          at the model's values, over readings _S1_SPAN counts apart; the knee is where the
          spring's and the glide's lines meet (the line still at its alarm pressure; no
          stiffness assumed, docs/firmware.md "Occlusion" 7a.);
          (S2) from there retract until the reading has fallen by the line's rise ΔP: the
          reading follows the line's pressure count for count while the stopper glides, so
          the line ends back at its level before the rise whatever C is (the glide offset
          cancels: it is measured at the reversal, at the same line pressure). Bounded by
          1.5 × the model's C·ΔP of stopper travel (never pull back more than the most a
          brand's compliance can have stored).

Runaway: e = flange − motor can only grow by the lead error (≤ 1/_CREEP per commanded µstep),
the once-per-revolution error and backlash; e more than _RUNAWAY_TOL above its creeping floor
is plunger motion the motor did not make.

Sensor readings may be up to _LAG ticks old (the simulator holds them over a 200 ms slice;
a board reads the encoder every tick); every comparison uses values _LAG ticks old on the
side that makes it conservative. Integer only, no allocation.
"""

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

IDLE = const(0)
TAKEUP = const(1)
RUN = const(2)
BACKOFF = const(3)
LOAD = const(4)

_NMAX = const(100)             # µsteps per 50 ms tick: 2000 µsteps/s ≈ 1560 mL/h (50 mL syringe)
_TAKEUP_STEPS = const(8)       # 160 µsteps/s (62 µm/s) while looking for the plunger
_TAKEUP_MAX = const(8000)      # 3.1 mm of travel without engagement → STALL: more than the
                               # 1.3 mL of slack real pumps show (2.3 mm on 50 mL, CONTEXT §8)
_ENGAGE_COUNTS = const(2)      # encoder counts that prove the plunger moves
_ENGAGE_MMHG = const(15)       # force rise (as line pressure) that proves the pusher is loaded
_LOAD_STEPS = const(1)         # 20 µsteps/s while the stopper spring is loaded
_LOAD_FLOOR = const(3)         # mmHg: at or below, the spring is looser than the glide force
_BREAK_MMHG = const(6)         # fall from the peak that shows the stopper broke away (4 σ)
_LOAD_SPAN = const(48)         # counts past the anchor: more than any breakaway needs
_LOAD_MAX = const(192)         # counts of flange travel in LOAD without any force rise
_LOAD_BLK = const(8)           # counts per block of the glide test (loading: ≥ 8 mmHg per block
                               # on 50 mL, the difference of two readings σ ≈ 2 mmHg)
_LOAD_PMARGIN = const(4)       # mmHg of line pressure the loading flow may have raised
_LAG = const(6)                # ticks a sensor reading may trail the command
_HIST = const(8)              # history ring (≥ _LAG + 1)
_STALL_TOL = const(48)         # µsteps the plunger may trail the line (≈ 10 µL)
_STALL_MS = const(2000)        # ... for this long before STALL
_LOST_MAX = const(48)          # missed steps made up beyond the lost motion at engagement
_STALL_W = const(3)            # µsteps the motor must certainly have made (lag-safe) ...
_STALL_MIN = const(1)          # ... for the encoder to show at least this many counts: a
                               # motor that does not turn is seen after 3 µsteps of command
                               # (23 s at 0.1 mL/h on 50 mL, 1.8 s at 1.3 mL/h), whatever the rate
_STALL_HOLD = const(20)        # ... and still not after 1 s more (readings held up to 1 s)
_RUNAWAY_TOL = const(48)       # µsteps: 2 × 13 µsteps (5 µm periodic screw error) + 8 backlash + margin
_CREEP = const(128)            # the floor of e rises 1 µstep per _CREEP commanded: a lead error up
                               # to 0.78 % (rolled screws ±0.06 %/length; a +0.5 % error must not trip)
_LOST_CREEP = const(512)       # the lost-motion estimate may rise 1 µstep per _LOST_CREEP commanded
                               # beyond _LOST_MAX: 0.2 % more motor travel than the line, the most
                               # an encoder reading short can add to the delivery (safety: the line
                               # is the volume; nothing beyond it and the screw's tolerance)
_BACKOFF_MAX = const(10000)    # ≈ 2.2 mL: never retract more
_BACKOFF_MS = const(20000)
_BACKOFF_STEP_MAX = const(40)
_BACKOFF_BAND = const(128)     # 2 × 4 N glide / 0.078 N per µstep stopper stiffness ≈ 102, +25 %
_BACKOFF_MARGIN = const(3)     # mmHg of noise above the target that do not restart the count
_S1_STEPS = const(4)           # µsteps per tick while the stopper is held (≈ 4 mmHg on 50 mL)
_S1_SPAN = const(48)           # counts between the two readings S1 judges: the softest stopper's
                               # stuck fall (120 N/mm) exceeds the threshold's by 4 σ of their
                               # difference (√2 × 0.143 N, 1.3 × the board's σ) on STIFF50, the
                               # nearest slopes; more on every other model (BD50 5.4 σ, BD10 8 σ)
_S1_MAX = const(512)           # counts: 2 × the largest static friction (glide + 25 %, stick,
                               # break-loose: ≈ 10 N on 50 mL) over the softest stopper's
                               # 0.047 N per count is ≈ 430; no knee by then, judge from there
_S_GAIN = const(16)            # S2: 1/16 of the excess per tick (readings up to 6 ticks old)
_S_MIN = const(4)              # ... at least 4 µsteps a tick (glide, not stick-slip, at the end)
del const   # compile-time only (each module global is a slot of heap on the board)


class RateLoop:
    def __init__(self):
        from array import array     # (not a module global: a slot of heap less on the board)
        self.m_hist = array("i", bytes(4 * _HIST))
        self.x_hist = array("i", bytes(4 * _HIST))
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
        self.lost0 = 0
        self.m_eng = 0
        self.lost_known = False
        self.take = 0
        self.p_start = 0
        self.p_a = 0
        self.p_peak = 0
        self.x_load = 0
        self.x_blk = 0
        self.p_blk = 0
        self.s_rise = 0
        self.s_cnt = 0
        self.stall_ms = 0
        self.chk_m = 0
        self.chk_x = 0
        self.stall_n = 0
        self.stall = False
        self.runaway = False
        self.engaged_now = False
        self.e_base = 0
        self.x_prev = 0
        self.creep = 0
        self.back_ms = 0
        self.back_target = 0
        self.back_from = 0
        self.back_from_m = 0
        self.back_ok = 0
        self.back_p0 = 0
        self.back_rise = 0
        self.back_onset = 0
        self.back_have = False
        self.back_b = False
        self.back_m = 0
        self.hi = 0
        self.x_start = 0
        self.started = False
        for i in range(_HIST):
            self.m_hist[i] = 0
            self.x_hist[i] = 0

    def start(self, enc, p):
        """(Re)start delivery: take up slack and the stopper before following the line."""
        if not self.started:
            self.started = True
            self.enc_ref = enc
            self.m = 0
        self.enc_rel = enc - self.enc_ref
        self.phase = TAKEUP
        self.x_start = self.enc_rel
        # the encoder counts only real flange travel: the line's steps from the (re)start on
        # are what the stopper must move once it is loaded (the anchor, set in LOAD)
        self.anchor_x = self.x_start
        self.anchor_t = self.tgt
        self.take = 0
        self.p_start = p
        self.stall_ms = 0
        self.e_base = self.enc_rel - self.m
        self.x_prev = self.enc_rel
        self.creep = 0
        self._fill_hist(self.m, self.enc_rel)

    def stop(self):
        self.phase = IDLE

    def settled(self):
        """RUN and nothing left to make up, judged on a reading that reflects every step: the
        motor has not moved for _LAG ticks, so the lag-safe lost motion (m _LAG ticks ago −
        flange) was exact on this tick. While the motor moves, that estimate trails the truth
        by the steps of the last _LAG ticks (≈ 23 µsteps ≈ 5 µL at 60 mL/h); at the end of the
        line the loop makes them up before the infusion may complete."""
        ph = self.phase
        if ph == TAKEUP or ph == LOAD:
            return False          # a line shorter than the take-up: deliver it first
        if ph != RUN:
            return True
        i = self.hi - _LAG
        if i < 0:
            i += _HIST
        return (self.m_hist[i] == self.m
                and self.anchor_x + self.tgt - self.anchor_t + self.lost - self.m <= 0)

    def _fill_hist(self, m, x):
        for i in range(_HIST):
            self.m_hist[i] = m
            self.x_hist[i] = x

    def backoff(self, p_target, p_now, p_base, x_onset, have_onset, extra):
        """Start relieving pressure: down to the reading p_target, then (stopper held by
        friction) back past the flange position x_onset where the rise began. have_onset 2:
        phase S, ended on the reading — p_target the line's rise to take back (mmHg), p_base
        the rod spring's mmHg per count × 256, x_onset the model's mmHg per count of a closed
        line (a / C) × 256 (no method of its own: a class-map slot and qstrs on the board).
        extra (phases A/B): counts of flange travel past x_onset's friction band that hold
        the line's flow pressure Q·R in the compliance (its running level over its resting
        one), taken back too."""
        self.phase = BACKOFF
        self.back_ms = 0
        self.back_target = p_target
        self.back_from = self.enc_rel
        self.back_from_m = self.m
        self.back_ok = 0
        self.back_p0 = p_now
        self.back_rise = p_now - p_base
        self.back_onset = x_onset
        self.back_have = have_onset
        self.back_b = False
        self.back_m = self.m
        self.s_cnt = extra          # (LOAD's spring slope, free in a back-off)
        if have_onset == 2:
            g = x_onset if x_onset > 0 else 1
            # S1's threshold (mmHg per count × 256): √(k/A · a/C) at the model's values, the
            # geometric mean of the stuck and the gliding slope — a stopper 0.6 × as stiff
            # and a brand 0.6 × as compliant are each still 1.5-2.2 × from it (integer √)
            t = p_base * g
            r = t
            q = (r + 1) >> 1
            while q < r:
                r = q
                q = (r + t // r) >> 1
            self.back_rise = r if r > 0 else 1
            self.back_m = g
            self.back_onset = p_now      # S1: the reading at its start (S2: its travel bound)
            self.s_rise = 0
            self.s_cnt = 0

    def _backoff(self, x, p, dt):
        self.back_ms += dt
        if (self.back_from - x >= _BACKOFF_MAX or self.back_from_m - self.m >= _BACKOFF_MAX
                or self.back_ms >= _BACKOFF_MS):
            self.phase = IDLE
            return 0
        if self.back_have == 2:
            # phase S (backoff(..., 2); inline: a method more is a class-map slot on the board)
            if not self.back_b:
                # S1 (slope): while the stopper sticks the reading falls along the rod's
                # spring, k/A per count; once it glides, along the line, a/C per count (~10 ×
                # less). Judged over readings >= _S1_SPAN counts apart (back_ok: the flange at
                # the last one + 1, back_p0 its reading): stuck while the fall is at least the
                # threshold back_rise (the two slopes' geometric mean at the model's k and C).
                # s_rise / s_cnt (LOAD's spring slope, free here): the fall and the travel from
                # the start (reading back_onset) to the judged reading before the last one
                tr = self.back_from - x
                if self.back_ok == 0:
                    self.back_ok = x + 1
                dc = self.back_ok - 1 - x
                if tr < _S1_MAX:
                    if dc < _S1_SPAN:
                        return -_S1_STEPS
                    if 256 * (self.back_p0 - p) >= dc * self.back_rise:
                        c = tr - dc
                        if c > 0:
                            self.s_rise = self.back_onset - self.back_p0
                            self.s_cnt = c
                        self.back_p0 = p
                        self.back_ok = x + 1
                        return -_S1_STEPS
                # it glides: the knee is where the spring's line (from the start, at the
                # slope measured while certainly stuck) meets the glide's (through this
                # reading, at the model's a/C): there the stopper has not moved yet, so the
                # line is at its pressure at the alarm, whether or not the stopper broke
                # away back in one slip (the reading then jumps up by the spring's recovery)
                g = self.back_m
                c = self.s_cnt
                if c <= 0 and tr > dc:
                    c = tr - dc
                    self.s_rise = self.back_onset - self.back_p0
                kx = tr - (dc >> 1)                      # (no judged stuck reading: halfway)
                if c > 0:
                    q = 256 * self.s_rise // c - g       # spring's slope less the glide's
                    if q > 0:
                        kx = (256 * (self.back_onset - p) - g * tr) // q
                        if kx < c:
                            kx = c
                        elif kx > tr:
                            kx = tr
                p = p + g * (tr - kx) // 256
                self.back_b = True
                d = self.back_target
                self.back_target = p - d                # the reading where the line is back
                # ... and the most it may travel: 1.5 × the model's C·ΔP (counts), the
                # brands' C reach 1.4 ×
                self.back_onset = x - (3 * d * 256 // (2 * g) + 1)
                self.back_ok = 0
            if x <= self.back_onset:
                self.phase = IDLE
                return 0
            ex = p - self.back_target
            if ex <= 0:
                self.back_ok += 1
            elif ex > _BACKOFF_MARGIN:
                self.back_ok = 0
            if self.back_ok >= 2 * _LAG:
                self.phase = IDLE                # (readings that reflect the stop say: there)
                return 0
            if ex <= 0:
                return 0
            n = ex * 256 // (_S_GAIN * self.back_m)
            if n < _S_MIN:
                n = _S_MIN
            return -(_BACKOFF_STEP_MAX if n > _BACKOFF_STEP_MAX else n)
        if self.back_b:
            d = self.m - self.back_m
            if d <= 0:
                self.phase = IDLE
                return 0
            return -(_BACKOFF_STEP_MAX if d > _BACKOFF_STEP_MAX else d)
        ex = p - self.back_target
        if ex <= 0:
            self.back_ok += 1
        elif ex > _BACKOFF_MARGIN:
            self.back_ok = 0              # (a count or two of sensor noise does not reset it)
        if self.back_ok >= 2:
            # phase A done: did the reading fall much faster per count than it rose? Then the
            # spring relaxed while friction held the stopper, and the fluid is still loaded
            ra = self.back_from - x
            rise_x = self.back_from - self.back_onset
            if (self.back_have and self.back_rise > 0 and rise_x > 0
                    and ra * self.back_rise * 2 < (self.back_p0 - p) * rise_x):
                to = self.back_onset - _BACKOFF_BAND - self.s_cnt
                if x > to:
                    self.back_b = True
                    self.back_m = self.m - (x - to)
                    return 0
            self.phase = IDLE
            return 0
        if ex > 0:
            # gentle proportional gain: with readings _LAG ticks old and a compliance as
            # small as 0.3 µL/mmHg, ex/8 per tick never overshoots the target
            n = -(ex // 8) - 1
            if n < -_BACKOFF_STEP_MAX:
                n = -_BACKOFF_STEP_MAX
            return n
        return 0

    def tick(self, enc, p, n_line, dt):
        """One control tick. n_line: line steps this tick (RUN only). Returns µsteps."""
        self.enc_rel = x = enc - self.enc_ref
        self.engaged_now = False
        lagi = self.hi - _LAG + 1
        if lagi < 0:
            lagi += _HIST
        m_old = self.m_hist[lagi]
        x_old = self.x_hist[lagi]
        ph = self.phase
        n = 0
        if ph == TAKEUP:
            self.tgt += n_line
            n_line = 0
            if x - self.x_start >= _ENGAGE_COUNTS or p - self.p_start >= _ENGAGE_MMHG:
                ph = self.phase = LOAD
                if self.p_start <= _LOAD_FLOOR:
                    self.anchor_x = x     # else the spring was loaded already: from x_start
                self.x_load = x
                self.p_a = p
                self.p_peak = p
                self.x_blk = x
                self.p_blk = p
                self.s_rise = 0
                self.s_cnt = 0
            else:
                n = _TAKEUP_STEPS
        if ph == LOAD:
            self.tgt += n_line
            if p <= _LOAD_FLOOR:
                # the spring is looser than the glide force: the stopper cannot be moving
                self.anchor_x = x
                self.p_a = p
                self.p_peak = p
                self.x_blk = x
                self.p_blk = p
            elif p > self.p_peak:
                self.p_peak = p
            d = x - self.anchor_x
            # glide: the reading stopped rising with the flange over the last _LOAD_BLK
            # counts (a spring being loaded rises k/A per count: ~1 mmHg on 50 mL, ~3.5 on
            # 10 mL; a gliding stopper only by the line's pressure). The rise since the
            # anchor cannot tell a stopper gliding above the nominal tare (glide varies
            # ±15-30 % along the barrel and between lots) from one still loading.
            glide = False
            db = x - self.x_blk
            if db >= _LOAD_BLK:
                rise = p - self.p_blk
                if d >= 16 and rise * 4 < db:
                    glide = True
                else:
                    if rise * 2 >= db:
                        # a loading block (≥ ½ mmHg per count): the spring's slope so far,
                        # over the whole loading run (one block's is ±25 % noise)
                        self.s_rise = p - self.p_a
                        self.s_cnt = d
                    self.x_blk = x
                    self.p_blk = p
            brk = d >= 2 and self.p_peak - p >= _BREAK_MMHG
            if (brk or d >= _LOAD_SPAN or glide
                    or (d >= 16 and (p - self.p_a) * 4 < d) or x - self.x_load >= _LOAD_MAX):
                ph = self.phase = RUN
                self.engaged_now = True
                # the zero of delivered volume: where the stopper began to move, i.e. the
                # flange less the spring's compression since the anchor, measured as the
                # reading's rise at the loading slope (less _LOAD_PMARGIN mmHg for the line
                # pressure the loading flow raised, so the estimate errs short: delivered
                # volume is never counted before it moved)
                # (only when the stopper was seen to move: on the span or the old test it may
                # still be loading towards its break-loose, and nothing is counted yet)
                if (brk or glide) and self.s_rise > 0:
                    c = (p - self.p_a - _LOAD_PMARGIN) * self.s_cnt // self.s_rise
                    if c < 0:
                        c = 0
                    if c < d:
                        self.anchor_x = x - (d - c)
                lm = m_old - x
                if lm < 0:
                    lm = 0
                self.lost = lm            # measured afresh at every engagement
                self.lost0 = lm
                self.m_eng = self.m
                self.lost_known = True
                self.stall_ms = 0
                self.chk_m = self.m
                self.chk_x = x
                self.stall_n = 0
                x_old = x
            else:
                n = _LOAD_STEPS if n_line < _LOAD_STEPS else n_line
            n_line = 0
        if ph == TAKEUP or ph == LOAD:
            self.take += n
            if self.take > _TAKEUP_MAX:
                self.stall = True
                n = 0
        xs = x
        if ph == RUN:
            self.tgt += n_line
            xs = self.anchor_x + self.tgt - self.anchor_t
            # lost motion (motor − flange) now lies between m_old − x (the reading reflects
            # at least the steps of _LAG ticks ago) and m − x (at most every step issued):
            # keep the estimate inside that interval, both ways. The flange then follows the
            # line whatever the screw's lead and periodic error (the plunger encoder sees
            # them), missed steps are made up, and a flange ahead of the motor is not pushed
            # further. Bounded: never more than _LOST_MAX + 1/_CREEP of the travel from the
            # lost motion measured at engagement, so a lying encoder cannot steer far.
            lo = m_old - x
            hi = self.m - x
            lost = self.lost
            if lost < lo:
                lost = lo
            elif lost > hi:
                lost = hi
            # Asymmetric: more motor than line (lost up) is what an under-reading encoder
            # would ask for, and it is delivered: bounded by the screw's lead tolerance
            # (_LOST_CREEP, 0.2 %: rolled screws ±0.06 %/length); less motor than line
            # (lost down: a screw pushing ahead) delivers less and may follow the runaway
            # check's creep (0.78 %). Beyond the upper bound the flange trails: STALL.
            tr = self.m - self.m_eng
            b = _LOST_MAX + tr // _LOST_CREEP
            if lost > self.lost0 + b:
                lost = self.lost0 + b
            else:
                b = _LOST_MAX + tr // _CREEP
                if lost < self.lost0 - b:
                    lost = self.lost0 - b
            self.lost = lost
            n = xs + lost - self.m
            if n < 0:
                n = 0
            elif n > _NMAX:
                n = _NMAX
            # a motor that does not turn: _STALL_W µsteps certainly made (lag-safe), the
            # encoder has not moved _STALL_MIN counts (the flange follows the motor 1:1 within
            # the screw's periodic error, ±2.5 %; backlash and slack were taken up in TAKEUP)
            dm = m_old - self.chk_m
            if dm >= _STALL_W:
                if x - self.chk_x >= _STALL_MIN:
                    # the new reference: this reading reflects at most every step issued
                    self.chk_m = self.m
                    self.chk_x = x
                    self.stall_n = 0
                else:
                    # ... for _STALL_HOLD ticks: a harness holding readings longer than
                    # _LAG ticks (up to 1 s) renews the reading before that
                    self.stall_n += 1
                    if self.stall_n >= _STALL_HOLD:
                        self.stall = True
            # the plunger trails where the line was _LAG ticks ago: missed steps or a stall
            if x_old - x > _STALL_TOL:
                self.stall_ms += dt
                if self.stall_ms >= _STALL_MS:
                    self.stall = True
            else:
                self.stall_ms = 0
        elif ph == BACKOFF:
            n = self._backoff(x, p, dt)
        # runaway: the flange gained on the motor more than the lead error, the periodic
        # error and backlash explain (a floor of e = x - m that creeps up with travel).
        # Judged on ticks that bring a new encoder reading: a board reads it every tick, the
        # simulator at the start of a slice; it reflects every step issued two ticks ago and
        # part of the last tick's (a tick's steps are spread over the tick): the floor
        # follows the larger estimate of e, the test uses the smaller.
        if x != self.x_prev:
            self.x_prev = x
            i = self.hi - 1
            if i < 0:
                i += _HIST
            mp = self.m_hist[i]
            m = self.m
            if mp > m:
                mp, m = m, mp
            e = x - mp
            if e < self.e_base:
                self.e_base = e
            if x - m - self.e_base > _RUNAWAY_TOL:
                self.runaway = True
        c = self.creep + (n if n >= 0 else -n)
        if c >= _CREEP:
            c -= _CREEP
            self.e_base += 1
        self.creep = c
        self.m += n
        h = self.hi + 1
        if h >= _HIST:
            h = 0
        self.hi = h
        self.m_hist[h] = self.m
        self.x_hist[h] = xs
        return n
