"""The command interpreter: one parsed frame in, exactly one reply (plus events) out.

Every command is checked completely — state, fields, ranges, drug-library limits,
authentication — before anything changes, so a refused command changes nothing. Replies
and events are written straight into the controller's preallocated TxBuffer. Commands run
at command time, not in the control tick: program arithmetic may use big intermediates and
the occlusion plan may use floats here.
"""
from pumpcore import fsm
from pumpcore import protocol as P
from pumpcore import alarms as AL
from pumpcore import settings as SET
from pumpcore import dose as D
from pumpcore import syringes as SYR
from pumpcore import ticks as T       # (one module global, not three: heap)

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

_HOUR_MS = const(3600000)

# key tuples are const(): constant objects (flash on the frozen image), not module globals
_NO_KEYS = const(())
_AUTH_KEYS = const((b"boot", b"ctr", b"mac"))


# ------------------------------------------------------------------ reply helpers
def error(ctl, rid, code, reason):
    ctl.refused = True
    tx = ctl.out.tx
    tx.begin(rid)
    tx.put(b" ER ")
    tx.put(P.ERR_NAMES[code])
    tx.put(b" ")
    tx.put(reason)
    return tx


def ok(ctl, rid):
    tx = ctl.out.tx
    tx.begin(rid)
    tx.put(b" OK")
    return tx


def _state_error(ctl, rid):
    tx = error(ctl, rid, P.E_STATE, b"not allowed in ")
    tx.put(fsm.STATE_NAMES[ctl.fsm.state])
    tx.end()


def _reply_state(ctl, rid):
    tx = ok(ctl, rid)
    tx.field_lit(b"state", fsm.STATE_NAMES[ctl.fsm.state])
    tx.end()


def telemetry(ctl):
    tx = ctl.out.tx
    tx.begin(P.ID_EVENT)
    tx.put(b" TL")
    tx.field_lit(b"state", fsm.STATE_NAMES[ctl.fsm.state])
    tx.field_int(b"del_nl", ctl.delivered_nl())
    tx.field_int(b"rate_ul_h", ctl.current_rate())
    tx.field_int(b"p_mmhg", ctl.pressure)
    tx.field_int(b"el_ms", ctl.el_ms)
    if ctl.fsm.state == fsm.KVO or ctl.kvo_nl() > 0:
        tx.field_int(b"kvo_nl", ctl.kvo_nl())       # kept after PAUSE, until the next PROG
    # the frame's own time, and how long before it the control tick whose figures it
    # carries ran (0 on a tick; a frame between ticks repeats that tick's figures)
    tx.field_int(b"t_ms", ctl._now)
    tx.field_int(b"age_ms", T.ticks_diff(ctl._now, ctl._last_ctrl))
    tx.end()


# ------------------------------------------------------------------ frames
def handle_frame(ctl):
    f = ctl.frame
    r = f.parse(ctl.reader.length)
    if r == P.E_CRC:
        error(ctl, P.ID_NONE, P.E_CRC, b"bad CRC").end()
        return
    if r != P.OK:
        # the id of a frame whose CRC was not verified is not trusted either: line noise that
        # destroyed the '*' makes a frame look typed-without-CRC and malformed; answering
        # with id "?" makes the host retransmit instead of reporting a refusal
        error(ctl, f.id if (f.id > 0 and f.has_crc) else P.ID_NONE, r, f.why).end()
        return
    rid = f.id
    ctl.last_rx = ctl._now            # any valid request is a heartbeat
    if ctl.alarms.is_active(AL.A_COMM_LOSS):
        ctl.alarms.condition_gone(AL.A_COMM_LOSS, ctl.out.tx)
    n = ctl.reader.length
    # a retry of the request just executed (the whole frame, byte for byte): same answer,
    # not executed again
    if f.has_crc and n == ctl._last_req_len:
        req = ctl._last_req
        buf = f.buf
        same = True
        for i in range(n):
            if buf[i] != req[i]:
                same = False
                break
        if same:
            ctl.retried = True
            ctl.out.tx.put_span(ctl._last_reply, 0, ctl._last_reply_len)
            return
    tx = ctl.out.tx
    start = tx.n
    ctl.refused = False
    dispatch(ctl, f, rid)
    a = ctl.auth
    if a is not None:
        if a.pending and not ctl.refused:
            try:
                a.commit()             # a refused signed frame uses up no counter
            except OSError:
                # the counter did not reach the flash (it stays advanced in RAM: no replay
                # in this boot); raise FAULT, never let the error out of Controller.step
                ctl.storage_fault(b"auth counter not stored")
        a.pending = False
    if tx.n > start and f.has_crc:
        # remember the request and its reply for retries: the first frame written that is
        # not an event (a handler may announce events, e.g. ACK's `! EV CLEAR`, before its
        # reply; a retry answered with the event alone got no reply at all - issue 10 fuzz)
        while start < tx.n and tx.buf[start] == 33:
            while start < tx.n and tx.buf[start] != 10:
                start += 1
            start += 1
        end = start
        while end < tx.n and tx.buf[end] != 10:
            end += 1
        m = end + 1 - start
        if start < tx.n and m <= P.MAX_FRAME:
            for i in range(m):
                ctl._last_reply[i] = tx.buf[start + i]
            ctl._last_reply_len = m
            req = ctl._last_req
            for i in range(n):
                req[i] = f.buf[i]
            ctl._last_req_len = n


def _fields(ctl, f, rid, keys):
    """Every field's key is in keys (or boot/ctr/mac); no duplicates."""
    for k in range(2, f.ntok):
        if not (f.key_in(k, keys) or f.key_in(k, _AUTH_KEYS)):
            tx = error(ctl, rid, P.E_ARG, b"unknown field ")
            tx.put_span(f.buf, f.ts[k], f.eq[k])
            tx.end()
            return False
    if f.duplicate_keys():
        error(ctl, rid, P.E_ARG, b"duplicated field").end()
        return False
    return True


