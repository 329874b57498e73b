"""Wire protocol v1 (docs/protocol.md): CRC-16/XMODEM, frame reader, parser and writer.

Everything works in preallocated buffers: receiving a byte, parsing a frame and writing a
reply allocate nothing, so the parser can sit in the control loop and be fuzzed under
`micropython.heap_lock()`.
"""
from array import array


try:
    from micropython import const
except ImportError:  # CPython: const() is only a marker for the MicroPython compiler
    const = lambda x: x  # noqa: E731

PROTO_VERSION = const(1)
MAX_FRAME = const(160)        # bytes per frame including the terminator
_MAX_TOKENS = const(14)        # id + word + 12 fields
MAX_KEY = const(16)         # docs/protocol.md: receivers accept keys up to 16 (vitals_age_ms is 13)
MAX_VALUE = const(32)
NUM_MAX = const(0x3FFFFFFF)   # numbers on the wire: 0 .. 2**30 - 1 (at most 10 digits)
TLM_MIN = const(10)           # telemetry period bounds, ms (TLM period_ms; 0 = off): frames
TLM_MAX = const(60000)        # go out at their own times, between control ticks too
LINK_BAUD = const(115200)     # the host link's UART, 8N1 (10 bits a byte)


def wire_ms(nbytes):
    """ms the link needs for `nbytes` at LINK_BAUD, rounded up (telemetry never outpaces
    it: a 137-byte frame, the longest `! TL`, takes 12 ms, more than the 10 ms period)."""
    return (nbytes * 10000 + LINK_BAUD - 1) // LINK_BAUD

# reader results
_NEED_MORE = const(0)
FRAME = const(1)
OVERLONG = const(2)

# parse results (0 = ok); index into ERR_NAMES
OK = const(0)
E_CRC = const(1)
E_LEN = const(2)
E_SYNTAX = const(3)
E_UNKNOWN = const(4)
E_STATE = const(5)
E_ARG = const(6)
E_RANGE = const(7)
E_LIMIT = const(8)
E_SOFT = const(9)
E_DRUG = const(10)
E_AUTH = const(11)
E_FAULT = const(12)
E_BOOT = const(13)
ERR_NAMES = (b"OK", b"CRC", b"LEN", b"SYNTAX", b"UNKNOWN", b"STATE", b"ARG", b"RANGE",
             b"LIMIT", b"SOFT", b"DRUG", b"AUTH", b"FAULT", b"BOOT")

# keys whose values are words, not numbers; every other field's value is a number
TEXT_KEYS = (b"drug", b"occl_level", b"hb_action", b"syringe", b"mac")

ID_NONE = const(-1)    # no trustworthy id: replies go out with id "?"
ID_EVENT = const(-2)   # "!" unsolicited frame

_HEX = const(b"0123456789ABCDEF")


# CRC-16/XMODEM table (poly 0x1021): entry i is the CRC of the byte i, split into its high
# and low bytes. Constant bytes, so on the frozen image they are in flash, not in the heap
# (tests/test_fw_protocol.py recomputes them from the polynomial).
_CRC_HI = const(
    b"\x00\x10\x20\x30\x40\x50\x60\x70\x81\x91\xa1\xb1\xc1\xd1\xe1\xf1"
    b"\x12\x02\x32\x22\x52\x42\x72\x62\x93\x83\xb3\xa3\xd3\xc3\xf3\xe3"
    b"\x24\x34\x04\x14\x64\x74\x44\x54\xa5\xb5\x85\x95\xe5\xf5\xc5\xd5"
    b"\x36\x26\x16\x06\x76\x66\x56\x46\xb7\xa7\x97\x87\xf7\xe7\xd7\xc7"
    b"\x48\x58\x68\x78\x08\x18\x28\x38\xc9\xd9\xe9\xf9\x89\x99\xa9\xb9"
    b"\x5a\x4a\x7a\x6a\x1a\x0a\x3a\x2a\xdb\xcb\xfb\xeb\x9b\x8b\xbb\xab"
    b"\x6c\x7c\x4c\x5c\x2c\x3c\x0c\x1c\xed\xfd\xcd\xdd\xad\xbd\x8d\x9d"
    b"\x7e\x6e\x5e\x4e\x3e\x2e\x1e\x0e\xff\xef\xdf\xcf\xbf\xaf\x9f\x8f"
    b"\x91\x81\xb1\xa1\xd1\xc1\xf1\xe1\x10\x00\x30\x20\x50\x40\x70\x60"
    b"\x83\x93\xa3\xb3\xc3\xd3\xe3\xf3\x02\x12\x22\x32\x42\x52\x62\x72"
    b"\xb5\xa5\x95\x85\xf5\xe5\xd5\xc5\x34\x24\x14\x04\x74\x64\x54\x44"
    b"\xa7\xb7\x87\x97\xe7\xf7\xc7\xd7\x26\x36\x06\x16\x66\x76\x46\x56"
    b"\xd9\xc9\xf9\xe9\x99\x89\xb9\xa9\x58\x48\x78\x68\x18\x08\x38\x28"
    b"\xcb\xdb\xeb\xfb\x8b\x9b\xab\xbb\x4a\x5a\x6a\x7a\x0a\x1a\x2a\x3a"
    b"\xfd\xed\xdd\xcd\xbd\xad\x9d\x8d\x7c\x6c\x5c\x4c\x3c\x2c\x1c\x0c"
    b"\xef\xff\xcf\xdf\xaf\xbf\x8f\x9f\x6e\x7e\x4e\x5e\x2e\x3e\x0e\x1e")
