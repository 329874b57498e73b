"""HMAC-SHA256 that allocates nothing: the pump's MAC check (docs/protocol.md, *Authentication*).

MicroPython's `hashlib.sha256` allocates a hash object and a digest per use and cannot be
reused after `digest()`, so verifying a MAC cost about 1 KB of heap per signed frame, refused
or not (REQ-COM-03 / REQ-SEC-09: refusing a frame allocates nothing). This module is SHA-256
(FIPS 180-4) on preallocated buffers instead. Every 32-bit word is kept as two 16-bit halves,
so no value ever leaves the RP2040's 31-bit small-int range (a 32-bit int would be a heap
object there); the round constants and the initial state are bytes literals (flash, when
frozen). The key's inner and outer pad blocks are hashed once, when the key is set, so a
verification hashes only the frame body (1..3 blocks) and the inner digest (1 block).

`Hmac256(key).verify(buf, n, mac, m0)` compares HMAC-SHA256(key, buf[:n]) with the 16 upper-case
hex digits at mac[m0:m0+16] (the wire MAC: the first 8 bytes), in constant time.
`hexdigest16(buf, n, out)` writes those 16 digits (used by tests and hosts written in the
same subset). Nothing here runs in the control tick.
"""
from array import array

_K = (
    b"\x42\x8a\x2f\x98\x71\x37\x44\x91\xb5\xc0\xfb\xcf\xe9\xb5\xdb\xa5"
    b"\x39\x56\xc2\x5b\x59\xf1\x11\xf1\x92\x3f\x82\xa4\xab\x1c\x5e\xd5"
    b"\xd8\x07\xaa\x98\x12\x83\x5b\x01\x24\x31\x85\xbe\x55\x0c\x7d\xc3"
    b"\x72\xbe\x5d\x74\x80\xde\xb1\xfe\x9b\xdc\x06\xa7\xc1\x9b\xf1\x74"
    b"\xe4\x9b\x69\xc1\xef\xbe\x47\x86\x0f\xc1\x9d\xc6\x24\x0c\xa1\xcc"
    b"\x2d\xe9\x2c\x6f\x4a\x74\x84\xaa\x5c\xb0\xa9\xdc\x76\xf9\x88\xda"
    b"\x98\x3e\x51\x52\xa8\x31\xc6\x6d\xb0\x03\x27\xc8\xbf\x59\x7f\xc7"
    b"\xc6\xe0\x0b\xf3\xd5\xa7\x91\x47\x06\xca\x63\x51\x14\x29\x29\x67"
    b"\x27\xb7\x0a\x85\x2e\x1b\x21\x38\x4d\x2c\x6d\xfc\x53\x38\x0d\x13"
    b"\x65\x0a\x73\x54\x76\x6a\x0a\xbb\x81\xc2\xc9\x2e\x92\x72\x2c\x85"
    b"\xa2\xbf\xe8\xa1\xa8\x1a\x66\x4b\xc2\x4b\x8b\x70\xc7\x6c\x51\xa3"
    b"\xd1\x92\xe8\x19\xd6\x99\x06\x24\xf4\x0e\x35\x85\x10\x6a\xa0\x70"
    b"\x19\xa4\xc1\x16\x1e\x37\x6c\x08\x27\x48\x77\x4c\x34\xb0\xbc\xb5"
    b"\x39\x1c\x0c\xb3\x4e\xd8\xaa\x4a\x5b\x9c\xca\x4f\x68\x2e\x6f\xf3"
    b"\x74\x8f\x82\xee\x78\xa5\x63\x6f\x84\xc8\x78\x14\x8c\xc7\x02\x08"
    b"\x90\xbe\xff\xfa\xa4\x50\x6c\xeb\xbe\xf9\xa3\xf7\xc6\x71\x78\xf2"
)
_IV = (
    b"\x6a\x09\xe6\x67\xbb\x67\xae\x85\x3c\x6e\xf3\x72\xa5\x4f\xf5\x3a"
    b"\x51\x0e\x52\x7f\x9b\x05\x68\x8c\x1f\x83\xd9\xab\x5b\xe0\xcd\x19"
)
_HEX = b"0123456789ABCDEF"