def _guard(ctl, f, rid, c):
    """The command table's checks, before any handler runs: CRC, signature, state.
    Returns True when the command may go on to its handler (else replied). Nothing here
    allocates before the MAC check, and the MAC check itself runs last."""
    cls = fsm.command_class(c)
    if cls != fsm.CLS_TYPED and not f.has_crc:
        error(ctl, rid, P.E_CRC, b"this command needs a CRC").end()
        return False
    km = f.field(b"mac")
    kc = f.field(b"ctr")
    a = ctl.auth
    signed = km >= 0 or kc >= 0
    if signed and (a is None or not a.provisioned):
        error(ctl, rid, P.E_AUTH, b"pump has no key: signed frames refused").end()
        return False
    if cls == fsm.CLS_GUARDED:
        # the reboot guard: a guarded request names the boot it was meant for
        kb = f.field(b"boot")
        b = f.int_value(kb) if kb >= 0 else -1
        if b != ctl.boot:
            tx = error(ctl, rid, P.E_BOOT, b"missing boot" if kb < 0 else b"meant for another boot")
            tx.put(b"; this is boot=")
            tx.put_int(ctl.boot)
            tx.put(b": read the state (HELLO, STATUS) and decide again")
            tx.end()
            return False
    st = ctl.fsm.state
    if not fsm.allowed(c, st):
        if st == fsm.FAULT:
            error(ctl, rid, P.E_FAULT, ctl.fault_reason).end()
        else:
            _state_error(ctl, rid)
        return False
    if cls == fsm.CLS_GUARDED and a is not None and a.required and not signed:
        error(ctl, rid, P.E_AUTH, b"authentication required: needs ctr and mac").end()
        return False
    if signed and a is not None:
        if km < 0 or kc < 0 or km != f.ntok - 1:
            error(ctl, rid, P.E_AUTH, b"needs ctr and mac as the last field").end()
            return False
        why = a.check(f.buf, f.ts[km] - 1, f.int_value(kc), f.eq[km] + 1, f.te[km])
        if why is not None:
            ctl.auth_refused += 1
            error(ctl, rid, P.E_AUTH, why).end()
            return False
    return True


def _int(f, key):
    """Value of an integer field, -1 when absent, -2 when not a non-negative integer."""
    k = f.field(key)
    if k < 0:
        return -1
    v = f.int_value(k)
    return v if v >= 0 else -2


def dispatch(ctl, f, rid):
    c = -1                    # the frame's command word in the command table
    words = fsm.CMD_WORDS
    for i in range(len(words)):
        if f.word_is(words[i]):
            c = i
            break
    if c < 0:
        error(ctl, rid, P.E_UNKNOWN, b"no such command").end()
        return
    if not _guard(ctl, f, rid, c):
        return
    k = f.bad_number()
    if k >= 0:
        tx = error(ctl, rid, P.E_ARG, b"not a number (0..1073741823, no leading zero): ")
        tx.put_span(f.buf, f.ts[k], f.eq[k])
        tx.end()
        return
    if c == fsm.C_STATUS:
        if _fields(ctl, f, rid, _NO_KEYS):
            _status(ctl, rid)
    elif c == fsm.C_HELLO:
        if _fields(ctl, f, rid, _NO_KEYS):
            _hello(ctl, rid)
    elif c == fsm.C_PROG:
        _prog(ctl, f, rid)
    elif c == fsm.C_STEP:
        _step(ctl, f, rid)
    elif c == fsm.C_START:
        _start(ctl, f, rid, fsm.T_START)
    elif c == fsm.C_RESUME:
        _start(ctl, f, rid, fsm.T_RESUME)
    elif c == fsm.C_PAUSE:
        if _fields(ctl, f, rid, _NO_KEYS):
            ctl.pause()
            _reply_state(ctl, rid)
    elif c == fsm.C_STANDBY:
        if _fields(ctl, f, rid, _NO_KEYS):
            ctl.standby()
            _reply_state(ctl, rid)
    elif c == fsm.C_STOP:
        if _fields(ctl, f, rid, _NO_KEYS):
            if ctl.fsm.state == fsm.FAULT:
                error(ctl, rid, P.E_FAULT, ctl.fault_reason).end()
            else:
                ctl.stop()
                _reply_state(ctl, rid)
    elif c == fsm.C_ACK:
        if _fields(ctl, f, rid, _NO_KEYS):
            if ctl.acknowledge():
                _reply_state(ctl, rid)
            else:
                error(ctl, rid, P.E_STATE, b"alarm condition still present").end()
    elif c == fsm.C_SILENCE:
        if _fields(ctl, f, rid, _NO_KEYS):
            tx = ok(ctl, rid)
            tx.field_int(b"until_ms", ctl.alarms.silence(ctl._now))
            tx.field_int(b"left_ms", AL.SILENCE_MS)     # from now: no clock arithmetic needed
            tx.end()
    elif c == fsm.C_TITRATE:
        _titrate(ctl, f, rid)
    elif c == fsm.C_BOLUS:
        _bolus(ctl, f, rid)
    elif c == fsm.C_VITALS:
        _vitals(ctl, f, rid)
    elif c == fsm.C_HB:
        if _fields(ctl, f, rid, _NO_KEYS):
            ok(ctl, rid).end()
    elif c == fsm.C_CFG:
        _cfg(ctl, f, rid)
    elif c == fsm.C_SETTINGS:
        if _fields(ctl, f, rid, _NO_KEYS):
            _settings_reply(ctl, rid)
    elif c == fsm.C_LOG:
        _log(ctl, f, rid)
    elif c == fsm.C_LIB:
        if _fields(ctl, f, rid, _NO_KEYS):
            _lib(ctl, rid)
    elif c == fsm.C_DRUG:
        if _fields(ctl, f, rid, (b"drug", b"i")):
            _drug_info(ctl, f, rid)
    elif c == fsm.C_TLM:
        if _fields(ctl, f, rid, (b"period_ms",)):
            v = _int(f, b"period_ms")
            if v == -1:
                error(ctl, rid, P.E_ARG, b"needs period_ms").end()
                return
            if v != 0 and not (P.TLM_MIN <= v <= P.TLM_MAX):
                tx = error(ctl, rid, P.E_RANGE, b"period_ms must be 0 or ")
                tx.put_int(P.TLM_MIN)
                tx.put(b"..")
                tx.put_int(P.TLM_MAX)
                tx.end()
                return
            ctl.set_telemetry(v)
            tx = ok(ctl, rid)
            tx.field_int(b"period_ms", v)
            tx.end()


