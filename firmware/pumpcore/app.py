"""The imperative shell shared by every board: read the board, step the controller, drive it.

`App.tick()` is one pass of the main loop. The real board's `main.py`, the simulated board
under the `micropython` interpreter and the in-process CPython simulator all call exactly
this, so the simulated board cannot drift from the real one.

A board provides: `ticks_ms()`, `read_inputs(inp)`, `uart_read(buf) -> n`,
`uart_write(buf, n)`, `drive(out)` (steps, enable, alarm signal), `feed_watchdog()`,
`wait_next(deadline_ms)`, and the attributes `NL_PER_KSTEP`, `DEVICE_ID`, `LIB_PATH`.
Optional: `store` (a `pumpcore.store` file store for the event log; None = no log),
`log_key` (bytes: the chain becomes an HMAC chain), `reset_cause()` (str), `LOG_INTERVAL_MS`.

The event log (`pumpcore.eventlog`, docs/safety/) is written here, never inside the
controller: every command received (except the read-only polls), every reply to one, every
event frame, a therapy snapshot whenever the state or program changes, and the delivered
volume. Retention (docs/safety/log-retention.md) shapes what goes in:

* the delivered volume is kept every `LOG_INTERVAL_MS` while the motor may move in a
  *heartbeat* file `hb` (one line, replaced atomically: no log record), hashed onto the last
  TH/DEL record it follows; a `DEL` record goes into the log only every `AUDIT_MS` (and
  only when the volume changed), or whenever the heartbeat cannot be written;
* requests are *therapy* traffic (accepted guarded commands, and PAUSE/STOP when they
  changed the state), logged in full up to `_CMD_PER_S` a second, or *noise* (refused
  frames of any kind, open commands that changed nothing: TLM, SETTINGS, LIB, DRUG, …,
  which a peer without the key can send): noise is logged from a bucket of `NOISE_BURST`
  requests refilled one per `NOISE_MS`, the rest counted in a `DROP` record written when
  the bucket refills (so a flood cannot push older records, refused AUTH attempts
  included, out of the log). The records of one tick are
committed in one append *before* that tick's steps and bytes go out (write-ahead), so a
reply the host has seen is always on flash, and the motor never runs ahead of the record. At boot the log is verified and folded; an interrupted infusion is handed
to the controller's recovery entry point (it comes up paused, never infusing).
"""
import gc

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

from pumpcore.ticks import ticks_add, ticks_diff, TICK_MS
from pumpcore import fsm
from pumpcore import VERSION

_RX_CHUNK = const(256)
_LINE = const(160)           # longest request line logged (the protocol's MAX_FRAME)
LOG_INTERVAL_MS = 10000      # delivered volume kept (heartbeat) at least this often while infusing
AUDIT_MS = 300000            # a DEL record in the log at most this often (the audit trail)
_CMD_PER_S = const(20)       # therapy request lines logged per second at most (the excess is
                             # counted in a DROP record)
NOISE_BURST = 16             # noise requests logged from a full bucket
NOISE_MS = 3600000           # one noise request (or DROP summary) more per hour
_READS = const((b"STATUS", b"HELLO", b"HB", b"LOG"))   # polls: not logged