_CRC_LO = const(
    b"\x00\x21\x42\x63\x84\xa5\xc6\xe7\x08\x29\x4a\x6b\x8c\xad\xce\xef"
    b"\x31\x10\x73\x52\xb5\x94\xf7\xd6\x39\x18\x7b\x5a\xbd\x9c\xff\xde"
    b"\x62\x43\x20\x01\xe6\xc7\xa4\x85\x6a\x4b\x28\x09\xee\xcf\xac\x8d"
    b"\x53\x72\x11\x30\xd7\xf6\x95\xb4\x5b\x7a\x19\x38\xdf\xfe\x9d\xbc"
    b"\xc4\xe5\x86\xa7\x40\x61\x02\x23\xcc\xed\x8e\xaf\x48\x69\x0a\x2b"
    b"\xf5\xd4\xb7\x96\x71\x50\x33\x12\xfd\xdc\xbf\x9e\x79\x58\x3b\x1a"
    b"\xa6\x87\xe4\xc5\x22\x03\x60\x41\xae\x8f\xec\xcd\x2a\x0b\x68\x49"
    b"\x97\xb6\xd5\xf4\x13\x32\x51\x70\x9f\xbe\xdd\xfc\x1b\x3a\x59\x78"
    b"\x88\xa9\xca\xeb\x0c\x2d\x4e\x6f\x80\xa1\xc2\xe3\x04\x25\x46\x67"
    b"\xb9\x98\xfb\xda\x3d\x1c\x7f\x5e\xb1\x90\xf3\xd2\x35\x14\x77\x56"
    b"\xea\xcb\xa8\x89\x6e\x4f\x2c\x0d\xe2\xc3\xa0\x81\x66\x47\x24\x05"
    b"\xdb\xfa\x99\xb8\x5f\x7e\x1d\x3c\xd3\xf2\x91\xb0\x57\x76\x15\x34"
    b"\x4c\x6d\x0e\x2f\xc8\xe9\x8a\xab\x44\x65\x06\x27\xc0\xe1\x82\xa3"
    b"\x7d\x5c\x3f\x1e\xf9\xd8\xbb\x9a\x75\x54\x37\x16\xf1\xd0\xb3\x92"
    b"\x2e\x0f\x6c\x4d\xaa\x8b\xe8\xc9\x26\x07\x64\x45\xa2\x83\xe0\xc1"
    b"\x1f\x3e\x5d\x7c\x9b\xba\xd9\xf8\x17\x36\x55\x74\x93\xb2\xd1\xf0")
del const   # compile-time only (each module global is a slot of heap on the board)


def crc16(buf, start, end):
    """CRC-16/XMODEM of buf[start:end] (poly 0x1021, init 0). Allocates nothing."""
    crc = 0
    hi = _CRC_HI
    lo = _CRC_LO
    for i in range(start, end):
        k = ((crc >> 8) ^ buf[i]) & 0xFF
        crc = (((crc & 0xFF) ^ hi[k]) << 8) | lo[k]
    return crc


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    return -1


class FrameReader:
    """Collects received bytes into one preallocated line buffer."""

    def __init__(self):
        self.buf = bytearray(MAX_FRAME)
        self.n = 0          # bytes collected for the current line
        self.length = 0     # length of the completed frame (without CR/LF)
        self.skipping = False

    def push(self, b):
        """Feed one byte. Returns _NEED_MORE, FRAME (buf[:length] holds it) or OVERLONG."""
        if b == 10:
            if self.skipping:
                self.skipping = False
                self.n = 0
                return OVERLONG
            n = self.n
            self.n = 0
            if n and self.buf[n - 1] == 13:
                n -= 1
            if n == 0:
                return _NEED_MORE
            self.length = n
            return FRAME
        if self.skipping:
            return _NEED_MORE
        if self.n >= MAX_FRAME - 1:
            self.skipping = True
            return _NEED_MORE
        self.buf[self.n] = b
        self.n += 1
        return _NEED_MORE