# ------------------------------------------------------------------ read-only
def _status(ctl, rid):
    """STATUS (docs/protocol.md): what is infused and how far it got. Its longest form
    (the longest state, drug and alarm names, every number at its bound) is 160 bytes of
    160 (the most): live readings (pressure, KVO part) are telemetry (`! TL`), not STATUS."""
    tx = ok(ctl, rid)
    tx.field_lit(b"state", fsm.STATE_NAMES[ctl.fsm.state])
    d = ctl.drug
    tx.field_lit(b"drug", ctl.lib.names[d] if d >= 0 and ctl.lib is not None else b"-")
    tx.field_int(b"rate_ul_h", ctl.rate)
    tx.field_int(b"vtbi_nl", ctl.vtbi)
    tx.field_int(b"del_nl", ctl.delivered_nl())
    tx.field_int(b"el_ms", ctl.el_ms)
    a = ctl.alarms.highest()
    tx.field_lit(b"alarm", AL.NAMES[a])
    tx.field_int(b"prio", ctl.alarms.prio(a))
    tx.end()


def _hello(ctl, rid):
    tx = ok(ctl, rid)
    tx.field_lit(b"dev", ctl.cfg.device_id)
    tx.field_lit(b"fw", ctl.fw)
    tx.field_int(b"proto", P.PROTO_VERSION)
    if ctl.lib is not None:
        tx.field_lit(b"lib", ctl.lib.version)
        tx.field_lit(b"libh", ctl.lib.sha256_16)
    else:
        tx.field_lit(b"lib", b"NONE")
        tx.field_lit(b"libh", b"NONE")
    tx.field_int(b"tick_ms", T.TICK_MS)
    tx.field_int(b"boot", ctl.boot)
    a = ctl.auth
    if a is not None and a.provisioned:
        # docs/protocol.md: a provisioned pump says whether it requires signatures and the
        # last counter it accepted, so a host starts its counter above it
        tx.field_int(b"auth", 1 if a.required else 0)
        tx.field_int(b"ctr", a.counter)
    if ctl.fsm.state == fsm.FAULT:
        tx.field_lit(b"fault", b"1")
    if ctl.log_damage:
        # damaged event-log records found at boot (capped at 99: the longest HELLO, every
        # number at its bound, then fills the 160 bytes exactly; STATUS has no room left)
        tx.field_int(b"logdmg", ctl.log_damage if ctl.log_damage < 99 else 99)
    tx.end()


def _log(ctl, f, rid):
    if not _fields(ctl, f, rid, (b"from", b"max")):
        return
    frm = _int(f, b"from")
    mx = _int(f, b"max")
    if frm < 0:
        error(ctl, rid, P.E_ARG, b"needs from").end()
        return
    if mx == -1:
        mx = 32
    if mx < 1 or mx > 32:
        error(ctl, rid, P.E_RANGE, b"max must be 1..32").end()
        return
    src = ctl.log_source
    if src is None:
        tx = ok(ctl, rid)
        tx.field_int(b"n", 0)
        tx.field_int(b"next", frm)
        tx.end()
        return
    src.export(ctl, rid, frm, mx)


def _lib(ctl, rid):
    """LIB: the library's identity and its drugs, one `! DL i= drug=` frame each."""
    lib = ctl.lib
    if lib is None:
        error(ctl, rid, P.E_FAULT, b"no drug library").end()
        return
    tx = ok(ctl, rid)
    tx.field_lit(b"lib", lib.version)
    tx.field_lit(b"libh", lib.sha256_16)
    tx.field_int(b"n", len(lib.names))
    tx.end()
    for i in range(len(lib.names)):
        tx.begin(P.ID_EVENT)
        tx.put(b" DL")
        tx.field_int(b"i", i)
        tx.field_lit(b"drug", lib.names[i])
        tx.end()


def _dl_lim(tx, name, key, lim):
    tx.begin(P.ID_EVENT)
    tx.put(b" DL")
    tx.field_lit(b"drug", name)
    tx.field_lit(b"lim", key)
    tx.field_int(b"hard_min", lim.hard_min)
    tx.field_int(b"soft_min", lim.soft_min)
    tx.field_int(b"soft_max", lim.soft_max)
    tx.field_int(b"hard_max", lim.hard_max)
    tx.end()


def _drug_info(ctl, f, rid):
    """DRUG drug=<name> | i=<index>: every limit the pump enforces for one drug, in wire
    units, as `! DL` frames after the reply (docs/protocol.md, *Drug library*)."""
    lib = ctl.lib
    if lib is None:
        error(ctl, rid, P.E_FAULT, b"no drug library").end()
        return
    k = f.field(b"drug")
    i = _int(f, b"i")
    if (k >= 0) == (i >= 0):
        error(ctl, rid, P.E_ARG, b"needs one of drug, i").end()
        return
    di = lib.index_of(f, k) if k >= 0 else i
    if di < 0 or di >= len(lib.names):
        error(ctl, rid, P.E_DRUG, b"drug not in library").end()
        return
    d = lib.drug(di)
    v = d.vitals
    n = 5 + (1 if d.dose_h is not None else 0) + (1 if v is not None else 0)
    tx = ok(ctl, rid)
    tx.field_lit(b"drug", d.name)
    tx.field_int(b"n", n)
    tx.end()
    tx.begin(P.ID_EVENT)
    tx.put(b" DL")
    tx.field_lit(b"drug", d.name)
    tx.field_int(b"conc_ug_ml", d.conc_ug_ml)
    tx.put(b" concs=")
    for j in range(len(d.concs)):
        if j:
            tx.put(b",")
        tx.put_int(d.concs[j])
    tx.field_int(b"rate_max_ul_h", d.rate_max)
    tx.field_int(b"bolus_max_nl", d.bolus_max_nl)
    tx.field_int(b"kvo_ul_h", d.kvo_ul_h)
    tx.end()
    # the clinician-bolus rules _bolus_allowed enforces (0: none), a frame of their own so
    # the first one stays inside 160 bytes whatever the name and concentrations
    tx.begin(P.ID_EVENT)
    tx.put(b" DL")
    tx.field_lit(b"drug", d.name)
    tx.field_int(b"bolus_lockout_ms", d.bolus_lockout_ms)
    tx.field_int(b"bolus_h_ug", d.bolus_h_ug)
    tx.end()
    _dl_lim(tx, d.name, b"dose_ug_kg", d.dose)
    _dl_lim(tx, d.name, b"over_ms", d.over)
    _dl_lim(tx, d.name, b"wt_g", d.weight)
    if d.dose_h is not None:
        _dl_lim(tx, d.name, b"dose_ug_kg_h", d.dose_h)
    if v is not None:
        tx.begin(P.ID_EVENT)
        tx.put(b" DL")
        tx.field_lit(b"drug", d.name)
        tx.field_int(b"sbp_max", v.sbp_max)
        tx.field_int(b"dbp_max", v.dbp_max)
        tx.field_int(b"hr_max", v.hr_max)
        tx.field_int(b"hr_min", v.hr_min)
        tx.field_int(b"spo2_min", v.spo2_min)
        tx.end()


