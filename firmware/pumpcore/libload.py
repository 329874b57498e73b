"""Boot-time loader of the drug library: read druglib.json, check it, pack it (`druglib`).

Only the boot sequence needs this code (json parsing, every check, the SHA-256 of the file),
so it lives apart from what the controller keeps (`pumpcore.druglib`: the drugs' names and
one `array` of their integers, packed there from the checked `Drug`s made here); on
MicroPython `pumpcore.boot` drops this module after loading, and its bytecode goes back to
the heap. Any error raises `LibraryError`: the pump then stays in FAULT and refuses to infuse.
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

from pumpcore.druglib import LibraryError, Limits, Vitals, Drug, DrugLibrary, NAME_MAX


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
    lim = Limits(int(hmin * scale + 0.5), int(_num(e.get("soft_min", hmin), key) * scale + 0.5),
                 int(_num(e.get("soft_max", hmax), key) * scale + 0.5), int(hmax * scale + 0.5))
    if not (0 <= lim.hard_min <= lim.soft_min <= lim.soft_max <= lim.hard_max):
        raise LibraryError("limits out of order")
    if lim.hard_max >= 1 << 30:                 # integers below 2**30 (a record is int32)
        raise LibraryError(key + " out of range")
    return lim


def _vitals(d):
    v = Vitals(int(_num(d["sbp_max"], "sbp_max")), int(_num(d["dbp_max"], "dbp_max")),
               int(_num(d["hr_max"], "hr_max")), int(_num(d["hr_min"], "hr_min")),
               int(_num(d["spo2_min"], "spo2_min")))
    if not (0 < v.hr_min < v.hr_max and 0 < v.dbp_max < v.sbp_max and 0 < v.spo2_min <= 100):
        raise LibraryError("vitals limits out of order")
    if v.sbp_max >= 1 << 30 or v.hr_max >= 1 << 30:
        raise LibraryError("vitals limits out of range")
    return v


def _name(n):
    """A drug name as the wire carries it (docs/protocol.md, *Drug library*): 1..24 bytes of
    a-z 0-9 _ - starting with a letter, so it is one text value in every frame and STATUS's
    longest form stays within 160 bytes."""
    if not isinstance(n, str):
        raise LibraryError("drug name is not text")
    b = n.encode()
    if not (1 <= len(b) <= NAME_MAX) or not (97 <= b[0] <= 122):
        raise LibraryError("drug name must be 1..24 characters, starting with a-z")
    for c in b:
        if not (97 <= c <= 122 or 48 <= c <= 57 or c == 95 or c == 45):
            raise LibraryError("drug name may hold only a-z 0-9 _ -")
    return b


def _drug(d, default_vitals):
    g = Drug()
    try:
        g.name = _name(d["name"])
        g.conc_ug_ml = int(_num(d["conc_ug_ml"], "conc_ug_ml"))
        concs = d.get("concs_ug_ml", [g.conc_ug_ml])
        g.concs = tuple([int(_num(c, "concs_ug_ml")) for c in concs])
        if not (1 <= len(g.concs) <= 4):
            raise LibraryError("concs_ug_ml: 1..4 concentrations")
        for c in g.concs:
            if not (0 < c <= 999999):
                raise LibraryError("concentration must be 1..999999 ug/mL")
        if g.conc_ug_ml not in g.concs:
            raise LibraryError("conc_ug_ml not in concs_ug_ml")
        g.dose = _limits(d, "dose_ug_kg", 1)                 # µg/kg (dose or load)
        g.over = _limits(d, "over_min", 60000)               # ms
        g.weight = _limits(d, "weight_kg", 1000)             # g
        g.dose_h = _limits(d, "dose_ug_kg_h", 1, False)      # µg/kg/h, optional
        g.rate_max = int(_num(d["rate_ml_h_max"], "rate_ml_h_max") * 1000)   # µL/h
        g.bolus_max_nl = int(_num(d.get("bolus_max_ul", 0), "bolus_max_ul")) * 1000
        g.kvo_ul_h = int(_num(d.get("kvo_ul_h", 1000), "kvo_ul_h"))
        g.bolus_lockout_ms = int(_num(d.get("bolus_lockout_min", 0), "bolus_lockout_min") * 60000)
        g.bolus_h_ug = int(_num(d.get("bolus_max_h_ug", 0), "bolus_max_h_ug"))
        v = d.get("vitals")
        g.vitals = _vitals(v) if v is not None else default_vitals
    except KeyError as e:
        raise LibraryError("missing field " + str(e))
    if not (0 < g.rate_max <= 1200000) or not (0 <= g.kvo_ul_h <= 20000):
        raise LibraryError("rate_ml_h_max or kvo_ul_h out of range")
    if not (0 <= g.bolus_max_nl <= 100000000):
        raise LibraryError("bolus_max_ul out of range (0..100000)")
    if not (0 <= g.bolus_lockout_ms <= 86400000 and 0 <= g.bolus_h_ug < 1000000000):
        raise LibraryError("bolus_lockout_min or bolus_max_h_ug out of range")
    return g


def parse(raw):
    """A DrugLibrary from the file's bytes; LibraryError when anything is wrong."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise LibraryError("drug library is not valid JSON")
    if not isinstance(doc, dict) or "version" not in doc or not doc.get("drugs"):
        raise LibraryError("drug library has no version or no drugs")
    lib = DrugLibrary()
    lib.version = str(doc["version"]).encode()
    if not (1 <= len(lib.version) <= 12):       # HELLO's longest form stays within 160 bytes
        raise LibraryError("version must be 1..12 characters")
    for c in lib.version:
        if c < 33 or c > 126 or c == 42 or c == 61:
            raise LibraryError("version: printable ASCII, no * or =")
    if lib.version.isdigit():
        raise LibraryError("version must not be a number (add a dot: 2026.1)")
    dv = doc.get("vitals_default")
    dv = _vitals(dv) if dv is not None else None
    drugs = doc["drugs"]
    if not isinstance(drugs, list):
        raise LibraryError("drugs is not a list")
    drugs = [_drug(d, dv) for d in drugs]
    doc = None
    names = [d.name for d in drugs]
    for n in names:
        if names.count(n) != 1:
            raise LibraryError("drug listed twice")
    names = None
    lib.pack(dv, drugs)
    drugs = None
    lib.sha256 = binascii.hexlify(hashlib.sha256(raw).digest())
    lib.sha256_16 = lib.sha256[:16].upper()
    return lib


def load(path):
    """Load and check a library file (and its .sha256 sidecar when present)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        raise LibraryError("drug library file missing")
    lib = parse(raw)
    raw = None
    try:
        with open(path + ".sha256", "rb") as f:
            want = f.read().strip().lower()
    except OSError:
        want = None
    if want is not None and want[:64] != lib.sha256:
        raise LibraryError("drug library hash mismatch")
    lib.sha256 = b""        # checked: the pump keeps only sha256_16 (HELLO libh), 96 B less heap
    return lib
