"""The pump's event log and therapy record: an append-only hash chain on non-volatile storage.

One record per line, ASCII, so that it can be exported as `LOG` frames as it is:

    <seq> <t_ms> <EV> <data> #<h>\\n

* `seq` counts records from 1 and never restarts (it survives reboots); `t_ms` is the board
  clock; `EV` is the record type (below); `data` is printable ASCII without `#`;
* `h` is 16 hex digits: the first 8 bytes of SHA-256(prev ‖ body), where `body` is the line up
  to and including the space before `#` and `prev` is the previous record's 8 hash bytes.
  With a device key, HMAC-SHA256(key, prev ‖ body) instead, so that a chain cannot be
  rewritten without the key. Any change to a record (a bit flip, an edit, a deletion, a
  reordering) breaks the chain at that record: `verify()` finds it.

Records live in segments `log000001`, `log000002`, … of at most `seg_records` records; the
oldest are deleted while the segments hold more than `keep_bytes` bytes (or there are more
than `keep` of them): retention is a byte budget on the flash (docs/safety/log-retention.md).
A boot appends to the last segment when it ends in a good record (a daily reboot costs no
segment). The first record of every segment is a `TH` (therapy) snapshot carrying
`kid=<k>` (the key it is written under: 8 hex digits of SHA-256("infusekit-log-kid" ‖ key),
`-` for none) and `ph=<h>`, the hash of the record before it, so a segment can be verified
alone and the chain across segments checked.

Keys: every segment is verified under the key it was written with. The log keeps each device
key it has written under in a key-ring file `lk<kid>` of the same store, so a re-flash that
provisions a new key does not break the history: the next record starts a new segment under
the new key (the app logs a `KEY` record), and older segments still verify under theirs.
A segment whose key is not in the ring is reported as damaged, never trusted. A segment may end in one torn line
(power lost in the middle of an append on a store that tears writes); the next boot then
starts a new segment, and `verify()` accepts a torn tail only where the next segment's `ph`
proves nothing after it was committed.

Record types written by `pumpcore.app`:

    BOOT  n=<boot count> fw=<version> reset=<cause>
    CMD   <request line as received, without its CRC>
    RSP   <reply line, without its CRC>
    EV    <event line (state change, alarm, clear), without its CRC>
    TH    st=<state> r=<µL/h> v=<nL> dr=<drug> do=<µg> kv=<µL/h> d=<nL> ub=<nL> el=<ms>
          b=<bolus nL> k=<KVO nL> pg=<seq of the program's file pg<seq>> [ph=<h>]
    DEL   d=<delivered nL> ub=<bound nL> el=<ms> b=<bolus nL> k=<KVO nL>
    REC   <what was recovered after a reset>
    FAULT <storage or other internal fault>
    KEY   kid=<new key id> old=<previous key id>   (the device key changed: a re-flash)
    DROP  <requests not logged: the rate limits of pumpcore.app>

The heartbeat: between two DEL records the app keeps the delivered volume in the file `hb`
of the same store, one line replaced atomically every logging interval (no record, so it
costs no retention): `<seq> <t_ms> HB rh=<h> d= ub= el= b= k= #<h>`, where `seq` and `rh`
are the TH/DEL record it follows and its hash, and `h` the hash (keyed like the records)
of the line's body.
`open_log` folds it into the therapy record when it follows the last TH/DEL record; an
older one is superseded; a damaged one, or one that follows a record the log no longer
has, is never used and is reported (`Therapy.hb_bad`).

`d` is the volume delivered when the record was written; `ub` is a bound the pump
guarantees not to pass before it writes the next record (the app writes a `DEL` well before
delivery can reach it), so after a power cut the volume actually delivered lies in
[d, ub] of the last record: the therapy record is right to within one logging interval.
"""
try:
    import hashlib
except ImportError:  # pragma: no cover - very old ports
    import uhashlib as hashlib  # type: ignore
try:
    import binascii
except ImportError:  # pragma: no cover
    import ubinascii as binascii  # type: ignore