# ------------------------------------------------------------------ programs
def _range_check(ctl, rid, rate, vtbi, what=b"", vname=b"vtbi_nl"):
    if not (D.RATE_MIN <= rate <= D.RATE_MAX):
        tx = error(ctl, rid, P.E_RANGE, what)
        tx.put(b"rate_ul_h must be 100..1200000")
        tx.end()
        return False
    if not (D.VTBI_MIN <= vtbi <= D.VTBI_MAX):
        tx = error(ctl, rid, P.E_RANGE, what)
        tx.put(vname)
        tx.put(b" must be 1000..1000000000")
        tx.end()
        return False
    if D.duration_ms(vtbi, rate) > D.DURATION_MAX:
        error(ctl, rid, P.E_RANGE, b"duration over 96 h").end()
        return False
    return True


def _limit_error(ctl, rid, what, bound):
    tx = error(ctl, rid, P.E_LIMIT, what)
    tx.put_int(bound)
    tx.end()


def _check_limits(ctl, rid, lim, v, name, soft_acc):
    """Hard limit → reply LIMIT and return -1; soft → add to soft_acc (returned)."""
    if v < lim.hard_min:
        tx = error(ctl, rid, P.E_LIMIT, name)
        tx.put(b" below hard min ")
        tx.put_int(lim.hard_min)
        tx.end()
        return -1
    if v > lim.hard_max:
        tx = error(ctl, rid, P.E_LIMIT, name)
        tx.put(b" above hard max ")
        tx.put_int(lim.hard_max)
        tx.end()
        return -1
    if lim.soft(v):
        return soft_acc + 1
    return soft_acc


def _confirm(ctl, f, rid):
    """-1 on a bad value (replied), else 0/1."""
    k = f.field(b"confirm")
    if k < 0:
        return 0
    if f.value_is(k, b"1"):
        return 1
    if f.value_is(k, b"0"):
        return 0
    error(ctl, rid, P.E_RANGE, b"confirm must be 0 or 1").end()
    return -1


def _drug(ctl, f, rid, required):
    """Drug index, -1 for none (when not required), -2 on error (replied)."""
    k = f.field(b"drug")
    if k < 0:
        if required:
            error(ctl, rid, P.E_ARG, b"needs drug").end()
            return -2
        return -1
    di = ctl.lib.index_of(f, k)
    if di < 0:
        error(ctl, rid, P.E_DRUG, b"drug not in library").end()
        return -2
    return di


def _kvo(ctl, f, rid, default, last_rate, di):
    """KVO rate in force (clamped to the last programmed rate), -1 on error (replied).
    A drug's library KVO is the most any of its programs may ask for (0: no KVO at all)."""
    v = _int(f, b"kvo_ul_h")
    if v == -2:
        error(ctl, rid, P.E_RANGE, b"kvo_ul_h must be 0 or 100..20000").end()
        return -1
    if v == -1:
        v = default
    elif v != 0 and not (100 <= v <= 20000):
        error(ctl, rid, P.E_RANGE, b"kvo_ul_h must be 0 or 100..20000").end()
        return -1
    if di >= 0 and v > ctl.lib.kvo_max(di):
        _limit_error(ctl, rid, b"kvo_ul_h above the drug's KVO ", ctl.lib.kvo_max(di))
        return -1
    if v > last_rate:
        v = last_rate                 # never above the programmed rate
    return v


def _soft_error(ctl, rid, what):
    tx = error(ctl, rid, P.E_SOFT, b"outside soft limits (")
    tx.put(what)
    tx.put(b"); resend with confirm=1")
    tx.end()


_RATE_KEYS = const((b"rate_ul_h", b"vtbi_nl", b"dur_ms", b"kvo_ul_h", b"drug"))
_DOSE_KEYS = const((b"drug", b"dose_ug_kg", b"wt_g", b"over_ms", b"confirm", b"kvo_ul_h",
                   b"conc_ug_ml"))
_DOSEH_KEYS = const((b"drug", b"dose_ug_kg_h", b"wt_g", b"vtbi_nl", b"dur_ms", b"conc_ug_ml",
                    b"confirm", b"kvo_ul_h", b"load_ug_kg", b"load_ms"))
_STEPS_KEYS = const((b"steps", b"drug", b"confirm", b"kvo_ul_h"))
del const   # compile-time only (each module global is a slot of heap on the board)


def _prog(ctl, f, rid):
    if f.field(b"steps") >= 0:
        return _prog_steps(ctl, f, rid)
    if f.field(b"dose_ug_kg_h") >= 0 or f.field(b"load_ug_kg") >= 0:
        return _prog_dose_rate(ctl, f, rid)
    if f.field(b"dose_ug_kg") >= 0:
        return _prog_dose(ctl, f, rid)
    if not _fields(ctl, f, rid, _RATE_KEYS):
        return
    rate = _int(f, b"rate_ul_h")
    vtbi = _int(f, b"vtbi_nl")
    dur = _int(f, b"dur_ms")
    if rate == -2 or vtbi == -2 or dur == -2:
        error(ctl, rid, P.E_RANGE, b"values must be non-negative integers").end()
        return
    new_form = False
    if rate >= 0 and vtbi >= 0 and dur == -1:
        pass
    elif vtbi >= 0 and dur >= 0 and rate == -1:
        if dur == 0:
            error(ctl, rid, P.E_RANGE, b"dur_ms must be positive").end()
            return
        rate = D.rate_ul_h(vtbi, dur)
        new_form = True
    else:
        error(ctl, rid, P.E_ARG, b"needs rate_ul_h and vtbi_nl, or vtbi_nl and dur_ms").end()
        return
    if not _range_check(ctl, rid, rate, vtbi):
        return
    di = _drug(ctl, f, rid, False)
    if di == -2:
        return
    if di >= 0 and rate > ctl.lib.rate_max(di):
        return _limit_error(ctl, rid, b"rate_ul_h above hard max ", ctl.lib.rate_max(di))
    dflt = 0
    if new_form or f.field(b"kvo_ul_h") >= 0:
        dflt = ctl.lib.kvo_max(di) if di >= 0 else 1000
    kvo = _kvo(ctl, f, rid, dflt, rate, di)
    if kvo < 0:
        return
    ctl.set_segment(0, rate, vtbi)
    _accept(ctl, rid, 1, di, 0, 0, kvo, -1, 0, 0)