class Frame:
    """A parsed frame: token spans into the reader's buffer, no copies."""

    def __init__(self, buf):
        self.buf = buf
        self.ts = array("H", bytes(2 * _MAX_TOKENS))   # token start
        self.te = array("H", bytes(2 * _MAX_TOKENS))   # token end
        self.eq = array("H", bytes(2 * _MAX_TOKENS))   # position of "=" in field tokens
        self.ntok = 0
        self.id = ID_NONE
        self.has_crc = False
        self.crc = 0
        self.why = b""         # reason of the last E_SYNTAX (a constant: no allocation)

    def parse(self, length):
        """Tokenise buf[:length] strictly (docs/protocol.md, *Frame grammar*). Returns OK,
        E_CRC or E_SYNTAX. `id` is set as soon as the first token is a valid id, so a
        malformed frame with a good CRC is answered with its own id."""
        buf = self.buf
        self.id = ID_NONE
        self.ntok = 0
        self.has_crc = False
        end = length
        # CRC suffix: "*" and four upper-case hex digits, last in the frame
        star = -1
        for i in range(length):
            if buf[i] == 42:  # '*'
                star = i
                break
        if star >= 0:
            if length - star != 5:
                return E_CRC
            v = 0
            for i in range(star + 1, length):
                h = _hexval(buf[i])
                if h < 0:
                    return E_CRC
                v = (v << 4) | h
            if v != crc16(buf, 0, star):
                return E_CRC
            self.has_crc = True
            self.crc = v
            end = star
        # id: 1..65535, digits without a leading zero, then one space
        i = 0
        v = 0
        while i < end and 48 <= buf[i] <= 57:
            if i >= 5 or (i == 0 and buf[i] == 48):
                self.why = b"bad id (1..65535, no leading zero)"
                return E_SYNTAX
            v = v * 10 + buf[i] - 48
            i += 1
        if i == 0 or v > 65535:
            self.why = b"bad id (1..65535, no leading zero)"
            return E_SYNTAX
        self.id = v                      # the leading digits: trusted once the CRC is good
        if i < end and buf[i] != 32:
            c = buf[i]
            if c < 33 or c > 126:
                self.why = b"byte outside printable ASCII"
            else:
                self.why = b"bad id (1..65535, no leading zero)"
                self.id = ID_NONE
            return E_SYNTAX
        # tokens: exactly one space between them, none leading or trailing
        n = 0
        i = 0
        while True:
            if i >= end or buf[i] == 32:
                self.why = b"tokens are separated by exactly one space"
                return E_SYNTAX          # empty token: double, leading or trailing space
            if n >= _MAX_TOKENS:
                self.why = b"more than 12 fields"
                return E_SYNTAX
            self.ts[n] = i
            self.eq[n] = 0
            while i < end and buf[i] != 32:
                c = buf[i]
                if c < 33 or c > 126:
                    self.why = b"byte outside printable ASCII"
                    return E_SYNTAX      # control byte, TAB, non-ASCII
                if c == 61 and self.eq[n] == 0:  # '='
                    self.eq[n] = i
                i += 1
            self.te[n] = i
            n += 1
            if i >= end:
                break
            i += 1                       # the one space
        self.ntok = n
        if n < 2:
            self.why = b"no command word"
            return E_SYNTAX
        # word
        s = self.ts[1]
        e = self.te[1]
        if e - s > 8 or self.eq[1]:
            self.why = b"bad command word (1..8 letters A-Z)"
            return E_SYNTAX
        for i in range(s, e):
            c = buf[i]
            if c < 65 or c > 90:
                self.why = b"bad command word (1..8 letters A-Z)"
                return E_SYNTAX
        # fields
        for k in range(2, n):
            s = self.ts[k]
            q = self.eq[k]
            e = self.te[k]
            if q == 0 or q == s or q - s > MAX_KEY or e - q - 1 < 1 or e - q - 1 > MAX_VALUE:
                self.why = b"bad field (key=value, key 1..16, value 1..32 bytes)"
                return E_SYNTAX
            for i in range(s, q):
                c = buf[i]
                if not (97 <= c <= 122 or 48 <= c <= 57 or c == 95):
                    self.why = b"bad field key (a-z 0-9 _)"
                    return E_SYNTAX
            for i in range(q + 1, e):
                if buf[i] == 61:
                    self.why = b"bad field value (no = in a value)"
                    return E_SYNTAX
        return OK

    def word_is(self, word):
        return self._span_eq(self.ts[1], self.te[1], word)

    def _span_eq(self, s, e, lit):
        if e - s != len(lit):
            return False
        buf = self.buf
        for i in range(e - s):
            if buf[s + i] != lit[i]:
                return False
        return True

    @property
    def nfields(self):
        return self.ntok - 2 if self.ntok > 2 else 0

    def field(self, key):
        """Token index of field `key` (bytes), or -1."""
        for k in range(2, self.ntok):
            if self._span_eq(self.ts[k], self.eq[k], key):
                return k
        return -1

    def key_in(self, k, keys):
        """True when field token k's key is one of `keys` (tuple of bytes)."""
        for key in keys:
            if self._span_eq(self.ts[k], self.eq[k], key):
                return True
        return False

    def duplicate_keys(self):
        for a in range(2, self.ntok):
            for b in range(a + 1, self.ntok):
                if self.eq[a] - self.ts[a] == self.eq[b] - self.ts[b]:
                    same = True
                    for i in range(self.eq[a] - self.ts[a]):
                        if self.buf[self.ts[a] + i] != self.buf[self.ts[b] + i]:
                            same = False
                            break
                    if same:
                        return True
        return False

    def int_value(self, k):
        """Value of field k as a number (docs/protocol.md: decimal digits, no leading zero,
        at most 1073741823 = 2**30 - 1), or -1. Never leaves small-int range."""
        s = self.eq[k] + 1
        e = self.te[k]
        if e - s > 10 or (e - s > 1 and self.buf[s] == 48):
            return -1
        v = 0
        buf = self.buf
        for i in range(s, e):
            c = buf[i] - 48
            if c < 0 or c > 9:
                return -1
            if v > 107374182 or (v == 107374182 and c > 3):
                return -1
            v = v * 10 + c
        return v

    def bad_number(self):
        """Token index of the first field that should be a number and is not, or -1. Every
        field is a number except the text keys (TEXT_KEYS)."""
        for k in range(2, self.ntok):
            if not self.key_in(k, TEXT_KEYS) and self.int_value(k) < 0:
                return k
        return -1

    def value_is(self, k, lit):
        return self._span_eq(self.eq[k] + 1, self.te[k], lit)