class App:
    def __init__(self, board):
        self.board = board
        # Boot order keeps the heap peak low: the drug library is read and checked (json,
        # boot-only code) before the controller's modules are imported (pumpcore.boot).
        from pumpcore import boot
        self.ctl = boot.build_controller(board)   # library, settings, key; FAULT when corrupt
        boot.drop("pumpcore.boot")                # boot-only code (MicroPython: back to the heap)
        boot = None
        from pumpcore.controller import Inputs
        self.inp = Inputs()
        self.rx = bytearray(_RX_CHUNK)
        self.log = None
        self.recovered = None       # the eventlog.Therapy of an interrupted infusion, if any
        self.log_check = None       # the eventlog.Verify of the log found at boot
        store = getattr(board, "store", None)
        if store is not None:
            self._boot_log(store)
        gc.collect()                # leave the boot garbage behind before the first tick
        if store is not None and hasattr(store, "reserve"):
            store.reserve()         # room for the store's next transient file (pumpcore.store)

    def tick(self):
        b = self.board
        now = b.ticks_ms()
        b.read_inputs(self.inp)
        n = b.uart_read(self.rx)
        out = self.ctl.step(now, self.inp, self.rx, n)
        if self.log is not None:
            # write-ahead: this tick's records are on flash before its steps and bytes go out
            self._log_tick(now, n, out)
        b.drive(out)
        if out.tx.n:
            b.uart_write(out.tx.buf, out.tx.n)
        b.feed_watchdog()
        return out

    # ------------------------------------------------------------ event log
    def _boot_log(self, store):
        from pumpcore.eventlog import open_log
        b = self.board
        from pumpcore.eventlog import LOG_BYTES
        kb = getattr(b, "LOG_BYTES", LOG_BYTES)
        cap = getattr(store, "capacity", None)
        if cap and cap // 2 < kb:
            kb = cap // 2                   # a smaller flash: half of it for the log
        log, v, th = open_log(store, getattr(b, "log_key", None), keep_bytes=kb)
        self.log = log
        self.log_check = v
        self._line = bytearray(_LINE)
        self._ln = 0
        self._skip = []
        self._cmd_budget = _CMD_PER_S
        self._fault_logged = False      # the log's write failure has been raised as a FAULT
        self._cmd_sec = 0
        self._dropped = 0
        self._reqs = []                 # this tick's request lines: (rid, word, line)
        self._noise = NOISE_BURST       # the noise bucket (tokens)
        self._noise_t = 0
        self._noise_drop = 0            # noise requests not logged since the last DROP
        self._noise_auth = 0            # ... of them refused ER AUTH
        self._interval = getattr(b, "LOG_INTERVAL_MS", LOG_INTERVAL_MS)
        self._audit = getattr(b, "AUDIT_MS", AUDIT_MS)
        self._ref_d = -1                # delivered volume in the last TH/DEL record
        self._hb_d = -1                 # ... in the last heartbeat
        self._pg = 0                    # seq of the TH record of the program in force
        self._old_pg = 0                # program file to remove once the next TH is on flash
        now = b.ticks_ms()
        self._cmd_sec = now
        self._noise_t = now
        hb_bad = th.hb_bad
        dmg = v.damaged + hb_bad
        self.ctl.log_damage = dmg if dmg else (0 if v.ok else 1)
        # a damaged record (or heartbeat) after the therapy record
        stale = v.last_damaged > th.seq or hb_bad
        if stale and (th.interrupted() or th.state != b"IDLE"):
            # it may have been a later state (a STOP) or a later volume: never restore from
            # the older record in its place
            self.ctl.unrecoverable()
        elif th.interrupted():
            self.recovered = th
            if self._recover(th) == b"program":
                self._pg = th.pg            # the same program file serves this boot
        for name in store.names():          # program files no record refers to any more
            if name.startswith("pg") and name != _pg_name(self._pg):
                store.remove(name)
        self._last = self._key()
        self._next_del = now
        self._ub = 0
        log.snapshot = self._snapshot
        cause = b.reset_cause() if hasattr(b, "reset_cause") else "?"
        log.add(now, b"BOOT", b"n=%d fw=%s reset=%s" % (log.boots + 1, VERSION.encode(),
                                                        cause.encode()))
        if v.tail_kid is not None and v.tail_kid != log.kid:
            # re-flashed with another key: older segments verify under theirs (key ring)
            log.add(now, b"KEY", b"kid=%s old=%s" % (log.kid, v.tail_kid))
        if not v.ok:
            log.add(now, b"FAULT", b"log chain broken at seq=%d: %s" % (v.bad_seq, v.reason.encode()))
        if v.torn:
            log.add(now, b"REC", b"torn=%d (writes cut by a power loss)" % v.torn)
        if hb_bad:
            log.add(now, b"REC", b"heartbeat damaged: not used")
        if v.damaged:
            log.add(now, b"REC", b"damaged=%d last=%d (skipped; later records verified)" % (
                v.damaged, v.last_damaged))
            if stale:
                log.add(now, b"REC", b"therapy record damaged after seq=%d: nothing restored" % th.seq)
        if self.recovered is not None:
            log.add(now, b"REC", b"interrupted st=%s r=%d v=%d dr=%s d=%d ub=%d el=%d" % (
                th.state, th.rate, th.vtbi, th.drug, th.delivered, th.bound, th.el_ms))
        self._th(now)
        log.commit()
        self.ctl.log_source = self          # the LOG command reads the log through export()

    def _beat(self, now, d):
        """Replace the heartbeat (write-ahead, like a record). False when it could not be
        written (the caller logs a DEL record instead)."""
        ref = self._lg().th_ref      # the last committed TH/DEL record (segment headers too)
        if ref is None:
            return False
        c = self.ctl
        try:
            self._lg().beat(ref, now, b"d=%d ub=%d el=%d b=%d k=%d" % (
                d, self._ub, c.el_ms, c.bolus_total_nl(), c.kvo_nl()))
        except (OSError, MemoryError):
            return False
        self._hb_d = d
        return True

    def export(self, ctl, rid, frm, mx):
        """Answer `LOG from=frm max=mx`: `OK n= next=`, then n `! LG` frames.

        Each record becomes `! LG seq= t_ms= ev=` plus the `key=value` tokens of its data
        that are valid frame fields; other words go, joined by `_`, into `txt=` (cut to the
        32-byte value limit). As many records are sent as fit in the transmit buffer; `next`
        tells the host where to continue. Runs at command time, never in the control tick;
        `EventLog.page` reads only the segments the range is in and verifies only the records
        it returns, so a request costs the same on a full log as on an empty one.
        """
        from pumpcore.commands import ok
        tx = ctl.out.tx
        frames = []
        room = len(tx.buf) - tx.n - 48                 # keep space for the OK reply
        log = self.log
        for r in (log.page(frm, mx) if log is not None else ()):
            f = _lg_frame(r)
            if f is None:
                continue
            if len(f) > room:
                break
            room -= len(f)
            frames.append((r.seq, f))
        t = ok(ctl, rid)
        t.field_int(b"n", len(frames))
        t.field_int(b"next", frames[-1][0] + 1 if frames else frm)
        t.end()
        for _, f in frames:
            tx.put_span(f, 0, len(f))

    def _recover(self, th):
        """Hand an interrupted infusion to the controller (it restores it PAUSED, with a
        latched RESTART alarm). The whole program comes back from its program file (every
        segment with its rate and volume as last titrated, drug, dose, weight,
        concentration, KVO); the delivered volume passed is the record's upper bound `ub`,
        the volume since the record counted as basal (or KVO in KVO): RESUME can then
        under-deliver by at most one logging interval, and never deliver twice what was
        already given. Without a readable program file matching the record, the program
        comes back as one segment at the recorded rate (the old behaviour). Returns the
        form restored: b"program" or b"single"."""
        c = self.ctl
        di = -1
        if c.lib is not None:
            for i in range(len(c.lib.names)):
                if c.lib.names[i] == th.drug:
                    di = i
        d = th.bound if th.bound > th.delivered else th.delivered
        pg = _read_program(self.board.store, th.pg) if th.pg else None
        if pg is not None:
            extra = d - th.delivered
            k = th.kvo_nl + (extra if th.state == b"KVO" else 0)
            basal = d - th.bolus - k
            if c.recover_program(th.state, pg, di, basal, th.bolus, k, th.el_ms):
                return b"program"
        if d > th.vtbi:
            d = th.vtbi
        c.recover(th.state, th.rate, th.vtbi, d, di, th.kvo)
        return b"single"

    def _rate(self):
        """The highest rate the motor may follow now (µL/h): basal, bolus or KVO."""
        c = self.ctl
        x = c.current_rate()
        return x if x > c.rate else c.rate

    def _lg(self):
        log = self.log
        assert log is not None
        return log

    def _key(self):
        c = self.ctl
        return (c.fsm.state, self._rate(), c.vtbi, c.drug, c.prog_gen)

    def _bound(self, d):
        """Delivered volume the pump cannot pass before the next DEL record (nL): the
        interval (+ two ticks of lateness) at the current rate, plus one microstep."""
        c = self.ctl
        return d + self._rate() * (self._interval + 2 * TICK_MS) // 3600 + c.cfg.nl_per_kstep // 1000 + 1

    def _snapshot(self):
        c = self.ctl
        dr = c.lib.names[c.drug] if (c.drug >= 0 and c.lib is not None) else b"-"
        return b"st=%s r=%d v=%d dr=%s do=%d kv=%d d=%d ub=%d el=%d b=%d k=%d pg=%d" % (
            fsm.STATE_NAMES[c.fsm.state], c.rate, c.vtbi, dr, c.dose_ug, c.kvo,
            self.ctl.delivered_nl(), self._ub, c.el_ms, c.bolus_total_nl(), c.kvo_nl(), self._pg)

    def _save_program(self, now):
        """Write the accepted program (every segment) to its own file `pg<seq>`, named by
        the seq of the TH record about to reference it, before that record is committed
        (write-ahead). Older program files are removed once the record is on flash."""
        c = self.ctl
        log = self._lg()
        pid = log.seq + 1               # unique: a seq is never used twice
        st = self.board.store
        try:
            try:
                st.write(_pg_name(pid), _program_bytes(c))
            except OSError:
                if not log.make_room():     # a full flash: the oldest segment goes
                    raise
                st.write(_pg_name(pid), _program_bytes(c))
        except OSError:
            return False
        self._old_pg = self._pg
        self._pg = pid
        return True

    def _th(self, now):
        d = self.ctl.delivered_nl()
        self._ub = self._bound(d) if self._rate() > 0 or self.ctl.fsm.state == fsm.RUNNING else d
        self._next_del = ticks_add(now, self._interval)
        self._next_audit = ticks_add(now, self._audit)
        log = self._lg()
        log.add(now, b"TH", self._snapshot())
        self._ref_d = d

    def _log_tick(self, now, n, out):
        log = self._lg()
        if n:
            self._log_rx(now, n)
        c = self.ctl
        st = c.fsm.state
        last = self._last
        changed = (st != last[0] or self._rate() != last[1] or c.vtbi != last[2]
                   or c.drug != last[3] or c.prog_gen != last[4])
        if out.tx.n or self._reqs:
            self._log_tx(now, out.tx.buf, out.tx.n, st != last[0])
        if changed:
            if c.prog_gen != last[4] and c.nseg > 0:
                if not self._save_program(now) and not self._fault_logged:
                    self._fault_logged = True
                    c.storage_fault(b"program not stored")
            elif c.nseg == 0:
                self._pg = 0            # stopped: no program to recover
            self._last = self._key()
            self._th(now)
        elif (st == fsm.RUNNING or self._rate() > 0) and ticks_diff(now, self._next_del) >= 0:
            d = self.ctl.delivered_nl()
            moving = st == fsm.RUNNING or st == fsm.KVO or out.enable
            self._next_del = ticks_add(now, self._interval)
            if moving or d != self._hb_d:
                self._ub = self._bound(d)
                if ((ticks_diff(now, self._next_audit) >= 0 and d != self._ref_d)
                        or not self._beat(now, d)):
                    self._next_audit = ticks_add(now, self._audit)
                    log.add(now, b"DEL", b"d=%d ub=%d el=%d b=%d k=%d" % (
                        d, self._ub, c.el_ms, c.bolus_total_nl(), c.kvo_nl()))
                    self._ref_d = d
        if self._noise_drop and ticks_diff(now, self._noise_t) >= NOISE_MS:
            self._noise_refill(now)     # the count of a flood is written once it is over too
        if self._skip:
            self._skip.clear()
        if log._pending:
            if not log.commit():
                # write-ahead broken: nothing of this tick goes to the motor, the FAULT alarm
                # stops delivery; STOP and PAUSE keep working (issue 10)
                out.steps = 0
                out.enable = False
                if not self._fault_logged:
                    self._fault_logged = True
                    c.storage_fault(b"event log not writable")
            else:
                if self._fault_logged:
                    self._fault_logged = False
                    c.storage_ok()
                if self._old_pg:
                    self.board.store.remove(_pg_name(self._old_pg))
                    self._old_pg = 0

    def _log_rx(self, now, n):
        buf = self._line
        rx = self.rx
        k = 0
        retries = self.ctl.retry_mask
        for i in range(n):
            ch = rx[i]
            if ch == 10:
                m = self._ln
                self._ln = 0
                if m and buf[m - 1] == 13:
                    m -= 1
                if m:
                    if k < 30 and (retries >> k) & 1:
                        # a retry answered from the cache: the command and its reply are
                        # logged once, when first executed
                        self._skip.append(bytes(buf[:m]).split(b" ", 1)[0])
                    else:
                        self._take_line(buf, m)
                    k += 1
            elif self._ln < _LINE:
                buf[self._ln] = ch
                self._ln += 1

    def _take_line(self, buf, m):
        """A request line: polls are skipped, the rest waits for its reply (_log_tx)."""
        line = bytes(buf[:m])
        star = line.find(b"*")
        if star >= 0:
            line = line[:star]
        p = line.split(b" ", 2)
        if len(p) >= 2 and p[1] in _READS:
            self._skip.append(p[0])
            return
        self._reqs.append((p[0], p[1] if len(p) >= 2 else b"", line))

    def _therapy(self, word, reply, state_changed):
        """A request is therapy traffic when it was accepted and is a guarded command (signed
        when the pump requires it), or PAUSE/STOP that changed the state; all else is noise."""
        if b" OK" not in reply[:14]:
            return False
        if word in fsm.CMD_WORDS:
            if fsm.command_class(fsm.CMD_WORDS.index(word)) == fsm.CLS_GUARDED:
                return True
            return state_changed and (word == b"PAUSE" or word == b"STOP")
        return False

    def _noise_refill(self, now):
        """Refill the noise bucket (one token per NOISE_MS); when it refilled after drops,
        the DROP summary is written first and takes a token."""
        el = ticks_diff(now, self._noise_t)
        if el < 0 or el >= NOISE_MS * NOISE_BURST:
            self._noise = NOISE_BURST
            self._noise_t = now
        elif el >= NOISE_MS:
            k = el // NOISE_MS
            self._noise = self._noise + k if self._noise + k < NOISE_BURST else NOISE_BURST
            self._noise_t = ticks_add(self._noise_t, k * NOISE_MS)
        if self._noise > 0 and self._noise_drop:
            self._noise -= 1
            self._lg().add(now, b"DROP", b"n=%d auth=%d noise requests not logged (rate limit)" % (
                self._noise_drop, self._noise_auth))
            self._noise_drop = 0
            self._noise_auth = 0

    def _noise_token(self, now):
        """Take a token from the noise bucket (False: none left, the request is counted)."""
        self._noise_refill(now)
        if self._noise > 0:
            self._noise -= 1
            return True
        return False

    def _therapy_budget(self, now):
        el = ticks_diff(now, self._cmd_sec)
        if el >= 1000 or el < 0:
            self._cmd_sec = now
            self._cmd_budget = _CMD_PER_S
            if self._dropped:
                self._lg().add(now, b"DROP", b"n=%d request lines not logged (rate limit)" % self._dropped)
                self._dropped = 0
        if self._cmd_budget <= 0:
            self._dropped += 1
            return False
        self._cmd_budget -= 1
        return True

    def _log_tx(self, now, buf, n, state_changed):
        """Log this tick's requests with their replies, then its event frames."""
        reqs = self._reqs
        replies = {}
        evs = []
        i = 0
        while i < n:
            j = i
            while j < n and buf[j] != 10:
                j += 1
            if j - i >= 4:
                if buf[i] == 33:        # "!": an unsolicited frame; log events, not telemetry
                    if buf[i + 2] == 69 and buf[i + 3] == 86:   # "EV"
                        evs.append(_strip(buf, i + 2, j))
                else:
                    line = _strip(buf, i, j)
                    rid = line.split(b" ", 1)[0]
                    if rid in self._skip:
                        self._skip.remove(rid)
                    elif rid in replies:
                        replies[rid].append(line)
                    else:
                        replies[rid] = [line]
            i = j + 1
        log = self._lg()
        for rid, word, line in reqs:
            rs = replies.pop(rid, None)
            rsp = rs.pop(0) if rs else None
            if rs:
                replies[rid] = rs
            if self._therapy(word, rsp or b"", state_changed):
                keep = self._therapy_budget(now)
            else:
                keep = self._noise_token(now)
                if not keep:
                    self._noise_drop += 1
                    if rsp is not None and b" ER AUTH" in rsp[:24]:
                        self._noise_auth += 1
            if keep:
                log.add(now, b"CMD", line)
                if rsp is not None:
                    log.add(now, b"RSP", rsp)
        for rid in replies:                 # replies to lines that had no request id
            for rsp in replies[rid]:
                if self._noise_token(now):
                    log.add(now, b"RSP", rsp)
                else:
                    self._noise_drop += 1
        reqs.clear()
        for e in evs:
            log.add(now, b"EV", e)