def _prog_dose(ctl, f, rid):
    """The v0 form: drug, dose_ug_kg, wt_g, over_ms (dose over a duration)."""
    if not _fields(ctl, f, rid, _DOSE_KEYS):
        return
    dose = _int(f, b"dose_ug_kg")
    wt = _int(f, b"wt_g")
    over = _int(f, b"over_ms")
    if dose == -1 or wt == -1 or over == -1 or f.field(b"drug") < 0:
        error(ctl, rid, P.E_ARG, b"needs drug, dose_ug_kg, wt_g, over_ms").end()
        return
    di = _drug(ctl, f, rid, True)
    if di < 0:
        return
    confirm = _confirm(ctl, f, rid)
    if confirm < 0:
        return
    if dose < 0 or wt < 0 or over < 0:
        error(ctl, rid, P.E_RANGE, b"values must be non-negative integers").end()
        return
    d = ctl.lib.drug(di)
    conc = _conc(ctl, f, rid, d)
    if conc < 0:
        return
    soft = _check_limits(ctl, rid, d.weight, wt, b"wt_g", 0)
    if soft >= 0:
        soft = _check_limits(ctl, rid, d.dose, dose, b"dose_ug_kg", soft)
    if soft >= 0:
        soft = _check_limits(ctl, rid, d.over, over, b"over_ms", soft)
    if soft < 0:
        return
    amount = D.dose_ug(dose, wt)
    vtbi = D.volume_nl(amount, conc)
    rate = D.rate_ul_h(vtbi, over) if over > 0 else 0
    if rate > d.rate_max:
        return _limit_error(ctl, rid, b"rate_ul_h above hard max ", d.rate_max)
    if not _range_check(ctl, rid, rate, vtbi):
        return
    if soft and not confirm:
        tx = error(ctl, rid, P.E_SOFT, b"outside soft limits (dose ")
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
    kvo = _kvo(ctl, f, rid, d.kvo_ul_h if f.field(b"kvo_ul_h") >= 0 else 0, rate, di)
    if kvo < 0:
        return
    ctl.set_segment(0, rate, vtbi)
    _accept(ctl, rid, 1, di, amount, 1 if soft else 0, kvo, -1, wt, conc)


def _conc(ctl, f, rid, d):
    c = _int(f, b"conc_ug_ml")
    if c == -1:
        return d.conc_ug_ml
    if c in d.concs:
        return c
    error(ctl, rid, P.E_LIMIT, b"conc_ug_ml not a library concentration for this drug").end()
    return -1


def _prog_dose_rate(ctl, f, rid):
    """Continuous dose (µg/kg/h) for a volume or a duration, optionally after a loading
    dose (load_ug_kg over load_ms)."""
    if not _fields(ctl, f, rid, _DOSEH_KEYS):
        return
    doseh = _int(f, b"dose_ug_kg_h")
    wt = _int(f, b"wt_g")
    vtbi = _int(f, b"vtbi_nl")
    dur = _int(f, b"dur_ms")
    load = _int(f, b"load_ug_kg")
    load_ms = _int(f, b"load_ms")
    if doseh == -1 or wt == -1 or (vtbi == -1) == (dur == -1) or (load == -1) != (load_ms == -1):
        error(ctl, rid, P.E_ARG,
              b"needs drug, dose_ug_kg_h, wt_g, one of vtbi_nl/dur_ms (load_ug_kg with load_ms)").end()
        return
    if doseh == -2 or wt == -2 or vtbi == -2 or dur == -2 or load == -2 or load_ms == -2:
        error(ctl, rid, P.E_RANGE, b"values must be non-negative integers").end()
        return
    di = _drug(ctl, f, rid, True)
    if di < 0:
        return
    confirm = _confirm(ctl, f, rid)
    if confirm < 0:
        return
    d = ctl.lib.drug(di)
    if d.dose_h is None:
        error(ctl, rid, P.E_LIMIT, b"drug has no continuous-dose limits").end()
        return
    conc = _conc(ctl, f, rid, d)
    if conc < 0:
        return
    soft = _check_limits(ctl, rid, d.weight, wt, b"wt_g", 0)
    if soft >= 0:
        soft = _check_limits(ctl, rid, d.dose_h, doseh, b"dose_ug_kg_h", soft)
    if soft >= 0 and load >= 0:
        soft = _check_limits(ctl, rid, d.dose, load, b"load_ug_kg", soft)
        if soft >= 0:
            soft = _check_limits(ctl, rid, d.over, load_ms, b"load_ms", soft)
    if soft < 0:
        return
    rate = D.dose_rate_ul_h(doseh, wt, conc)
    if dur >= 0:
        vtbi = D.volume_for_ms(rate, dur)
    if rate > d.rate_max:
        return _limit_error(ctl, rid, b"rate_ul_h above hard max ", d.rate_max)
    if not _range_check(ctl, rid, rate, vtbi):
        return
    load_nl = 0
    load_rate = 0
    if load >= 0:
        load_nl = D.volume_nl(D.dose_ug(load, wt), conc)
        load_rate = D.rate_ul_h(load_nl, load_ms) if load_ms > 0 else 0
        if load_rate > d.rate_max:
            return _limit_error(ctl, rid, b"load rate_ul_h above hard max ", d.rate_max)
        if not _range_check(ctl, rid, load_rate, load_nl, b"load "):
            return
        if load_nl + vtbi > D.VTBI_MAX:
            error(ctl, rid, P.E_RANGE, b"total volume over 1 L").end()
            return
    if soft and not confirm:
        return _soft_error(ctl, rid, b"dose, load or weight")
    kvo = _kvo(ctl, f, rid, d.kvo_ul_h, rate, di)
    if kvo < 0:
        return
    n = 1
    if load >= 0:
        ctl.set_segment(0, load_rate, load_nl)      # the loading dose first
        n = 2
    ctl.set_segment(n - 1, rate, vtbi)
    amount = (D.dose_ug(load, wt) if load > 0 else 0) + D.drug_ug(vtbi, conc)
    _accept(ctl, rid, n, di, amount, 1 if soft else 0, kvo, doseh, wt, conc)