from pumpcore.store import PowerCut

try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

SEG_RECORDS = 256        # records per segment
KEEP_SEGS = 256          # segments kept at most (the byte budget below is what binds)
LOG_BYTES = 720 * 1024   # bytes of segments kept (oldest deleted beyond): the Pico's budget,
                         # docs/safety/log-retention.md
_MAX_DATA = const(200)   # bytes of data per record (longer data is cut)
_GENESIS = const(b"\x00\x00\x00\x00\x00\x00\x00\x00")
_PENDING = const(512)    # bytes of the pending-records buffer made at boot (a PROG tick's
                         # CMD + RSP + TH records are ~450 B); it grows when a tick needs more
_PREFIX = const("log")
_HB_NAME = const("hb")
del const   # compile-time only (each module global is a slot of heap on the board)


def _idle():
    return bytes(b"st=IDLE")


def key_id(key):
    """The key's id in segment headers and key-ring names: 8 hex digits (bytes), b"-" for
    none. One-way: it names the key without revealing it."""
    if not key:
        return b"-"
    h = hashlib.sha256(b"infusekit-log-kid")
    h.update(key)
    return binascii.hexlify(h.digest()[:4])


def _pads(key):
    k = key if len(key) <= 64 else hashlib.sha256(key).digest()
    k = k + b"\x00" * (64 - len(k))
    return (bytes([c ^ 0x36 for c in k]), bytes([c ^ 0x5C for c in k]))


def _seg_name(n):
    s = str(n)
    return _PREFIX + "0" * (6 - len(s)) + s


def _seg_no(name):
    if not name.startswith(_PREFIX) or len(name) != 9:
        return -1
    try:
        return int(name[3:])
    except ValueError:
        return -1


class Record:
    __slots__ = ("seq", "t", "ev", "data", "h")

    def __init__(self, seq, t, ev, data, h):
        self.seq = seq
        self.t = t
        self.ev = ev
        self.data = data
        self.h = h

    def field(self, key, default=None):
        """Value of `key=` in data (bytes), or default."""
        k = key + b"="
        for tok in self.data.split(b" "):
            if tok.startswith(k):
                return tok[len(k):]
        return default

    def ifield(self, key, default=0):
        v = self.field(key)
        try:
            return int(v) if v is not None else default
        except ValueError:
            return default


class Verify:
    """Result of a chain check. `ok` is False when any committed record is missing or bad."""

    def __init__(self):
        self.ok = True
        self.records = 0
        self.first = 0
        self.last = 0
        self.torn = 0          # torn tails found (power cuts during an append)
        self.bad_seq = 0       # first seq at which the chain broke (0: none)
        self.damaged = 0       # records found damaged and skipped (later ones still read)
        self.last_damaged = 0  # seq of the last damaged record (0: none)
        self.tail_count = 0    # records in the last segment
        self.tail_clean = False  # the last segment ends in a whole, good record
        self.tail_kid = None  # type: bytes | None  # key id of the last segment (None: no segment)
        self.reason = ""

    def fail(self, seq, reason):
        if self.ok:
            self.ok = False
            self.bad_seq = seq
            self.reason = reason


def parse_line(line):
    """(Record, body_end) for one line without its newline, or None if it is malformed."""
    i = line.rfind(b" #")
    if i < 0 or len(line) - i != 18:
        return None
    body = line[: i + 1]
    p = body.split(b" ", 3)
    if len(p) < 4:
        return None
    try:
        seq = int(p[0])
        t = int(p[1])
    except ValueError:
        return None
    data = p[3]
    if data.endswith(b" "):
        data = data[:-1]
    return Record(seq, t, p[2], data, line[i + 2:]), i + 1