def _strip(buf, i, j):
    """A frame line without its `*CRC` (bytes)."""
    k = i
    while k < j and buf[k] != 42:   # up to "*CRC"
        k += 1
    return bytes(buf[i:k])


def _pg_name(pid):
    return "pg%d" % pid


def _program_bytes(c):
    """The program file: `n= r=r0,r1,.. v=v0,v1,.. dr= do= wt= co= dh= kv=` (ASCII)."""
    n = c.nseg
    rs = b",".join([b"%d" % c.seg_rate[i] for i in range(n)])
    vs = b",".join([b"%d" % c.seg_vol[i] for i in range(n)])
    return b"n=%d r=%s v=%s do=%d wt=%d co=%d dh=%d kv=%d\n" % (
        n, rs, vs, c.dose_ug, c.wt_g, c.conc, c.dose_h, c.kvo)


def _read_program(store, pid):
    """The program file `pg<pid>` as a dict of ints / int lists, or None (missing, torn)."""
    raw = store.read(_pg_name(pid))
    if not raw or not raw.endswith(b"\n"):
        return None
    out = {}
    try:
        for tok in raw.strip().split(b" "):
            k, v = tok.split(b"=")
            if k in (b"r", b"v"):
                out[k] = [int(x) for x in v.split(b",")]
            else:
                out[k] = int(v)
        if len(out[b"r"]) != out[b"n"] or len(out[b"v"]) != out[b"n"]:
            return None
    except (ValueError, KeyError):
        return None
    return out