def _step(ctl, f, rid):
    if not _fields(ctl, f, rid, (b"i", b"rate_ul_h", b"vol_nl", b"dur_ms")):
        return
    i = _int(f, b"i")
    rate = _int(f, b"rate_ul_h")
    vol = _int(f, b"vol_nl")
    dur = _int(f, b"dur_ms")
    if i == -1 or rate == -1 or (vol == -1) == (dur == -1):
        error(ctl, rid, P.E_ARG, b"needs i, rate_ul_h and one of vol_nl/dur_ms").end()
        return
    if not (0 <= i < 8):
        error(ctl, rid, P.E_RANGE, b"i must be 0..7").end()
        return
    if rate < 0 or vol == -2 or dur == -2:
        error(ctl, rid, P.E_RANGE, b"values must be non-negative integers").end()
        return
    if dur == 0:
        error(ctl, rid, P.E_RANGE, b"dur_ms must be positive").end()
        return
    if dur >= 0:
        vol = D.volume_for_ms(rate, dur)
    if not _range_check(ctl, rid, rate, vol, b"", b"vol_nl"):
        return
    ctl.store_step(i, rate, vol)
    tx = ok(ctl, rid)
    tx.field_int(b"i", i)
    tx.field_int(b"rate_ul_h", rate)
    tx.field_int(b"vol_nl", vol)
    tx.field_int(b"dur_ms", D.duration_ms(vol, rate))
    tx.end()


def _prog_steps(ctl, f, rid):
    if not _fields(ctl, f, rid, _STEPS_KEYS):
        return
    n = _int(f, b"steps")
    if not (1 <= n <= 8):
        error(ctl, rid, P.E_RANGE, b"steps must be 1..8").end()
        return
    for i in range(n):
        if not (ctl.st_mask >> i) & 1:
            tx = error(ctl, rid, P.E_ARG, b"step not stored: i=")
            tx.put_int(i)
            tx.end()
            return
    di = _drug(ctl, f, rid, False)
    if di == -2:
        return
    tot = 0
    dur = 0
    for i in range(n):
        tot += ctl.st_vol[i]
        dur += D.duration_ms(ctl.st_vol[i], ctl.st_rate[i])
        if di >= 0 and ctl.st_rate[i] > ctl.lib.rate_max(di):
            return _limit_error(ctl, rid, b"rate_ul_h above hard max ", ctl.lib.rate_max(di))
    if tot > D.VTBI_MAX or dur > D.DURATION_MAX:
        error(ctl, rid, P.E_RANGE, b"total volume over 1 L or duration over 96 h").end()
        return
    kvo = _kvo(ctl, f, rid, ctl.lib.kvo_max(di) if di >= 0 else 1000, ctl.st_rate[n - 1], di)
    if kvo < 0:
        return
    for i in range(n):
        ctl.set_segment(i, ctl.st_rate[i], ctl.st_vol[i])
    ctl.store_step(-1, 0, 0)          # the stored steps are the program now
    _accept(ctl, rid, n, di, 0, 0, kvo, -1, 0, 0)


def _accept(ctl, rid, n, di, amount, soft, kvo, doseh, wt, conc):
    """The n segments written (ctl.set_segment) become the program; reply."""
    ctl.accept_program(n, di, amount, doseh, wt, conc, kvo)
    dur = 0
    for i in range(ctl.nseg):
        dur += D.duration_ms(ctl.seg_vol[i], ctl.seg_rate[i])
    tx = ok(ctl, rid)
    if di >= 0:
        tx.field_lit(b"drug", ctl.lib.names[di])
        if amount:
            tx.field_int(b"dose_ug", amount)
    tx.field_int(b"rate_ul_h", ctl.rate)
    tx.field_int(b"vtbi_nl", ctl.vtbi)
    tx.field_int(b"dur_ms", dur)
    if kvo:
        tx.field_int(b"kvo_ul_h", kvo)
    if soft >= 0 and di >= 0:
        tx.field_int(b"soft", soft)
    tx.end()


# ------------------------------------------------------------------ delivery control
def _start(ctl, f, rid, trigger):
    if not _fields(ctl, f, rid, _NO_KEYS):
        return
    al = ctl.alarms
    if al.high_with_condition() or al.any_high():
        error(ctl, rid, P.E_STATE, b"a high-priority alarm is active").end()
        return
    if ctl.last_door:
        error(ctl, rid, P.E_STATE, b"door open").end()
        return
    if not ctl.start(trigger):
        error(ctl, rid, P.E_STATE, b"program complete").end()
        return
    _reply_state(ctl, rid)


