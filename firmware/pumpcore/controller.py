"""The pump controller: one `step(now_ms, inputs, rx, nrx)` call per tick or per burst of bytes.

Owns the state machine, the infusion program, the rate loop, alarm detection and the
command interpreter. It sees the world only through its arguments (time, sensor inputs,
received bytes) and answers only through `Outputs` (microsteps for the coming tick, motor
enable, alarm priority, bytes to send). Steady-state steps allocate nothing.
"""
from pumpcore import fsm
from pumpcore import protocol as P
from pumpcore.dose import VolumeLine, dose_ug, volume_nl, rate_ul_h, duration_ms
from pumpcore import VERSION

_FW = VERSION.encode()

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

TICK_MS = const(50)
_MAX_DT = const(200)          # a late tick never integrates more than this
_HALF = const(0x20000000)     # half the 2**30 tick period
_TMAX = const(0x3FFFFFFF)     # largest clock value

# alarm ids (index into ALARM_NAMES / ALARM_PRIO)
A_NONE = const(0)
A_OCCLUSION = const(1)
A_VTBI_DONE = const(2)
ALARM_NAMES = (b"NONE", b"OCCLUSION", b"VTBI_DONE")
PRIO_NONE = const(0)
PRIO_LOW = const(1)
PRIO_MEDIUM = const(2)
PRIO_HIGH = const(3)
ALARM_PRIO = (PRIO_NONE, PRIO_HIGH, PRIO_LOW)

# limits of any program, whatever the drug
RATE_MIN = const(100)              # µL/h  (0.1 mL/h)
RATE_MAX = const(1200000)          # µL/h  (1200 mL/h)
VTBI_MIN = const(1000)             # nL    (1 µL)
VTBI_MAX = const(1000000000)       # nL    (1 L)
DURATION_MAX = const(345600000)    # ms    (96 h)
TLM_MIN = const(50)
TLM_MAX = const(60000)

_CMD_HELLO = b"HELLO"
_CMD_STATUS = b"STATUS"
_CMD_PROG = b"PROG"
_CMD_START = b"START"
_CMD_PAUSE = b"PAUSE"
_CMD_RESUME = b"RESUME"
_CMD_STOP = b"STOP"
_CMD_ACK = b"ACK"
_CMD_TLM = b"TLM"
_RATE_KEYS = (b"rate_ul_h", b"vtbi_nl")
_DOSE_KEYS = (b"drug", b"dose_ug_kg", b"wt_g", b"over_ms", b"confirm")
_TLM_KEYS = (b"period_ms",)
_NO_KEYS = ()


def ticks_diff(new, old):
    """new - old for a clock that wraps at 2**30, without leaving small-int range."""
    d = new - old
    if d >= _HALF:
        d = d - _HALF - _HALF
    elif d < -_HALF:
        d = d + _HALF + _HALF
    return d


def ticks_add(t, d):
    """t + d on the 2**30 clock (0 <= d < 2**29), without leaving small-int range."""
    if t > _TMAX - d:
        return t - _HALF - _HALF + d
    return t + d


class Config:
    """Per-pump settings the board provides (mechanism calibration, alarm thresholds)."""

    def __init__(self, nl_per_kstep, device_id=b"SIM0", occl_mmhg=300, occl_debounce=3):
        self.nl_per_kstep = nl_per_kstep
        self.device_id = device_id
        self.occl_mmhg = occl_mmhg
        self.occl_debounce = occl_debounce


class Inputs:
    """Sensor readings the board fills in before each step."""

    def __init__(self):
        self.pressure_mmhg = 0
        self.encoder = 0
        self.door_open = False
        self.air = False
        self.battery_mv = 4000


class Outputs:
    """What the board must do after a step: preallocated, rewritten every step."""

    def __init__(self):
        self.steps = 0          # microsteps to issue, spread over the coming tick
        self.enable = False     # motor driver enable
        self.alarm_prio = 0     # highest active alarm priority, drives LED and buzzer
        self.tx = P.TxBuffer(1024)


