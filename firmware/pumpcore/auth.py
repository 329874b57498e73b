"""HMAC-SHA256 message authentication for therapy-changing commands (docs/protocol.md).

MicroPython ships `hashlib.sha256` but no `hmac`, so HMAC (RFC 2104) is built here from the
hash. The key (32 random bytes in the board's `key.bin`, provisioned at flash time) never
leaves the pump. A command carries `ctr=<n>` and, as its last field, `mac=<16 hex>`: the first
16 hex digits of HMAC-SHA256(key, frame body before " mac="). `ctr` must exceed the last
accepted counter, which the board keeps across reboots (`store_counter`). Runs only when a
signed frame arrives, never in the control tick. Verifying a MAC allocates nothing
(`pumpcore.hmac256`), so a refused signed frame leaves the heap as it was (REQ-COM-03).
"""
try:
    import hashlib
except ImportError:  # some ports ship it as uhashlib
    import uhashlib as hashlib  # type: ignore

from pumpcore.hmac256 import Hmac256

_BLOCK = 64
_HEX = b"0123456789ABCDEF"


def hmac_sha256(key, msg):
    """HMAC-SHA256(key, msg) as 32 bytes, from hashlib (allocates: signing in tests and
    tools, an oracle independent of the pump's verifier `pumpcore.hmac256`)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    k = bytearray(_BLOCK)
    for i in range(len(key)):
        k[i] = key[i]
    ipad = bytearray(_BLOCK)
    opad = bytearray(_BLOCK)
    for i in range(_BLOCK):
        ipad[i] = k[i] ^ 0x36
        opad[i] = k[i] ^ 0x5C
    h = hashlib.sha256(bytes(ipad))
    h.update(msg)
    inner = h.digest()
    h = hashlib.sha256(bytes(opad))
    h.update(inner)
    return h.digest()


def mac16(key, msg):
    """The wire MAC: first 16 upper-case hex digits of HMAC-SHA256 (8 bytes)."""
    d = hmac_sha256(key, msg)
    out = bytearray(16)
    for i in range(8):
        out[2 * i] = _HEX[d[i] >> 4]
        out[2 * i + 1] = _HEX[d[i] & 15]
    return bytes(out)


CTR_MAX = 999999999       # 9 digits, the protocol's number limit
CTR_WINDOW = 1000000      # an accepted ctr is at most this far above the last one


COUNTER_FILE = "ctr.txt"


def parse_counter(raw):
    """The last accepted counter from the board's counter file (docs/protocol.md, *Counter
    file*): missing or empty (a freshly provisioned pump) is 0; unreadable (not a number in
    0..CTR_MAX) is CTR_MAX, which refuses every signed frame until the pump is re-provisioned."""
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        return CTR_MAX
    return n if 0 <= n <= CTR_MAX else CTR_MAX


class Auth:
    """Key, required flag and the replay counter (persisted through the board hooks).

    `check()` verifies a frame and remembers its counter as pending; the command
    interpreter calls `commit()` only when the command was accepted, so a refused signed
    frame uses up no counter."""

    def __init__(self, key=None, counter=0, store=None):
        self.key = key if key else None
        # the verifier hashes the key's pads once; a verification then allocates nothing
        # (pumpcore.hmac256: SHA-256 on preallocated buffers, REQ-SEC-09)
        self._mac = Hmac256(self.key) if self.key is not None else None
        self.required = False
        self.counter = counter
        self.pending = False
        self._pending_ctr = 0
        self._store = store         # callable(n) that makes the counter survive a reboot

    @property
    def provisioned(self):
        return self.key is not None

    def check(self, buf, end_body, ctr, mac_start, mac_end):
        """Verify a frame: body buf[:end_body] was MACed, mac digits at buf[mac_start:mac_end].
        Returns None when good (the counter becomes pending), else a reason (bytes). The
        cheap checks come first, so a frame refused for its counter computes no MAC."""
        m = self._mac
        if m is None:
            return b"pump has no key"
        if ctr < 1:
            return b"ctr must be 1..999999999"
        if mac_end - mac_start != 16:
            return b"mac must be 16 hex digits"
        if ctr <= self.counter:
            return b"replayed counter"
        if ctr - self.counter > CTR_WINDOW:
            return b"ctr too far above the last accepted (window 1000000)"
        if not m.verify(buf, end_body, buf, mac_start):
            return b"wrong MAC"
        self._pending_ctr = ctr
        self.pending = True
        return None

    def commit(self):
        """The verified frame was accepted: its counter becomes the last accepted one."""
        if self.pending:
            self.pending = False
            self.counter = self._pending_ctr
            if self._store is not None:
                self._store(self.counter)