def _titrate(ctl, f, rid):
    if not _fields(ctl, f, rid, (b"rate_ul_h", b"dose_ug_kg_h", b"confirm")):
        return
    rate = _int(f, b"rate_ul_h")
    doseh = _int(f, b"dose_ug_kg_h")
    if (rate == -1) == (doseh == -1):
        error(ctl, rid, P.E_ARG, b"needs one of rate_ul_h, dose_ug_kg_h").end()
        return
    if rate == -2 or doseh == -2:
        error(ctl, rid, P.E_RANGE, b"values must be non-negative integers").end()
        return
    confirm = _confirm(ctl, f, rid)
    if confirm < 0:
        return
    soft = 0
    d = ctl.lib.drug(ctl.drug) if ctl.drug >= 0 else None
    if doseh >= 0:
        if d is None or d.dose_h is None or ctl.wt_g <= 0 or ctl.conc <= 0 or ctl.dose_h <= 0:
            # a dose over time is titrated by rate, within its time limits (issue 10 fuzz:
            # by dose it became a dose rate that no longer kept the dose's minimum time)
            error(ctl, rid, P.E_ARG, b"dose titration needs a continuous-dose program").end()
            return
        soft = _check_limits(ctl, rid, d.dose_h, doseh, b"dose_ug_kg_h", 0)
        if soft < 0:
            return
        rate = D.dose_rate_ul_h(doseh, ctl.wt_g, ctl.conc)
    if not (D.RATE_MIN <= rate <= D.RATE_MAX):
        error(ctl, rid, P.E_RANGE, b"rate_ul_h must be 100..1200000").end()
        return
    if d is not None and rate > d.rate_max:
        return _limit_error(ctl, rid, b"rate_ul_h above hard max ", d.rate_max)
    rem = ctl.vtbi - ctl.line.target_nl
    if rem > 0 and D.duration_ms(rem, rate) > D.DURATION_MAX:
        error(ctl, rid, P.E_RANGE, b"duration over 96 h").end()
        return
    loading = ctl.dose_h > 0 and ctl.nseg == 2 and ctl.seg == 0
    if loading and doseh >= 0:
        error(ctl, rid, P.E_STATE, b"loading dose running: titrate it by rate").end()
        return
    if doseh < 0 and d is not None and ctl.wt_g > 0:
        # by rate, a dose program keeps the drug's limits: the dose rate for a continuous
        # dose, the total time for a dose over time or a loading dose
        if ctl.dose_h > 0 and not loading:
            # the rate against the continuous-dose limits (µg/kg/h) for the program's
            # weight and concentration: a hard limit refuses, a soft one asks for confirm=1
            lim = d.dose_h
            w = ctl.wt_g
            cc = ctl.conc
            if rate < D.dose_rate_ul_h(lim.hard_min, w, cc):
                return _limit_error(ctl, rid, b"rate_ul_h below the dose-rate hard min ",
                                    D.dose_rate_ul_h(lim.hard_min, w, cc))
            if rate > D.dose_rate_ul_h(lim.hard_max, w, cc):
                return _limit_error(ctl, rid, b"rate_ul_h above the dose-rate hard max ",
                                    D.dose_rate_ul_h(lim.hard_max, w, cc))
            soft = 1 if (rate < D.dose_rate_ul_h(lim.soft_min, w, cc)
                         or rate > D.dose_rate_ul_h(lim.soft_max, w, cc)) else 0
        else:
            # time so far + the rest of this dose at the new rate, within the drug's time limits
            rem_dose = ctl.line.limit_nl - ctl.line.target_nl
            tot = ctl.el_ms + D.duration_ms(rem_dose, rate)
            soft = _check_limits(ctl, rid, d.over, tot, b"over_ms", 0)
            if soft < 0:
                return
    if soft and not confirm:
        return _soft_error(ctl, rid, b"dose_ug_kg_h" if doseh >= 0 or ctl.dose_h > 0 and not loading else b"over_ms")
    ctl.retitrate(rate, doseh, loading)
    tx = ok(ctl, rid)
    tx.field_int(b"rate_ul_h", rate)
    tx.field_int(b"del_nl", ctl.delivered_nl())
    tx.field_int(b"dur_ms", D.duration_ms(rem, rate) if rem > 0 else 0)
    if d is not None:
        tx.field_int(b"soft", soft)
    tx.end()


def _bolus(ctl, f, rid):
    if not _fields(ctl, f, rid, (b"vol_nl", b"rate_ul_h")):
        return
    vol = _int(f, b"vol_nl")
    rate = _int(f, b"rate_ul_h")
    if vol == -1 or rate == -1:
        error(ctl, rid, P.E_ARG, b"needs vol_nl and rate_ul_h").end()
        return
    if ctl.bolus_on:
        error(ctl, rid, P.E_STATE, b"a bolus is already running").end()
        return
    d = ctl.lib.drug(ctl.drug) if ctl.drug >= 0 else None
    vmax = d.bolus_max_nl if d is not None else 10000000
    rmax = d.rate_max if d is not None else D.RATE_MAX
    if vol < 1000:
        error(ctl, rid, P.E_RANGE, b"vol_nl must be at least 1000").end()
        return
    if rate < D.RATE_MIN:
        error(ctl, rid, P.E_RANGE, b"rate_ul_h must be at least 100").end()
        return
    if rate > D.RATE_MAX:              # the pump's own bound: RANGE, like TITRATE and PROG
        error(ctl, rid, P.E_RANGE, b"rate_ul_h must be 100..1200000").end()
        return
    if vol > vmax:
        return _limit_error(ctl, rid, b"vol_nl above bolus max ", vmax)
    if rate > rmax:
        return _limit_error(ctl, rid, b"rate_ul_h above max ", rmax)
    if d is None:
        ctl.start_bolus(rate, vol, -1, 0)
    elif _bolus_allowed(ctl, rid, d, vol):
        # remembered per drug across STOP and new programs (lockout and hourly cap)
        ctl.start_bolus(rate, vol, ctl.bol_i, D.drug_ug(vol, ctl.conc if ctl.conc > 0 else d.conc_ug_ml))
    else:
        return
    tx = ok(ctl, rid)
    tx.field_int(b"vol_nl", vol)
    tx.field_int(b"rate_ul_h", rate)
    tx.end()


