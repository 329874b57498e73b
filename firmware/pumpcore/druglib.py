"""The drug library: per-drug concentration and soft/hard limits, loaded from druglib.json.

The library is a data file deployed with the firmware; its version and the SHA-256 of its
bytes are reported in HELLO so a host can tell exactly which limits the pump enforces.
Limits are held as integers in wire units (µg/kg, ms, g, µL/h).
"""
import json

try:
    import hashlib
except ImportError:  # some ports ship it as uhashlib
    import uhashlib as hashlib  # type: ignore
try:
    import binascii
except ImportError:
    import ubinascii as binascii  # type: ignore


class Limits:
    """hard_min ≤ soft_min ≤ value ≤ soft_max ≤ hard_max, all integers in wire units."""

    def __init__(self, hard_min, soft_min, soft_max, hard_max):
        if not (0 <= hard_min <= soft_min <= soft_max <= hard_max):
            raise ValueError("limits out of order")
        self.hard_min = hard_min
        self.soft_min = soft_min
        self.soft_max = soft_max
        self.hard_max = hard_max


def _limits(d, scale):
    hmin = d["hard_min"]
    hmax = d["hard_max"]
    return Limits(int(hmin * scale), int(d.get("soft_min", hmin) * scale),
                  int(d.get("soft_max", hmax) * scale), int(hmax * scale))


class Drug:
    def __init__(self, d):
        self.name = d["name"].encode()
        self.conc_ug_ml = int(d["conc_ug_ml"])
        if self.conc_ug_ml <= 0:
            raise ValueError("concentration")
        self.dose = _limits(d["dose_ug_kg"], 1)            # µg/kg
        self.over = _limits(d["over_min"], 60000)           # ms
        self.weight = _limits(d["weight_kg"], 1000)         # g
        self.rate_max = int(d["rate_ml_h_max"] * 1000)      # µL/h


class DrugLibrary:
    def __init__(self, raw):
        doc = json.loads(raw)
        self.version = str(doc["version"]).encode()
        self.drugs = [Drug(d) for d in doc["drugs"]]
        self.sha256_16 = binascii.hexlify(hashlib.sha256(raw).digest())[:16].upper()

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls(f.read())

    def index_of(self, frame, k):
        """Index of the drug named by field token k of a parsed frame, or -1."""
        for i, d in enumerate(self.drugs):
            if frame.value_is(k, d.name):
                return i
        return -1