class EventLog:
    def __init__(self, store, key=None, seg_records=SEG_RECORDS, keep=KEEP_SEGS,
                 keep_bytes=LOG_BYTES):
        self.store = store
        self.seg_records = seg_records
        self.keep = keep
        self.keep_bytes = keep_bytes
        self.kid = key_id(key)       # the key new records are written under
        self._ring = {}              # key id -> (ipad, opad) of every key known
        self._pad = None             # the pads records are hashed with now (None: SHA-256)
        if key:
            self._ring[self.kid] = _pads(key)
            self._pad = self._ring[self.kid]
            try:
                if store.read("lk" + self.kid.decode()) != key:
                    store.write("lk" + self.kid.decode(), key)   # the key ring (module doc)
            except OSError:
                pass                 # a full or failing flash: this boot still verifies
        self.sizes = {}              # segment number -> bytes (rotation by bytes)
        self.seq = 0           # last committed (or pending) seq
        self.prev = _GENESIS   # hash bytes of the last record
        self.seg = 0           # current segment number
        self.seg_count = seg_records  # records in the current segment (a full one: the next
                                      # record starts a new segment)
        # the records queued for the next commit: bytes 0.._pending of one buffer made here,
        # at boot, and reused (a buffer grown and copied per tick left holes no later
        # allocation of its size found: the emulated RP2040, docs/performance.md)
        self._buf = bytearray(_PENDING)
        self._pending = 0
        self.snapshot = _idle  # callable -> TH data (bytes) for segment headers
        self.boots = 0
        self.failed = False    # a write failed (storage fault)
        self.dropped_full = 0  # oldest segments removed because the flash was full
        self._rotate_after = False
        self._c = (0, _GENESIS, 0)   # committed head: seq, hash, segment records
        self._first = {}       # segment number -> its first seq (a hint for page())
        self.th_ref = None     # (seq, hash) of the last committed TH/DEL record (a heartbeat
        self._th_ref = None    # follows it; segment headers included) and the pending one

    # ------------------------------------------------------------ hashing
    def _hash(self, prev, body, pad: "tuple | int | None" = 0):
        if isinstance(pad, int):          # 0: this log's own key pads
            pad = self._pad
        if pad is not None:
            h = hashlib.sha256(pad[0])
            h.update(prev)
            h.update(body)
            o = hashlib.sha256(pad[1])
            o.update(h.digest())
            return o.digest()[:8]
        h = hashlib.sha256(prev)
        h.update(body)
        return h.digest()[:8]

    # ------------------------------------------------------------- writing
    def add(self, t, ev, data=b""):
        """Queue one record (hashed now, in order); `commit()` makes it durable."""
        if self.seg_count >= self.seg_records:
            self._start_segment(t)
        self._add(t, ev, data)

    def _add(self, t, ev, data, th=False):
        # the record is written straight into the pending buffer and hashed there (no body,
        # data or header copies at boot: the peak, docs/performance.md)
        self.seq += 1
        if isinstance(ev, str):
            ev = ev.encode()
        if isinstance(data, str):
            data = data.encode()
        s = self._pending
        self._put(b"%d %d %s " % (self.seq, t, ev))
        room = _MAX_DATA - self._put(data, _MAX_DATA)
        if th:                  # a segment header: the key id and the previous record's hash
            room -= self._put(b" kid=", room)
            room -= self._put(self.kid, room)
            room -= self._put(b" ph=", room)
            self._put(binascii.hexlify(self.prev).upper(), room)
        self._put(b" ")
        h = self._hash(self.prev, memoryview(self._buf)[s:self._pending])
        self.prev = h
        if ev == b"TH" or ev == b"DEL":
            self._th_ref = (self.seq, h)
        self._put(b"#")
        self._put(binascii.hexlify(h).upper())
        self._put(b"\n")
        self.seg_count += 1

    def _put(self, b, room=-1):
        """Queue bytes b; room >= 0: as record data, printable ASCII without '#' and
        newlines, at most `room` bytes. Returns the bytes queued."""
        n = self._pending
        k = len(b)
        if 0 <= room < k:
            k = room
        m = n + k
        buf = self._buf
        if m > len(buf):
            big = bytearray(m + _PENDING)   # kept: the next tick this busy needs it again
            big[:n] = buf[:n]
            self._buf = buf = big
        if room < 0:
            buf[n:m] = b
        else:
            for i in range(k):
                c = b[i]
                buf[n + i] = c if (32 <= c <= 126 and c != 35) else 46
        self._pending = m
        return k

    def _start_segment(self, t):
        if self._pending:
            self.commit()
        self.seg += 1
        self.seg_count = 0
        self._first[self.seg] = self.seq + 1
        self._add(t, b"TH", self.snapshot(), True)
        # drop the oldest segments beyond `keep` (after the new one exists)
        self._rotate_after = True

    def commit(self):
        """Write the queued records in one append. Returns False (and sets `failed`) when
        the store refused; raises PowerCut when the (simulated) power failed."""
        if not self._pending:
            return True
        data = memoryview(self._buf)[:self._pending]   # appended (copied) before the next _put
        self._pending = 0
        try:
            try:
                self.store.append(_seg_name(self.seg), data)
            except OSError:
                # a full flash: the oldest segment goes (the log keeps running), then once more
                segs = self.segments()
                if len(segs) < 2:
                    raise
                self.store.remove(_seg_name(segs[0]))
                self.sizes.pop(segs[0], None)
                self.dropped_full += 1
                self.store.append(_seg_name(self.seg), data)
        except PowerCut:
            raise
        except OSError:
            # roll back to the committed head; continue in a fresh segment so that nothing
            # is ever appended after a partial write
            self.failed = True
            self.seq, self.prev, _ = self._c
            self._th_ref = self.th_ref
            self.seg_count = self.seg_records
            return False
        self._c = (self.seq, self.prev, self.seg_count)
        self.th_ref = self._th_ref
        self.sizes[self.seg] = self.sizes.get(self.seg, 0) + len(data)
        if self._rotate_after:
            self._rotate_after = False
            self._rotate()
        return True

    def make_room(self):
        """A write of another file found the flash full: drop the oldest segment (never
        the current one). True when one was removed."""
        segs = self.segments()
        if len(segs) < 2:
            return False
        try:
            self.store.remove(_seg_name(segs[0]))
        except OSError:
            return False
        self.sizes.pop(segs[0], None)
        self.dropped_full += 1
        return True

    def _rotate(self):
        """Drop the oldest segments while more than `keep` of them, or more than
        `keep_bytes` bytes, are kept (never the current one)."""
        segs = self.segments()
        total = 0
        for n in segs:
            total += self.sizes.get(n, 0)
        i = 0
        while len(segs) - i > 1 and (len(segs) - i > self.keep or total > self.keep_bytes):
            n = segs[i]
            try:
                self.store.remove(_seg_name(n))
            except OSError:
                break
            total -= self.sizes.pop(n, 0)
            i += 1

    # ------------------------------------------------------------- reading
    def segments(self):
        segs = []
        for name in self.store.names():
            n = _seg_no(name)
            if n > 0:
                segs.append(n)
        segs.sort()
        return segs

    def scan(self, visit=None):
        """Read and verify every kept record in order; call visit(record) for each good one.
        Returns a `Verify`; sets the writer's head (seq, hash, segment) from what it found."""
        v = Verify()
        self._first = {}
        prev = None            # hash bytes of the last good record
        last_seq = 0           # the highest seq used (a damaged record's too: never reused)
        good = 0               # seq of the last verified record (0: none yet)
        dmg_hi = 0             # a damaged record's own (unverified) seq since then, if plausible
        resync = False
        th_ref = None
        segs = self.segments()
        for si in range(len(segs)):
            n = segs[si]
            if si and n != segs[si - 1] + 1:
                v.fail(last_seq + 1, "segment missing")
            raw = self.store.read(_seg_name(n)) or b""
            self.sizes[n] = len(raw)
            lines = raw.split(b"\n")
            pad = self._pad      # a header without kid (older logs): the current key
            # lines[-1] is b"" after a complete last line, else a torn fragment
            nl = len(lines)
            first = True
            v.tail_count = 0
            v.tail_clean = True
            for li in range(nl):
                line = lines[li]
                is_tail = li == nl - 1
                if is_tail and not line:
                    break
                r = parse_line(line) if not is_tail else None
                ok = False
                if r is not None:
                    rec, be = r
                    if n not in self._first:
                        self._first[n] = rec.seq
                    if first:
                        kid = rec.field(b"kid")
                        v.tail_kid = kid if kid is not None else self.kid
                        if kid is not None:
                            pad = self._pad_of(kid)
                        ph = rec.field(b"ph")
                        if rec.ev != b"TH" or ph is None or len(ph) != 16:
                            p = None
                        else:
                            try:
                                p = binascii.unhexlify(ph)
                            except ValueError:
                                p = None
                        if p is not None and prev is not None and p != prev:
                            v.fail(last_seq + 1, "chain broken between segments")
                    else:
                        p = prev
                    if p is None and resync and not first:
                        # the line after an unreadable one: an anchor, not verified (its
                        # seq neither: it takes one slot, as a damaged record does; the
                        # next record chains from its stored hash, with any seq above the
                        # last verified one)
                        v.damaged += 1
                        v.tail_clean = False
                        try:
                            prev = binascii.unhexlify(rec.h)
                        except ValueError:
                            prev = None
                        last_seq += 1
                        v.last_damaged = last_seq   # never used, never exported: damage too
                        dmg_hi = _plausible(rec.seq, last_seq, dmg_hi, self.seg_records)
                        continue
                    if p is not None and pad is not False:
                        h = self._hash(p, line[:be], pad)
                        # seq continuity against the last *verified* record: a damaged one's
                        # seq is unverified (a bit flip may have raised it) and must not hide
                        # the records after it
                        ok = binascii.hexlify(h).upper() == rec.h and (
                            good == 0 or rec.seq == good + 1 or resync and rec.seq > good)
                if not ok:
                    v.tail_clean = False
                    if is_tail:
                        # an unterminated last line: an append torn by a power cut (it never
                        # returned, so nothing in it was committed)
                        v.torn += 1
                        break
                    # a damaged record (bit flip, edit, torn in the middle): report it, skip
                    # it, and go on from its stored hash (or, when the line is unreadable, from
                    # the next readable line's): the records after it stay readable, each still
                    # verified against its predecessor; the damaged one is never used
                    v.fail(last_seq + 1, "bad record")
                    v.damaged += 1
                    v.last_damaged = last_seq + 1
                    if first and pad is False:
                        # a damaged header may name a key by a damaged kid: unverified, it
                        # must not decide the segment's key (every record would fail): the
                        # rest is checked under the current key
                        pad = self._pad
                        v.tail_kid = self.kid
                    first = False
                    prev = None
                    if r is not None:
                        rec = r[0]
                        try:
                            prev = binascii.unhexlify(rec.h)
                        except ValueError:
                            prev = None
                        dmg_hi = _plausible(rec.seq, last_seq + 1, dmg_hi, self.seg_records)
                    last_seq = last_seq + 1     # a damaged record still took one seq
                    resync = True
                    continue
                first = False
                resync = False
                prev = h
                last_seq = good = rec.seq
                dmg_hi = 0
                v.tail_count += 1
                if v.first == 0:
                    v.first = rec.seq
                v.records += 1
                if rec.ev == b"BOOT":
                    self.boots = rec.ifield(b"n", self.boots)
                elif rec.ev == b"TH" or rec.ev == b"DEL":
                    th_ref = (rec.seq, h)
                if visit is not None:
                    visit(rec)
        self.th_ref = self._th_ref = th_ref
        if dmg_hi > last_seq:
            # the log ends in damage: its own seq may be the true one (lines lost before it);
            # the writer continues above it (a gap, never a repeat; the next record follows a
            # damaged one, so any seq above the last verified one is accepted)
            last_seq = dmg_hi
        return self._head(v, prev, last_seq, segs)

    def _head(self, v, prev, last_seq, segs):
        v.last = last_seq
        self.seq = last_seq
        self.prev = prev if prev is not None else _GENESIS
        self.seg = segs[-1] if segs else 0
        if (segs and v.tail_clean and not v.torn and 0 < v.tail_count < self.seg_records
                and v.tail_kid == self.kid):
            # the last segment ends in a good record: a boot appends to it (a boot per day
            # must not cost a segment each: retention, docs/safety/)
            self.seg_count = v.tail_count
        else:
            self.seg_count = self.seg_records   # after a torn or damaged tail: a new segment
        self._c = (self.seq, self.prev, self.seg_count)
        return v

    def page(self, from_seq=0, limit=32):
        """Up to `limit` verified records with seq >= from_seq, for `LOG`: reads only the
        segments from the one holding `from_seq` (normally one, two across a boundary) and
        hashes only the records it returns (each against the stored hash of the line before
        it, or its segment's `ph`; plus each segment's first line), not the whole chain: the
        cost of a request is bounded by `limit` (docs/performance.md, `fw.log_request_us`). A record that fails its check
        (flash damaged since boot), or whose predecessor cannot be read, is skipped, as
        `scan` skips it."""
        segs = self.segments()
        if not segs:
            return []
        fs = self._first
        k = 0
        for i in range(len(segs)):
            f = fs.get(segs[i])
            if f is not None and f <= from_seq:
                k = i
        out = []
        started = False
        while k < len(segs):
            raw = self.store.read(_seg_name(segs[k])) or b""
            if k > 0 and not started:
                e = raw.find(b"\n")
                f0 = _lead_int(raw, 0, e if e >= 0 else len(raw))   # its first seq (-1: unreadable)
                if f0 > from_seq:
                    k -= 1              # the hint was wrong: the range starts earlier
                    fs[segs[k + 1]] = f0
                    continue
            started = True
            self._page_segment(raw, from_seq, limit, out)
            if len(out) >= limit:
                break
            k += 1
        return out

    def _page_segment(self, raw, from_seq, limit, out):
        """The records of one segment that `scan` accepts, with seq >= from_seq, into out:
        the same acceptance rules (hash against the line before or the segment's `ph`, seq
        continuity, resynchronising after a damaged line), but lines before the range are
        only located, not parsed or hashed."""
        pos = 0
        n = len(raw)
        prev_h = None           # stored hash (hex) of the line before; None: unreadable
        prev_seq = -1           # seq `scan` would hold as last_seq (-1: none yet here)
        good = -1               # seq of the last verified (or in-sequence skipped) line
        first = True
        resync = False
        pad = self._pad         # the segment's key (its header's kid; none named: current)
        while pos < n and len(out) < limit:
            e = raw.find(b"\n", pos)
            if e < 0:
                break                               # a torn tail: never committed
            seq = _lead_int(raw, pos, e)
            if 0 <= seq < from_seq and not first and seq == prev_seq + 1 and _line_ok(raw, pos, e):
                # before the range and in sequence: only its seq and stored hash are needed
                # (a segment's first line, or one out of sequence, is checked as scan does)
                prev_h = raw[e - 16:e]
                prev_seq = good = seq
                first = False
                resync = False
                pos = e + 1
                continue
            line = raw[pos:e]
            pos = e + 1
            r = parse_line(line)
            if r is None:                           # unreadable: the next line is an anchor
                prev_h = None
                if prev_seq >= 0:
                    prev_seq += 1
                first = False
                resync = True
                continue
            rec, be = r
            if first:
                ph = rec.field(b"ph") if rec.ev == b"TH" else None
                link = ph if ph is not None and len(ph) == 16 else None
                kid = rec.field(b"kid") if rec.ev == b"TH" else None
                if kid is not None:
                    pad = self._pad_of(kid)
            elif prev_h is None and resync:
                # the line after an unreadable one: an anchor, not verified, its seq
                # neither (as in scan)
                prev_h = rec.h
                if prev_seq >= 0:
                    prev_seq += 1
                continue
            else:
                link = prev_h
            ok = False
            if link is not None and pad is not False:
                try:
                    ok = binascii.hexlify(self._hash(binascii.unhexlify(link), line[:be], pad)).upper() == rec.h
                except ValueError:
                    ok = False
                ok = ok and (good < 0 or rec.seq == good + 1 or resync and rec.seq > good)
            if first and not ok and pad is False:
                pad = self._pad             # a damaged header's kid is not trusted (as in scan)
            first = False
            prev_h = rec.h
            if ok:
                prev_seq = good = rec.seq
                resync = False
                if rec.seq >= from_seq:
                    out.append(rec)
            else:
                if prev_seq >= 0:
                    prev_seq += 1           # its own seq is unverified (as in scan)
                resync = True

    def beat(self, ref, t, data):
        """Replace the heartbeat file: `data` follows record `ref` = (seq, hash bytes), a
        committed TH/DEL record. Raises OSError when the store refused."""
        body = b"%d %d HB rh=%s %s " % (ref[0], t, binascii.hexlify(ref[1]).upper(), data)
        h = binascii.hexlify(self._hash(_GENESIS, body)).upper()
        self.store.write(_HB_NAME, body + b"#" + h + b"\n")

    def fold_heartbeat(self, th, kid=None):
        """Apply the heartbeat to the folded therapy record `th` when it follows that
        record. Returns 1 when it is damaged or follows a record the log no longer has.
        `kid`: the key it was written under (the last segment's: a re-flash changes the
        key only from the next record on). The heartbeat's own hash covers every field
        (its seq too), so a damaged one is never mistaken for a superseded one."""
        raw = self.store.read(_HB_NAME)
        if not raw:
            return 0
        r = parse_line(raw[:-1]) if raw.endswith(b"\n") else None
        if r is None:
            return 1
        hb, be = r
        pad = self._pad_of(kid) if kid is not None else 0
        if pad is False:
            return 1
        if binascii.hexlify(self._hash(_GENESIS, raw[:be], pad)).upper() != hb.h:
            return 1
        if hb.seq < th.seq:
            return 0                    # older than the last therapy record: superseded
        if hb.seq > th.seq or hb.field(b"rh") != th.h:
            return 1                    # it follows a record the log does not have
        th.beat(hb)
        return 0

    def _pad_of(self, kid):
        """The pads of key `kid` (None: no key, SHA-256), or False when this pump does not
        know that key (its key-ring file is missing: the segment cannot be verified)."""
        if kid == b"-":
            return None
        p = self._ring.get(kid)
        if p is None:
            k = None
            try:
                k = self.store.read("lk" + kid.decode())
            except (OSError, UnicodeError):
                k = None
            if not k or key_id(k) != kid:
                return False
            p = self._ring[kid] = _pads(k)
        return p

    def records(self, from_seq=0, limit=1 << 30):
        """The verified records with seq >= from_seq (a list; for export and tests)."""
        out = []

        def visit(r):
            if r.seq >= from_seq and len(out) < limit:
                out.append(r)
        saved = (self.seq, self.prev, self.seg, self.seg_count, self._c,
                 self.th_ref, self._th_ref)
        self.scan(visit)
        (self.seq, self.prev, self.seg, self.seg_count, self._c,
         self.th_ref, self._th_ref) = saved
        return out