def _bolus_allowed(ctl, rid, d, vol):
    """The drug's bolus lockout and hourly cap (boluses this drug was given in the last
    hour, whatever the program). False when refused (replied)."""
    now = ctl._now
    lk = d.bolus_lockout_ms
    tot = D.drug_ug(vol, ctl.conc if ctl.conc > 0 else d.conc_ug_ml)
    for i in range(len(ctl.bol_t)):
        if ctl.bol_dr[i] != ctl.drug:
            continue
        age = T.ticks_diff(now, ctl.bol_t[i])
        if age < 0:
            continue                    # older than the clock's half range: long gone
        if age < lk:
            _limit_error(ctl, rid, b"bolus lockout: next bolus in s ", (lk - age + 999) // 1000)
            return False
        if age < _HOUR_MS:
            tot += ctl.bol_ug[i]
    if d.bolus_h_ug and tot > d.bolus_h_ug:
        _limit_error(ctl, rid, b"boluses above the hour's max ug ", d.bolus_h_ug)
        return False
    j = ctl.bol_i
    if ctl.bol_dr[j] >= 0 and 0 <= T.ticks_diff(now, ctl.bol_t[j]) < _HOUR_MS:
        error(ctl, rid, P.E_LIMIT, b"more boluses in an hour than the pump remembers").end()
        return False
    return True


# ------------------------------------------------------------------ vitals, settings
def _vitals(ctl, f, rid):
    if not _fields(ctl, f, rid, (b"sbp", b"dbp", b"hr", b"spo2", b"age_ms")):
        return
    sbp = _int(f, b"sbp")
    dbp = _int(f, b"dbp")
    hr = _int(f, b"hr")
    spo2 = _int(f, b"spo2")
    age = _int(f, b"age_ms")      # how old the reading already is (HL7 bridge); absent: 0
    if sbp == -1 or dbp == -1 or hr == -1 or spo2 == -1:
        error(ctl, rid, P.E_ARG, b"needs sbp, dbp, hr, spo2").end()
        return
    if not (0 < sbp <= 350 and 0 < dbp <= 300 and 0 < hr <= 350 and 0 < spo2 <= 100):
        error(ctl, rid, P.E_RANGE, b"implausible reading").end()
        return
    if age == -1:
        age = 0
    elif not 0 <= age <= SET.VAGE_MAX:
        error(ctl, rid, P.E_RANGE, b"age_ms must be 0..3600000").end()
        return
    # the reading's own time, so an old reading is never taken as fresh (stale alarm follows)
    bad = ctl.set_vitals(sbp, dbp, hr, spo2, T.ticks_back(ctl._now, age),
                         age <= ctl.settings.vitals_age_ms)
    action = b"none"
    if bad is not None and ctl.settings.interlock:
        st = ctl.fsm.state
        if st == fsm.RUNNING or st == fsm.KVO or st == fsm.PAUSED:
            ctl.raise_high(AL.A_VITALS)        # stops delivery: the interlock only lowers
            action = b"paused"
    tx = ok(ctl, rid)
    tx.field_lit(b"action", action)
    if bad is not None:
        tx.field_lit(b"limit", bad)
    tx.end()


def _cfg(ctl, f, rid):
    if not _fields(ctl, f, rid, fsm.CFG_KEYS):
        return
    st = ctl.fsm.state
    nset = 0
    for k in range(2, f.ntok):
        for i in range(len(fsm.CFG_KEYS)):
            if f._span_eq(f.ts[k], f.eq[k], fsm.CFG_KEYS[i]):
                nset += 1
                if not fsm.cfg_allowed(i, st):
                    # the command table (pumpcore.states CFG_KEYS): which setting may change
                    # in which state
                    tx = error(ctl, rid, P.E_STATE, fsm.CFG_KEYS[i])
                    tx.put(b" cannot change in ")
                    tx.put(fsm.STATE_NAMES[st])
                    tx.end()
                    return
    if nset == 0:
        error(ctl, rid, P.E_ARG, b"needs at least one setting (SETTINGS reads them)").end()
        return
    occl = _int(f, b"occl_mmhg")
    kl = f.field(b"occl_level")
    hb = _int(f, b"hb_ms")
    ka = f.field(b"hb_action")
    il = _int(f, b"interlock")
    va = _int(f, b"vitals_age_ms")
    au = _int(f, b"auth")
    cb = _int(f, b"callback_ms")
    syr = _int(f, b"syr_nl")
    sk = f.field(b"syringe")
    if occl >= 0 and kl >= 0:
        error(ctl, rid, P.E_ARG, b"occl_mmhg and occl_level are exclusive").end()
        return
    if kl >= 0:
        occl = -2
        for i in range(3):
            if f.value_is(kl, SET.OCCL_LEVELS[i]):
                occl = SET.OCCL_LEVEL_MMHG[i]
        if occl < 0:
            error(ctl, rid, P.E_RANGE, b"occl_level must be L, M or H").end()
            return
    if occl == -2 or (occl >= 0 and not (SET.OCCL_MIN <= occl <= SET.OCCL_MAX)):
        error(ctl, rid, P.E_RANGE, b"occl_mmhg must be 103..1034").end()
        return
    if hb == -2 or (hb > 0 and not (SET.HB_MIN <= hb <= SET.HB_MAX)):
        error(ctl, rid, P.E_RANGE, b"hb_ms must be 0 or 1000..600000").end()
        return
    hbp = -1
    if ka >= 0:
        if f.value_is(ka, b"continue"):
            hbp = 0
        elif f.value_is(ka, b"pause"):
            hbp = 1
        else:
            error(ctl, rid, P.E_RANGE, b"hb_action must be continue or pause").end()
            return
    if il not in (-1, 0, 1) or au not in (-1, 0, 1):
        error(ctl, rid, P.E_RANGE, b"interlock and auth must be 0 or 1").end()
        return
    if va == -2 or (va >= 0 and not (SET.VAGE_MIN <= va <= SET.VAGE_MAX)):
        error(ctl, rid, P.E_RANGE, b"vitals_age_ms must be 10000..3600000").end()
        return
    if cb == -2 or (cb >= 0 and not (SET.CB_MIN <= cb <= SET.CB_MAX)):
        error(ctl, rid, P.E_RANGE, b"callback_ms must be 10000..3600000").end()
        return
    if syr == -2 or (syr >= 0 and syr != 0 and not (1000000 <= syr <= 100000000)):
        error(ctl, rid, P.E_RANGE, b"syr_nl must be 0 or 1000000..100000000").end()
        return
    model = -1
    if sk >= 0:
        for i in range(len(SYR.NAMES)):
            if f.value_is(sk, SYR.NAMES[i]):
                model = i
        if model < 0:
            error(ctl, rid, P.E_RANGE, b"syringe must be BD10, BD20, BD50, STIFF50 or SOFT50").end()
            return
    if au == 1 and (ctl.auth is None or not ctl.auth.provisioned):
        error(ctl, rid, P.E_AUTH, b"no key provisioned: auth cannot be turned on").end()
        return
    if not ctl.configure(occl, hb, hbp, il, va, au, cb, syr):
        # not stored: nothing changes (the settings in force are the stored ones)
        error(ctl, rid, P.E_FAULT, b"settings not stored (storage error)").end()
        return
    if model >= 0:
        ctl.set_syringe(model)        # the pump's syringe model: not stored (the clamp re-picks)
    _settings_reply(ctl, rid)


def _settings_reply(ctl, rid):
    """CFG's and SETTINGS's reply: every setting now in force."""
    s = ctl.settings
    tx = ok(ctl, rid)
    tx.field_int(b"occl_mmhg", s.occl_mmhg)
    tx.field_int(b"hb_ms", s.hb_ms)
    tx.field_lit(b"hb_action", b"pause" if s.hb_pause else b"continue")
    tx.field_int(b"interlock", s.interlock)
    tx.field_int(b"vitals_age_ms", s.vitals_age_ms)
    tx.field_int(b"auth", s.auth)
    tx.field_int(b"callback_ms", s.callback_ms)
    tx.field_int(b"syr_nl", ctl.syr_nl)
    tx.field_lit(b"syringe", SYR.NAMES[ctl.syr])
    tx.end()
