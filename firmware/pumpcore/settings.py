"""Pump settings that survive a reboot: encoded as one line with a CRC, validated on load.

A settings record that fails its CRC or holds an out-of-range value is *corrupt*: the pump
goes to FAULT and refuses to infuse (it never falls back to defaults silently). A pump that
has never stored settings starts from the factory values below.
"""
from pumpcore import protocol as P

OCCL_LEVELS = (b"L", b"M", b"H")
OCCL_LEVEL_MMHG = (200, 400, 800)
OCCL_MIN = 103
OCCL_MAX = 1034
HB_MIN = 1000
HB_MAX = 600000
VAGE_MIN = 10000
VAGE_MAX = 3600000
CB_MIN = 10000
CB_MAX = 3600000

_KEYS = (b"occl", b"hb", b"hbp", b"il", b"va", b"au", b"cb")


class Settings:
    def __init__(self):
        self.occl_mmhg = 400          # level M
        self.hb_ms = 0                # heartbeat off
        self.hb_pause = 0             # 0 continue, 1 pause
        self.interlock = 0
        self.vitals_age_ms = 300000   # 5 min
        self.auth = 0
        self.callback_ms = 120000     # 2 min (Alaris default reminder)

    def values(self):
        return (self.occl_mmhg, self.hb_ms, self.hb_pause, self.interlock, self.vitals_age_ms,
                self.auth, self.callback_ms)

    def encode(self):
        parts = []
        v = self.values()
        for i in range(len(_KEYS)):
            parts.append(_KEYS[i] + b"=" + str(v[i]).encode())
        body = b" ".join(parts)
        return body + b"*%04X\n" % P.crc16(body, 0, len(body))

    def decode(self, raw):
        """Load from bytes; returns None when good, else the reason (bytes); on error
        nothing is changed."""
        raw = bytes(raw).strip()
        star = raw.rfind(b"*")
        if star < 0 or len(raw) - star != 5:
            return b"settings record has no CRC"
        try:
            crc = int(raw[star + 1:], 16)
        except ValueError:
            return b"settings CRC unreadable"
        if crc != P.crc16(raw, 0, star):
            return b"settings CRC mismatch"
        got = {}
        for tok in raw[:star].split(b" "):
            kv = tok.split(b"=")
            if len(kv) != 2 or kv[0] not in _KEYS or kv[0] in got:
                return b"settings record malformed"
            try:
                got[kv[0]] = int(kv[1])
            except ValueError:
                return b"settings value not an integer"
        if len(got) != len(_KEYS):
            return b"settings record incomplete"
        if not (OCCL_MIN <= got[b"occl"] <= OCCL_MAX):
            return b"settings occl out of range"
        if got[b"hb"] != 0 and not (HB_MIN <= got[b"hb"] <= HB_MAX):
            return b"settings hb out of range"
        if got[b"hbp"] not in (0, 1) or got[b"il"] not in (0, 1) or got[b"au"] not in (0, 1):
            return b"settings flag out of range"
        if not (VAGE_MIN <= got[b"va"] <= VAGE_MAX) or not (CB_MIN <= got[b"cb"] <= CB_MAX):
            return b"settings time out of range"
        self.occl_mmhg = got[b"occl"]
        self.hb_ms = got[b"hb"]
        self.hb_pause = got[b"hbp"]
        self.interlock = got[b"il"]
        self.vitals_age_ms = got[b"va"]
        self.auth = got[b"au"]
        self.callback_ms = got[b"cb"]
        return None