def _compress(h, w, src, off):
    """One SHA-256 block src[off:off+64] into state h (16 halves, hi then lo per word)."""
    for t in range(16):
        i = off + 4 * t
        w[2 * t] = (src[i] << 8) | src[i + 1]
        w[2 * t + 1] = (src[i + 2] << 8) | src[i + 3]
    for t in range(16, 64):
        j = 2 * (t - 15)
        xh = w[j]
        xl = w[j + 1]
        # sigma0 = rotr 7 ^ rotr 18 ^ shr 3 (rotr 16+n = the halves swapped, rotr n)
        s0h = (((xh >> 7) | ((xl & 0x7F) << 9)) ^ ((xl >> 2) | ((xh & 3) << 14)) ^ (xh >> 3))
        s0l = (((xl >> 7) | ((xh & 0x7F) << 9)) ^ ((xh >> 2) | ((xl & 3) << 14))
               ^ ((xl >> 3) | ((xh & 7) << 13)))
        j = 2 * (t - 2)
        xh = w[j]
        xl = w[j + 1]
        # sigma1 = rotr 17 ^ rotr 19 ^ shr 10
        s1h = (((xl >> 1) | ((xh & 1) << 15)) ^ ((xl >> 3) | ((xh & 7) << 13)) ^ (xh >> 10))
        s1l = (((xh >> 1) | ((xl & 1) << 15)) ^ ((xh >> 3) | ((xl & 7) << 13))
               ^ ((xl >> 10) | ((xh & 0x3FF) << 6)))
        a = 2 * (t - 16)
        b = 2 * (t - 7)
        lo = w[a + 1] + s0l + w[b + 1] + s1l
        w[2 * t] = (w[a] + s0h + w[b] + s1h + (lo >> 16)) & 0xFFFF
        w[2 * t + 1] = lo & 0xFFFF
    ah = h[0]
    al = h[1]
    bh = h[2]
    bl = h[3]
    ch = h[4]
    cl = h[5]
    dh = h[6]
    dl = h[7]
    eh = h[8]
    el = h[9]
    fh = h[10]
    fl = h[11]
    gh = h[12]
    gl = h[13]
    hh = h[14]
    hl = h[15]
    k = _K
    for t in range(64):
        i = 4 * t
        # T1 = h + Sigma1(e) + Ch(e, f, g) + K[t] + W[t]; Sigma1 = rotr 6 ^ rotr 11 ^ rotr 25
        x = (((el >> 6) | ((eh & 0x3F) << 10)) ^ ((el >> 11) | ((eh & 0x7FF) << 5))
             ^ ((eh >> 9) | ((el & 0x1FF) << 7)))
        lo = hl + x + ((el & fl) ^ ((el ^ 0xFFFF) & gl)) + ((k[i + 2] << 8) | k[i + 3]) + w[2 * t + 1]
        x = (((eh >> 6) | ((el & 0x3F) << 10)) ^ ((eh >> 11) | ((el & 0x7FF) << 5))
             ^ ((el >> 9) | ((eh & 0x1FF) << 7)))
        hi = hh + x + ((eh & fh) ^ ((eh ^ 0xFFFF) & gh)) + ((k[i] << 8) | k[i + 1]) + w[2 * t] + (lo >> 16)
        t1l = lo & 0xFFFF
        t1h = hi & 0xFFFF
        # T2 = Sigma0(a) + Maj(a, b, c); Sigma0 = rotr 2 ^ rotr 13 ^ rotr 22
        x = (((al >> 2) | ((ah & 3) << 14)) ^ ((al >> 13) | ((ah & 0x1FFF) << 3))
             ^ ((ah >> 6) | ((al & 0x3F) << 10)))
        t2l = x + ((al & bl) ^ (al & cl) ^ (bl & cl))
        x = (((ah >> 2) | ((al & 3) << 14)) ^ ((ah >> 13) | ((al & 0x1FFF) << 3))
             ^ ((al >> 6) | ((ah & 0x3F) << 10)))
        t2h = x + ((ah & bh) ^ (ah & ch) ^ (bh & ch))
        hh = gh
        hl = gl
        gh = fh
        gl = fl
        fh = eh
        fl = el
        lo = dl + t1l
        eh = (dh + t1h + (lo >> 16)) & 0xFFFF
        el = lo & 0xFFFF
        dh = ch
        dl = cl
        ch = bh
        cl = bl
        bh = ah
        bl = al
        lo = t1l + t2l
        ah = (t1h + t2h + (lo >> 16)) & 0xFFFF
        al = lo & 0xFFFF
    _add(h, 0, ah, al)
    _add(h, 2, bh, bl)
    _add(h, 4, ch, cl)
    _add(h, 6, dh, dl)
    _add(h, 8, eh, el)
    _add(h, 10, fh, fl)
    _add(h, 12, gh, gl)
    _add(h, 14, hh, hl)


def _add(h, i, xh, xl):
    lo = h[i + 1] + xl
    h[i] = (h[i] + xh + (lo >> 16)) & 0xFFFF
    h[i + 1] = lo & 0xFFFF