def run(board):
    """Main loop for a real board: a step at every control tick and telemetry deadline,
    and at once when UART bytes arrive (the board's wait_next returns early for them)."""
    app = App(board)
    while True:
        app.tick()
        board.wait_next(app.ctl.wake_at())


def _lg_word(w):
    """A token as a frame value: printable, without '*', '=' and spaces."""
    out = bytearray(w)
    for i in range(len(out)):
        c = out[i]
        if c < 33 or c > 126 or c == 42 or c == 61:
            out[i] = 95
    return bytes(out)


_LG_FIELDS = const(8)        # data fields per LG frame: seq t_ms ev + 8 + txt = 12 fields


def _lg_value_ok(key, val):
    """A data token's value may be copied as a field: printable, no '*' or '=', and a value
    made only of digits is a number as the grammar writes them (no leading zero, < 2**30)."""
    from pumpcore import protocol as P
    if not (0 < len(val) <= P.MAX_VALUE) or b"=" in val or b"*" in val:
        return False
    for c in val:
        if c < 33 or c > 126:
            return False
    if val.isdigit():
        return (len(val) == 1 or val[0] != 48) and len(val) <= 10 and int(val) < (1 << 30)
    return True


def _lg_frame(r):
    """One log record as a complete `! LG …` frame (bytes, with CRC), or None. The frame
    keeps the grammar whatever the record holds (refused input included): at most 12
    fields, every key once, numbers canonical; everything else goes, joined by `_`, into
    `txt=` (cut to 32 bytes)."""
    from pumpcore import protocol as P
    b = P.TxBuffer(P.MAX_FRAME + 8)
    b.begin(P.ID_EVENT)
    b.put(b" LG")
    b.field_int(b"seq", r.seq)
    b.field_int(b"t_ms", r.t)
    b.field_lit(b"ev", _lg_word(r.ev)[:P.MAX_VALUE])
    txt = []
    keys = [b"seq", b"t_ms", b"ev", b"txt"]
    for tok in r.data.split(b" "):
        if not tok:
            continue
        q = tok.find(b"=")
        key = tok[:q] if q > 0 else b""
        val = tok[q + 1:] if q > 0 else b""
        good = (0 < len(key) <= P.MAX_KEY and _lg_value_ok(key, val)
                and all((97 <= c <= 122) or (48 <= c <= 57) or c == 95 for c in key))
        if (good and key not in keys and len(keys) - 4 < _LG_FIELDS
                and b.n + len(tok) + 1 < P.MAX_FRAME - 8 - 40):
            keys.append(key)
            b.put(b" ")
            b.put(tok)
        else:
            txt.append(_lg_word(tok))
    if txt:
        v = b"_".join(txt)[:P.MAX_VALUE]
        if v.isdigit() and not _lg_value_ok(b"txt", v):
            v = (b"_" + v)[:P.MAX_VALUE]     # digits alone are a canonical number
        if b.n + len(v) + 6 < P.MAX_FRAME - 8:
            b.field_lit(b"txt", v)
    return bytes(b.buf[:b.n]) if b.end() else None
