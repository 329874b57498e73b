"""The pump controller: one `step(now_ms, inputs, rx, nrx)` call per tick or per burst of bytes.

Owns the state machine, the program being delivered, alarm detection and the outputs; the
other jobs live in their own modules: `commands` (the command interpreter), `rateloop`
(closed loop on the encoder, take-up, back-off, stall/runaway), `occlusion` (pressure
trend), `alarms` (priorities, latching, silence), `auth`, `settings`, `druglib`, `dose`.
It sees the world only through its arguments (time, sensor inputs, received bytes) and
answers only through `Outputs` (microsteps for the coming tick, motor enable, alarm priority
and audio, bytes to send). Steady-state steps allocate nothing.
"""
from array import array

from pumpcore import fsm
from pumpcore import protocol as P
from pumpcore import alarms as AL
from pumpcore import commands
from pumpcore import syringes as SYR
from pumpcore.dose import VolumeLine, RATE_MIN, RATE_MAX, VTBI_MIN, VTBI_MAX  # noqa: F401
from pumpcore.occlusion import Occlusion, plan_ints
from pumpcore.rateloop import RateLoop, BACKOFF, RUN, TAKEUP, LOAD
from pumpcore.rateloop import IDLE as LOOP_IDLE
from pumpcore.ticks import ticks_diff, ticks_add, TICK_MS

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_MAX_DT = const(200)          # a late tick never integrates more than this
_SETTLE_TICKS = const(400)    # the line is done: at most this long (20 s: a take-up of the
                              # longest slack) for the loop to make up its lag before COMPLETE

_KVO_MIN = const(100)               # µL/h (0.1 mL/h)
_KVO_MAX = const(20000)             # µL/h (20 mL/h)
_KVO_DEFAULT = const(1000)
_EL_MS_MAX = const(0x3FFFFFFF)     # el_ms saturates here (about 12.4 days RUNNING)
_BOLUS_MAX_NL = const(10000000)     # 10 mL when no drug sets a smaller limit
_MAXSEG = const(10)                 # a loading segment + 8 steps, with room
_MAXSTEP = const(8)
_NBOL = const(8)                    # boluses remembered (the last hour's, for the limits)

_NEAR_MS = const(300000)            # VTBI / syringe near-end warning: 5 min ahead
_AIR_BUBBLE_NL = const(50000)       # single bubble limit 50 µL (Alaris: 50-200 µL)
_AIR_CUM_NL = const(1000000)        # 1 mL of air ...
_AIR_BUCKET_MS = const(60000)       # ... in 15 one-minute buckets (rolling 15 min)
_AIR_BUCKETS = const(15)
_DIS_SETTLE = const(7)              # ticks after the enable drops before the encoder must rest:
                                    # more than the _LAG ticks a reading may trail (rateloop)
_DIS_TOL = const(4)                 # encoder counts of motion allowed with the motor off
_RUNAWAY_QUIET = const(20)          # ticks without motion: the runaway condition is gone
_BATT_DEBOUNCE = const(20)          # ticks (1 s) below a battery threshold
_BATT_HYST_MV = const(50)
_OCCL_PROBE_MMHG = const(10)        # pressure left after the occlusion back-off
_OCCL_SETTLE_MS = const(10000)      # after a back-off past the friction band: 5 R·C of a line
_QR_A0 = const(7)       # Q·R: 10-tick means from tick 8 after the engagement (readings up
_QR_A1 = const(77)      # to 6 ticks old), the lowest of the first six and the one after it
_QR_B0 = const(160)     # ... ticks 161-200 (8-10 s) and 201-240 (10-12 s: ≥ 2 R·C of the
_QR_C0 = const(200)     # slowest line): an open line has settled there, a closing one
_QR_C1 = const(240)     # still rises by 2 s of Q/C from the one to the other
_VQR_W = const(4320000) # the stored-volume probe: W = 60 µL of the line's rate per stage
                        # (ticks × µL/h: 60000 nL × 72 ticks·µL/h per nL), 20-60 s
_VQR_NL = const(10000)  # ... confirms when C·(Q·R − Q·R0) >= 10 µL
_R_MAX = const(1600)    # mmHg·s/mL: 24 G × 19 mm + 250 cm × 1 mm, 1.15 mPa·s (docs/simulator.md)
_KA_NUM = const(58598000)           # the rod spring in mmHg per count × 256 is this ÷ nL per
                                    # 1000 µsteps: 0.078 N per µstep (200 N/mm × 0.39 µm) over
                                    # the plunger area (nL per kstep ÷ 390.625 mm)
_SENSOR_STUCK_MS = const(30000)     # a live force sensor never reads the same for 30 s
_SENSOR_TOP = const(1500)           # readings at the top of the span may rest there
# the controller's tick-only scalars, in one array `_v` (indexes below): 81 attributes in a
# 97-slot map instead of 95 (a nearly full map makes every attribute look-up probe far:
# +0.4 ms a tick on the RP2040, docs/performance.md)
_P_TWICE = const(1)                 # occlusion.probing: the confirmation's twice the rate,
_P_LOW = const(2)                   # the probe's half rate (its 1.5 × pays the deficit back)
_P_CARRY = const(7)                 # occlusion.seg[7]: the probe's odd step / nL (its own)
_V_ANNOUNCE = const(0)
_V_BATT_DEP_N = const(1)
_V_BATT_LOW_N = const(2)
_V_OCCL_BASE = const(3)
_V_RUN_QUIET = const(4)
_V_STATE_SINCE = const(5)
_V_BUBBLE_NL = const(6)
_V_AIR_BI = const(7)
_V_AIR_BT = const(8)
_V_DIS_REF = const(9)
_V_DIS_TICKS = const(10)
_V_OCCL_SETTLE = const(11)
_V_SETTLE = const(12)
_V_P_LAST = const(13)
_V_P_SAME = const(14)
_V_QR_R = const(15)     # the line's resistance R the pump measured, mmHg·s/mL (0: none)
_NV = const(16)         # (16 words: the same 64-byte heap block as 15)
del const   # compile-time only: each module global is a slot of heap on the board

S_IDLE = fsm.IDLE
S_PROGRAMMED = fsm.PROGRAMMED
S_RUNNING = fsm.RUNNING
S_PAUSED = fsm.PAUSED
S_COMPLETE = fsm.COMPLETE
S_ALARM = fsm.ALARM
S_STANDBY = fsm.STANDBY
S_KVO = fsm.KVO
S_FAULT = fsm.FAULT


class Config:
    """Per-pump settings the board provides (mechanism calibration, alarm thresholds)."""

    def __init__(self, nl_per_kstep, device_id=b"SIM0", occl_mmhg=400, occl_debounce=3,
                 batt_low_mv=3600, batt_depleted_mv=3400, lead_nm_per_kstep=SYR.LEAD_NM_PER_KSTEP,
                 force_sigma_mn=SYR.SIGMA_MN):
        self.nl_per_kstep = nl_per_kstep          # for the loaded syringe (the clamp's size)
        self.lead_nm_per_kstep = lead_nm_per_kstep
        self.force_sigma_mn = force_sigma_mn      # force sensor noise, 1 σ
        self.device_id = device_id
        self.occl_mmhg = occl_mmhg
        self.occl_debounce = occl_debounce
        self.batt_low_mv = batt_low_mv            # ≥ 30 min of running left (board curve)
        self.batt_depleted_mv = batt_depleted_mv  # stop ≥ 3 min before the cell cuts out


class Inputs:
    """Sensor readings the board fills in before each step."""

    def __init__(self):
        self.pressure_mmhg = 0
        self.encoder = 0
        self.door_open = False
        self.air = False
        self.end_stop = False       # plunger at the end stop: syringe empty
        self.on_battery = False     # mains lost
        self.battery_mv = 4000