def _iv(h):
    for i in range(16):
        h[i] = (_IV[2 * i] << 8) | _IV[2 * i + 1]


class Hmac256:
    """HMAC-SHA256 with one key, on buffers allocated here once."""

    def __init__(self, key):
        self._w = array("H", bytes(256))      # the message schedule, 64 words
        self._h = array("H", bytes(32))       # the running state
        self._i = array("H", bytes(32))       # state after the key's inner pad block
        self._o = array("H", bytes(32))       # state after the key's outer pad block
        self._b = bytearray(64)               # padding / outer block
        if len(key) > 64:
            key = _sha256_once(key)
        b = self._b
        for pad, st in ((0x36, self._i), (0x5C, self._o)):
            for i in range(64):
                b[i] = (key[i] if i < len(key) else 0) ^ pad
            _iv(st)
            _compress(st, self._w, b, 0)
        for i in range(64):
            b[i] = 0

    def _inner_outer(self, buf, n):
        """State h = HMAC-SHA256(key, buf[:n]) (as 16 halves)."""
        h = self._h
        w = self._w
        b = self._b
        st = self._i
        for i in range(16):
            h[i] = st[i]
        off = 0
        while n - off >= 64:
            _compress(h, w, buf, off)
            off += 64
        r = n - off
        for i in range(r):
            b[i] = buf[off + i]
        b[r] = 0x80
        for i in range(r + 1, 64):
            b[i] = 0
        if r >= 56:
            _compress(h, w, b, 0)
            for i in range(64):
                b[i] = 0
        _length(b, 64 + n)
        _compress(h, w, b, 0)
        # outer: the inner digest (32 bytes) after the key's outer pad block
        for i in range(16):
            v = h[i]
            b[2 * i] = v >> 8
            b[2 * i + 1] = v & 0xFF
        b[32] = 0x80
        for i in range(33, 64):
            b[i] = 0
        _length(b, 96)
        st = self._o
        for i in range(16):
            h[i] = st[i]
        _compress(h, w, b, 0)
        return h

    def verify(self, buf, n, mac, m0):
        """True when mac[m0:m0+16] are the first 16 hex digits (upper case) of
        HMAC-SHA256(key, buf[:n]). Constant time in the digits; allocates nothing."""
        h = self._inner_outer(buf, n)
        bad = 0
        for i in range(4):
            v = h[i]
            j = m0 + 4 * i
            bad |= ((_HEX[v >> 12] ^ mac[j]) | (_HEX[(v >> 8) & 15] ^ mac[j + 1])
                    | (_HEX[(v >> 4) & 15] ^ mac[j + 2]) | (_HEX[v & 15] ^ mac[j + 3]))
        return bad == 0

    def hexdigest16(self, buf, n, out):
        """Write the wire MAC of buf[:n] (16 upper-case hex digits) into out[0:16]."""
        h = self._inner_outer(buf, n)
        for i in range(4):
            v = h[i]
            out[4 * i] = _HEX[v >> 12]
            out[4 * i + 1] = _HEX[(v >> 8) & 15]
            out[4 * i + 2] = _HEX[(v >> 4) & 15]
            out[4 * i + 3] = _HEX[v & 15]
        return out

    def digest(self, buf, n):
        """The whole HMAC (32 bytes, allocated: for tests)."""
        h = self._inner_outer(buf, n)
        out = bytearray(32)
        for i in range(16):
            out[2 * i] = h[i] >> 8
            out[2 * i + 1] = h[i] & 0xFF
        return bytes(out)


def _length(b, nbytes):
    """The message length in bits, big-endian, in b[56:64] (messages < 2**27 bytes)."""
    bits = nbytes * 8
    for i in range(56, 60):
        b[i] = 0
    b[60] = (bits >> 24) & 0xFF
    b[61] = (bits >> 16) & 0xFF
    b[62] = (bits >> 8) & 0xFF
    b[63] = bits & 0xFF


def _sha256_once(msg):
    """SHA-256 of a long key (key setup only; allocates)."""
    h = array("H", bytes(32))
    w = array("H", bytes(256))
    _iv(h)
    n = len(msg)
    off = 0
    while n - off >= 64:
        _compress(h, w, msg, off)
        off += 64
    b = bytearray(64)
    r = n - off
    for i in range(r):
        b[i] = msg[off + i]
    b[r] = 0x80
    if r >= 56:
        _compress(h, w, b, 0)
        b = bytearray(64)
    _length(b, n)
    _compress(h, w, b, 0)
    out = bytearray(32)
    for i in range(16):
        out[2 * i] = h[i] >> 8
        out[2 * i + 1] = h[i] & 0xFF
    return bytes(out)