def _plausible(seq, slot, hi, span):
    """The highest seq a run of damaged records may have used: `hi` so far, or a damaged
    record's own `seq` when it lies within a segment's records of the `slot` it took (a
    bit flip can raise a seq by any amount; a jump beyond that is not trusted)."""
    if slot <= seq <= slot + span and seq > hi:
        return seq
    return hi


def _lead_int(b, s, e):
    """The decimal number at b[s:] up to a space (before e), or -1."""
    v = 0
    i = s
    while i < e and 48 <= b[i] <= 57:
        v = v * 10 + b[i] - 48
        i += 1
    return v if i > s and i < e and b[i] == 32 else -1


def _line_ok(b, s, e):
    """True when b[s:e] is a line `parse_line` reads (checked in place: `<seq> <t> <ev>… #<16>`)."""
    i = e - 18                      # the " #" before the hash
    if i <= s or b[i] != 32 or b[i + 1] != 35:
        return False
    for j in range(i + 2, e):       # 16 upper-case hex digits (so no later " #" either)
        c = b[j]
        if not (48 <= c <= 57 or 65 <= c <= 70):
            return False
    j = s
    for _ in range(2):              # seq, then t: digits and one space
        k = j
        while j < i and 48 <= b[j] <= 57:
            j += 1
        if j == k or j >= i or b[j] != 32:
            return False
        j += 1
    return j < i                    # something (the event word) before the last space


