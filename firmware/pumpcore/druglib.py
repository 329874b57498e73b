"""The drug library: per-drug concentrations, soft/hard limits, bolus, KVO and vital-sign
limits, loaded from druglib.json.

The library is a data file deployed with the firmware; its version and the SHA-256 of its
bytes are reported in HELLO so a host can tell exactly which limits the pump enforces. When a
sidecar `druglib.json.sha256` (hex digest, written by `make druglib-hash` /
`python -m tests.fw.libhash`) is deployed next to it, the file must match it. Any error —
unreadable, not JSON, a limit missing or out of order, a hash mismatch — raises
`LibraryError`; the pump then stays in FAULT and refuses to infuse (never runs on defaults).
Limits are held as integers in wire units (µg/kg, µg/kg/h, ms, g, µL/h, nL, mmHg).
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


class LibraryError(Exception):
    pass


class Limits:
    """hard_min ≤ soft_min ≤ value ≤ soft_max ≤ hard_max, all integers in wire units."""

    def __init__(self, hard_min, soft_min, soft_max, hard_max):
        if not (0 <= hard_min <= soft_min <= soft_max <= hard_max):
            raise LibraryError("limits out of order")
        self.hard_min = hard_min
        self.soft_min = soft_min
        self.soft_max = soft_max
        self.hard_max = hard_max

    def hard(self, v):
        return v < self.hard_min or v > self.hard_max

    def soft(self, v):
        return v < self.soft_min or v > self.soft_max


def _num(x, what):
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise LibraryError(what + " is not a number")
    return x


def _limits(d, key, scale, required=True):
    if key not in d:
        if required:
            raise LibraryError("missing " + key)
        return None
    e = d[key]
    hmin = _num(e["hard_min"], key)
    hmax = _num(e["hard_max"], key)
    return Limits(int(hmin * scale + 0.5), int(_num(e.get("soft_min", hmin), key) * scale + 0.5),
                  int(_num(e.get("soft_max", hmax), key) * scale + 0.5), int(hmax * scale + 0.5))


class Vitals:
    """Vital-sign limits for the interlock (mmHg, /min, %)."""

    def __init__(self, d):
        self.sbp_max = int(_num(d["sbp_max"], "sbp_max"))
        self.dbp_max = int(_num(d["dbp_max"], "dbp_max"))
        self.hr_max = int(_num(d["hr_max"], "hr_max"))
        self.hr_min = int(_num(d["hr_min"], "hr_min"))
        self.spo2_min = int(_num(d["spo2_min"], "spo2_min"))
        if not (0 < self.hr_min < self.hr_max and 0 < self.dbp_max < self.sbp_max
                and 0 < self.spo2_min <= 100):
            raise LibraryError("vitals limits out of order")

    def violated(self, sbp, dbp, hr, spo2):
        """Name of the first limit the reading breaks (bytes), or None."""
        if sbp > self.sbp_max:
            return b"sbp"
        if dbp > self.dbp_max:
            return b"dbp"
        if hr > self.hr_max or hr < self.hr_min:
            return b"hr"
        if spo2 < self.spo2_min:
            return b"spo2"
        return None


class Drug:
    def __init__(self, d, default_vitals):
        try:
            self.name = d["name"].encode()
            self.conc_ug_ml = int(_num(d["conc_ug_ml"], "conc_ug_ml"))
            concs = d.get("concs_ug_ml", [self.conc_ug_ml])
            self.concs = tuple(int(_num(c, "concs_ug_ml")) for c in concs)
            for c in self.concs:
                if c <= 0:
                    raise LibraryError("concentration")
            if self.conc_ug_ml not in self.concs:
                raise LibraryError("conc_ug_ml not in concs_ug_ml")
            self.dose = _limits(d, "dose_ug_kg", 1)                 # µg/kg (dose or load)
            self.over = _limits(d, "over_min", 60000)               # ms
            self.weight = _limits(d, "weight_kg", 1000)             # g
            self.dose_h = _limits(d, "dose_ug_kg_h", 1, False)      # µg/kg/h, optional
            self.rate_max = int(_num(d["rate_ml_h_max"], "rate_ml_h_max") * 1000)   # µL/h
            self.bolus_max_nl = int(_num(d.get("bolus_max_ul", 0), "bolus_max_ul")) * 1000
            self.kvo_ul_h = int(_num(d.get("kvo_ul_h", 1000), "kvo_ul_h"))
            v = d.get("vitals")
            self.vitals = Vitals(v) if v is not None else default_vitals
        except KeyError as e:
            raise LibraryError("missing field " + str(e))
        if self.rate_max <= 0 or not (0 <= self.kvo_ul_h <= 20000):
            raise LibraryError("rate_ml_h_max or kvo_ul_h out of range")


class DrugLibrary:
    def __init__(self, raw):
        try:
            doc = json.loads(raw)
        except ValueError:
            raise LibraryError("drug library is not valid JSON")
        if not isinstance(doc, dict) or "version" not in doc or not doc.get("drugs"):
            raise LibraryError("drug library has no version or no drugs")
        self.version = str(doc["version"]).encode()
        dv = doc.get("vitals_default")
        self.vitals_default = Vitals(dv) if dv is not None else None
        self.drugs = [Drug(d, self.vitals_default) for d in doc["drugs"]]
        names = [d.name for d in self.drugs]
        for n in names:
            if names.count(n) != 1:
                raise LibraryError("drug listed twice")
        self.sha256 = binascii.hexlify(hashlib.sha256(raw).digest())
        self.sha256_16 = self.sha256[:16].upper()

    @classmethod
    def load(cls, path):
        """Load and check a library file (and its .sha256 sidecar when present)."""
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            raise LibraryError("drug library file missing")
        lib = cls(raw)
        try:
            with open(path + ".sha256", "rb") as f:
                want = f.read().strip().lower()
        except OSError:
            want = None
        if want is not None and want[:64] != lib.sha256:
            raise LibraryError("drug library hash mismatch")
        return lib

    def index_of(self, frame, k):
        """Index of the drug named by field token k of a parsed frame, or -1."""
        for i, d in enumerate(self.drugs):
            if frame.value_is(k, d.name):
                return i
        return -1