class Outputs:
    """What the board must do after a step: preallocated, rewritten every step."""

    def __init__(self):
        self.steps = 0          # microsteps to issue over the coming tick (negative: reverse)
        self.enable = False     # motor driver enable
        self.alarm_prio = 0     # highest active alarm priority, drives LED and buzzer
        self.alarm = 0          # its id (pumpcore.alarms)
        self.audio = False      # auditory signal due (False while silenced or no alarm)
        self.tx = P.TxBuffer(1024)


class Controller:
    def __init__(self, config, library, settings=None, fault=None, auth=None):
        self._v = array("i", bytes(4 * _NV))   # tick-only scalars (_V_* above)
        self.cfg = config
        self.lib = library
        if settings is None:
            from pumpcore.settings import Settings      # (a module global less: heap)
            settings = Settings()
            settings.occl_mmhg = config.occl_mmhg
        self.settings = settings
        self.auth = auth                # pumpcore.auth.Auth of a provisioned pump, else None
        if auth is not None:
            auth.required = bool(self.settings.auth) and auth.provisioned
        self.store_settings = None      # callable(bytes), set by the app from the board
        self.log_source: object = None  # object with export(ctl, rid, frm, mx) (event log)
        self._last_reply = bytearray(P.MAX_FRAME)
        self._last_reply_len = 0
        self._last_req = bytearray(P.MAX_FRAME)   # the request that reply answered (retries)
        self._last_req_len = 0
        self.boot = 1                   # this boot's number (pumpcore.boot sets it; HELLO boot=)
        from pumpcore import VERSION    # (a module global less: heap)
        self.fw = VERSION.encode()      # HELLO's fw=, encoded once: no allocation in the tick
        self.refused = False            # the frame being handled got an ER reply
        self.retried = False            # a retry was answered from the cache (the app logs it once)
        self.retry_mask = 0             # bit k: line k of this step was a retry
        # program: segments (rate µL/h, volume nL)
        self.seg_rate = array("i", bytes(4 * _MAXSEG))
        self.seg_vol = array("i", bytes(4 * _MAXSEG))
        # occlusion plans (pumpcore.occlusion.plan_ints: d, n, thr), three ints a slot: slot
        # i < _MAXSEG for segment i, slot -1 for KVO, -2 for a clinician bolus (set_plan)
        self.plans = array("i", bytes(12 * (_MAXSEG + 2)))
        self.nseg = 0
        self.seg = 0
        self.st_rate = array("i", bytes(4 * _MAXSTEP))    # staged STEP entries
        self.st_vol = array("i", bytes(4 * _MAXSTEP))
        self.st_mask = 0
        self.rate = 0           # µL/h of the current segment
        self.vtbi = 0           # nL, all segments
        self.drug = -1
        self.dose_ug = 0
        self.wt_g = 0
        self.conc = 0
        self.dose_h = 0         # µg/kg/h of a continuous dose program (titration by dose)
        self.kvo = 0            # µL/h after the VTBI (0: stop)
        self.bolus_on = False
        self.bolus_rate = 0
        self.bolus_nl = 0       # bolus volume delivered in this infusion (finished boluses)
        self.started = False    # the program has delivered (START seen) since PROG
        self.prog_gen = 0       # counts accepted programs and titrations (the app records them)
        self.log_damage = 0     # damaged event-log records found at boot (HELLO logdmg)
        # clinician boluses of the last hour, per drug (lockout and hourly cap; a ring)
        self.bol_t = array("i", bytes(4 * _NBOL))
        self.bol_ug = array("i", bytes(4 * _NBOL))
        self.bol_dr = array("i", [-1] * _NBOL)
        self.bol_i = 0
        # time
        self._started = False
        self._next_ctrl = 0
        self._last_ctrl = 0
        self._now = 0
        self.el_ms = 0          # time spent RUNNING in this infusion
        self._v[_V_STATE_SINCE] = 0
        # sensors and alarm detectors
        self.pressure = 0
        self._v[_V_BUBBLE_NL] = 0
        self.air_b = array("i", bytes(4 * _AIR_BUCKETS))
        self._v[_V_AIR_BI] = 0
        self._v[_V_AIR_BT] = 0
        self._v[_V_DIS_TICKS] = 0
        self._v[_V_DIS_REF] = 0
        self._v[_V_RUN_QUIET] = 0
        self._v[_V_BATT_LOW_N] = 0
        self._v[_V_BATT_DEP_N] = 0
        self.syr_nl = 0         # volume loaded in the syringe (CFG syr_nl; 0 = unknown)
        self.syr_used = 0
        self.last_rx = 0
        self.vit_t = 0
        self.vit_seen = False
        self.vit_sbp = 0
        self.vit_dbp = 0
        self.vit_hr = 0
        self.vit_spo2 = 0
        self.tlm_period = 0
        self._next_tlm = 0
        self.fault_reason = b""
        self.auth_refused = 0
        self._finish = False
        self._v[_V_SETTLE] = 0        # ticks since the line ended (0: not ending)
        self._v[_V_OCCL_BASE] = 0
        self.last_door = False
        self.last_enc = 0
        self._v[_V_P_LAST] = -1
        self._v[_V_ANNOUNCE] = 0              # an alarm raised at boot, to send from the first step
        self._v[_V_OCCL_SETTLE] = 0
        self.probe_ahead = 0    # µsteps the occlusion probe put ahead of the line (< 0: behind)
        self._v[_V_P_SAME] = 0
        # the syringe model: the clamp's size picks the nearest; CFG syringe= sets the brand
        self.syr = SYR.nearest(config.nl_per_kstep, config.lead_nm_per_kstep)
        self.syr_c = SYR.C_NL_MMHG[self.syr]
        self.syr_sig = SYR.sigma_cmmhg(self.syr, config.force_sigma_mn)
        self.sensor_fault = False
        # the objects last: the instance dict has reached its final size before they are
        # allocated, so its growth leaves no holes among them (a lower boot heap peak)
        self.fsm = fsm.Machine()
        self.out = Outputs()
        self.reader = P.FrameReader()
        self.frame = P.Frame(self.reader.buf)
        k = config.nl_per_kstep
        self.nl_per_kstep = k
        self.line = VolumeLine(k)       # the basal program (all segments)
        self.bline = VolumeLine(k)      # a clinician bolus
        self.kline = VolumeLine(k)      # keep-vein-open after the VTBI
        self.loop = RateLoop()
        self.occl = Occlusion(self.settings.occl_mmhg)
        self.occl.set_syringe(self.syr_c, self.syr_sig)
        self.alarms = AL.Alarms()
        self._pending_fault = fault
        if library is None and fault is None:
            self._pending_fault = b"no drug library"

    # ------------------------------------------------------------ accessors (event log)
    @property
    def alarm(self):
        return self.alarms.highest()

    def delivered_nl(self):
        """Volume delivered from the syringe in this infusion (the wire's del_nl): basal
        program, clinician boluses and keep-vein-open."""
        return self.therapy_nl() + self.kline.delivered_nl

    def therapy_nl(self):
        """Therapy volume delivered: basal program plus clinician boluses (KVO apart)."""
        d = self.line.delivered_nl + self.bolus_nl
        if self.bolus_on:
            d += self.bline.delivered_nl
        return d

    def bolus_total_nl(self):
        """Clinician-bolus volume of this infusion, the running bolus included."""
        return self.bolus_nl + (self.bline.delivered_nl if self.bolus_on else 0)

    def kvo_nl(self):
        return self.kline.delivered_nl

    def current_rate(self):
        """µL/h the motor is following now (0 when not delivering)."""
        st = self.fsm.state
        if st == S_KVO:
            return self.kvo
        if st != S_RUNNING:
            return 0
        return self.bolus_rate if self.bolus_on else self.rate

    # ------------------------------------------------------------------ step
    def step(self, now, inp, rx, nrx):
        """Advance to time `now` (ms, wrapping at 2**30) with these inputs and bytes."""
        out = self.out
        out.tx.clear()
        out.steps = 0
        if self._v[_V_ANNOUNCE]:
            a = self._v[_V_ANNOUNCE]
            self._v[_V_ANNOUNCE] = 0
            if self.alarms.is_active(a):
                self.alarms.announce(a, out.tx)
        self._now = now
        self.pressure = inp.pressure_mmhg
        self.last_door = inp.door_open
        self.last_enc = inp.encoder
        if not self._started:
            self._started = True
            self._next_ctrl = now
            self._last_ctrl = now
            self.last_rx = now
            self._v[_V_STATE_SINCE] = now
            if self._pending_fault is not None:
                self.enter_fault(self._pending_fault)
                self._pending_fault = None
        lines = 0                       # request lines completed in this step
        self.retry_mask = 0
        for i in range(nrx):
            r = self.reader.push(rx[i])
            if r == P.FRAME:
                commands.handle_frame(self)
            elif r == P.OVERLONG:
                commands.error(self, P.ID_NONE, P.E_LEN, b"frame longer than 160 bytes").end()
            if r == P.FRAME or r == P.OVERLONG:
                # which of this step's lines were retries answered from the cache (the app
                # logs a command once, not once per retry)
                if self.retried and lines < 30:
                    self.retry_mask |= 1 << lines
                self.retried = False
                lines += 1
        if ticks_diff(now, self._next_ctrl) >= 0:
            dt = ticks_diff(now, self._last_ctrl)
            if dt > _MAX_DT:
                dt = _MAX_DT
            elif dt < 0:
                dt = 0
            self._last_ctrl = now
            self._next_ctrl = ticks_add(now, TICK_MS)
            self._control(inp, dt)
        # telemetry is due at its own times, not only on control ticks (docs/protocol.md,
        # Telemetry): after the tick's update, so a frame on a tick carries that tick's figures
        self._telemetry_due()
        self.events()
        st = self.fsm.state
        ph = self.loop.phase
        out.enable = (((st == S_RUNNING or st == S_KVO) and ph != LOOP_IDLE) or ph == BACKOFF
                      or self._finish) and not self.alarms.is_active(AL.A_RUNAWAY)
        self._finish = False
        if not out.enable:
            out.steps = 0
        a = self.alarms.highest()
        out.alarm = a
        out.alarm_prio = self.alarms.prio(a)
        out.audio = self.alarms.audio(now)
        return out

    def events(self):
        if self.fsm.changed:
            self.fsm.changed = False
            self._v[_V_STATE_SINCE] = self._now
            tx = self.out.tx
            tx.begin(P.ID_EVENT)
            tx.put(b" EV STATE")
            tx.field_lit(b"state", fsm.STATE_NAMES[self.fsm.state])
            tx.end()

    # ------------------------------------------------------------------ control
    def _control(self, inp, dt):
        st = self.fsm.state
        loop = self.loop
        self._watch(inp, st, dt)
        st = self.fsm.state
        steps = 0
        if (st == S_RUNNING or st == S_KVO) and loop.phase != LOOP_IDLE:
            if st == S_RUNNING:
                # saturates at 2**30 - 1 (a number on the wire; a small int on the RP2040)
                e = self.el_ms
                self.el_ms = e + dt if e <= _EL_MS_MAX - dt else _EL_MS_MAX
            p = self.pressure
            r = self.occl.update(p, dt)
            if r == 3:
                # the stored-volume test (occlusion._VOLUME): its slow sum says C·ΔP = 30 µL.
                # What rose must be the line's flow, Q·R, which follows the pump's rate:
                # friction, drift and heights do not (docs/firmware.md, "Occlusion", 6.).
                # So a Q·R probe first (occlusion._VPROBE: W ticks at half the rate, then W
                # at 1.5 ×, never ahead of the line), W = 60 µL of the rate (20-60 s); where
                # it cannot run (below 3.6 mL/h, a bolus, a probe or deficit on) the alarm
                v = self.occl.seg
                k = self.current_rate()
                if self.occl.mode == 2:
                    # the half rate's end: Q·R = 2 × its fall from the level before (B − Lo,
                    # Lo the mean of its last W//2 ticks) on a line that settles within W//2;
                    # where R·C is longer the fall is less (C·Q·R reads at most 0.75·Q·W),
                    # and a rise going on (a closing line, a friction swing) lowers it too.
                    # OCCLUSION if C × (that − the line's resting Q·R0, REQ-OCC-24; not
                    # measured: Q × _R_MAX, the longest open line's) >= 10 µL
                    # (the motor is behind the line, as after a probe cut short); else what
                    # rose was not the line's flow: the sum goes on from what the probe
                    # measured, and the probe pays back at 1.5 × (occlusion._VPROBE)
                    d = self._v[_V_QR_R]
                    if d == 0:
                        d = _R_MAX              # not measured: the longest open line's
                    d = (2 * ((self.occl.v_prev >> 4) - v[1] * 16 // (v[0] >> 1))
                         - d * (k // 360) // 625)                      # mmHg / 16
                    if self.syr_c * d < _VQR_NL * 16:
                        self.occl.v_a = d * 16 if d > 0 else 0
                        self.occl.probing = 3        # occlusion._P_HIGH
                        r = 0
                    else:
                        self.occl.mode = 0
                        self.occl.probing = 0
                elif (k > 0 and _VQR_W // k <= 1200 and st == S_RUNNING and not self.bolus_on
                      and self.occl.mode == 0 and self.probe_ahead == 0
                      and not self._v[_V_SETTLE]):
                    w = _VQR_W // k
                    v[0] = w if w > 400 else 400
                    v[1] = 0
                    v[2] = 0
                    v[_P_CARRY] = 0
                    self.occl.acc_n = 0
                    self.occl.mode = 2
                    self.occl.probing = _P_LOW
                    r = 0
            if r:
                self._occlusion(r)
                return
            # the volume-time line runs from START; the loop catches up after take-up
            n_line = self._advance_lines(dt)
            pr = self.occl.probing
            a = self.probe_ahead
            if pr == _P_TWICE:
                # the confirmation: one segment at twice the line's rate, taken back afterwards
                self.probe_ahead = a + n_line
                n_line += n_line
            elif pr == _P_LOW or (a < 0 and not self.bolus_on):
                # the probe: at half the rate hold back half the line's steps (the motor falls
                # behind the line), then at 1.5 × (and after the probe while a deficit is
                # left) pay them back, never more: never ahead of the line. Half of n_line
                # steps, the odd one carried (0 or 1); once the line has ended, a deficit
                # left at twice the program's rate (the carry: nL towards a step). (The half
                # rate after a confirmation's doubling, a > 0, pays back its lead.)
                v = self.occl.seg           # its last slot: the probe's carry (no new state)
                c = v[_P_CARRY]
                if self._v[_V_SETTLE] and a <= 0:
                    c += self.rate * dt // 1800
                    k = self.nl_per_kstep // 1000 + 1
                    d = c // k
                    v[_P_CARRY] = c - d * k
                    pr = 0
                else:
                    if c > 1:
                        c = 0
                    d = (c + n_line) >> 1
                    v[_P_CARRY] = (c + n_line) & 1
                if pr == _P_LOW:
                    self.probe_ahead = a - d
                    n_line -= d
                else:
                    if d > -a:
                        d = -a
                    self.probe_ahead = a + d
                    n_line += d
            elif a > 0 and self.occl.mode == 0:
                d = a
                if d > n_line:
                    d = n_line
                self.probe_ahead = a - d
                n_line -= d
            steps = loop.tick(inp.encoder, p, n_line, dt)
            if self._v[_V_SETTLE] and not self.bolus_on:
                # the line is done: complete once the flange is where the line ends (a bolus
                # accepted while the line settles runs to its end first: completing under it
                # left it running, and the next program inherited it — gfuzz, session 6)
                self._v[_V_SETTLE] += 1
                if (loop.settled() and self.probe_ahead >= 0) or self._v[_V_SETTLE] > _SETTLE_TICKS:
                    self._v[_V_SETTLE] = 0
                    self._complete()
            if self._finish:
                loop.stop()
            if loop.engaged_now:
                self.occl.restart()
                self.occl.ref = p * self.occl.L   # the stopper glides: a first line level
                # the Q·R measurement's state lives in the loop's LOAD words, free in RUN (no
                # new attribute: the RP2040 heap): x_load ticks since the engagement (0: not
                # measuring), x_blk the rate, p_a the lowest 10-tick sum and then 10 × the
                # level at the glide's start, p_blk the sum after the lowest (-1: awaited),
                # p_peak the sum of the current window
                loop.x_load = 1
                loop.x_blk = self.current_rate()
                loop.p_peak = 0
            elif loop.phase == TAKEUP or loop.phase == LOAD:
                self.occl.suspend()       # loading the stopper is no occlusion
            elif loop.x_load > 0 and loop.phase == RUN:
                # the line's flow pressure: from the glide's start the reading follows the
                # line, which rises by Q·R through R·C as the flow builds up (the back-off
                # takes it back too: docs/firmware.md "Occlusion" 7b.). Its first level: the
                # lowest 10-tick mean over the first 3 s (the stopper may break away only
                # then: the reading falls from the spring's peak), taken back to the glide's
                # start along the slope to the next mean; against the level 10-12 s after
                # the engagement. R = rise ÷ Q, kept only inside the lines' range.
                n = loop.x_load + 1
                if pr or self.current_rate() != loop.x_blk:
                    n = 0                 # the rate changed: no measurement this time
                elif n <= _QR_A0:
                    pass
                elif n <= _QR_A1:
                    c = loop.p_peak + p
                    if (n - _QR_A0) % 10 == 0:
                        if loop.p_blk < 0:
                            loop.p_blk = c        # the mean after the lowest: its slope
                        if n < _QR_A1 and (n == _QR_A0 + 10 or c < loop.p_a):
                            loop.p_a = c
                            loop.p_blk = -1
                        c = 0
                        if n == _QR_A1:
                            a = loop.p_a
                            loop.p_a = a - 17 * (loop.p_blk - a) // 20
                    loop.p_peak = c
                elif n > _QR_B0:
                    loop.p_peak += p
                    if n == _QR_C0:
                        loop.p_blk = loop.p_peak  # the 8-10 s sum (p_blk is free after A)
                        loop.p_peak = 0
                    elif n >= _QR_C1:
                        d = loop.p_peak // 4 - loop.p_a          # 10 × the rise, mmHg
                        r = loop.x_blk
                        w = self._v
                        w[_V_QR_R] = 0    # (a larger rise is no open line's: none;
                        # one under 1 mmHg is no rise the reading shows: below ~1 mL/h)
                        # still rising from 8-10 s to 10-12 s by more than the noise of two
                        # 40-tick means (4 v_slip: ~5 σ of their difference) and the slowest
                        # open line's settling (6.6 % of Q × 1,600: r // 2800) is a line
                        # closing in the window, not Q·R: none (session 13: an occlusion 5 s
                        # after the engagement moved the back-off's base to 61 mmHg)
                        c = (loop.p_peak - loop.p_blk) // 4      # 10 × the rise, mmHg
                        if (r > 0 and 10 <= d <= 4000 and d * 180000 // r <= _R_MAX
                                and c <= 4 * self.occl.v_slip + r // 2800):
                            r = d * 360000 // r
                            w[_V_QR_R] = r if r < _R_MAX else _R_MAX
                            # the line flows: its level before a rise is the running one
                            # from now on, not the glide's first reading (the back-off's base)
                            self.occl.ref = loop.p_peak * self.occl.L // 40
                        n = 0
                loop.x_load = n
            if loop.stall:
                loop.stall = False
                self.raise_high(AL.A_STALL)
            if loop.runaway:
                self._runaway()
        elif loop.phase == BACKOFF:
            steps = loop.tick(inp.encoder, self.pressure, 0, dt)
            if loop.phase != BACKOFF and loop.back_b:
                # retracted past the friction band: the reading is the rod's pull now; let
                # the line settle (several R·C) before ACK judges the occlusion gone
                self._v[_V_OCCL_SETTLE] = _OCCL_SETTLE_MS
            if loop.runaway:
                self._runaway()
        elif self._v[_V_OCCL_SETTLE] > 0:
            self._v[_V_OCCL_SETTLE] -= dt
        self.out.steps = steps
        if steps > 0 and (st == S_RUNNING or st == S_KVO):
            nl = steps * self.nl_per_kstep // 1000
            self.syr_used += nl
            self._air(inp, nl)

    def wake_at(self):
        """The next time (ticks ms) the controller needs a step: the next control tick, or
        the next telemetry frame when that is due earlier (telemetry on)."""
        c = self._next_ctrl
        if self.tlm_period and ticks_diff(self._next_tlm, c) < 0:
            return self._next_tlm
        return c

    def _telemetry_due(self):
        p = self.tlm_period
        if p and ticks_diff(self._now, self._next_tlm) >= 0:
            # frames keep to their schedule (due, due + period, ...) so a late wake-up does
            # not slow the rate; behind by a whole period, the schedule restarts from now
            # (no burst of frames that were missed); and never sooner than the link carries
            # this step's bytes (the UART write would block the loop)
            now = self._now
            n = ticks_add(self._next_tlm, p)
            if ticks_diff(n, now) <= 0:
                n = ticks_add(now, p)
            commands.telemetry(self)
            w = P.wire_ms(self.out.tx.n)
            if ticks_diff(n, now) < w:
                n = ticks_add(now, w)
            self._next_tlm = n

    def _advance_lines(self, dt):
        if self.fsm.state == S_KVO:
            return self.kline.advance(self.kvo, dt)
        if self.bolus_on:
            n = self.bline.advance(self.bolus_rate, dt)
            if self.bline.done():
                self.bolus_on = False
                self.bolus_nl += self.bline.delivered_nl
                self.bline.reset(0)
                self.use_plan(self.seg)
            return n
        line = self.line
        n = line.advance(self.rate, dt)
        if line.done():
            if self.seg + 1 < self.nseg:
                self.seg += 1
                line.limit_nl += self.seg_vol[self.seg]
                self.rate = self.seg_rate[self.seg]
                self.use_plan(self.seg)
            elif self.kvo > 0:
                self._complete()          # KVO goes on with the loop: nothing to make up
            elif not self._v[_V_SETTLE]:
                self._v[_V_SETTLE] = 1          # COMPLETE when the loop has settled (_control)
        else:
            self._v[_V_SETTLE] = 0
            rem = self.vtbi - line.target_nl
            if rem <= self.rate * 250 // 3 and self.seg + 1 >= self.nseg:   # 5 min ahead
                self.alarms.raise_(AL.A_VTBI_NEAR, self.out.tx, self._now)
        return n

    def set_plan(self, k, rate):
        """Plan slot k (segment k; -1: KVO, -2: a clinician bolus) for `rate` µL/h and the
        syringe model (command time: plan_ints allocates)."""
        d, n, thr = plan_ints(rate, self.syr_c, self.syr_sig)
        o = 3 * k                   # a negative slot indexes from the end of the array
        p = self.plans
        p[o] = d
        p[o + 1] = n
        p[o + 2] = thr

    def set_kvo(self, k):
        """The KVO rate after the VTBI, `k` µL/h (0: stop), and its occlusion plan (slot -1;
        a stopped pump's plan is 100 µL/h's, never used): every KVO change goes through here,
        so the plan cannot be left at an old rate (command time: plan_ints allocates)."""
        self.kvo = k
        self.set_plan(-1, k if k > 0 else 100)

    def use_plan(self, k):
        """Hand plan slot k to the occlusion detector (no allocation: the tick calls it)."""
        o = 3 * k
        p = self.plans
        self.occl.set_plan(p[o], p[o + 1], p[o + 2])

    def set_syringe(self, i):
        """Plan from syringe model i (config time, IDLE): calibration, compliance, noise."""
        cfg = self.cfg
        self.syr = i
        self.syr_c = SYR.C_NL_MMHG[i]
        self.syr_sig = SYR.sigma_cmmhg(i, cfg.force_sigma_mn)
        self.occl.set_syringe(self.syr_c, self.syr_sig)
        k0 = SYR.nearest(cfg.nl_per_kstep, cfg.lead_nm_per_kstep)
        # the board's calibration is for the clamp's size; scale it by the model's area
        k = int(cfg.nl_per_kstep * SYR.area_mm2(i) / SYR.area_mm2(k0) + 0.5)
        self.nl_per_kstep = k
        self.line.nl_per_kstep = k
        self.bline.nl_per_kstep = k
        self.kline.nl_per_kstep = k

    def _complete(self):
        self.end_bolus()                  # never a bolus past the end of its infusion
        tx = self.out.tx
        self.alarms.clear(AL.A_VTBI_NEAR, tx)
        self.alarms.raise_(AL.A_VTBI_DONE, tx, self._now)
        self.alarms.condition_gone(AL.A_VTBI_DONE, tx)
        if self.kvo > 0:
            self.kline.reset(VTBI_MAX)
            self.fsm.fire(fsm.T_KVO)
            self.use_plan(-1)
        else:
            self._finish = True           # the last steps of this tick still go out
            self.fsm.fire(fsm.T_COMPLETE)

    def _occlusion(self, why):
        loop = self.loop
        occl = self.occl
        p = self.pressure
        base = occl.base_mmhg()
        tk = -1
        if base < 0 or base >= occl.limit // 2:
            base = occl.limit // 4            # no level known: relieve to a quarter of the limit
        else:
            # where the rise began: the flange followed the line, so it was this many line
            # steps back (computed before the alarm ends a bolus and changes the rate)
            tk = occl.onset_ticks(p, base)
        x = loop.enc_rel
        x_on = x
        have = tk >= 0
        # the line's flow pressure Q·R at this rate (mmHg): the level before the rise is the
        # running one, and when the line opens it drains to the resting one (7b.)
        q = 0
        if loop.x_load == 0:              # (while measuring, the base may be the glide's start)
            q = self._v[_V_QR_R] * (self.current_rate() // 360) // 10000
        if why == 3 and p > base:     # occlusion._VOLUME
            # a slow rise (the stored-volume test): the flange pushed C·(p − base) into the
            # compliance, whatever went into the patient meanwhile
            have = True
            nl = self.syr_c * (p - base)
            if nl > 100000000:
                nl = 100000000
            x_on = x - nl * 10 // (self.nl_per_kstep // 100)
        elif have:
            if tk > 40000:
                tk = 40000
            r = self.current_rate()
            nl = (r // 72) * tk + (r % 72) * tk // 72       # µL/h × 50 ms = nL / 72
            if nl > 100000000:
                nl = 100000000
            x_on = x - nl * 10 // (self.nl_per_kstep // 100)
        self.raise_high(AL.A_OCCLUSION)
        # ACK's reference: the window's level before the rise, else a quarter of the limit
        ab = occl.oldest_mmhg()
        if ab < 0 or ab >= occl.limit // 2:
            ab = occl.limit // 4
        self._v[_V_OCCL_BASE] = ab
        # relieve the pressure stored in the compliance (no bolus when the line opens);
        # leave a small probe pressure (≈ 0.02 mL in a typical compliance): a closed,
        # frictionless line holds it; past the stopper's friction band the reading is the
        # rod's pull, and the fluid is back at the level before the rise
        d = 0
        if why == 2 and occl.v_lo != -1048576:
            d = (occl.v_prev - occl.v_lo) >> 8
            if p - (occl.v_prev >> 8) > d >> 2:
                # the last level is stale: the line rose past the threshold faster than a
                # level spans (a high rate, before the trend test), so the levels do not
                # hold its rise — phases A/B from the trend window's base, as before
                d = 0
        elif why == 3:
            d = (occl.v_prev >> 8) - occl.base // occl.L
        if d > 0:
            d += q
            # the threshold (a rise too slow for the trend test, found late): C·ΔP would
            # carry the brand's 0.6-1.4 × C error; end the back-off on the reading instead,
            # ΔP the last level over the lowest (whole stick-slip cycles: the saw cancels)
            k = self.nl_per_kstep
            loop.backoff(d, p, _KA_NUM // k, k * 256 // (1000 * self.syr_c), 2, 0)
            return
        ex = 0
        if have and q > 0:
            # the counts that hold Q·R in this line's compliance: the rise's own counts per
            # mmHg (onset to alarm, the stopper gliding), within 0.6-1.4 × the model's
            ex = q * self.syr_c * 10 // (self.nl_per_kstep // 100)
            if p - base >= 16 and x > x_on:
                e = q * (x - x_on) // (p - base)
                lo = 3 * ex // 5
                ex = 7 * ex // 5
                if e < ex:
                    ex = e if e > lo else lo
        loop.backoff(base + _OCCL_PROBE_MMHG, p, base, x_on, have, ex)

    def occlusion_present(self):
        if self.loop.phase == BACKOFF or self._v[_V_OCCL_SETTLE] > 0:
            return True                   # still relieving the line: judge it afterwards
        p = self.pressure
        return p * 2 >= self.occl.limit or p >= self._v[_V_OCCL_BASE] + _OCCL_PROBE_MMHG // 2

    def _runaway(self):
        self.loop.runaway = False
        self.raise_high(AL.A_RUNAWAY)
        self._v[_V_RUN_QUIET] = 0

    def raise_high(self, a):
        """Raise alarm a; a high-priority alarm stops delivery (state ALARM)."""
        self.alarms.raise_(a, self.out.tx, self._now)
        if self.alarms.prio(a) == AL.PRIO_HIGH:
            self.stop_delivery()
            self.fsm.fire(fsm.T_ALARM)

    def stop_delivery(self):
        if self.loop.phase != BACKOFF:
            self.loop.stop()
        self.end_bolus()

    def end_bolus(self):
        if self.bolus_on:
            self.bolus_on = False
            self.bolus_nl += self.bline.delivered_nl
            self.bline.reset(0)
            if self.nseg:
                self.use_plan(self.seg)

    # ------------------------------------------------------------ alarm conditions
    def _watch(self, inp, st, dt):
        al = self.alarms
        tx = self.out.tx
        now = self._now
        delivering = st == S_RUNNING or st == S_KVO
        # motion with the motor disabled: runaway / free flow (highest priority)
        if not self.out.enable and self.loop.phase != BACKOFF:
            if self._v[_V_DIS_TICKS] < _DIS_SETTLE:
                self._v[_V_DIS_TICKS] += 1
                self._v[_V_DIS_REF] = inp.encoder
            elif inp.encoder - self._v[_V_DIS_REF] > _DIS_TOL:
                self._v[_V_DIS_REF] = inp.encoder
                self._runaway()
            elif al.is_active(AL.A_RUNAWAY):
                if inp.encoder == self._v[_V_DIS_REF]:
                    self._v[_V_RUN_QUIET] += 1
                    if self._v[_V_RUN_QUIET] >= _RUNAWAY_QUIET:
                        al.condition_gone(AL.A_RUNAWAY, tx)
                else:
                    self._v[_V_RUN_QUIET] = 0
                    self._v[_V_DIS_REF] = inp.encoder
        else:
            self._v[_V_DIS_TICKS] = 0
        # a frozen force sensor: noise (σ ≈ 1.5 mmHg over 0.5 mmHg steps) changes a live
        # reading within a few samples; 30 s unchanged while the stopper glides is a fault.
        # Readings are bipolar, so a reading at or below 0 is judged like any other (a
        # pump above the patient reads below 0; a sensor that died at 0 or on the bottom
        # rail is the commonest freeze: the campaign's two missed FAULTs froze at -2 and 0);
        # only the top of the span may rest there (OCCLUSION has fired long before)
        p = inp.pressure_mmhg
        if p != self._v[_V_P_LAST]:
            self._v[_V_P_LAST] = p
            self._v[_V_P_SAME] = 0
            if self.sensor_fault:
                self.sensor_fault = False
                al.condition_gone(AL.A_FAULT, tx)
        elif delivering and self.loop.phase == RUN and p < _SENSOR_TOP:
            if self._v[_V_P_SAME] < _SENSOR_STUCK_MS:
                self._v[_V_P_SAME] += dt
            elif not self.sensor_fault:
                self.sensor_fault = True
                self.raise_high(AL.A_FAULT)
        # door, syringe empty
        if inp.door_open:
            if delivering:
                self.raise_high(AL.A_DOOR)
        else:
            al.condition_gone(AL.A_DOOR, tx)
        if inp.end_stop:
            if delivering:
                self.raise_high(AL.A_EMPTY)
        else:
            al.condition_gone(AL.A_EMPTY, tx)
        if not inp.air:
            self._v[_V_BUBBLE_NL] = 0
            al.condition_gone(AL.A_AIR, tx)
        # syringe near empty (needs the loaded volume, CFG syr_nl)
        if self.syr_nl > 0 and delivering:
            if self.syr_nl - self.syr_used <= self.current_rate() * 250 // 3:
                al.raise_(AL.A_NEAR_EMPTY, tx, now)
        elif not delivering:
            al.condition_gone(AL.A_NEAR_EMPTY, tx)
        # battery: only while running on it
        if inp.on_battery:
            mv = inp.battery_mv
            if mv <= self.cfg.batt_depleted_mv:
                self._v[_V_BATT_DEP_N] += 1
                if self._v[_V_BATT_DEP_N] >= _BATT_DEBOUNCE and not al.is_active(AL.A_BATT_DEPLETED):
                    self.raise_high(AL.A_BATT_DEPLETED)
            else:
                self._v[_V_BATT_DEP_N] = 0
                if mv > self.cfg.batt_depleted_mv + _BATT_HYST_MV:
                    al.condition_gone(AL.A_BATT_DEPLETED, tx)
            if mv <= self.cfg.batt_low_mv:
                self._v[_V_BATT_LOW_N] += 1
                if self._v[_V_BATT_LOW_N] >= _BATT_DEBOUNCE:
                    al.raise_(AL.A_BATT_LOW, tx, now)
            else:
                self._v[_V_BATT_LOW_N] = 0
                if mv > self.cfg.batt_low_mv + _BATT_HYST_MV:
                    al.condition_gone(AL.A_BATT_LOW, tx)
        else:
            self._v[_V_BATT_LOW_N] = 0
            self._v[_V_BATT_DEP_N] = 0
            al.condition_gone(AL.A_BATT_LOW, tx)
            al.condition_gone(AL.A_BATT_DEPLETED, tx)
        # host heartbeat
        s = self.settings
        if s.hb_ms and ticks_diff(now, self.last_rx) > s.hb_ms and not al.is_active(AL.A_COMM_LOSS):
            al.comm_prio = AL.PRIO_HIGH if s.hb_pause else AL.PRIO_MEDIUM
            al.raise_(AL.A_COMM_LOSS, tx, now)
            if s.hb_pause and delivering:
                self.stop_delivery()
                self.fsm.fire(fsm.T_PAUSE)
        # callback: programmed but not started, or paused, for too long
        if (st == S_PROGRAMMED or st == S_PAUSED) and ticks_diff(now, self._v[_V_STATE_SINCE]) >= s.callback_ms:
            al.raise_(AL.A_CALLBACK, tx, now)
        elif st != S_PROGRAMMED and st != S_PAUSED:
            al.condition_gone(AL.A_CALLBACK, tx)
        # vitals interlock: readings too old while delivering
        if s.interlock and delivering:
            if ticks_diff(now, self.vit_t) > s.vitals_age_ms:
                al.raise_(AL.A_VITALS_STALE, tx, now)
        elif not s.interlock:
            al.condition_gone(AL.A_VITALS_STALE, tx)

    def _air(self, inp, nl):
        """Air at the line sensor while nl were pushed: single bubble and rolling 15 min."""
        now = self._now
        if ticks_diff(now, self._v[_V_AIR_BT]) >= _AIR_BUCKET_MS:
            self._v[_V_AIR_BT] = now
            i = self._v[_V_AIR_BI] + 1
            if i >= _AIR_BUCKETS:
                i = 0
            self._v[_V_AIR_BI] = i
            self.air_b[i] = 0
        if not inp.air:
            return
        self._v[_V_BUBBLE_NL] += nl
        b = self.air_b[self._v[_V_AIR_BI]] + nl
        if b > _AIR_CUM_NL:
            b = _AIR_CUM_NL
        self.air_b[self._v[_V_AIR_BI]] = b
        if self._v[_V_BUBBLE_NL] >= _AIR_BUBBLE_NL:
            self.raise_high(AL.A_AIR)
            return
        tot = 0
        for i in range(_AIR_BUCKETS):
            tot += self.air_b[i]
        if tot > _AIR_CUM_NL:
            self.raise_high(AL.A_AIR_CUM)

    def vitals_violation(self):
        """Name of the vital-sign limit the last reading breaks (bytes), or None."""
        if not self.vit_seen or self.lib is None:
            return None
        lim = self.lib.vitals(self.drug)      # -1: the library's default
        if lim is None:
            return None
        return lim.violated(self.vit_sbp, self.vit_dbp, self.vit_hr, self.vit_spo2)

    def vitals_ok(self):
        return self.vitals_violation() is None

    def vitals_fresh(self):
        """The last reading was made (its age_ms counted) no longer than vitals_age_ms ago."""
        return self.vit_seen and ticks_diff(self._now, self.vit_t) <= self.settings.vitals_age_ms

    def air_cum_clear(self):
        for i in range(_AIR_BUCKETS):
            self.air_b[i] = 0

    # ------------------------------------------------------------ lifecycle hooks
    def enter_fault(self, reason):
        """Internal fault (corrupt library or settings): refuse to infuse, say why."""
        self.fault_reason = reason
        self.stop_delivery()
        self.loop.stop()
        if self.fsm.state != S_IDLE and self.fsm.state != S_FAULT:
            self.fsm.state = S_IDLE
        self.fsm.fire(fsm.T_FAULT)
        self.alarms.raise_(AL.A_FAULT, self.out.tx, self._now)

    def unrecoverable(self):
        """After a reset: an infusion may have been under way but its record is damaged:
        nothing is restored (never a stale program); the RESTART alarm tells the staff."""
        tx = self.out.tx
        self.alarms.raise_(AL.A_RESTART, tx, self._now)
        self.alarms.condition_gone(AL.A_RESTART, tx)
        self._v[_V_ANNOUNCE] = AL.A_RESTART

    def storage_fault(self, reason):
        """A write to the flash failed (event log, auth counter, settings): raise the FAULT
        alarm (high priority: delivery stops, nothing starts while its condition lasts). The
        state machine keeps working: STOP and PAUSE are answered as in any alarm."""
        self.fault_reason = reason
        self.raise_high(AL.A_FAULT)

    def storage_ok(self):
        """The failed write went through again: the FAULT condition is gone (ACK clears it)."""
        if not self.sensor_fault:
            self.alarms.condition_gone(AL.A_FAULT, self.out.tx)

    # ------------------------------------------------------------ verbs
    # The command handlers (pumpcore.commands) parse, check and reply; they change the
    # controller only through these verbs, each owning the invariants of what it writes.
    def set_segment(self, i, rate, vol):
        """Segment i of the program being written (accept_program): `rate` µL/h for `vol`
        nL, and its occlusion plan."""
        self.seg_rate[i] = rate
        self.seg_vol[i] = vol
        self.set_plan(i, rate)

    def accept_program(self, n, di, amount, doseh, wt, conc, kvo):
        """Segments 0..n-1 (set_segment) become the program (-> PROGRAMMED): drug index di
        (-1: none), dose `amount` µg, dose rate `doseh` µg/kg/h (<= 0: none), weight g and
        concentration µg/mL (neither kept for a rate or steps program), KVO µL/h (0: none).
        A new program starts from nothing: no bolus, nothing elapsed, the last one's
        notices cleared."""
        tot = 0
        for i in range(n):
            tot += self.seg_vol[i]
        self.nseg = n
        self.vtbi = tot
        self.seg = 0
        self.rate = self.seg_rate[0]
        self.drug = di
        self.dose_ug = amount
        self.dose_h = doseh if doseh > 0 else 0
        if amount == 0 and doseh <= 0:
            wt = 0                    # a rate or steps program: no weight, the default conc
            conc = 0
        self.wt_g = wt
        self.conc = conc
        self.prog_gen += 1
        self.set_kvo(kvo)
        self.started = False
        self.el_ms = 0
        self.end_bolus()              # a new program inherits no bolus of the last one
        self.bolus_nl = 0
        self.loop.reset()
        self.line.reset(self.seg_vol[0])
        self.kline.reset(0)
        tx = self.out.tx
        for a in (AL.A_VTBI_DONE, AL.A_VTBI_NEAR, AL.A_CALLBACK):
            self.alarms.clear(a, tx)
        self.fsm.fire(fsm.T_PROGRAM)

    def store_step(self, i, rate, vol):
        """STEP: keep step i (`rate` µL/h for `vol` nL) for a later PROG steps=n; i < 0:
        forget the stored steps (they became the program)."""
        if i < 0:
            self.st_mask = 0
            return
        self.st_rate[i] = rate
        self.st_vol[i] = vol
        self.st_mask |= 1 << i

    def start(self, trigger):
        """START / RESUME (fsm trigger): a program that has not run yet starts afresh on its
        first segment (also from STANDBY before it ever ran); False (nothing else changed)
        when a paused program has nothing left to deliver."""
        if not self.started:
            self.line.reset(self.seg_vol[0])
            self.seg = 0
            self.rate = self.seg_rate[0]
            self.el_ms = 0
            self.bolus_nl = 0
            self.loop.reset()
            self._v[_V_QR_R] = 0          # a new line: its resistance is measured afresh
            # a new program starts on its line; a RESUME keeps what a probe left ahead of or
            # behind the line (taken back or paid out after it: _control)
            self.probe_ahead = 0
            self.started = True
            if not self.vit_seen:
                self.vit_t = self._now
        line = self.line
        if self.fsm.state == S_PAUSED and line.done() and self.seg + 1 >= self.nseg and self.kvo == 0:
            return False
        self.use_plan(self.seg)
        self.loop.start(self.last_enc, self.pressure)
        self.alarms.clear(AL.A_CALLBACK, self.out.tx)
        self.fsm.fire(trigger)
        if line.done() and self.seg + 1 >= self.nseg and self.kvo > 0:
            if self.kline.limit_nl == 0:
                self.kline.reset(1000000000)
            self.fsm.fire(fsm.T_KVO)
            self.use_plan(-1)
        return True

    def pause(self):
        """PAUSE: delivery stops (a bolus ends); the program stays for RESUME."""
        self.stop_delivery()
        self.fsm.fire(fsm.T_PAUSE)

    def standby(self):
        """STANDBY: delivery stops, the program stays, the callback reminder ends."""
        self.stop_delivery()
        self.fsm.fire(fsm.T_STANDBY)
        self.alarms.clear(AL.A_CALLBACK, self.out.tx)

    def stop(self):
        """STOP: delivery ends, the infusion's alarms with it, and the program is gone
        (-> IDLE: nothing to resume)."""
        self.stop_delivery()
        self.loop.stop()
        tx = self.out.tx
        al = self.alarms
        # the alarms that belong to the infusion end with it (a vital-sign interlock too:
        # the next program is judged on the next reading)
        for a in (AL.A_VTBI_DONE, AL.A_VTBI_NEAR, AL.A_CALLBACK, AL.A_NEAR_EMPTY,
                  AL.A_VITALS_STALE, AL.A_VITALS):
            al.clear(a, tx)
        al.ack(tx)              # latched alarms whose condition is gone end with the infusion
        self.fsm.fire(fsm.T_STOP)
        self.rate = 0
        self.vtbi = 0
        self.nseg = 0
        self.drug = -1
        self.dose_ug = 0
        self.kvo = 0            # no KVO: its plan (slot -1) is never used at 0
        self.started = False

    def acknowledge(self):
        """ACK: the alarms whose condition is gone end, the conditions judged now (an
        occlusion still pressing, a vital sign still out or stale keep theirs); ALARM ends
        when no high-priority alarm is left. False (nothing changed) while in ALARM a
        high-priority alarm's condition is still present."""
        al = self.alarms
        cond = al.cond
        if al.is_active(AL.A_OCCLUSION):
            if self.occlusion_present():
                cond |= 1 << AL.A_OCCLUSION
            else:
                cond &= ~(1 << AL.A_OCCLUSION)
        if al.is_active(AL.A_STALL):
            cond &= ~(1 << AL.A_STALL)
        air_cum = al.is_active(AL.A_AIR_CUM)
        if air_cum:
            cond &= ~(1 << AL.A_AIR_CUM)
        if al.is_active(AL.A_VITALS) and self.vitals_ok() and self.vitals_fresh():
            cond &= ~(1 << AL.A_VITALS)
        if self.fsm.state == S_ALARM and al.high_with_condition_in(cond):
            return False
        if air_cum:
            self.air_cum_clear()
        if al.is_active(AL.A_RESTART):
            cond &= ~(1 << AL.A_RESTART)
        al.cond = cond
        al.ack(self.out.tx)
        if self.fsm.state == S_ALARM and not al.any_high():
            self.loop.stop()
            self.fsm.fire(fsm.T_ACK)
        return True

    def retitrate(self, rate, doseh, loading):
        """TITRATE: the running segment at `rate` µL/h; `doseh` >= 0: the new dose rate
        (µg/kg/h); by rate, a continuous dose keeps the dose rate the new rate gives (not
        while `loading`: the loading dose keeps its total). KVO never above the rate."""
        s = self.seg
        self.seg_rate[s] = rate
        self.set_plan(s, rate)
        self.rate = rate
        if doseh >= 0:
            self.dose_h = doseh
        elif self.dose_h > 0 and not loading and self.conc > 0:
            self.dose_h = rate * self.conc // self.wt_g
        self.prog_gen += 1
        if self.kvo > rate:
            self.set_kvo(rate)
        if not self.bolus_on:
            self.use_plan(s)

    def start_bolus(self, rate, vol, slot, ug):
        """A clinician bolus of `vol` nL at `rate` µL/h over the basal; slot >= 0: it is
        remembered (`ug` µg of this drug, now) for the drug's lockout and hourly cap, across
        STOP and new programs."""
        self.set_plan(-2, rate)                 # slot -2: the bolus plan
        self.bline.reset(vol)
        self.bolus_rate = rate
        self.bolus_on = True
        self.use_plan(-2)
        if slot >= 0:
            self.bol_t[slot] = self._now
            self.bol_ug[slot] = ug
            self.bol_dr[slot] = self.drug
            self.bol_i = slot + 1 if slot + 1 < len(self.bol_t) else 0

    def set_vitals(self, sbp, dbp, hr, spo2, t, fresh):
        """VITALS: a reading taken at `t` (its own time, so an old one is never taken as
        fresh); `fresh`: young enough to end the stale alarm. Returns the limit it violates
        (None: within them); only a fresh good reading ends the vitals condition."""
        self.vit_sbp = sbp
        self.vit_dbp = dbp
        self.vit_hr = hr
        self.vit_spo2 = spo2
        self.vit_t = t
        self.vit_seen = True
        if fresh:
            self.alarms.condition_gone(AL.A_VITALS_STALE, self.out.tx)
        bad = self.vitals_violation()
        if bad is None and fresh:
            self.alarms.cond &= ~(1 << AL.A_VITALS)
        return bad

    def set_telemetry(self, period):
        """TLM: telemetry every `period` ms (0: off), the first one now."""
        self.tlm_period = period
        self._next_tlm = self._now

    def configure(self, occl, hb, hbp, il, va, au, cb, syr):
        """CFG: the settings given (< 0: unchanged) in force and stored. False (the settings
        in force stay the stored ones, FAULT raised) when they could not be stored."""
        s = self.settings
        store = self.store_settings
        old = s.encode() if store is not None else b""
        old_syr = self.syr_nl
        old_used = self.syr_used
        if occl >= 0:
            s.occl_mmhg = occl
            self.occl.limit = occl
        if hb >= 0:
            s.hb_ms = hb
            self.last_rx = self._now
        if hbp >= 0:
            s.hb_pause = hbp
        if il >= 0:
            s.interlock = il
            if il and not self.vit_seen:
                self.vit_t = self._now
        if va >= 0:
            s.vitals_age_ms = va
        if au >= 0:
            s.auth = au
            if self.auth is not None:
                self.auth.required = bool(au)
        if cb >= 0:
            s.callback_ms = cb
        if syr >= 0:
            self.syr_nl = syr
            self.syr_used = 0
        if store is not None:
            try:
                store(s.encode())
            except OSError:
                s.decode(old)
                self.occl.limit = s.occl_mmhg
                if self.auth is not None:
                    self.auth.required = bool(s.auth) and self.auth.provisioned
                self.syr_nl = old_syr
                self.syr_used = old_used
                self.storage_fault(b"settings not stored")
                return False
        return True

    def recover_program(self, state_name, pg, drug_index, basal_nl, bolus_nl, kvo_nl, el_ms):
        """After a reset: restore the whole interrupted program (pg: the program file's
        values, pumpcore.app) into PAUSED with a latched RESTART alarm, at the segment that
        `basal_nl` reaches, with the delivered volumes. False (nothing changed) when the
        program is not one the pump could have accepted."""
        if isinstance(state_name, str):
            state_name = state_name.encode()
        if state_name not in (b"RUNNING", b"PAUSED", b"ALARM", b"STANDBY", b"KVO"):
            return False
        if self.fsm.state != S_IDLE:
            return False
        n = pg[b"n"]
        rs = pg[b"r"]
        vs = pg[b"v"]
        if not 1 <= n <= _MAXSEG:
            return False
        tot = 0
        for i in range(n):
            if not (RATE_MIN <= rs[i] <= RATE_MAX and VTBI_MIN <= vs[i] <= VTBI_MAX):
                return False
            tot += vs[i]
        kvo = pg[b"kv"]
        lib = self.lib
        if tot > VTBI_MAX or not (0 <= kvo <= rs[n - 1]):
            return False
        if drug_index >= 0 and (lib is None or kvo > lib.kvo_max(drug_index)):
            return False
        for i in range(n):
            self.set_segment(i, rs[i], vs[i])
        self.nseg = n
        self.vtbi = tot
        self.set_kvo(kvo)
        self.drug = drug_index
        self.dose_ug = pg[b"do"]
        self.wt_g = pg[b"wt"]
        self.conc = pg[b"co"]
        self.dose_h = pg[b"dh"]
        if basal_nl < 0:
            basal_nl = 0
        if basal_nl > tot:
            # volume past the program's end (the record's bound beyond it, or a bolus that ran
            # on): keep it counted, as bolus volume, so del_nl never reads low
            bolus_nl += basal_nl - tot
            basal_nl = tot
        cum = 0
        s = 0
        while s < n - 1 and basal_nl >= cum + vs[s]:
            cum += vs[s]
            s += 1
        self.seg = s
        self.rate = rs[s]
        self.line.reset(cum + vs[s])
        self.line.preset(basal_nl)
        self.bolus_on = False
        self.bline.reset(0)
        self.bolus_nl = bolus_nl if bolus_nl > 0 else 0
        if kvo_nl > 0 and kvo > 0:
            self.kline.reset(VTBI_MAX)
            self.kline.preset(kvo_nl)
        else:
            self.kline.reset(0)
        self.el_ms = el_ms if el_ms > 0 else 0
        self.started = True
        self.loop.reset()
        self.fsm.fire(fsm.T_RECOVER)
        tx = self.out.tx
        self.alarms.raise_(AL.A_RESTART, tx, self._now)
        self.alarms.condition_gone(AL.A_RESTART, tx)
        self._v[_V_ANNOUNCE] = AL.A_RESTART
        return True

    def recover(self, state_name, rate_ul_h, vtbi_nl, delivered_nl, drug_index=-1, kvo_ul_h=0):
        """After a power cut or watchdog reset: restore an interrupted infusion into PAUSED
        with a latched RESTART alarm (ACK clears it); RESUME delivers only the remainder.
        Returns True when a program was restored."""
        if isinstance(state_name, str):
            state_name = state_name.encode()
        if state_name not in (b"RUNNING", b"PAUSED", b"ALARM", b"STANDBY", b"KVO"):
            return False
        if self.fsm.state != S_IDLE:
            return False
        if not (RATE_MIN <= rate_ul_h <= RATE_MAX and VTBI_MIN <= vtbi_nl <= VTBI_MAX):
            return False
        if delivered_nl < 0:
            delivered_nl = 0
        if delivered_nl > vtbi_nl:
            delivered_nl = vtbi_nl
        self.set_segment(0, rate_ul_h, vtbi_nl)
        self.nseg = 1
        self.vtbi = vtbi_nl
        self.seg = 0
        self.rate = rate_ul_h
        self.drug = drug_index if self.lib is not None and 0 <= drug_index < len(self.lib.names) else -1
        kvo = kvo_ul_h if 0 <= kvo_ul_h <= rate_ul_h else 0
        self.set_kvo(kvo)
        self.line.reset(vtbi_nl)
        self.line.preset(delivered_nl)
        self.started = True
        self.fsm.fire(fsm.T_RECOVER)
        tx = self.out.tx
        self.alarms.raise_(AL.A_RESTART, tx, self._now)
        self.alarms.condition_gone(AL.A_RESTART, tx)
        # recover() runs at boot, before the first step clears the transmit buffer: say it
        # again from the first step so the host gets the `! EV ALARM`
        self._v[_V_ANNOUNCE] = AL.A_RESTART
        return True