class Therapy:
    """What the log says about the infusion at the last record: folded from TH/DEL records."""

    def __init__(self):
        self.state = b"IDLE"
        self.rate = 0
        self.vtbi = 0
        self.drug = b"-"
        self.dose = 0
        self.kvo = 0
        self.delivered = 0     # nL, last logged (a lower bound of what was delivered)
        self.bound = 0         # nL, upper bound of what can have been delivered
        self.el_ms = 0
        self.seq = 0
        self.bolus = 0         # nL of clinician boluses, in the last record
        self.kvo_nl = 0        # nL of keep-vein-open, in the last record
        self.pg = 0            # the program file of the infusion (pumpcore.app)
        self.h = b""           # hash (hex) of the last TH/DEL record (a heartbeat names it)
        self.hb_bad = 0        # 1: the heartbeat was damaged (never used)

    def visit(self, r):
        if r.ev == b"TH":
            self.state = r.field(b"st", b"IDLE")
            self.rate = r.ifield(b"r")
            self.vtbi = r.ifield(b"v")
            self.drug = r.field(b"dr", b"-")
            self.dose = r.ifield(b"do")
            self.kvo = r.ifield(b"kv")
            self.delivered = r.ifield(b"d")
            self.bound = r.ifield(b"ub", self.delivered)
            self.el_ms = r.ifield(b"el")
            self.seq = r.seq
            self.bolus = r.ifield(b"b")
            self.kvo_nl = r.ifield(b"k")
            self.pg = r.ifield(b"pg")
            self.h = r.h
        elif r.ev == b"DEL":
            self.delivered = r.ifield(b"d")
            self.bound = r.ifield(b"ub", self.delivered)
            self.el_ms = r.ifield(b"el")
            self.bolus = r.ifield(b"b", self.bolus)
            self.kvo_nl = r.ifield(b"k", self.kvo_nl)
            self.seq = r.seq
            self.h = r.h

    def beat(self, hb):
        """Take a heartbeat's volume fields (pumpcore.app: the therapy record between two
        DEL records); the caller checked that it follows this record."""
        self.delivered = hb.ifield(b"d")
        self.bound = hb.ifield(b"ub", self.delivered)
        self.el_ms = hb.ifield(b"el", self.el_ms)
        self.bolus = hb.ifield(b"b", self.bolus)
        self.kvo_nl = hb.ifield(b"k", self.kvo_nl)

    def interrupted(self):
        """True when an infusion was under way (started, not finished or stopped)."""
        return self.vtbi > 0 and self.state not in (b"IDLE", b"PROGRAMMED", b"COMPLETE", b"FAULT")


def open_log(store, key=None, seg_records=SEG_RECORDS, keep=KEEP_SEGS, keep_bytes=LOG_BYTES):
    """Mount the log: verify the chain, fold the therapy record. Returns (log, verify, therapy)."""
    log = EventLog(store, key, seg_records, keep, keep_bytes)
    th = Therapy()
    v = log.scan(th.visit)
    th.hb_bad = log.fold_heartbeat(th, v.tail_kid)
    return log, v, th