class Controller:
    def __init__(self, config, library):
        self.cfg = config
        self.lib = library
        self.fsm = fsm.Machine()
        self.out = Outputs()
        self.reader = P.FrameReader()
        self.frame = P.Frame(self.reader.buf)
        self.line = VolumeLine(config.nl_per_kstep)
        self._last_reply = bytearray(P.MAX_FRAME)
        self._last_reply_len = 0
        self._last_id = -1
        self._last_crc = -1
        # program
        self.rate = 0           # µL/h
        self.vtbi = 0           # nL
        self.drug = -1
        self.dose_ug = 0
        # time
        self._started = False
        self._next_ctrl = 0
        self._last_ctrl = 0
        self.el_ms = 0          # time spent RUNNING in this infusion
        # alarms
        self.alarm = A_NONE
        self._occl_count = 0
        self.pressure = 0
        # telemetry
        self.tlm_period = 0
        self._next_tlm = 0
        self._now = 0

    # ------------------------------------------------------------------ step
    def step(self, now, inp, rx, nrx):
        """Advance to time `now` (ms, wrapping at 2**30) with these inputs and bytes."""
        out = self.out
        out.tx.clear()
        out.steps = 0
        self._now = now
        self.pressure = inp.pressure_mmhg
        if not self._started:
            self._started = True
            self._next_ctrl = now
            self._last_ctrl = now
        for i in range(nrx):
            r = self.reader.push(rx[i])
            if r == P.FRAME:
                self._handle_frame()
            elif r == P.OVERLONG:
                self._error(P.ID_NONE, P.E_LEN, b"frame longer than 160 bytes").end()
        if ticks_diff(now, self._next_ctrl) >= 0:
            dt = ticks_diff(now, self._last_ctrl)
            if dt > _MAX_DT:
                dt = _MAX_DT
            elif dt < 0:
                dt = 0
            self._last_ctrl = now
            self._next_ctrl = ticks_add(now, TICK_MS)
            self._control(inp, dt)
        if self.fsm.changed:
            self.fsm.changed = False
            self._event_state()
        out.enable = self.fsm.state == fsm.RUNNING
        out.alarm_prio = ALARM_PRIO[self.alarm]
        return out

    def _control(self, inp, dt):
        st = self.fsm.state
        if st == fsm.RUNNING:
            if self.pressure >= self.cfg.occl_mmhg:
                self._occl_count += 1
                if self._occl_count >= self.cfg.occl_debounce:
                    self._raise(A_OCCLUSION)
                    return
            else:
                self._occl_count = 0
            self.el_ms += dt
            self.out.steps = self.line.advance(self.rate, dt)
            if self.line.done():
                self.fsm.fire(fsm.T_COMPLETE)
                self._raise(A_VTBI_DONE)
        else:
            self._occl_count = 0
        if self.tlm_period and ticks_diff(self._now, self._next_tlm) >= 0:
            self._next_tlm = ticks_add(self._now, self.tlm_period)
            self._telemetry()

    def _raise(self, alarm):
        if ALARM_PRIO[alarm] == PRIO_HIGH:
            self.fsm.fire(fsm.T_ALARM)
        if ALARM_PRIO[alarm] >= ALARM_PRIO[self.alarm]:
            self.alarm = alarm
        tx = self.out.tx
        tx.begin(P.ID_EVENT)
        tx.put(b" EV ALARM")
        tx.field_lit(b"alarm", ALARM_NAMES[alarm])
        tx.field_int(b"prio", ALARM_PRIO[alarm])
        tx.end()

    def _clear_alarm(self):
        if self.alarm != A_NONE:
            tx = self.out.tx
            tx.begin(P.ID_EVENT)
            tx.put(b" EV CLEAR")
            tx.field_lit(b"alarm", ALARM_NAMES[self.alarm])
            tx.end()
            self.alarm = A_NONE

    # --------------------------------------------------------------- frames
    def _event_state(self):
        tx = self.out.tx
        tx.begin(P.ID_EVENT)
        tx.put(b" EV STATE")
        tx.field_lit(b"state", fsm.STATE_NAMES[self.fsm.state])
        tx.end()

    def _telemetry(self):
        tx = self.out.tx
        tx.begin(P.ID_EVENT)
        tx.put(b" TL")
        tx.field_lit(b"state", fsm.STATE_NAMES[self.fsm.state])
        tx.field_int(b"del_nl", self.line.delivered_nl)
        tx.field_int(b"rate_ul_h", self.rate if self.fsm.state == fsm.RUNNING else 0)
        tx.field_int(b"p_mmhg", self.pressure)
        tx.field_int(b"el_ms", self.el_ms)
        tx.end()

    def _error(self, rid, code, reason):
        tx = self.out.tx
        tx.begin(rid)
        tx.put(b" ER ")
        tx.put(P.ERR_NAMES[code])
        tx.put(b" ")
        tx.put(reason)
        return tx

    def _ok(self, rid):
        tx = self.out.tx
        tx.begin(rid)
        tx.put(b" OK")
        return tx

    def _handle_frame(self):
        f = self.frame
        n = self.reader.length
        r = f.parse(n)
        if r == P.E_CRC:
            self._error(P.ID_NONE, P.E_CRC, b"bad CRC").end()
            return
        if r != P.OK:
            self._error(f.id if f.id > 0 else P.ID_NONE, r, b"malformed frame").end()
            return
        rid = f.id
        # a retry of the request just executed: same answer, not executed again
        if rid == self._last_id and f.has_crc and f.crc == self._last_crc:
            self.out.tx.put_span(self._last_reply, 0, self._last_reply_len)
            return
        tx = self.out.tx
        start = tx.n
        self._dispatch(f, rid)
        if tx.n > start and f.has_crc:
            m = tx.n - start
            if m <= P.MAX_FRAME:
                for i in range(m):
                    self._last_reply[i] = tx.buf[start + i]
                self._last_reply_len = m
                self._last_id = rid
                self._last_crc = f.crc

    def _check_fields(self, f, rid, keys):
        for k in range(2, f.ntok):
            if not f.key_in(k, keys):
                self._error(rid, P.E_ARG, b"unknown field").end()
                return False
        if f.duplicate_keys():
            self._error(rid, P.E_ARG, b"duplicated field").end()
            return False
        return True

    def _need_crc(self, f, rid):
        if not f.has_crc:
            self._error(rid, P.E_CRC, b"this command needs a CRC").end()
            return False
        return True

    def _state_error(self, rid):
        tx = self._error(rid, P.E_STATE, b"not allowed in ")
        tx.put(fsm.STATE_NAMES[self.fsm.state])
        tx.end()

    def _dispatch(self, f, rid):
        if f.word_is(_CMD_STATUS):
            if self._check_fields(f, rid, _NO_KEYS):
                self._reply_status(rid)
        elif f.word_is(_CMD_HELLO):
            if self._check_fields(f, rid, _NO_KEYS):
                self._reply_hello(rid)
        elif f.word_is(_CMD_PROG):
            if self._need_crc(f, rid):
                self._cmd_prog(f, rid)
        elif f.word_is(_CMD_START):
            self._simple(f, rid, fsm.T_START)
        elif f.word_is(_CMD_PAUSE):
            self._simple(f, rid, fsm.T_PAUSE)
        elif f.word_is(_CMD_RESUME):
            self._simple(f, rid, fsm.T_RESUME)
        elif f.word_is(_CMD_STOP):
            self._simple(f, rid, fsm.T_STOP)
        elif f.word_is(_CMD_ACK):
            self._simple(f, rid, fsm.T_ACK)
        elif f.word_is(_CMD_TLM):
            if self._need_crc(f, rid) and self._check_fields(f, rid, _TLM_KEYS):
                k = f.field(b"period_ms")
                v = f.int_value(k) if k >= 0 else -1
                if v != 0 and not (TLM_MIN <= v <= TLM_MAX):
                    self._error(rid, P.E_RANGE, b"period_ms 0 or 50..60000").end()
                    return
                self.tlm_period = v
                self._next_tlm = self._now
                tx = self._ok(rid)
                tx.field_int(b"period_ms", v)
                tx.end()
        else:
            self._error(rid, P.E_UNKNOWN, b"no such command").end()

    def _simple(self, f, rid, trigger):
        if not (self._need_crc(f, rid) and self._check_fields(f, rid, _NO_KEYS)):
            return
        if not self.fsm.can(trigger):
            self._state_error(rid)
            return
        if trigger == fsm.T_ACK:
            # the occlusion is gone when the pressure has fallen below half the limit
            # (hysteresis against sensor noise; the Alaris restart rule, CONTEXT.md §2)
            if self.alarm == A_OCCLUSION and self.pressure * 2 >= self.cfg.occl_mmhg:
                self._error(rid, P.E_STATE, b"alarm condition still present").end()
                return
            self._clear_alarm()
            self._occl_count = 0
        elif trigger == fsm.T_STOP:
            self._clear_alarm()
            self._clear_program()
        elif trigger == fsm.T_START:
            self.line.reset(self.vtbi)
            self.el_ms = 0
        self.fsm.fire(trigger)
        tx = self._ok(rid)
        tx.field_lit(b"state", fsm.STATE_NAMES[self.fsm.state])
        tx.end()

    def _clear_program(self):
        self.rate = 0
        self.vtbi = 0
        self.drug = -1
        self.dose_ug = 0

    def _cmd_prog(self, f, rid):
        if not self.fsm.can(fsm.T_PROGRAM):
            self._state_error(rid)
            return
        if f.field(b"drug") >= 0:
            self._cmd_prog_dose(f, rid)
            return
        if not self._check_fields(f, rid, _RATE_KEYS):
            return
        kr = f.field(b"rate_ul_h")
        kv = f.field(b"vtbi_nl")
        if kr < 0 or kv < 0:
            self._error(rid, P.E_ARG, b"needs rate_ul_h and vtbi_nl").end()
            return
        rate = f.int_value(kr)
        vtbi = f.int_value(kv)
        if not (RATE_MIN <= rate <= RATE_MAX):
            self._error(rid, P.E_RANGE, b"rate_ul_h must be 100..1200000").end()
            return
        if not (VTBI_MIN <= vtbi <= VTBI_MAX):
            self._error(rid, P.E_RANGE, b"vtbi_nl must be 1000..1000000000").end()
            return
        dur = duration_ms(vtbi, rate)
        if dur > DURATION_MAX:
            self._error(rid, P.E_RANGE, b"duration over 96 h").end()
            return
        self._accept(rid, rate, vtbi, -1, 0, dur, 0)

    def _limit_error(self, rid, name, what, bound):
        tx = self._error(rid, P.E_LIMIT, name)
        tx.put(what)
        tx.put_int(bound)
        tx.end()

    def _cmd_prog_dose(self, f, rid):
        if not self._check_fields(f, rid, _DOSE_KEYS):
            return
        kd = f.field(b"drug")
        kdose = f.field(b"dose_ug_kg")
        kw = f.field(b"wt_g")
        ko = f.field(b"over_ms")
        kc = f.field(b"confirm")
        if kdose < 0 or kw < 0 or ko < 0:
            self._error(rid, P.E_ARG, b"needs drug, dose_ug_kg, wt_g, over_ms").end()
            return
        di = self.lib.index_of(f, kd)
        if di < 0:
            self._error(rid, P.E_DRUG, b"drug not in library").end()
            return
        d = self.lib.drugs[di]
        dose = f.int_value(kdose)
        wt = f.int_value(kw)
        over = f.int_value(ko)
        confirm = kc >= 0 and f.value_is(kc, b"1")
        if kc >= 0 and not (f.value_is(kc, b"1") or f.value_is(kc, b"0")):
            self._error(rid, P.E_RANGE, b"confirm must be 0 or 1").end()
            return
        if dose < 0 or wt < 0 or over < 0:
            self._error(rid, P.E_RANGE, b"values must be non-negative integers").end()
            return
        if wt < d.weight.hard_min:
            return self._limit_error(rid, b"wt_g below hard min ", b"", d.weight.hard_min)
        if wt > d.weight.hard_max:
            return self._limit_error(rid, b"wt_g above hard max ", b"", d.weight.hard_max)
        if dose < d.dose.hard_min:
            return self._limit_error(rid, b"dose_ug_kg below hard min ", b"", d.dose.hard_min)
        if dose > d.dose.hard_max:
            return self._limit_error(rid, b"dose_ug_kg above hard max ", b"", d.dose.hard_max)
        if over < d.over.hard_min:
            return self._limit_error(rid, b"over_ms below hard min ", b"", d.over.hard_min)
        if over > d.over.hard_max:
            return self._limit_error(rid, b"over_ms above hard max ", b"", d.over.hard_max)
        amount = dose_ug(dose, wt)
        vtbi = volume_nl(amount, d.conc_ug_ml)
        rate = rate_ul_h(vtbi, over)
        if rate > d.rate_max:
            return self._limit_error(rid, b"rate_ul_h above hard max ", b"", d.rate_max)
        if not (RATE_MIN <= rate <= RATE_MAX) or not (VTBI_MIN <= vtbi <= VTBI_MAX):
            self._error(rid, P.E_RANGE, b"resulting rate or volume outside the pump's range").end()
            return
        soft = (dose < d.dose.soft_min or dose > d.dose.soft_max or over < d.over.soft_min
                or over > d.over.soft_max or wt < d.weight.soft_min or wt > d.weight.soft_max)
        if soft and not confirm:
            tx = self._error(rid, P.E_SOFT, b"outside soft limits (dose ")
            tx.put_int(d.dose.soft_min)
            tx.put(b"..")
            tx.put_int(d.dose.soft_max)
            tx.put(b" ug/kg, over ")
            tx.put_int(d.over.soft_min // 60000)
            tx.put(b"..")
            tx.put_int(d.over.soft_max // 60000)
            tx.put(b" min); resend with confirm=1")
            tx.end()
            return
        self._accept(rid, rate, vtbi, di, amount, duration_ms(vtbi, rate), 1 if soft else 0)

    def _accept(self, rid, rate, vtbi, drug, amount, dur, soft):
        self.rate = rate
        self.vtbi = vtbi
        self.drug = drug
        self.dose_ug = amount
        self._clear_alarm()
        self.fsm.fire(fsm.T_PROGRAM)
        tx = self._ok(rid)
        if drug >= 0:
            tx.field_lit(b"drug", self.lib.drugs[drug].name)
            tx.field_int(b"dose_ug", amount)
        tx.field_int(b"rate_ul_h", rate)
        tx.field_int(b"vtbi_nl", vtbi)
        tx.field_int(b"dur_ms", dur)
        if drug >= 0:
            tx.field_int(b"soft", soft)
        tx.end()

    def _reply_status(self, rid):
        tx = self._ok(rid)
        tx.field_lit(b"state", fsm.STATE_NAMES[self.fsm.state])
        tx.field_int(b"rate_ul_h", self.rate)
        tx.field_int(b"vtbi_nl", self.vtbi)
        tx.field_int(b"del_nl", self.line.delivered_nl)
        tx.field_int(b"el_ms", self.el_ms)
        tx.field_int(b"p_mmhg", self.pressure)
        tx.field_lit(b"alarm", ALARM_NAMES[self.alarm])
        tx.field_int(b"prio", ALARM_PRIO[self.alarm])
        tx.end()

    def _reply_hello(self, rid):
        tx = self._ok(rid)
        tx.field_lit(b"dev", self.cfg.device_id)
        tx.field_lit(b"fw", _FW)
        tx.field_int(b"proto", P.PROTO_VERSION)
        tx.field_lit(b"lib", self.lib.version)
        tx.field_lit(b"libh", self.lib.sha256_16)
        tx.field_int(b"tick_ms", TICK_MS)
        tx.end()