class TxBuffer:
    """Outgoing frames, written in place; `end()` appends the CRC and the terminator."""

    def __init__(self, size):
        self.buf = bytearray(size)
        self.n = 0
        self.start = 0
        self.ok = True
        self.dropped = 0
        self._digits = bytearray(12)

    def clear(self):
        self.n = 0

    def begin(self, frame_id):
        """Start a frame: frame_id > 0 a reply id, ID_EVENT '!', ID_NONE '?'."""
        self.start = self.n
        self.ok = True
        if frame_id == ID_EVENT:
            self.put(b"!")
        elif frame_id == ID_NONE:
            self.put(b"?")
        else:
            self.put_int(frame_id)

    def put(self, lit):
        n = self.n
        m = len(lit)
        if n + m > len(self.buf) - 6 or n + m - self.start > MAX_FRAME - 6:
            self.ok = False
            return
        buf = self.buf
        for i in range(m):
            buf[n + i] = lit[i]
        self.n = n + m

    def put_span(self, src, s, e):
        n = self.n
        if n + e - s > len(self.buf) - 6:
            self.ok = False
            return
        buf = self.buf
        for i in range(s, e):
            buf[n] = src[i]
            n += 1
        self.n = n

    def put_int(self, v):
        if v < 0:
            self.put(b"-")
            v = -v
        d = self._digits
        k = 0
        while True:
            d[k] = 48 + v % 10
            v //= 10
            k += 1
            if v == 0 or k >= 12:
                break
        n = self.n
        if n + k > len(self.buf) - 6:
            self.ok = False
            return
        buf = self.buf
        while k:
            k -= 1
            buf[n] = d[k]
            n += 1
        self.n = n

    def field_int(self, key, v):
        self.put(b" ")
        self.put(key)
        self.put(b"=")
        self.put_int(v)

    def field_lit(self, key, lit):
        self.put(b" ")
        self.put(key)
        self.put(b"=")
        self.put(lit)

    def end(self):
        """Close the frame with *CRC and LF; drop it whole if it did not fit."""
        if not self.ok or self.n + 6 > len(self.buf):
            self.n = self.start
            self.dropped += 1
            return False
        c = crc16(self.buf, self.start, self.n)
        buf = self.buf
        n = self.n
        buf[n] = 42
        buf[n + 1] = _HEX[(c >> 12) & 15]
        buf[n + 2] = _HEX[(c >> 8) & 15]
        buf[n + 3] = _HEX[(c >> 4) & 15]
        buf[n + 4] = _HEX[c & 15]
        buf[n + 5] = 10
        self.n = n + 6
        return True
